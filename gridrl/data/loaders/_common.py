"""Reading helpers shared by the loaders: every failure names the file (and column)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.signals import SignalError


def read_csv(path: str | Path, **kw: Any) -> pd.DataFrame:
    """Read a CSV file; a missing or unreadable file is a ``SignalError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise SignalError(str(path), "file not found")
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SignalError(str(path), f"cannot read CSV: {err}") from err


def require_columns(df: pd.DataFrame, columns: Iterable[str], source: str | Path) -> None:
    """Raise ``SignalError`` naming the first absent column and the columns present."""
    for col in columns:
        if col not in df.columns:
            raise SignalError(
                str(source), f"column not found; the file has {list(df.columns)}", column=col
            )


def row_error(source: str | Path, column: Hashable, rows: np.ndarray, problem: str) -> SignalError:
    """``SignalError`` naming the first bad data row of ``rows`` (0-based, below the
    header line) and how many rows share the problem."""
    r = int(rows[0])
    return SignalError(
        str(source), f"{problem} ({rows.size} such rows)", column=column, row=r + 1, line=r + 2
    )


def snake(name: str) -> str:
    """``"Hydro Run-of-river and poundage"`` -> ``"hydro_run_of_river_and_poundage"``."""
    out = "".join(c.lower() if c.isalnum() else "_" for c in name.strip())
    return "_".join(part for part in out.split("_") if part)
