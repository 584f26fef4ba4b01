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
from gridrl.io import write_with

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
    out = Path(out)
    signals = provider.fetch(start, end)
    new = signals.site(provider.site).copy()
    new.columns = [str(c) for c in new.columns]
    old = _read_existing(out)
    replaced = 0
    merged = new
    if old is not None:
        both = old.reindex(index=new.index, columns=new.columns)
        replaced = int((both.notna() & (both != new)).to_numpy().sum())
        merged = new.combine_first(old)
        merged = merged[list(dict.fromkeys([*old.columns, *new.columns]))]
    merged = merged.sort_index()
    frame = merged.reset_index(names=TIME_COLUMN)
    frame[TIME_COLUMN] = frame[TIME_COLUMN].map(lambda t: t.isoformat())
    write_with(out, lambda tmp: frame.to_csv(tmp, index=False))
    return PollResult(out, len(new), len(merged), replaced, new.index[0], new.index[-1])


def _read_existing(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise ProviderError(
            f"{path}: existing signal file unreadable, not replaced: {err}"
        ) from None
    if TIME_COLUMN not in df.columns:
        raise ProviderError(
            f"{path}: existing signal file has no {TIME_COLUMN!r} column (columns "
            f"{list(df.columns)}); not replaced"
        )
    try:
        times = pd.to_datetime(df[TIME_COLUMN], utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise ProviderError(
            f"{path}: column {TIME_COLUMN!r}: not times ({err}); not replaced"
        ) from None
    if times.duplicated().any():
        p = int(times.duplicated().to_numpy().argmax())
        raise ProviderError(
            f"{path}: row {p + 1} (line {p + 2}): duplicate time {times.iloc[p]}; not replaced"
        )
    return df.drop(columns=[TIME_COLUMN]).set_axis(pd.DatetimeIndex(times, name="time"))
