"""Eight grid regions 2021-2024: carbon, price and weather of one zone (``multiregion_2021_2024``).

The data set (see its README) holds, per zone and calendar year, three files:

- ``carbon/{zone}_{year}.csv.gz``: Electricity Maps' hourly history. ``Datetime (UTC)``
  is naive and, as its name says, UTC (localised explicitly). Kept: direct and
  life-cycle (LCA) intensity, gCO2e/kWh, and ``Data Estimated`` (Electricity Maps
  filled the hour) as ``carbon_estimated_fraction`` (1 estimated, 0 measured).
- ``price/{zone}_{year}.csv.gz``: ``Datetime (UTC)`` (with offset), ``Datetime (Local)``
  and ``Price (USD/MWh)`` (negative prices are real and kept). The local column is
  checked against the zone's civil clock and the mismatches counted.
- ``weather/{zone}_{year}.json.gz``: Open-Meteo hourly reanalysis. Its ``hourly.time``
  labels are local wall-clock times **at one fixed offset for the whole file**: the
  API applies the offset valid on the day of the request (``utc_offset_seconds``) to
  the whole series, with no daylight-saving change (as its maintainers state in
  open-meteo/open-meteo issues 261 and 1255), so the labels never jump at a DST
  change; the stated offsets are the zones' summer offsets for the US and AU-VIC and
  the winter one for DE-LU. Labels are converted to UTC with that offset (or
  ``utc_offset_h`` when given), which is checked twice: it must be one of the zone's
  civil offsets in the file's hours, and the first harmonic of the mean diurnal
  temperature cycle must peak ``offset_check_lag_h`` hours after solar noon (2.0-3.0 h
  in all 32 files with their stated offsets). The second check catches labels at an
  offset other than the stated one by two hours or more (UTC labels, a wrong zone);
  it cannot tell a zone's two civil offsets apart. Per file the report gives the DST
  change days of the zone and how many hours' labels differ from the zone's civil
  clock (hours a reading as civil local time would have put an hour off).

Each file is read as it is delivered: ``.csv.gz`` / ``.json.gz`` or the uncompressed
``.csv`` / ``.json``. Years are joined and checked for continuity (a gap between files
is an error); nothing is filled unless asked (``resample``, ``fill``, ``edge_fill``),
and every step is recorded in the provenance.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from gridrl.data.datasets import dataset_dir
from gridrl.data.loaders._common import require_columns, row_error
from gridrl.data.signals import SignalError, Signals

__all__ = [
    "MULTIREGION_DATASET",
    "ZONE_TIMEZONES",
    "ZoneWeather",
    "load_multiregion_carbon",
    "load_multiregion_price",
    "load_multiregion_weather",
    "multiregion_files",
]

MULTIREGION_DATASET = "multiregion_2021_2024"
# IANA zone of each grid zone's civil clock (the weather files name the same zones).
ZONE_TIMEZONES: dict[str, str] = {
    "US-CAL-CISO": "America/Los_Angeles",
    "US-TEX-ERCO": "America/Chicago",
    "US-MIDA-PJM": "America/New_York",
    "US-NY-NYIS": "America/New_York",
    "DE-LU": "Europe/Berlin",
    "CA-ON": "America/Toronto",
    "SG": "Asia/Singapore",
    "AU-VIC": "Australia/Melbourne",
}
Kind = Literal["carbon", "price", "weather"]
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "carbon": (".csv.gz", ".csv"),
    "price": (".csv.gz", ".csv"),
    "weather": (".json.gz", ".json"),
}
UTC_COLUMN = "Datetime (UTC)"
LOCAL_COLUMN = "Datetime (Local)"
CARBON_COLUMNS = {
    "Carbon Intensity gCO₂eq/kWh (direct)": "carbon_direct_g_per_kwh",
    "Carbon Intensity gCO₂eq/kWh (LCA)": "carbon_lca_g_per_kwh",
    "Data Estimated": "carbon_estimated_fraction",
}
PRICE_COLUMN = "Price (USD/MWh)"
# Open-Meteo hourly variable -> (expected unit, gridrl signal, factor to gridrl unit).
KMH_TO_M_PER_S = 1.0 / 3.6
WEATHER_VARIABLES: dict[str, tuple[str, str, float]] = {
    "temperature_2m": ("°C", "temp_c", 1.0),
    "relative_humidity_2m": ("%", "relative_humidity_pct", 1.0),
    "cloudcover": ("%", "cloud_cover_pct", 1.0),
    "windspeed_10m": ("km/h", "wind_speed_m_per_s", KMH_TO_M_PER_S),
}
HOURS_PER_DAY = 24
SOLAR_NOON_UTC_H = 12.0  # at longitude 0, ignoring the equation of time (mean over a year)
DEG_PER_HOUR = 15.0
HOUR = pd.Timedelta(hours=1)
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class LoadOptions:
    """The explicit opt-ins passed to ``Signals.from_frame`` for every file."""

    resample: Literal["mean", "sum", "interpolate"] | None = None
    fill: Literal["interpolate"] | None = None
    max_fill_h: int | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"resample": self.resample, "fill": self.fill, "max_fill_h": self.max_fill_h}


# --------------------------------------------------------------------------- files


def _check_zone(zone: str) -> str:
    if zone not in ZONE_TIMEZONES:
        raise SignalError(
            MULTIREGION_DATASET, f"unknown zone {zone!r}; zones: {', '.join(ZONE_TIMEZONES)}"
        )
    return ZONE_TIMEZONES[zone]


def year_list(years: tuple[int, int]) -> list[int]:
    """``(first, last)`` -> every year from first to last inclusive."""
    first, last = int(years[0]), int(years[1])
    if first > last:
        raise SignalError(MULTIREGION_DATASET, f"years {years}: expected first <= last")
    return list(range(first, last + 1))


def zone_file(kind: Kind, zone: str, year: int, root: Path | None = None) -> Path:
    """The file of one zone and year: compressed as published, or uncompressed.

    Raises
    ------
    SignalError
        When neither form exists; the message names the paths looked for.
    DataNotFoundError
        When the data set itself is not found (``gridrl.data.datasets``).
    """
    _check_zone(zone)
    folder = (root if root is not None else dataset_dir(MULTIREGION_DATASET)) / kind
    tried = [folder / f"{zone}_{year}{ext}" for ext in _EXTENSIONS[kind]]
    for path in tried:
        if path.is_file():
            return path
    raise SignalError(
        str(folder), f"no {kind} file for {zone} {year}: looked for {[p.name for p in tried]}"
    )


def multiregion_files(
    kind: Kind, zone: str, years: tuple[int, int], root: Path | None = None
) -> list[Path]:
    """The files of ``kind`` for ``zone`` over ``years`` (first, last), in year order."""
    return [zone_file(kind, zone, y, root) for y in year_list(years)]


def _read_json(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise SignalError(str(path), f"cannot read JSON: {err}") from err
    if not isinstance(data, dict):
        raise SignalError(str(path), "expected a JSON object at the top level")
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # round_trip: each number is the float nearest its text (the fast parser may not be).
        return pd.read_csv(path, float_precision="round_trip")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise SignalError(str(path), f"cannot read CSV: {err}") from err


def _utc_times(raw: pd.Series, path: Path, fmt: str) -> pd.DatetimeIndex:
    """Parse a UTC time column with its published format (fast), else as ISO 8601.

    Naive values are UTC by the column's name. A cell that is neither names its row.
    """
    parsed = pd.to_datetime(raw, format=fmt, errors="coerce", utc=True)
    if parsed.isna().any():  # another spelling of the same instants ("T", "Z")
        parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        raise row_error(path, raw.name, bad,
                        f"timestamp {raw.iloc[bad[0]]!r} is neither {fmt} nor ISO 8601")
    return pd.DatetimeIndex(parsed, name=raw.name)


def _cache_key(years: tuple[int, int], root: str | Path | None) -> tuple[tuple[int, int], str]:
    """Hashable ``(years, root)`` of a cached load: whole years, the data set by default."""
    base = Path(root) if root is not None else dataset_dir(MULTIREGION_DATASET)
    return (int(years[0]), int(years[1])), str(base)


def _record_head(
    step: str, zone: str, years: tuple[int, int], paths: list[Path], options: LoadOptions
) -> dict[str, Any]:
    """The provenance fields every per-zone CSV load records first."""
    return {"step": step, "options": options.kwargs(), "zone": zone, "years": list(years),
            "files": [str(p) for p in paths]}


def _join_years(parts: list[Signals], paths: list[Path], record: dict[str, Any]) -> Signals:
    """Concatenate per-year signals along time and check the joined index is hourly."""
    frame = pd.concat([p.frame for p in parts], axis=0)
    frame.attrs["provenance"] = [record]
    names = paths[0].name if len(paths) == 1 else f"{paths[0].name} .. {paths[-1].name}"
    return Signals(frame, f"{paths[0].parent}/{names}").validate()


def _trim(signals: Signals, years: tuple[int, int], what: str) -> Signals:
    """Rows inside the calendar years (UTC); every hour of them must be present."""
    first, last = year_list(years)[0], year_list(years)[-1]
    index = pd.date_range(
        pd.Timestamp(f"{first}-01-01", tz="UTC"),
        pd.Timestamp(f"{last + 1}-01-01", tz="UTC"),
        freq=HOUR,
        inclusive="left",
        name="time",
    )
    present = index.isin(signals.frame.index)
    if not present.all():
        missing = index[~present]
        raise SignalError(
            signals.source,
            f"{missing.size} hours of {first}-{last} missing from the {what} files "
            f"(first {missing[0]}; files cover {signals.index[0]}..{signals.index[-1]})",
        )
    frame = signals.frame.loc[index]
    frame.attrs["provenance"] = signals.provenance
    return Signals(frame, signals.source)


# --------------------------------------------------------------------------- carbon


def _estimated_flag(raw: pd.Series, path: Path) -> np.ndarray:
    """``Data Estimated`` as 1.0 / 0.0; anything but true/false is an error naming its row."""
    text = raw.astype("string").str.strip().str.lower()
    flag = text.map({"true": 1.0, "false": 0.0}).astype("Float64")
    bad = np.flatnonzero(flag.isna().to_numpy())
    if bad.size:
        raise row_error(path, "Data Estimated", bad,
                        f"{raw.iloc[bad[0]]!r} where true or false was expected")
    return flag.to_numpy(dtype=np.float64)


def _carbon_file(path: Path, zone: str, options: LoadOptions) -> Signals:
    df = _read_csv(path)
    require_columns(df, (UTC_COLUMN, *CARBON_COLUMNS), path)
    # The column is named "Datetime (UTC)"; its values carry no zone: read as UTC.
    times = _utc_times(df[UTC_COLUMN], path, "%Y-%m-%d %H:%M:%S")
    frame = df.loc[:, list(CARBON_COLUMNS)].set_axis(times, axis=0)
    frame["Data Estimated"] = _estimated_flag(frame["Data Estimated"], path)
    return Signals.from_frame(
        frame, source=str(path), site=zone, columns=CARBON_COLUMNS, _line_offset=1,
        **options.kwargs(),
    )


@functools.lru_cache(maxsize=32)
def _carbon_cached(zone: str, years: tuple[int, int], root: str, options: LoadOptions) -> Signals:
    paths = multiregion_files("carbon", zone, years, Path(root))
    parts = [_carbon_file(p, zone, options) for p in paths]
    estimated = pd.concat([p.frame[(zone, "carbon_estimated_fraction")] for p in parts])
    record = {
        **_record_head("multiregion_carbon", zone, years, paths, options),
        "time": "Datetime (UTC): naive values read as UTC",
        "estimated_hours": int(estimated.sum()),
        "estimated_share": float(estimated.mean()),
        "files_provenance": [p.provenance for p in parts],
    }
    return _trim(_join_years(parts, paths, record), years, "carbon")


def load_multiregion_carbon(
    zone: str,
    years: tuple[int, int],
    *,
    root: str | Path | None = None,
    resample: Literal["mean", "sum", "interpolate"] | None = None,
    fill: Literal["interpolate"] | None = None,
    max_fill_h: int | None = None,
) -> Signals:
    """Hourly carbon intensity of ``zone`` over ``years`` (first, last), UTC.

    Returns
    -------
    Signals
        Site ``zone``; ``carbon_direct_g_per_kwh``, ``carbon_lca_g_per_kwh``
        (gCO2e/kWh) and ``carbon_estimated_fraction`` (1 where Electricity Maps
        estimated the hour). Provenance: files read, estimated hours and share.

    Raises
    ------
    SignalError
        Missing file or column, bad value, gap or duplicate (naming file, column, row).
    """
    return _carbon_cached(zone, *_cache_key(years, root), LoadOptions(resample, fill, max_fill_h))


# --------------------------------------------------------------------------- price


def civil_offsets_s(index: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """UTC offset of the zone's civil clock at each UTC hour, seconds."""
    local = index.tz_convert(tz).tz_localize(None)
    return (local - index.tz_localize(None)).total_seconds().to_numpy()


