"""Validated hourly site signals: one UTC table, one column group per site, units in names.

``Signals`` wraps a ``pandas.DataFrame`` whose index is an hourly, strictly increasing,
UTC ``DatetimeIndex`` named ``time`` and whose columns are a two-level ``MultiIndex``
``(site, signal)`` of float64 values. Signal names carry their unit (``pv_kw``,
``carbon_g_per_kwh``, ``temp_c``); the registry ``SIGNALS`` lists the known ones and
``signal_spec`` accepts any other name that ends in a known unit suffix.

Nothing here fills, clips, sorts or drops data silently. ``validate`` raises a
``SignalError`` that names the source, the column, the row (1-based among the data rows;
for files also the line) and the timestamp of the first offending value, with a count of
the others. Resampling and time-zone localisation happen only when asked for, and what
was done is recorded in ``frame.attrs["provenance"]``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gridrl.errors import GridrlError
from gridrl.io import write_with

__all__ = [
    "SIGNALS",
    "UNIT_SUFFIXES",
    "SignalError",
    "SignalSpec",
    "Signals",
    "signal_spec",
]

HOUR = pd.Timedelta(hours=1)
TIME_NAME = "time"
COLUMN_LEVELS = ("site", "signal")
ResampleMethod = Literal["mean", "sum", "interpolate"]
TimeFormat = Literal["iso", "epoch_s", "offset"]
OffsetUnit = Literal["s", "min", "h"]
_OFFSET_UNITS: dict[str, pd.Timedelta] = {
    "s": pd.Timedelta(seconds=1),
    "min": pd.Timedelta(minutes=1),
    "h": HOUR,
}


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class SignalSpec:
    """What a signal name means.

    Attributes
    ----------
    unit : str
        Physical unit of the values (``"kW"``, ``"gCO2e/kWh"``, ...).
    nonnegative : bool
        True when a negative value is physically impossible and therefore an error.
    description : str
        One line for people.
    """

    unit: str
    nonnegative: bool
    description: str


SIGNALS: dict[str, SignalSpec] = {
    "pv_kw": SignalSpec("kW", True, "PV AC output of the site"),
    "wind_kw": SignalSpec("kW", True, "wind turbine output of the site"),
    "background_load_kw": SignalSpec("kW", True, "other load on the same feeder"),
    "feeder_capacity_kw": SignalSpec("kW", True, "import capacity of the connection"),
    "headroom_kw": SignalSpec("kW", True, "import power still available to the site"),
    "load_kw": SignalSpec("kW", True, "generic electric load"),
    "carbon_g_per_kwh": SignalSpec("gCO2e/kWh", True, "grid carbon intensity"),
    "price_per_mwh": SignalSpec("currency/MWh", False, "energy price (may be negative)"),
    "temp_c": SignalSpec("degC", False, "outdoor air temperature"),
    "ghi_w_per_m2": SignalSpec("W/m2", True, "global horizontal irradiance"),
    "dni_w_per_m2": SignalSpec("W/m2", True, "direct normal irradiance"),
    "dhi_w_per_m2": SignalSpec("W/m2", True, "diffuse horizontal irradiance"),
    "wind_speed_m_per_s": SignalSpec("m/s", True, "wind speed at measurement height"),
    "inference_gpus": SignalSpec("GPU", True, "mean GPUs busy with latency-sensitive work"),
    "flexible_gpu_h": SignalSpec("GPU h", True, "GPU-hours of flexible work arriving in the hour"),
    "dr_starts_in_h": SignalSpec("h", True, "hours until the announced demand-response event"),
    "dr_remaining_h": SignalSpec("h", True, "hours left of the announced demand-response event"),
    "dr_limit_kw": SignalSpec("kW", True, "import level the announced event asks for"),
    "outage_starts_in_h": SignalSpec("h", True, "hours until the next announced outage"),
    "outage_remaining_h": SignalSpec("h", True, "hours left of the announced outage"),
}

# Unit suffix -> (unit, nonnegative). Matched longest first, so ``_per_mwh`` wins over
# ``_mwh`` and ``_g_per_kwh`` over ``_kwh``.
UNIT_SUFFIXES: dict[str, tuple[str, bool]] = {
    "_kw": ("kW", True),
    "_kwh": ("kWh", True),
    "_mw": ("MW", True),
    "_mwh": ("MWh", True),
    "_g_per_kwh": ("gCO2e/kWh", True),
    "_per_mwh": ("currency/MWh", False),
    "_per_kwh": ("currency/kWh", False),
    "_c": ("degC", False),
    "_w_per_m2": ("W/m2", True),
    "_m_per_s": ("m/s", True),
    "_gpus": ("GPU", True),
    "_gpu_h": ("GPU h", True),
    "_fraction": ("1", True),
    "_pct": ("%", True),
}
_SUFFIXES_LONGEST_FIRST = sorted(UNIT_SUFFIXES, key=len, reverse=True)
# A forecast made N hours ahead keeps the unit of its base signal: ``temp_c_fcst_6h``.
_QUALIFIER = re.compile(r"_fcst_\d+h$")
# An ISO timestamp that names its zone: "Z" or a UTC offset at the end.
_ZONE_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"
# Net quantities (pumped storage, cross-border exchange) are signed by nature.
_SIGNED = re.compile(r"(^|_)net(_|$)")


def signal_spec(name: str) -> SignalSpec:
    """Return the ``SignalSpec`` of a signal name.

    Known names come from ``SIGNALS``. Any other name must end in a unit suffix from
    ``UNIT_SUFFIXES`` (optionally followed by a forecast qualifier ``_fcst_<N>h``); its
    sign rule follows the unit, except that names containing a ``net`` word
    (``hydro_pumped_storage_net_mw``) may be negative.

    Raises
    ------
    SignalError
        When the name has no known unit.
    """
    if name in SIGNALS:
        return SIGNALS[name]
    base = _QUALIFIER.sub("", name) if isinstance(name, str) else ""
    if base in SIGNALS:
        return SIGNALS[base]
    for suffix in _SUFFIXES_LONGEST_FIRST:
        if base.endswith(suffix) and len(base) > len(suffix):
            unit, nonnegative = UNIT_SUFFIXES[suffix]
            signed = _SIGNED.search(base[: -len(suffix)]) is not None
            return SignalSpec(unit, nonnegative and not signed, f"{name} ({unit})")
    raise SignalError(
        "<signal registry>",
        f"unknown unit in signal name {name!r}: expected a known signal "
        f"({', '.join(sorted(SIGNALS))}) or a name ending in one of "
        f"{', '.join(_SUFFIXES_LONGEST_FIRST)}",
        column=name,
    )


# --------------------------------------------------------------------------- errors


class SignalError(GridrlError, ValueError):
    """Bad signal data: names the source, column, row, timestamp and the problem.

    ``str(err)`` reads ``"<source>: column '<col>', row <row> (<timestamp>): <problem>"``;
    parts that do not apply are left out. ``row`` is 1-based among the data rows; for
    files ``line`` is the line in the file (header included).
    """

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        column: Hashable | None = None,
        row: int | None = None,
        timestamp: Any = None,
        line: int | None = None,
        mapped: tuple[str, str] | None = None,
    ) -> None:
        self.source = str(source)
        self.mapped = mapped
        self.problem = problem
        self.column = column
        self.row = row
        self.timestamp = timestamp
        self.line = line
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.column is not None:
            label = f"column {_column_label(self.column)!r}"
            if self.mapped is not None:
                label += f" (as {_column_label(self.mapped)})"
            where.append(label)
        if self.row is not None:
            extra = []
            if self.line is not None:
                extra.append(f"line {self.line}")
            if self.timestamp is not None:
                extra.append(str(self.timestamp))
            where.append(f"row {self.row}" + (f" ({', '.join(extra)})" if extra else ""))
        prefix = f"{self.source}: " + ", ".join(where) if where else f"{self.source}"
        return f"{prefix}: {self.problem}"

    def __reduce__(self):  # keep keyword-only fields when pickled (multiprocessing, Ray)
        return (
            _rebuild_error,
            (
                self.source,
                self.problem,
                self.column,
                self.row,
                self.timestamp,
                self.line,
                self.mapped,
            ),
        )


def _rebuild_error(source, problem, column, row, timestamp, line, mapped) -> SignalError:
    return SignalError(
        source, problem, column=column, row=row, timestamp=timestamp, line=line, mapped=mapped
    )


def _column_label(column: Hashable) -> str:
    if isinstance(column, tuple):
        return "/".join(str(c) for c in column)
    return str(column)


# --------------------------------------------------------------------------- origin


@dataclass(frozen=True)
class Origin:
    """Where the rows and columns of a frame came from, for error messages.

    Attributes
    ----------
    line_offset : int or None
        ``line = row + line_offset`` for files (1 for a CSV with one header line);
        None when rows have no file line.
    raw_columns : mapping
        ``(site, signal) -> raw column name`` in the source.
    time_column : str
        Name of the time column (or index) in the source.
    """

    line_offset: int | None = None
    raw_columns: Mapping[tuple[str, str], str] = field(default_factory=dict)
    time_column: str = TIME_NAME


def _fail(
    source: str,
    origin: Origin,
    problem: str,
    *,
    column: Hashable | None = None,
    position: int | None = None,
    index: pd.Index | None = None,
) -> SignalError:
    """Build a SignalError for the 0-based ``position`` of a frame (None: no row)."""
    mapped = None
    if isinstance(column, tuple) and column in origin.raw_columns:
        # Name the column as it appears in the source; say what it became.
        column, mapped = origin.raw_columns[column], column
    row = line = timestamp = None
    if position is not None:
        row = int(position) + 1
        line = row + origin.line_offset if origin.line_offset is not None else None
        if index is not None and 0 <= position < len(index):
            timestamp = index[position]
    return SignalError(
        source, problem, column=column, row=row, timestamp=timestamp, line=line, mapped=mapped
    )


def _fmt_step(step: pd.Timedelta) -> str:
    """``30min``, ``1h``, ``1d2h`` — short and unambiguous."""
    total = int(step / pd.Timedelta(seconds=1))
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if total >= seconds:
            parts.append(f"{total // seconds}{unit}")
            total %= seconds
    return sign + ("".join(parts) or "0s")


def _steps_summary(steps: pd.Series) -> str:
    """``"30min x 15171 (first at row 2), 15min x 6808 (first at row 15170)"``.

    ``steps`` holds the step *into* each row, indexed by 0-based row position.
    """
    counts = steps.value_counts()
    first = steps.reset_index(drop=True).drop_duplicates()
    first_row = {v: int(i) + 1 for i, v in first.items()}
    return ", ".join(
        f"{_fmt_step(s)} x {n} (first at row {first_row[s] + 1})" for s, n in counts.items()
    )


# --------------------------------------------------------------------------- checks


def _check_index(frame: pd.DataFrame, source: str, origin: Origin, *, hourly: bool) -> None:
    """Index checks: datetime, tz UTC, strictly increasing, unique; hourly when asked."""
    index = frame.index
    col = origin.time_column
    if not isinstance(index, pd.DatetimeIndex):
        raise _fail(
            source,
            origin,
            f"expected a DatetimeIndex of timestamps, got {type(index).__name__}",
            column=col,
        )
    if len(index) == 0:
        raise _fail(source, origin, "no rows", column=col)
    nat = np.flatnonzero(np.asarray(index.isna()))
    if nat.size:
        raise _fail(
            source,
            origin,
            f"missing timestamp ({nat.size} rows in total)",
            column=col,
            position=int(nat[0]),
            index=index,
        )
    if index.tz is None:
        raise _fail(
            source,
            origin,
            "naive timestamps (no time zone): give assume_tz='UTC' (or the zone the data "
            "is published in) to localise them explicitly",
            column=col,
            position=0,
            index=index,
        )
    if str(index.tz) != "UTC":
        raise _fail(
            source,
            origin,
            f"time zone {index.tz} where UTC was expected",
            column=col,
            position=0,
            index=index,
        )
    if len(index) < 2:
        return
    diffs = np.diff(index.asi8)  # ns, vectorised
    _check_order(diffs, index, source, origin)
    if hourly:
        _check_hourly(diffs, index, source, origin)


def _check_order(diffs: np.ndarray, index: pd.DatetimeIndex, source: str,
                 origin: Origin) -> None:
    """Strictly increasing times: no backward step, no repeated timestamp."""
    col = origin.time_column
    back = np.flatnonzero(diffs < 0)
    if back.size:
        p = int(back[0]) + 1
        raise _fail(
            source,
            origin,
            f"non-monotonic time index: {index[p]} comes after {index[p - 1]} "
            f"(expected strictly increasing; {back.size} backward steps in total)",
            column=col,
            position=p,
            index=index,
        )
    dup = np.flatnonzero(diffs == 0)
    if dup.size:
        p = int(dup[0]) + 1
        raise _fail(
            source,
            origin,
            f"duplicate timestamp {index[p]} (same as row {p}; {dup.size} duplicate rows in total)",
            column=col,
            position=p,
            index=index,
        )


def _check_hourly(diffs: np.ndarray, index: pd.DatetimeIndex, source: str,
                  origin: Origin) -> None:
    """Hourly steps; a gap or another step is named with where it is."""
    col = origin.time_column
    hour_ns = HOUR.value
    bad = np.flatnonzero(diffs != hour_ns)
    if not bad.size:
        return
    steps = pd.Series(pd.to_timedelta(diffs, unit="ns"))
    if np.all(diffs % hour_ns == 0):
        # Hourly with holes: say where and how much is missing.
        p = int(bad[0])
        missing = (diffs[bad] // hour_ns - 1).sum()
        raise _fail(
            source,
            origin,
            f"gap: {diffs[p] // hour_ns - 1} missing hour(s) between {index[p]} and "
            f"{index[p + 1]} (expected hourly steps; {bad.size} gaps, {missing} missing "
            "hours in total)",
            column=col,
            position=p + 1,
            index=index,
        )
    uniq = np.unique(diffs)
    p = int(bad[0]) + 1
    if uniq.size == 1:
        problem = (
            f"wrong step: {_fmt_step(steps.iloc[0])} where 1h was expected "
            f"({steps.size} steps); pass resample='mean'|'sum'|'interpolate' to convert"
        )
    else:
        problem = (
            f"mixed steps: {_steps_summary(steps)} where 1h was expected; "
            "pass resample='mean'|'sum'|'interpolate' to convert"
        )
    raise _fail(source, origin, problem, column=col, position=p, index=index)


def _check_columns(frame: pd.DataFrame, source: str, origin: Origin) -> list[SignalSpec]:
    cols = frame.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels != 2:
        raise SignalError(source, "columns must be a 2-level MultiIndex (site, signal)")
    if tuple(cols.names) != COLUMN_LEVELS:
        raise SignalError(
            source, f"column levels are named {tuple(cols.names)}, expected {COLUMN_LEVELS}"
        )
    if cols.has_duplicates:
        dup = cols[cols.duplicated()][0]
        raise _fail(source, origin, "duplicate (site, signal) column", column=dup)
    specs = []
    for col in cols:
        try:
            specs.append(signal_spec(col[1]))
        except SignalError as err:
            raise _fail(source, origin, err.problem, column=col) from None
    bad_dtype = [c for c, dt in frame.dtypes.items() if dt != np.float64]
    if bad_dtype:
        raise _fail(
            source,
            origin,
            f"dtype {frame.dtypes[bad_dtype[0]]} where float64 was expected",
            column=bad_dtype[0],
        )
    return specs


def _check_values(
    frame: pd.DataFrame, specs: list[SignalSpec], source: str, origin: Origin
) -> None:
    values = frame.to_numpy(dtype=np.float64, copy=False)
    # One reduction first: a sum is non-finite iff some cell is NaN/inf (or it overflows,
    # in which case the detailed pass below finds nothing). Keeps a clean year of
    # 400 sites x 12 signals well under a second.
    if not np.isfinite(values.sum()):
        col_ok = np.isfinite(values.sum(axis=0))
        bad_cols = np.flatnonzero(~col_ok)
        if bad_cols.size:
            finite = np.isfinite(values[:, bad_cols])
            first_rows = np.argmin(finite, axis=0)
            has_bad = ~finite.all(axis=0)
            first_rows = np.where(has_bad, first_rows, len(values))
            k = int(np.argmin(first_rows))
            if has_bad[k]:
                j, r = int(bad_cols[k]), int(first_rows[k])
                v = values[r, j]
                n_bad = int(finite.size - np.count_nonzero(finite))
                what = "NaN (empty or missing value)" if np.isnan(v) else f"{v} (infinite value)"
                raise _fail(
                    source,
                    origin,
                    f"{what} where a finite number was expected ({n_bad} non-finite cells "
                    f"in {int(has_bad.sum())} column(s))",
                    column=frame.columns[j],
                    position=r,
                    index=frame.index,
                )
    nonneg = np.array([s.nonnegative for s in specs], dtype=bool)
    if nonneg.any():
        neg_cols = np.flatnonzero(nonneg & (values.min(axis=0) < 0))
        if neg_cols.size:
            neg = values[:, neg_cols] < 0
            first_rows = np.argmax(neg, axis=0)
            k = int(np.argmin(first_rows))
            j, r = int(neg_cols[k]), int(first_rows[k])
            spec = specs[j]
            raise _fail(
                source,
                origin,
                f"negative value {values[r, j]:g} {spec.unit} in a nonnegative signal "
                f"(expected >= 0; {int(neg.sum())} negative cells in {neg_cols.size} "
                "column(s))",
                column=frame.columns[j],
                position=r,
                index=frame.index,
            )


# --------------------------------------------------------------------------- building


def _parse_times(
    raw: pd.Series | pd.Index, source: str, origin: Origin
) -> tuple[pd.DatetimeIndex, dict[str, Any] | None]:
    """Parse timestamps; every unparseable or missing one is an error naming its row.

    Returns the index and, when mixed UTC offsets were normalised to UTC, a provenance
    record saying so.
    """
    if isinstance(raw, pd.DatetimeIndex):
        return raw, None
    if pd.api.types.is_datetime64_any_dtype(getattr(raw, "dtype", None)):
        return pd.DatetimeIndex(raw), None
    values = pd.Series(np.asarray(raw, dtype=object))
    missing = values.isna().to_numpy()
    with warnings.catch_warnings():
        # pandas 2 warns (and returns objects) on mixed UTC offsets; handled below.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(values, errors="coerce", format="ISO8601")
        except ValueError:
            parsed = None
    mixed = parsed is None or parsed.dtype == object
    if mixed or getattr(parsed.dt, "tz", None) is not None:
        # pandas gives zone-less strings the offset of the others without a word; a
        # timestamp without a zone among zoned ones is an error.
        text = values.astype("string").str.strip()
        zoned = text.str.contains(_ZONE_SUFFIX, regex=True, na=False).to_numpy()
        as_utc = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        # Unparseable strings are reported below as such, not as zone-less.
        naive = np.flatnonzero(~zoned & ~missing & as_utc.notna().to_numpy())
        if naive.size:
            p = int(naive[0])
            raise _fail(
                source,
                origin,
                f"timestamp {values.iloc[p]!r} has no UTC offset while others have one "
                f"({naive.size} such rows)",
                column=origin.time_column,
                position=p,
            )
    if mixed:
        # Mixed UTC offsets ("+01:00" and "+02:00": local time with DST). Each timestamp
        # carries its own offset, so going through UTC is lossless.
        parsed = as_utc
    unparsed = np.flatnonzero(parsed.isna().to_numpy() & ~missing)
    if unparsed.size:
        p = int(unparsed[0])
        raise _fail(
            source,
            origin,
            f"cannot parse timestamp {values.iloc[p]!r} ({unparsed.size} unparseable rows)",
            column=origin.time_column,
            position=p,
        )
    if missing.any():
        p = int(np.flatnonzero(missing)[0])
        raise _fail(
            source,
            origin,
            f"missing timestamp ({int(missing.sum())} rows in total)",
            column=origin.time_column,
            position=p,
        )
    note = {"step": "tz_convert", "from": "mixed UTC offsets", "to": "UTC"} if mixed else None
    return pd.DatetimeIndex(parsed), note


def _localize(times: pd.DatetimeIndex, tz: str, source: str, origin: Origin) -> pd.DatetimeIndex:
    """Localise naive local times; nonexistent or ambiguous (DST) times are errors."""
    try:
        out = times.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    except Exception as err:  # unknown zone names raise several exception types
        raise _fail(
            source, origin, f"cannot localise to {tz!r}: {err}", column=origin.time_column
        ) from err
    bad = np.flatnonzero(np.asarray(out.isna()))
    if bad.size:
        p = int(bad[0])
        raise _fail(
            source,
            origin,
            f"local time {times[p]} does not exist or is ambiguous in {tz} (daylight "
            f"saving change; {bad.size} such rows); give timestamps with UTC offsets",
            column=origin.time_column,
            position=p,
        )
    return out


def _to_float(frame: pd.DataFrame, source: str, origin: Origin) -> pd.DataFrame:
    """Cast to float64; a cell that is not a number is an error naming its row."""
    non_numeric = [
        c
        for c, dt in frame.dtypes.items()
        if not (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt))
    ]
    for c in non_numeric:
        col = frame[c]
        num = pd.to_numeric(col, errors="coerce")
        bad = np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())
        if bad.size:
            p = int(bad[0])
            raise _fail(
                source,
                origin,
                f"not a number: {col.iloc[p]!r} ({bad.size} such cells in this column)",
                column=c,
                position=p,
                index=frame.index,
            )
        if pd.api.types.is_bool_dtype(col.dtype):
            raise _fail(source, origin, "boolean column where numbers were expected", column=c)
        frame[c] = num
    if any(dt != np.float64 for dt in frame.dtypes):
        frame = frame.astype(np.float64)
    return frame


def _provenance(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return list(frame.attrs.get("provenance", []))


def _resample(
    frame: pd.DataFrame,
    method: ResampleMethod,
    source: str,
    origin: Origin,
    *,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Resample to hourly steps; record what was done.

    An hour with no value is an error unless ``allow_empty`` (an explicit fill follows).
    """
    steps = pd.Series(np.diff(frame.index.asi8)).value_counts()
    record: dict[str, Any] = {
        "step": "resample",
        "method": method,
        "rows_in": int(len(frame)),
        "steps_in": {_fmt_step(pd.Timedelta(int(k))): int(v) for k, v in steps.items()},
    }
    empty_cells = frame.isna().sum()
    if int(empty_cells.sum()):
        record["empty_cells_excluded"] = {
            _column_label(c): int(n) for c, n in empty_cells.items() if n
        }
    if method in ("mean", "sum"):
        grouped = frame.resample(HOUR, label="left", closed="left")
        counts = grouped.count()
        out = grouped.mean() if method == "mean" else grouped.sum(min_count=1)
        empty = counts.to_numpy() == 0
        if empty.any() and not allow_empty:
            j = int(np.flatnonzero(empty.any(axis=0))[0])
            r = int(np.argmax(empty[:, j]))
            raise _fail(
                source,
                Origin(None, origin.raw_columns),
                f"hour has no values to {method} after resampling to 1h "
                f"({int(empty.sum())} empty hour-cells in total; source empty cells "
                "are excluded, never filled; row counts hours of the resampled table)",
                column=frame.columns[j],
                position=r,
                index=out.index,
            )
        if empty.any():
            record["empty_hour_cells"] = int(empty.sum())
        # Per-hour sample counts vary with the source step; keep the distribution.
        per_hour = counts.iloc[:, 0].value_counts().sort_index()
        record["samples_per_hour"] = {str(int(k)): int(v) for k, v in per_hour.items()}
    else:  # interpolate: upsample by time-weighted linear interpolation at whole hours
        start, end = frame.index[0].ceil(HOUR), frame.index[-1].floor(HOUR)
        if start > end:
            raise SignalError(source, "interpolation span holds no whole hour")
        hours = pd.date_range(start, end, freq=HOUR, name=TIME_NAME)
        if frame.isna().any().any():
            raise SignalError(
                source,
                "empty cells present: interpolation would fill them; clean the "
                "source or resample with 'mean'",
            )
        union = frame.index.union(hours)
        out = frame.reindex(union).interpolate(method="time", limit_area="inside").loc[hours]
        record["hours_interpolated"] = int((~hours.isin(frame.index)).sum())
    record["rows_out"] = int(len(out))
    out.attrs["provenance"] = _provenance(frame) + [record]
    return out


