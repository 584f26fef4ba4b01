"""OpenADR 2.0b events -> the demand-response event signal of one site.

An event asks the site to keep its power at or below a level (``LOAD_DISPATCH`` signal
of type ``setpoint``) or to shed an amount below its baseline (type ``delta``; the
baseline is the site's full power ``gpus x gpu_max_kw`` of SITES.yaml), in kW, over
one or more intervals. The signal's measurement must be real power (``powerReal`` in W
with an SI scale, ``k`` for kW); other signals (``SIMPLE`` levels, prices) are not
understood and the site opts out of them.

The event signal is a CSV with a ``time`` column and, per row (the state from that
time on):

=================  =====================================================================
``dr_active``      1 while an event interval is in force, else 0
``dr_limit_kw``    the power limit in force, else of the next announced event; the
                   site's full power when none is known (no constraint)
``dr_shed_kw``     full power minus ``dr_limit_kw`` (kW to shed below the baseline)
``dr_notice_h``    notice the utility gave for the event: start minus when the VEN
                   received it (day-ahead ~24, hour-ahead ~1, at once 0); 0 without event
``dr_starts_in_h`` hours until the event starts (0 while active or without event)
``dr_remaining_h`` hours of the event left (its whole length while announced; 0 without)
``dr_start``       the event's start (ISO 8601 UTC), ``none`` without event
``dr_event_id``    the VTN's event id, ``none`` without event
``dr_end``         the event's end (ISO 8601 UTC), ``none`` without event
=================  =====================================================================

The file is also a demand-response event file of a scenario (``demand_response.file``,
read by :func:`gridrl.data.sources.events.read_dr_events`): the rows of one event id
are that event (``dr_start``, ``dr_end``, ``dr_notice_h``, its tightest ``dr_limit_kw``);
rows without event are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl.errors import GridrlError
from gridrl.io import merge_time_csv

TIME_COLUMN = "time"
NO_EVENT = "none"
OPT_IN, OPT_OUT = "optIn", "optOut"
LOAD_DISPATCH = "LOAD_DISPATCH"
SIGNAL_TYPES = {"setpoint": "limit", "delta": "shed"}  # OpenADR signal type -> request
POWER_MEASUREMENT = "powerReal"
SECONDS_PER_HOUR = 3600.0
# OpenADR 2.0b SiScaleCodeType -> factor to the base unit
SI_SCALE = {
    "p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
    "none": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
}  # fmt: skip
W_PER_KW = 1000.0
COLUMNS = (
    "dr_active", "dr_limit_kw", "dr_shed_kw", "dr_notice_h", "dr_starts_in_h",
    "dr_remaining_h", "dr_start", "dr_event_id", "dr_end",
)  # fmt: skip


class OpenADRError(GridrlError, ValueError):
    """An OpenADR event the VEN cannot use, or a VEN setting that is wrong."""


@dataclass(frozen=True)
class EventInterval:
    """One interval of an event: ``[start, end)`` with the power limit in force (kW)."""

    start: pd.Timestamp
    end: pd.Timestamp
    limit_kw: float


@dataclass(frozen=True)
class DemandEvent:
    """An event the site accepted, with limits already in kW (a shed made a limit)."""

    event_id: str
    modification_number: int
    request: str  # "limit" or "shed": what the utility asked for
    intervals: tuple[EventInterval, ...]
    received: pd.Timestamp

    @property
    def start(self) -> pd.Timestamp:
        return self.intervals[0].start

    @property
    def end(self) -> pd.Timestamp:
        return self.intervals[-1].end

    @property
    def notice_h(self) -> float:
        """Hours between receipt and start (0 when it arrived after its start)."""
        return max((self.start - self.received).total_seconds(), 0.0) / SECONDS_PER_HOUR

    @property
    def min_limit_kw(self) -> float:
        return min(i.limit_kw for i in self.intervals)


def _utc(value: Any, what: str) -> pd.Timestamp:
    if not isinstance(value, datetime):
        raise OpenADRError(f"{what}: expected a date-time, got {value!r}")
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.floor("s")  # whole seconds: one time format in the file, as the adapter reads


def _kw_per_unit(signal: Mapping[str, Any], where: str) -> float:
    """kW per payload unit from the signal's measurement (powerReal, W x SI scale)."""
    m = signal.get("measurement")
    if not isinstance(m, Mapping) or m.get("name") != POWER_MEASUREMENT:
        name = m.get("name") if isinstance(m, Mapping) else None
        raise OpenADRError(
            f"{where}: measurement {name!r}: expected {POWER_MEASUREMENT!r} (W with an SI "
            "scale); a load dispatch without its unit is not guessed"
        )
    scale = m.get("scale") or "none"
    if m.get("unit") != "W" or scale not in SI_SCALE:
        raise OpenADRError(
            f"{where}: unit {m.get('unit')!r} scale {scale!r}: expected unit 'W' and a scale "
            f"of {sorted(SI_SCALE)}"
        )
    return SI_SCALE[scale] / W_PER_KW