def _local_mismatches(df: pd.DataFrame, utc: pd.DatetimeIndex, tz: str) -> int:
    """Rows whose ``Datetime (Local)`` is not the UTC time on the zone's civil clock."""
    if LOCAL_COLUMN not in df.columns:
        return 0
    local = df[LOCAL_COLUMN].astype("string").str.slice(0, 19)  # the wall clock part
    wall = pd.to_datetime(local, errors="coerce", format="%Y-%m-%d %H:%M:%S").to_numpy()
    return int((wall != utc.tz_convert(tz).tz_localize(None).to_numpy()).sum())


def _price_file(path: Path, zone: str, options: LoadOptions) -> tuple[Signals, int]:
    df = _read_csv(path)
    require_columns(df, (UTC_COLUMN, PRICE_COLUMN), path)
    times = _utc_times(df[UTC_COLUMN], path, "%Y-%m-%d %H:%M:%S%z")
    frame = df.loc[:, [PRICE_COLUMN]].set_axis(times, axis=0)
    signals = Signals.from_frame(
        frame, source=str(path), site=zone, columns={PRICE_COLUMN: "price_per_mwh"},
        _line_offset=1, **options.kwargs(),
    )
    return signals, _local_mismatches(df, times, ZONE_TIMEZONES[zone])