def _fill(frame: pd.DataFrame, max_fill_h: int | None) -> pd.DataFrame:
    """Fill empty cells by time-linear interpolation between their neighbours.

    Only interior runs of at most ``max_fill_h`` hours are filled (leading/trailing
    empties and longer runs stay empty, so ``validate`` reports them). Every filled cell
    is counted in the provenance record.
    """
    before = frame.isna()
    if not before.to_numpy().any():
        return frame
    filled = frame.interpolate(method="time", limit_area="inside")
    if max_fill_h is not None:
        # Keep runs longer than max_fill_h empty: label runs and measure their length.
        for col in before.columns[before.any().to_numpy()]:
            na = before[col].to_numpy()
            run_id = np.cumsum(~na)
            run_len = pd.Series(na).groupby(run_id).transform("sum").to_numpy()
            too_long = na & (run_len > max_fill_h)
            if too_long.any():
                values = filled[col].to_numpy(copy=True)
                values[too_long] = np.nan
                filled[col] = values
    done = before & filled.notna()
    per_col = done.sum()
    first = done.any(axis=1)
    record = {
        "step": "fill",
        "method": "interpolate",
        "max_fill_h": max_fill_h,
        "cells_filled": {_column_label(c): int(n) for c, n in per_col.items() if n},
        "first_filled": str(frame.index[first.to_numpy()][0]) if first.any() else None,
    }
    filled.attrs["provenance"] = _provenance(frame) + [record]
    return filled


