"""Poll a provider into the CSV signal file that ``gridrl slurm`` reads.

The file has a ``time`` column (ISO 8601 with ``+00:00``) and one column per signal
(the observation keys of SITES.yaml's ``signals.file``). Each poll merges into it: a
value fetched now replaces the one stored for the same hour and signal (a forecast is
superseded by a newer forecast or by the measured value), every other stored row and
column is kept. The file is replaced atomically, so the scheduler never reads half of
it; an existing file that cannot be read is an error and is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl.data.providers.base import Provider, ProviderError
from gridrl.io import merge_time_csv

__all__ = ["PollResult", "poll_to_csv"]

TIME_COLUMN = "time"


@dataclass(frozen=True)
class PollResult:
    """What one poll did: rows fetched, rows in the file after it, hours replaced."""

    path: Path
    fetched_rows: int
    file_rows: int
    replaced_values: int
    first: pd.Timestamp
    last: pd.Timestamp


def poll_to_csv(provider: Provider, out: str | Path, start: Any, end: Any) -> PollResult:
    """Fetch ``[start, end)`` from ``provider`` and merge it into the CSV ``out``."""
    signals = provider.fetch(start, end)
    new = signals.site(provider.site).copy()
    new.columns = [str(c) for c in new.columns]
    file_rows, replaced = merge_time_csv(new, out, ProviderError, TIME_COLUMN)
    return PollResult(Path(out), len(new), file_rows, replaced, new.index[0], new.index[-1])