@functools.lru_cache(maxsize=32)
def _price_cached(zone: str, years: tuple[int, int], root: str, options: LoadOptions) -> Signals:
    paths = multiregion_files("price", zone, years, Path(root))
    parts, mismatches = zip(*(_price_file(p, zone, options) for p in paths), strict=True)
    prices = pd.concat([p.frame[(zone, "price_per_mwh")] for p in parts])
    record = {
        **_record_head("multiregion_price", zone, years, paths, options),
        "unit": "USD/MWh",
        "negative_hours": int((prices < 0).sum()),
        "local_time_mismatches": int(sum(mismatches)),
        "files_provenance": [p.provenance for p in parts],
    }
    return _trim(_join_years(list(parts), paths, record), years, "price")


def load_multiregion_price(
    zone: str,
    years: tuple[int, int],
    *,
    root: str | Path | None = None,
    resample: Literal["mean", "sum", "interpolate"] | None = None,
    fill: Literal["interpolate"] | None = None,
    max_fill_h: int | None = None,
) -> Signals:
    """Hourly market price of ``zone`` over ``years``, UTC, ``price_per_mwh`` in USD/MWh.

    Negative prices are kept. The provenance counts negative hours and rows whose
    local timestamp disagrees with the zone's civil clock (the UTC column is used).
    """
    return _price_cached(zone, *_cache_key(years, root), LoadOptions(resample, fill, max_fill_h))