def _dispatch_signal(event: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):  # openleadr nests them when there is one group
        signals = signals.get("event_signals") or []
    found = [s for s in signals if s.get("signal_name") == LOAD_DISPATCH]
    if len(found) != 1:
        names = [s.get("signal_name") for s in signals]
        raise OpenADRError(
            f"{where}: expected one {LOAD_DISPATCH} signal (setpoint or delta in powerReal), "
            f"got signals {names}"
        )
    sig = found[0]
    if sig.get("signal_type") not in SIGNAL_TYPES:
        raise OpenADRError(
            f"{where}: {LOAD_DISPATCH} signal type {sig.get('signal_type')!r}: expected one "
            f"of {sorted(SIGNAL_TYPES)}"
        )
    return sig


def parse_event(event: Mapping[str, Any], full_kw: float, received: Any) -> DemandEvent:
    """The event as limits in kW for a site of full power ``full_kw``.

    Raises
    ------
    OpenADRError
        naming the event and what is missing or not understood.
    """
    desc = event.get("event_descriptor") or {}
    event_id = str(desc.get("event_id", "?"))
    where = f"event {event_id!r}"
    sig = _dispatch_signal(event, where)
    per_unit = _kw_per_unit(sig, where)
    request = SIGNAL_TYPES[sig["signal_type"]]
    period = event.get("active_period") or {}
    t = _utc(period.get("dtstart"), f"{where}: active_period.dtstart")
    intervals = []
    for k, iv in enumerate(sig.get("intervals") or []):
        at = f"{where}: interval {k}"
        start = _utc(iv["dtstart"], f"{at}: dtstart") if iv.get("dtstart") else t
        length = iv.get("duration")
        if not isinstance(length, timedelta) or length <= timedelta(0):
            raise OpenADRError(f"{at}: duration {length!r}: expected a positive duration")
        value = iv.get("signal_payload")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise OpenADRError(f"{at}: payload {value!r}: expected a finite number >= 0")
        kw = float(value) * per_unit
        intervals.append(
            EventInterval(
                start, start + length, kw if request == "limit" else max(full_kw - kw, 0.0)
            )
        )
        t = start + length
    if not intervals:
        raise OpenADRError(f"{where}: the {LOAD_DISPATCH} signal has no intervals")
    mod = int(desc.get("modification_number") or 0)
    return DemandEvent(event_id, mod, request, tuple(intervals), _utc(received, "received"))


def opt_reason(event: DemandEvent, min_kw: float) -> str | None:
    """Why the site cannot comply (its lowest power ``min_kw`` is above a limit), or None."""
    if event.min_limit_kw < min_kw:
        return (
            f"event {event.event_id!r}: limit {event.min_limit_kw:.3f} kW is below the "
            f"{min_kw:.3f} kW the site draws with every GPU at its lowest cap"
        )
    return None


