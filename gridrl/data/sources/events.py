"""Announced grid events: planned outages and demand-response events, and what a site
knows of them each hour.

An event covers the hours ``[start, end)`` and becomes known at hour ``announced``
(``start - notice``); an outage without notice is known only hour by hour while it lasts
(its end is not announced). Every hour ``t`` a site sees the *current or next announced*
event of each kind, the one with the earliest start among those announced by ``t`` that
have not ended::

    starts_in_h(t)  = max(start - t, 0)                                    [h]
    remaining_h(t)  = end - max(start, t)   (1 during an unannounced outage; 0: none)
    limit_kw(t)     = the event's level (demand response)                  [kW]

These are the ``dr_*`` and ``outage_*`` signals of the environment
(:class:`gridrl.env.kernel.Exo`): the core reads the demand-response event in force from
them, observations show them, and the planners read the announced future from them.

Demand-response events come from a seeded process (``DemandResponseConfig``: Poisson
number of events, a start day uniform over the hours, a local start hour and a duration
uniform over their ranges, a notice drawn from ``notice_h`` with ``notice_shares``;
an event that would overlap an earlier one, or end after the last hour, is dropped and
counted: a site serves one event at a time) and from a CSV file of events
(:func:`read_dr_events`), the same columns the OpenADR VEN writes
(:mod:`gridrl.integrations.openadr_events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.errors import GridrlError
from gridrl.scenario import DemandResponseConfig

__all__ = [
    "DR_EVENT_COLUMNS", "DemandResponseError", "DrawnEvents", "GridEvent", "announced_view",
    "drawn_dr_events", "events_from_frame", "read_dr_events",
]

HOURS_PER_YEAR = 8760.0
HOURS_PER_DAY = 24
#: Columns of a demand-response event file (one row per event); a level is
#: ``dr_limit_kw``, or ``dr_baseline_kw - dr_shed_kw`` for a shed request.
DR_EVENT_COLUMNS = ("dr_event_id", "dr_start", "dr_end", "dr_notice_h", "dr_limit_kw",
                    "dr_shed_kw", "dr_baseline_kw")
_NS_PER_H = 3_600_000_000_000
NO_EVENT = "none"  # dr_event_id of a row without event (the VEN's signal file)


class DemandResponseError(GridrlError, ValueError):
    """A demand-response event file the scenario cannot use (names file, row, column)."""


@dataclass(frozen=True)
class GridEvent:
    """One event in hour indices of the signal table: ``[start, end)``, known from
    ``announced``; ``end_known`` False for an outage without notice."""

    announced: int
    start: int
    end: int
    limit_kw: float = 0.0
    end_known: bool = True


@dataclass(frozen=True)
class DrawnEvents:
    """Events of the seeded process, and the draws dropped: those that overlap an
    earlier event, and those that end after the last hour of the data."""

    events: list[GridEvent]
    dropped_overlap: int = 0
    dropped_past_end: int = 0

    @property
    def dropped(self) -> int:
        """Draws not kept, for any reason."""
        return self.dropped_overlap + self.dropped_past_end


def announced_view(events: list[GridEvent], n_hours: int) -> np.ndarray:
    """``[n_hours, 3]``: ``starts_in_h, remaining_h, limit_kw`` of the current or next
    announced event each hour (module equations); zeros where none is known."""
    out = np.zeros((n_hours, 3))
    # later starts first, so an earlier start overwrites the hours both are known
    for ev in sorted(events, key=lambda e: e.start, reverse=True):
        lo, hi = max(ev.announced, 0), min(ev.end, n_hours)
        if hi <= lo:
            continue
        t = np.arange(lo, hi)
        out[lo:hi, 0] = np.maximum(ev.start - t, 0)
        rem = ev.end - np.maximum(ev.start, t)
        out[lo:hi, 1] = rem if ev.end_known else np.where(t >= ev.start, 1.0, rem)
        out[lo:hi, 2] = ev.limit_kw
    return out


def drawn_dr_events(cfg: DemandResponseConfig, index: pd.DatetimeIndex, tz_offset_h: float,
                    rng: np.random.Generator) -> DrawnEvents:
    """Events of the seeded process over the hours of ``index`` (UTC; local standard
    time is UTC + ``tz_offset_h``), sorted, not overlapping, with the draws dropped
    (module doc)."""
    n = len(index)
    if cfg.rate_per_year == 0 or n == 0:
        return DrawnEvents([])
    count = rng.poisson(cfg.rate_per_year * n / HOURS_PER_YEAR)
    day = rng.integers(0, max(n // HOURS_PER_DAY, 1), size=count)
    hour = rng.integers(cfg.start_hour_local_min, cfg.start_hour_local_max + 1, size=count)
    length = rng.integers(cfg.duration_h_min, cfg.duration_h_max + 1, size=count)
    notice = rng.choice(np.asarray(cfg.notice_h), size=count, p=np.asarray(cfg.notice_shares))
    # first local midnight at or after the first hour
    first_local = index[0] + pd.Timedelta(hours=tz_offset_h)
    midnight = (HOURS_PER_DAY - first_local.hour) % HOURS_PER_DAY
    starts = midnight + day * HOURS_PER_DAY + hour
    events: list[GridEvent] = []
    overlap = past_end = 0
    for k in np.argsort(starts, kind="stable"):
        s, e = int(starts[k]), int(starts[k] + length[k])
        if e > n:
            past_end += 1
        elif events and s < events[-1].end:
            overlap += 1
        else:
            events.append(GridEvent(s - int(notice[k]), s, e, cfg.limit_kw))
    return DrawnEvents(events, overlap, past_end)


def _line(frame: pd.DataFrame, pos: int) -> int:
    """File line of the frame's row at position ``pos`` (header is line 1)."""
    return int(frame.index[pos]) + 2