# --------------------------------------------------------------------------- weather


@dataclass(frozen=True)
class ZoneWeather:
    """Open-Meteo weather of a zone in UTC, with the point it was taken at.

    Attributes
    ----------
    signals : Signals
        Site ``zone``: ``temp_c``, ``relative_humidity_pct``, ``cloud_cover_pct``,
        ``wind_speed_m_per_s`` (at 10 m), every hour of the years in UTC.
    latitude_deg, longitude_deg, elevation_m : float
        The grid point of the files.
    timezone : str
        IANA zone of the zone's civil clock.
    standard_offset_h : float
        The zone's standard time (no DST) minus UTC, hours.
    report : dict
        Per file: offset used, its check, DST days and hours off the civil clock; edge
        hours filled and trimmed (also the last provenance record of ``signals``).
    """

    signals: Signals
    latitude_deg: float
    longitude_deg: float
    elevation_m: float
    timezone: str
    standard_offset_h: float
    report: dict[str, Any] = field(default_factory=dict)


def diurnal_peak_lag_h(temp_c: np.ndarray, index: pd.DatetimeIndex, longitude_deg: float) -> float:
    """Hours from mean solar noon to the peak of the mean diurnal temperature cycle.

    The peak is that of the first harmonic of the mean temperature by UTC hour (robust
    to a flat top); solar noon is ``12 h - longitude / 15`` UTC (the equation of time
    averages out over a year). In (-12, 12].
    """
    hour = index.hour.to_numpy()
    mean = np.bincount(hour, weights=temp_c, minlength=HOURS_PER_DAY) / np.bincount(
        hour, minlength=HOURS_PER_DAY
    )
    phase = np.angle(np.sum(mean * np.exp(-2j * np.pi * np.arange(HOURS_PER_DAY) / HOURS_PER_DAY)))
    peak_utc_h = (-phase * HOURS_PER_DAY / (2 * np.pi)) % HOURS_PER_DAY
    noon_utc_h = SOLAR_NOON_UTC_H - longitude_deg / DEG_PER_HOUR
    lag = (peak_utc_h - noon_utc_h) % HOURS_PER_DAY
    return float(lag - HOURS_PER_DAY if lag > HOURS_PER_DAY / 2 else lag)