def _time_indexed(
    df: pd.DataFrame,
    source: str,
    time_column: str | None,
    assume_tz: str | None,
    line_offset: int | None,
) -> tuple[pd.DataFrame, Origin, list[dict[str, Any]]]:
    """``df`` (shallow copy) indexed by UTC times parsed from a column or the index.

    Also returns the provenance notes of what was done to the times (localised,
    converted to UTC).
    """
    origin = Origin(line_offset=line_offset, time_column=time_column or TIME_NAME)
    frame = df.copy(deep=False)
    if time_column is not None:
        if time_column not in frame.columns:
            raise SignalError(
                source,
                f"time column not found; columns are {list(frame.columns)}",
                column=time_column,
            )
        times, note = _parse_times(frame[time_column], source, origin)
        frame = frame.drop(columns=[time_column])
    else:
        # An unnamed index is the file's first column (ENTSO-E exports leave it blank).
        name = frame.index.name
        unnamed = "first column" if line_offset is not None else "index"
        origin = Origin(line_offset, time_column=str(name) if name is not None else unnamed)
        times, note = _parse_times(frame.index, source, origin)
    notes = [note] if note is not None else []
    if times.tz is None and assume_tz is not None:
        times = _localize(times, assume_tz, source, origin)
        notes.append({"step": "localize", "assume_tz": assume_tz})
    if times.tz is not None and str(times.tz) != "UTC":
        notes.append({"step": "tz_convert", "from": str(times.tz), "to": "UTC"})
        times = times.tz_convert("UTC")
    frame.index = times.rename(TIME_NAME)
    return frame, origin, notes


