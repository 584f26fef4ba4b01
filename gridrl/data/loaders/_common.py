"""Reading helpers shared by the loaders: every failure names the file (and column)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def snake(name: str) -> str:
    """``"Hydro Run-of-river and poundage"`` -> ``"hydro_run_of_river_and_poundage"``."""
    out = "".join(c.lower() if c.isalnum() else "_" for c in name.strip())
    return "_".join(part for part in out.split("_") if part)