def dst_report(index: pd.DatetimeIndex, tz: str, offset_s: float) -> dict[str, Any]:
    """DST change days of ``tz`` inside ``index`` and hours whose fixed-offset label differs
    from the civil clock (each such label would be an hour off if read as civil time)."""
    civil = civil_offsets_s(index, tz)
    changes = np.flatnonzero(np.diff(civil) != 0) + 1
    days = [str(index[i].tz_convert(tz).date()) for i in changes]
    return {"dst_change_days": days, "hours_off_civil_clock": int(np.sum(civil != offset_s))}


def _weather_frame(data: dict[str, Any], path: Path) -> pd.DataFrame:
    """The hourly arrays of an Open-Meteo file in gridrl units, labels still naive local."""
    hourly, units = data.get("hourly"), data.get("hourly_units", {})
    if not isinstance(hourly, dict) or "time" not in hourly:
        raise SignalError(str(path), "no hourly.time in the file", column="hourly.time")
    columns = {"time": hourly["time"]}
    for var, (unit, name, factor) in WEATHER_VARIABLES.items():
        if var not in hourly:
            raise SignalError(str(path), f"variable not found; hourly has {list(hourly)}",
                              column=f"hourly.{var}")
        if units.get(var) != unit:
            raise SignalError(str(path), f"unit {units.get(var)!r} where {unit!r} was expected",
                              column=f"hourly_units.{var}")
        if len(hourly[var]) != len(hourly["time"]):
            raise SignalError(str(path), f"{len(hourly[var])} values for {len(hourly['time'])} "
                              "times", column=f"hourly.{var}")
        columns[name] = pd.to_numeric(pd.Series(hourly[var], dtype=object)) * factor
    return pd.DataFrame(columns)


def _file_offset_s(data: dict[str, Any], path: Path, utc_offset_h: float | None) -> float:
    if utc_offset_h is not None:
        return float(utc_offset_h) * SECONDS_PER_HOUR
    if "utc_offset_seconds" not in data:
        raise SignalError(str(path), "no utc_offset_seconds: give utc_offset_h explicitly",
                          column="utc_offset_seconds")
    return float(data["utc_offset_seconds"])