def _times(frame: pd.DataFrame, column: str, where: str) -> pd.DatetimeIndex:
    try:
        t = pd.to_datetime(frame[column], utc=False, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DemandResponseError(f"{where}, column {column!r}: expected ISO 8601 times "
                                  f"({exc})") from None
    if t.dt.tz is None:
        raise DemandResponseError(f"{where}, column {column!r}: expected times with a UTC "
                                  "offset (e.g. 2021-07-01T15:00:00Z)")
    t = pd.DatetimeIndex(t.dt.tz_convert("UTC"))
    off = np.flatnonzero(t != t.floor("h"))
    if len(off):
        raise DemandResponseError(f"{where}, row {_line(frame, off[0])}, column {column!r}: "
                                  f"{t[off[0]]} is not on the hour (events start and end on "
                                  "whole hours)")
    return t


def _number(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        raise DemandResponseError(f"{where}, row {_line(frame, bad[0])}, column {column!r}: "
                                  f"expected a number >= 0, got {frame[column].iloc[bad[0]]!r}")
    return values


def _levels(frame: pd.DataFrame, where: str) -> np.ndarray:
    """``dr_limit_kw``, or ``dr_baseline_kw - dr_shed_kw`` where no limit is given."""
    limit = frame.get("dr_limit_kw", pd.Series(np.nan, index=frame.index))
    given = pd.to_numeric(limit, errors="coerce").notna().to_numpy()
    out = np.full(len(frame), np.nan)
    if given.any():
        out[given] = _number(frame.loc[given], "dr_limit_kw", where)
    if given.all():
        return out
    if not {"dr_shed_kw", "dr_baseline_kw"} <= set(frame.columns):
        raise DemandResponseError(f"{where}: expected a column 'dr_limit_kw', or "
                                  "'dr_shed_kw' with 'dr_baseline_kw' (a shed request)")
    shed = frame.loc[~given]
    level = _number(shed, "dr_baseline_kw", where) - _number(shed, "dr_shed_kw", where)
    if (level < 0).any():
        raise DemandResponseError(f"{where}, row {_line(shed, int(np.argmax(level < 0)))}: "
                                  "dr_shed_kw exceeds dr_baseline_kw")
    out[~given] = level
    return out


def events_from_frame(frame: pd.DataFrame, index: pd.DatetimeIndex,
                      where: str) -> list[GridEvent]:
    """Events of a table with :data:`DR_EVENT_COLUMNS` on the hours of ``index``.

    Rows with ``dr_event_id`` ``none`` hold no event; rows that repeat an id (the OpenADR
    VEN's signal file has one per time) are one event: its last ``dr_start``, ``dr_end``
    and ``dr_notice_h`` and its tightest level. Events that end before the first hour or
    start after the last are outside the simulated years and not used; an event cut by
    either end keeps its hours inside.

    Raises
    ------
    DemandResponseError
        A missing column, a time off the hour or without offset, ``dr_end`` not after
        ``dr_start``, a negative number, or events that overlap (naming the rows).
    """
    missing = [c for c in DR_EVENT_COLUMNS[:4] if c not in frame.columns]
    if missing:
        raise DemandResponseError(f"{where}: missing column(s) {missing}; expected "
                                  f"{list(DR_EVENT_COLUMNS)}")
    frame = frame.reset_index(drop=True)
    frame = frame.loc[frame["dr_event_id"].astype(str) != NO_EVENT]
    table = pd.DataFrame({
        "id": frame["dr_event_id"].astype(str), "start": _times(frame, "dr_start", where),
        "end": _times(frame, "dr_end", where), "notice": _number(frame, "dr_notice_h", where),
        "limit": _levels(frame, where), "line": frame.index + 2}, index=frame.index)
    table = table.groupby("id", sort=False).agg(
        start=("start", "last"), end=("end", "last"), notice=("notice", "last"),
        limit=("limit", "min"), line=("line", "first")).sort_values("start", kind="stable")
    bad = table.loc[table["end"] <= table["start"]]
    if len(bad):
        row = bad.iloc[0]
        raise DemandResponseError(f"{where}, row {row['line']}: dr_end {row['end']} is not "
                                  f"after dr_start {row['start']}")
    start, end = table["start"].to_numpy(), table["end"].to_numpy()
    lap = np.flatnonzero(start[1:] < end[:-1])
    if len(lap):
        a, b = table["line"].iloc[lap[0]], table["line"].iloc[lap[0] + 1]
        raise DemandResponseError(f"{where}: events in rows {a} and {b} overlap (a site "
                                  "serves one event at a time)")
    t0 = index[0].value if len(index) else 0
    events = []
    for row in table.itertuples():
        s = int((row.start.value - t0) // _NS_PER_H)
        e = int((row.end.value - t0) // _NS_PER_H)
        if e <= 0 or s >= len(index):
            continue
        events.append(GridEvent(s - int(np.ceil(row.notice)), s, e, float(row.limit)))
    return events


def read_dr_events(path: str | Path, index: pd.DatetimeIndex) -> list[GridEvent]:
    """Events of a CSV file (:func:`events_from_frame`) on the hours of ``index``."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"dr_event_id": str})
    except FileNotFoundError:
        raise DemandResponseError(f"demand_response.file {str(path)!r}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DemandResponseError(f"{path}: not a readable CSV ({exc})") from None
    return events_from_frame(frame, index, str(path))