def _site_columns(
    frame: pd.DataFrame,
    source: str,
    site: str | None,
    columns: Mapping[str, str | tuple[str, str]] | None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """Columns as a ``(site, signal)`` MultiIndex, and the raw name of each column."""
    if columns is not None:
        return _mapped_columns(frame, source, site, columns)
    if isinstance(frame.columns, pd.MultiIndex):
        if site is not None:
            raise SignalError(
                source, "site= names the site of flat columns; these already have sites"
            )
        if frame.columns.nlevels != 2:
            raise SignalError(
                source, f"{frame.columns.nlevels}-level columns; expected (site, signal)"
            )
        frame.columns = frame.columns.set_names(COLUMN_LEVELS)
        return frame, {}
    if site is None:
        raise SignalError(
            source, "flat columns need site=... (or a (site, signal) column MultiIndex)"
        )
    keys = [(site, str(c)) for c in frame.columns]
    raw_of = {k: str(c) for k, c in zip(keys, frame.columns, strict=True)}
    frame.columns = pd.MultiIndex.from_tuples(keys, names=COLUMN_LEVELS)
    return frame, raw_of


def _mapped_columns(
    frame: pd.DataFrame,
    source: str,
    site: str | None,
    columns: Mapping[str, str | tuple[str, str]],
) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """Keep the mapped raw columns only, renamed to their ``(site, signal)``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SignalError(
            source,
            f"mapped column not found; columns are {list(frame.columns)}",
            column=missing[0],
        )
    frame = frame.loc[:, list(columns)]
    keys, raw_of = [], {}
    for raw, target in columns.items():
        if isinstance(target, tuple):
            key = (str(target[0]), str(target[1]))
        elif site is not None:
            key = (site, str(target))
        else:
            raise SignalError(
                source, "column mapping to a bare signal name needs site=...", column=raw
            )
        keys.append(key)
        raw_of[key] = str(raw)
    frame.columns = pd.MultiIndex.from_tuples(keys, names=COLUMN_LEVELS)
    return frame, raw_of


def _resample_and_fill(
    frame: pd.DataFrame,
    source: str,
    origin: Origin,
    resample: ResampleMethod | None,
    fill: Literal["interpolate"] | None,
    max_fill_h: int | None,
) -> tuple[pd.DataFrame, Origin]:
    """The explicit opt-ins of ``from_frame``: resample to 1 h, then fill empty cells."""
    if resample is not None:
        if resample not in ("mean", "sum", "interpolate"):
            raise SignalError(source, f"unknown resample method {resample!r}")
        _check_index(frame, source, origin, hourly=False)
        frame = _resample(frame, resample, source, origin, allow_empty=fill is not None)
        frame.index.name = TIME_NAME
        # Rows of the hourly table no longer map to file lines.
        origin = Origin(None, origin.raw_columns, origin.time_column)
    if fill is not None:
        if fill != "interpolate":
            raise SignalError(source, f"unknown fill method {fill!r}")
        # Interpolating across a gap or a jump backwards would invent data: check first.
        _check_index(frame, source, origin, hourly=True)
        frame = _fill(frame, max_fill_h)
    return frame, origin


# --------------------------------------------------------------------------- Signals


@dataclass(frozen=True)
class Signals:
    """Hourly UTC site signals: ``frame[time, (site, signal)]`` in float64.

    Build with ``from_frame``, ``from_csv`` or ``from_parquet`` (they validate); a direct
    ``Signals(frame)`` does not validate until ``validate()`` is called.

    Attributes
    ----------
    frame : pandas.DataFrame
        Index: ``DatetimeIndex`` named ``time``, UTC, hourly, strictly increasing.
        Columns: ``MultiIndex`` with levels ``("site", "signal")``. Values float64 in the
        unit the signal name states.
    source : str
        Where the data came from (file path or ``"<frame>"``), used in error messages.
    origin : Origin
        Row/line and raw-column bookkeeping for error messages (not compared).
    """

    frame: pd.DataFrame
    source: str = "<frame>"
    origin: Origin = field(default_factory=Origin, repr=False, compare=False)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        source: str = "<frame>",
        site: str | None = None,
        columns: Mapping[str, str | tuple[str, str]] | None = None,
        time_column: str | None = None,
        assume_tz: str | None = None,
        resample: ResampleMethod | None = None,
        fill: Literal["interpolate"] | None = None,
        max_fill_h: int | None = None,
        _line_offset: int | None = None,
    ) -> Signals:
        """Build validated signals from a pandas frame.

        Parameters
        ----------
        df : pandas.DataFrame
            Either flat columns (one site; give ``site``) or a 2-level column
            ``MultiIndex`` (site, signal).
        source : str
            Name used in error messages.
        site : str, optional
            Site name for flat columns. Required when the columns are flat.
        columns : mapping, optional
            Raw column -> signal name (or ``(site, signal)``). When given, only the
            mapped raw columns are kept and the others are dropped — that is the point
            of a mapping; without a mapping every column is kept and must be a valid
            signal name. A mapped column that is absent is an error.
        time_column : str, optional
            Column holding the timestamps; otherwise the index is used.
        assume_tz : str, optional
            Zone to localise naive timestamps in (``"UTC"``, ``"Europe/Paris"``);
            without it naive timestamps are an error. Aware timestamps are converted to
            UTC (lossless) and ``assume_tz`` does not apply to them.
        resample : {"mean", "sum", "interpolate"}, optional
            Explicit opt-in to convert a non-hourly step: ``mean`` for rates and powers
            (empty cells excluded from each hour's mean; an hour with no value is an
            error), ``sum`` for per-step quantities (energy, counts), ``interpolate`` to
            upsample coarser data by time-linear interpolation. Without it a
            non-hourly step is an error. What was done is appended to
            ``frame.attrs["provenance"]``.
        fill : {"interpolate"}, optional
            Explicit opt-in to fill empty cells (after resampling, if any) by
            time-linear interpolation between the neighbouring values. Without it an
            empty cell is an error. Missing *rows* (gaps in the time index) are never
            filled. Filled cells are counted per column in the provenance.
        max_fill_h : int, optional
            With ``fill``: the longest run of empty hours to fill; longer runs stay
            empty and are reported by ``validate``.

        Returns
        -------
        Signals
            Validated.

        Raises
        ------
        SignalError
            Naming source, column, row and problem.
        """
        frame, origin, notes = _time_indexed(df, source, time_column, assume_tz, _line_offset)
        frame, raw_of = _site_columns(frame, source, site, columns)
        origin = Origin(origin.line_offset, raw_of, origin.time_column)
        frame = _to_float(frame, source, origin)
        frame.attrs["provenance"] = _provenance(df) + notes
        frame, origin = _resample_and_fill(frame, source, origin, resample, fill, max_fill_h)
        return cls(frame, source, origin).validate()

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        *,
        time_column: str | None = None,
        time_format: TimeFormat = "iso",
        time_origin: str | None = None,
        time_unit: OffsetUnit = "h",
        **kw: Any,
    ) -> Signals:
        """Read a CSV file and build validated signals (``source`` is the path).

        The file has one header line and either a time column (``time_column``) or the
        timestamps in its first column. Rows in errors are 1-based data rows; the line
        number in the file (header = line 1) is given beside them. Other keyword
        arguments go to ``from_frame``.

        Parameters
        ----------
        time_format : {"iso", "epoch_s", "offset"}
            How the timestamps are written: ISO 8601 text with or without a UTC offset
            (naive ones need ``assume_tz``), whole seconds since 1970-01-01T00:00Z (UTC),
            or a whole number of ``time_unit`` counted from ``time_origin``.
        time_origin : str, optional
            ISO timestamp of offset 0; required with ``"offset"`` and only allowed
            there. Without a UTC offset it is local time and needs ``assume_tz``.
        time_unit : {"s", "min", "h"}
            Unit of the offsets.
        """
        path = Path(path)
        try:
            df = pd.read_csv(path, index_col=None if time_column else 0, skip_blank_lines=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
            raise SignalError(str(path), f"cannot read CSV: {err}") from err
        if time_format != "iso" or time_origin is not None:
            # Offsets are elapsed time: a local origin is placed in its zone first.
            zone = kw.get("assume_tz")
            df = _numeric_time_frame(
                df, str(path), time_column, time_format, time_origin, time_unit, zone
            )
        return cls.from_frame(df, source=str(path), time_column=time_column, _line_offset=1, **kw)

    @classmethod
    def from_parquet(cls, path: str | Path, **kw: Any) -> Signals:
        """Read a parquet file (as written by ``to_parquet``) and validate it.

        Keyword arguments go to ``from_frame`` (``site``, ``columns``, ...).
        """
        path = Path(path)
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise SignalError(str(path), f"cannot read parquet: {err}") from err
        return cls.from_frame(df, source=str(path), **kw)

    # ---------------------------------------------------------------- validation

    def validate(self) -> Signals:
        """Check the table; raise ``SignalError`` on the first problem, return self.

        Checks, in order: the index (datetime, UTC, no missing, strictly increasing,
        no duplicates, hourly — gaps, wrong and mixed steps are reported with counts),
        the columns (2-level ``(site, signal)``, unique, known units, float64) and the
        values (finite; nonnegative where the signal's spec says so). Vectorised.
        """
        _check_index(self.frame, self.source, self.origin, hourly=True)
        specs = _check_columns(self.frame, self.source, self.origin)
        _check_values(self.frame, specs, self.source, self.origin)
        return self

    # ---------------------------------------------------------------- access

    @property
    def sites(self) -> tuple[str, ...]:
        """Site names in column order."""
        return tuple(dict.fromkeys(self.frame.columns.get_level_values(0)))

    @property
    def signals(self) -> tuple[str, ...]:
        """Distinct signal names in column order."""
        return tuple(dict.fromkeys(self.frame.columns.get_level_values(1)))

    @property
    def index(self) -> pd.DatetimeIndex:
        """The hourly UTC time index."""
        return self.frame.index

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """What was done to the source data (localisation, resampling, ...)."""
        return _provenance(self.frame)

    def site(self, name: str) -> pd.DataFrame:
        """Signals of one site as a frame with plain signal-name columns."""
        if name not in self.sites:
            raise SignalError(self.source, f"unknown site {name!r}; sites are {self.sites}")
        return self.frame.xs(name, axis=1, level="site")

    def array(self, signals: Sequence[str], sites: Sequence[str] | None = None) -> np.ndarray:
        """Values as a float64 array ``[T, N sites, K signals]`` in the order asked.

        Raises
        ------
        SignalError
            When a (site, signal) column is absent.
        """
        sites = list(self.sites if sites is None else sites)
        signals = list(signals)
        wanted = pd.MultiIndex.from_product([sites, signals], names=COLUMN_LEVELS)
        pos = self.frame.columns.get_indexer(wanted)
        if (pos < 0).any():
            missing = wanted[int(np.flatnonzero(pos < 0)[0])]
            raise SignalError(
                self.source,
                f"no such column ({int((pos < 0).sum())} requested columns absent)",
                column=missing,
            )
        values = self.frame.to_numpy(dtype=np.float64, copy=False)[:, pos]
        return values.reshape(len(self.frame), len(sites), len(signals))

    def between(self, start: Any, end: Any) -> Signals:
        """Rows with ``start <= time < end`` (half-open). Naive bounds are read as UTC."""
        lo, hi = _utc(start), _utc(end)
        idx = self.frame.index
        a, b = idx.searchsorted(lo, side="left"), idx.searchsorted(hi, side="left")
        if b <= a:
            raise SignalError(self.source, f"no rows in [{lo}, {hi})")
        frame = self.frame.iloc[a:b]
        return Signals(frame, self.source, Origin(None, self.origin.raw_columns))

    @classmethod
    def combine(cls, parts: Sequence[Signals]) -> Signals:
        """Join signals that share the same index side by side.

        Raises
        ------
        SignalError
            When indexes differ or a (site, signal) column appears twice.
        """
        parts = list(parts)
        if not parts:
            raise SignalError("<combine>", "nothing to combine")
        first = parts[0]
        seen: dict[tuple[str, str], str] = {}
        for p in parts:
            if not p.index.equals(first.index):
                raise SignalError(
                    p.source,
                    f"index differs from {first.source}: {len(p.index)} rows "
                    f"{p.index[0]}..{p.index[-1]} vs {len(first.index)} rows "
                    f"{first.index[0]}..{first.index[-1]}",
                )
            for col in p.frame.columns:
                if col in seen:
                    raise SignalError(
                        p.source,
                        f"duplicate (site, signal) column, also in {seen[col]}",
                        column=col,
                    )
                seen[col] = p.source
        frame = pd.concat([p.frame for p in parts], axis=1)
        frame.attrs["provenance"] = [
            {
                "step": "combine",
                "parts": [{"source": p.source, "provenance": p.provenance} for p in parts],
            }
        ]
        source = " + ".join(dict.fromkeys(p.source for p in parts))
        return cls(frame, source).validate()

    def to_parquet(self, path: str | Path) -> Path:
        """Write the table to parquet atomically; provenance is kept in the metadata."""
        return write_with(path, lambda tmp: self.frame.to_parquet(tmp))


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _numeric_time_frame(
    df: pd.DataFrame,
    source: str,
    time_column: str | None,
    time_format: str,
    time_origin: str | None,
    time_unit: str,
    zone: str | None = None,
) -> pd.DataFrame:
    """``df`` with its epoch-second or offset time column (or index) turned into datetimes.

    Every value must be a whole number; the first that is not (or is empty) is an error
    naming its row and line. What was done is recorded in the provenance.
    """
    if time_format not in ("epoch_s", "offset"):
        raise SignalError(
            source, f"unknown time_format {time_format!r}: expected 'iso', 'epoch_s' or 'offset'"
        )
    if (time_format == "offset") != (time_origin is not None):
        raise SignalError(
            source,
            "time_format='offset' needs time_origin (the ISO timestamp of offset 0), and "
            "time_origin applies only to it",
        )
    if time_unit not in _OFFSET_UNITS:
        raise SignalError(
            source, f"unknown time_unit {time_unit!r}: expected one of {list(_OFFSET_UNITS)}"
        )
    label = time_column if time_column is not None else str(df.index.name or "first column")
    origin = Origin(line_offset=1, time_column=label)
    raw = df[time_column] if time_column is not None else df.index.to_series()
    numbers = pd.to_numeric(pd.Series(np.asarray(raw, dtype=object)), errors="coerce")
    values = numbers.to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        p = int(bad[0])
        raise _fail(
            source,
            origin,
            f"{_cell_text(raw.iloc[p])} is not a whole number of "
            f"{'seconds since 1970-01-01T00:00Z' if time_format == 'epoch_s' else time_unit} "
            f"({bad.size} such rows)",
            column=label,
            position=p,
        )
    if time_format == "epoch_s":
        times = pd.to_datetime(values.astype(np.int64), unit="s", utc=True)
        record: dict[str, Any] = {"step": "parse_times", "format": "epoch_s"}
    else:
        try:
            start = pd.Timestamp(time_origin)
        except ValueError as err:
            raise SignalError(
                source, f"time_origin {time_origin!r} is not an ISO timestamp ({err})"
            ) from None
        if start.tz is None and zone is not None:
            try:
                start = start.tz_localize(zone, ambiguous="raise", nonexistent="raise")
            except Exception as err:  # unknown zones and DST edges raise several types
                raise SignalError(
                    source, f"time_origin {time_origin!r} cannot be placed in {zone!r}: {err}"
                ) from None
        step_ns = _OFFSET_UNITS[time_unit].value
        times = start + pd.to_timedelta(values.astype(np.int64) * step_ns, unit="ns")
        record = {
            "step": "parse_times",
            "format": "offset",
            "origin": str(start),
            "unit": time_unit,
        }
    out = df.copy(deep=False)
    if time_column is not None:
        out[time_column] = times
    else:
        out.index = pd.DatetimeIndex(times, name=df.index.name)
    out.attrs["provenance"] = _provenance(df) + [record]
    return out


def _cell_text(value: Any) -> str:
    """A cell as the file shows it: text quoted, numbers plain (``1.5``, not ``np.float64``)."""
    return repr(value) if isinstance(value, str) else str(value)