def _labels_at_offset(raw: pd.Series, path: Path, offset_s: float) -> pd.DatetimeIndex:
    """The file's naive local labels at one fixed UTC offset; a bad label names its row."""
    labels = pd.to_datetime(raw, format="%Y-%m-%dT%H:%M", errors="coerce")
    bad = np.flatnonzero(labels.isna().to_numpy())
    if bad.size:
        r = int(bad[0])
        raise SignalError(str(path), f"time {raw.iloc[r]!r} is not YYYY-MM-DDTHH:MM "
                          f"({bad.size} such labels)", column="hourly.time", row=r + 1)
    return pd.DatetimeIndex(labels).tz_localize(dt.timezone(dt.timedelta(seconds=offset_s)))


def _check_offset(
    signals: Signals, zone: str, offset_s: float, longitude_deg: float,
    lag_window_h: tuple[float, float],
) -> dict[str, Any]:
    """Reject an offset the data contradict; the check record of the file.

    Two checks: the offset is one of the zone's civil offsets in the file's hours (the
    API applies the one valid on the day of the request), and the diurnal temperature
    peak lags solar noon by ``lag_window_h`` (tells apart offsets 2 h or more apart).
    """
    tz, source = ZONE_TIMEZONES[zone], signals.source
    civil = set(civil_offsets_s(signals.index, tz).tolist())
    if offset_s not in civil:
        raise SignalError(source, f"UTC offset {offset_s / SECONDS_PER_HOUR:+g} h is none of "
                          f"{zone}'s civil offsets {sorted(c / SECONDS_PER_HOUR for c in civil)}"
                          "; set utc_offset_h to the one the file uses")
    lag = diurnal_peak_lag_h(
        signals.frame[(zone, "temp_c")].to_numpy(), signals.index, longitude_deg
    )
    lo, hi = lag_window_h
    if not lo < lag < hi:
        raise SignalError(
            source,
            f"labels read at UTC{offset_s / SECONDS_PER_HOUR:+g} h put the diurnal "
            f"temperature peak {lag:+.2f} h after solar noon, outside ({lo:g}, {hi:g}) h: "
            "the offset is wrong; set utc_offset_h to the one the file uses",
        )
    return {"file": source, "utc_offset_h": offset_s / SECONDS_PER_HOUR,
            "temperature_peak_after_solar_noon_h": round(lag, 2),
            **dst_report(signals.index, tz, offset_s)}


def _weather_file(
    path: Path, zone: str, utc_offset_h: float | None, lag_window_h: tuple[float, float],
    options: LoadOptions,
) -> tuple[Signals, dict[str, Any], dict[str, Any]]:
    """One file in UTC, its check record, and its JSON metadata."""
    data = _read_json(path)
    tz = ZONE_TIMEZONES[zone]
    if data.get("timezone", tz) != tz:
        raise SignalError(str(path), f"timezone {data.get('timezone')!r} where {tz!r} "
                          f"was expected for {zone}", column="timezone")
    offset_s = _file_offset_s(data, path, utc_offset_h)
    df = _weather_frame(data, path)
    df.index = _labels_at_offset(df.pop("time"), path, offset_s)
    signals = Signals.from_frame(df, source=str(path), site=zone, **options.kwargs())
    check = _check_offset(signals, zone, offset_s, float(data["longitude"]), lag_window_h)
    return signals, check, data


def _edges(
    signals: Signals, years: tuple[int, int], edge_fill: str
) -> tuple[pd.DataFrame, int, int]:
    """The joined weather on every UTC hour of ``years``; the hours filled and trimmed."""
    ys = year_list(years)
    index = pd.date_range(pd.Timestamp(f"{ys[0]}-01-01", tz="UTC"),
                          pd.Timestamp(f"{ys[-1] + 1}-01-01", tz="UTC"),
                          freq=HOUR, inclusive="left", name="time")
    frame = signals.frame
    trimmed = int((~frame.index.isin(index)).sum())
    out = frame.reindex(index)
    missing = ~index.isin(frame.index)
    if missing.any() and edge_fill == "none":
        raise SignalError(
            signals.source,
            f"{int(missing.sum())} hours of {ys[0]}-{ys[-1]} (UTC) are outside the "
            f"files' fixed-offset labels (first {index[missing][0]}); set edge_fill: "
            "adjacent_day to take the same hour of the nearest covered day",
        )
    day = pd.Timedelta(days=1)
    for t in index[missing]:
        step = day if t < frame.index[0] else -day
        source_t = t
        while source_t not in frame.index:
            source_t += step
        out.loc[t] = frame.loc[source_t].to_numpy()
    out.attrs = {}
    return out, int(missing.sum()), trimmed