def _row(events: Iterable[DemandEvent], t: pd.Timestamp, full_kw: float) -> dict[str, Any]:
    """The signal at time ``t``: the tightest interval in force, else the next event."""
    active = [(iv, e) for e in events for iv in e.intervals if iv.start <= t < iv.end]
    if active:
        iv, e = min(active, key=lambda pair: pair[0].limit_kw)
        starts_in_h, on = 0.0, 1
        remaining_h = (e.end - t).total_seconds() / SECONDS_PER_HOUR
        limit = iv.limit_kw
    else:
        ahead = sorted((e for e in events if e.start > t), key=lambda e: e.start)
        if not ahead:
            return dict(
                zip(COLUMNS, (0, full_kw, 0.0, 0.0, 0.0, 0.0, NO_EVENT, NO_EVENT, NO_EVENT),
                    strict=True)
            )
        e, on = ahead[0], 0
        starts_in_h = (e.start - t).total_seconds() / SECONDS_PER_HOUR
        remaining_h = (e.end - e.start).total_seconds() / SECONDS_PER_HOUR
        limit = e.intervals[0].limit_kw
    values = (
        on,
        limit,
        max(full_kw - limit, 0.0),
        e.notice_h,
        starts_in_h,
        remaining_h,
        e.start.isoformat(),
        e.event_id,
        e.end.isoformat(),
    )
    return dict(zip(COLUMNS, values, strict=True))


def signal_frame(
    events: Iterable[DemandEvent], times: pd.DatetimeIndex, full_kw: float
) -> pd.DataFrame:
    """The event signal at each of ``times`` (UTC), one column per :data:`COLUMNS`."""
    events = list(events)
    rows = [_row(events, t, full_kw) for t in times]
    return pd.DataFrame(rows, index=pd.DatetimeIndex(times, name="time"), columns=list(COLUMNS))


def signal_times(
    events: Iterable[DemandEvent],
    now: pd.Timestamp,
    step_s: float,
    horizon_s: float,
    stored: Iterable[pd.Timestamp] = (),
) -> pd.DatetimeIndex:
    """Rows to (re)write: a ``step_s`` grid from the step holding ``now`` to the horizon or
    the last event's end, every interval boundary, and every stored time from that step on
    (so a cancelled or changed event leaves no stale row behind)."""
    first = now.floor(f"{int(step_s)}s")
    events = list(events)
    last = max([now + pd.Timedelta(seconds=horizon_s), *(e.end for e in events)])
    grid = pd.date_range(first, last + pd.Timedelta(seconds=step_s), freq=f"{int(step_s)}s")
    bounds = [t for e in events for iv in e.intervals for t in (iv.start, iv.end) if t >= first]
    later = [t for t in stored if t >= first]
    return pd.DatetimeIndex(sorted({*grid, *bounds, *later}), name="time")


def stored_times(path: Path) -> list[pd.Timestamp]:
    """Times already in the signal file ``path`` (none when it does not exist yet)."""
    if not path.exists():
        return []
    try:
        times = pd.read_csv(path, usecols=[TIME_COLUMN])[TIME_COLUMN]
        return list(pd.to_datetime(times, utc=True, format="ISO8601"))
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise OpenADRError(f"{path}: existing event signal file unreadable: {err}") from None


def write_event_signal(
    out: str | Path,
    events: Iterable[DemandEvent],
    now: pd.Timestamp,
    full_kw: float,
    step_s: float,
    horizon_s: float,
) -> int:
    """Merge the event signal from the step holding ``now`` on into ``out`` (atomically;
    rows before it are kept as the record of what was announced); rows written."""
    out = Path(out)
    events = list(events)
    times = signal_times(events, now, step_s, horizon_s, stored_times(out))
    merge_time_csv(signal_frame(events, times, full_kw), out, OpenADRError, TIME_COLUMN)
    return len(times)