def standard_offset_h(tz: str, year: int) -> float:
    """Standard time (no DST) minus UTC of ``tz`` in ``year``, hours."""
    moment = dt.datetime(year, 1, 1, tzinfo=ZoneInfo(tz))
    offset = moment.utcoffset() - (moment.dst() or dt.timedelta(0))
    return offset.total_seconds() / SECONDS_PER_HOUR


@functools.lru_cache(maxsize=32)
def _weather_cached(
    zone: str, years: tuple[int, int], root: str, utc_offset_h: float | None,
    lag_window_h: tuple[float, float], edge_fill: str, options: LoadOptions,
) -> ZoneWeather:
    paths = multiregion_files("weather", zone, years, Path(root))
    results = [_weather_file(p, zone, utc_offset_h, lag_window_h, options) for p in paths]
    parts, checks, meta = [r[0] for r in results], [r[1] for r in results], results[0][2]
    joined = _join_years(parts, paths, {"step": "join_years"})
    frame, filled, trimmed = _edges(joined, years, edge_fill)
    report = {
        "step": "multiregion_weather", "zone": zone, "years": list(years),
        "options": {**options.kwargs(), "utc_offset_h": utc_offset_h,
                    "offset_check_lag_h": list(lag_window_h), "edge_fill": edge_fill},
        "labels": "local wall clock at one fixed UTC offset per file, converted to UTC",
        "files": checks, "edge_fill": edge_fill, "edge_hours_filled": filled,
        "hours_trimmed": trimmed,
        "dst_hours_fixed": int(sum(c["hours_off_civil_clock"] for c in checks)),
        "files_provenance": [p.provenance for p in parts],
    }
    frame.attrs["provenance"] = [report]
    tz = ZONE_TIMEZONES[zone]
    return ZoneWeather(
        signals=Signals(frame, joined.source).validate(),
        latitude_deg=float(meta["latitude"]),
        longitude_deg=float(meta["longitude"]),
        elevation_m=float(meta.get("elevation", 0.0)),
        timezone=tz,
        standard_offset_h=standard_offset_h(tz, int(years[0])),
        report=report,
    )


def load_multiregion_weather(
    zone: str,
    years: tuple[int, int],
    *,
    root: str | Path | None = None,
    utc_offset_h: float | None = None,
    offset_check_lag_h: tuple[float, float] = (1.0, 4.0),
    edge_fill: Literal["none", "adjacent_day"] = "none",
    resample: Literal["mean", "sum", "interpolate"] | None = None,
    fill: Literal["interpolate"] | None = None,
    max_fill_h: int | None = None,
) -> ZoneWeather:
    """Open-Meteo weather of ``zone`` over ``years`` (first, last) in UTC (module notes).

    Parameters
    ----------
    utc_offset_h : float, optional
        Offset of the file labels; default each file's ``utc_offset_seconds``.
    offset_check_lag_h : (float, float)
        Open interval the temperature peak must lag solar noon by; outside it the
        offset is rejected.
    edge_fill : {"none", "adjacent_day"}
        The labels of a year at offset ``+k`` h cover UTC from ``-k`` h: the first or
        last ``|k|`` hours of the range are in no file. ``none`` makes that an error;
        ``adjacent_day`` copies the same hour of the nearest covered day.
    resample, fill, max_fill_h
        Passed to ``Signals.from_frame`` for each file.

    Raises
    ------
    SignalError
        Missing file, variable or unit, bad value, gap, wrong timezone, an offset the
        temperature check rejects, or uncovered edge hours with ``edge_fill: none``.
    """
    return _weather_cached(
        zone, *_cache_key(years, root),
        None if utc_offset_h is None else float(utc_offset_h),
        (float(offset_check_lag_h[0]), float(offset_check_lag_h[1])), edge_fill,
        LoadOptions(resample, fill, max_fill_h),
    )
