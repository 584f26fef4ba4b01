"""Weather from pvlib's bundled typical-meteorological-year (TMY) files.

pvlib ships three real TMY files in its ``data`` directory: ``723170TYA.CSV``
(Greensboro NC, TMY3), ``703165TY.csv`` (Sand Point AK, TMY3) and ``12839.tm2`` (Miami
FL, TMY2). They are read through ``pvlib.iotools.read_tmy3`` / ``read_tmy2``.

Time conventions (explicit, because TMY files are easy to misread):

- A TMY row holds the average (irradiance) or the spot value (temperature, wind) of one
  hour of a *typical* year, in **local standard time** (no daylight saving), with the
  hour labelled by its **end** in the file (``01:00`` is 00:00-01:00). Months come from
  different calendar years; the file has exactly 8760 rows (no 29 February).
- gridrl labels every hour by its **start**, in **UTC**: the value at ``t`` covers
  ``[t, t + 1 h)``. ``read_tmy3`` keeps the end label (we subtract one hour);
  ``read_tmy2`` already subtracts one hour (start label).
- Mapping onto the scenario ``year``: for each UTC hour ``t`` of the year we take the
  local standard time ``t + TZ`` and look up the TMY row with the same month, day and
  hour. The TMY year is treated as **cyclic**: for a site at UTC-5 the first five UTC
  hours of 1 January are still 31 December locally, so they take the TMY's
  31 December 19:00-23:00 rows (a roll of ``TZ`` hours across the year boundary); the
  TMY's 1 January 00:00-04:00 local hours fall on UTC 1 January 05:00-09:00. The
  result is exactly the hours of ``year`` in UTC, no gap, no duplicate. In a leap
  year, 29 February (local) repeats the TMY's 28 February.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.signals import SignalError
from gridrl.data.sources.site_weather import WEATHER_COLUMNS, SiteWeather
from gridrl.scenario import WeatherSource

HOURS_PER_TMY_YEAR = 8760
MBAR_TO_PA = 100.0
TMY2_TENTHS = 0.1  # TMY2 stores temperature and wind speed in tenths of their unit
# Cumulative days before each month in a non-leap year (TMY years have 365 days).
_DAYS_BEFORE_MONTH = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30])

_NONNEGATIVE = ("ghi_w_per_m2", "dni_w_per_m2", "dhi_w_per_m2", "wind_speed_m_per_s", "pressure_pa")


def year_index(year: int) -> pd.DatetimeIndex:
    """All hours of ``year`` in UTC (8760 or 8784), start labels, named ``time``."""
    start = pd.Timestamp(year=year, month=1, day=1, tz="UTC")
    end = pd.Timestamp(year=year + 1, month=1, day=1, tz="UTC")
    return pd.date_range(start, end, freq="h", inclusive="left", name="time")


def pvlib_data_dir() -> Path:
    """The ``data`` directory inside the installed pvlib package."""
    import pvlib

    return Path(pvlib.__path__[0]) / "data"


def tmy_path(file: str) -> Path:
    """Resolve a TMY file name: an existing path, else a file in pvlib's data directory.

    Raises
    ------
    SignalError
        When neither exists; the message lists the bundled files.
    """
    path = Path(file).expanduser()
    if path.is_file():
        return path
    bundled = pvlib_data_dir() / file
    if bundled.is_file():
        return bundled
    available = sorted(
        p.name
        for p in pvlib_data_dir().iterdir()
        if p.suffix.lower() in (".csv", ".tm2") and ("TY" in p.name or p.suffix.lower() == ".tm2")
    )
    raise SignalError(
        str(file),
        f"TMY file not found as a path nor in pvlib's data directory "
        f"({pvlib_data_dir()}); bundled TMY files: {available}",
    )


def local_standard_time(index: pd.DatetimeIndex, tz_offset_h: float) -> pd.DatetimeIndex:
    """Naive local standard time (no daylight saving) of a UTC index."""
    return index.tz_convert(None) + pd.to_timedelta(tz_offset_h, unit="h")


def _tmy_positions(local_start: pd.DatetimeIndex) -> np.ndarray:
    """Hour of the (non-leap, cyclic) TMY year, 0..8759, from month/day/hour.

    29 February maps onto 28 February.
    """
    month = local_start.month.to_numpy()
    day = local_start.day.to_numpy()
    day = np.where((month == 2) & (day == 29), 28, day)
    doy0 = _DAYS_BEFORE_MONTH[month - 1] + day - 1
    return doy0 * 24 + local_start.hour.to_numpy()


@functools.lru_cache(maxsize=16)
def _read_tmy(path_str: str) -> tuple[pd.DataFrame, dict]:
    """Read a TMY2/TMY3 file into 8760 rows in local-standard-time order.

    Returns a frame with ``WEATHER_COLUMNS`` (gridrl units) indexed 0..8759 by the hour
    of the typical year (start label), and the metadata dict of pvlib.
    """
    import pvlib.iotools

    path = Path(path_str)
    is_tmy2 = path.suffix.lower() == ".tm2"
    try:
        if is_tmy2:
            raw, meta = pvlib.iotools.read_tmy2(str(path))
            header_lines = 1
            # read_tmy2 labels rows by hour start already (file hour - 1).
            start = raw.index.tz_localize(None)
            data = {
                "ghi_w_per_m2": ("GHI", raw["GHI"]),
                "dni_w_per_m2": ("DNI", raw["DNI"]),
                "dhi_w_per_m2": ("DHI", raw["DHI"]),
                "temp_c": ("DryBulb", raw["DryBulb"] * TMY2_TENTHS),
                "wind_speed_m_per_s": ("Wspd", raw["Wspd"] * TMY2_TENTHS),
                "pressure_pa": ("Pressure", raw["Pressure"] * MBAR_TO_PA),
            }
        else:
            raw, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
            header_lines = 2
            # read_tmy3 keeps the file's end-of-hour labels: shift to hour start.
            start = raw.index.tz_localize(None) - pd.Timedelta(hours=1)
            data = {
                "ghi_w_per_m2": ("GHI (W/m^2)", raw["ghi"]),
                "dni_w_per_m2": ("DNI (W/m^2)", raw["dni"]),
                "dhi_w_per_m2": ("DHI (W/m^2)", raw["dhi"]),
                "temp_c": ("Dry-bulb (C)", raw["temp_air"]),
                "wind_speed_m_per_s": ("Wspd (m/s)", raw["wind_speed"]),
                "pressure_pa": ("Pressure (mbar)", raw["pressure"] * MBAR_TO_PA),
            }
    except (OSError, ValueError, KeyError) as err:
        raise SignalError(str(path), f"cannot read TMY file: {err}") from err

    n = len(raw)
    if n != HOURS_PER_TMY_YEAR:
        raise SignalError(str(path), f"{n} data rows where {HOURS_PER_TMY_YEAR} were expected")
    pos = _tmy_positions(pd.DatetimeIndex(start))
    _, first = np.unique(pos, return_index=True)
    if first.size != n:
        r = int(np.setdiff1d(np.arange(n), first)[0])
        raise SignalError(
            str(path),
            f"hour {start[r]:%m-%d %H:00} appears more than once",
            column="date/time",
            row=r + 1,
            line=r + 1 + header_lines,
        )
    values = {}
    for name, (raw_col, series) in data.items():
        v = series.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if name in _NONNEGATIVE:
            bad |= v < 0
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise SignalError(
                str(path),
                f"value {v[r]} is not a finite{' non-negative' if name in _NONNEGATIVE else ''} "
                f"number ({int(bad.sum())} bad rows)",
                column=raw_col,
                row=r + 1,
                line=r + 1 + header_lines,
                timestamp=start[r],
            )
        out = np.empty(HOURS_PER_TMY_YEAR)
        out[pos] = v
        values[name] = out
    frame = pd.DataFrame(values, columns=list(WEATHER_COLUMNS))
    frame.index.name = "tmy_hour"
    return frame, dict(meta)


@functools.lru_cache(maxsize=16)
def _load_weather_cached(path_str: str, year: int) -> SiteWeather:
    tmy, meta = _read_tmy(path_str)
    index = year_index(year)
    tz = float(meta["TZ"])
    rows = _tmy_positions(local_standard_time(index, tz))
    frame = pd.DataFrame(tmy.to_numpy()[rows], index=index, columns=tmy.columns)
    station = str(meta.get("Name") or meta.get("City") or Path(path_str).stem).strip('"')
    return SiteWeather(
        frame=frame,
        latitude_deg=float(meta["latitude"]),
        longitude_deg=float(meta["longitude"]),
        altitude_m=float(meta["altitude"]),
        tz_offset_h=tz,
        station=station,
        source=path_str,
    )


def load_weather(source: WeatherSource, year: int) -> SiteWeather:
    """Hourly weather of a site for ``year`` in UTC (see the module notes on time).

    Parameters
    ----------
    source : WeatherSource
        ``source: pvlib_tmy`` with ``file`` a bundled TMY name (``723170TYA.CSV``,
        ``703165TY.csv``, ``12839.tm2``) or a path to a TMY2/TMY3 file; or
        ``source: multiregion`` (``sources.multiregion``; ``year`` inside its years).
    year : int
        Calendar year to map the typical year onto.

    Returns
    -------
    SiteWeather
        Cached per (file, year): sites sharing a file share the frame.

    Raises
    ------
    SignalError
        File missing or unreadable, wrong row count, repeated hours, non-finite or
        negative values (naming file, column, row and line).
    NotImplementedError
        For ``source: csv``, which the embedded sources do not read.
    """
    if source.source == "multiregion":  # real hourly weather of that calendar year
        from gridrl.data.sources.multiregion import multiregion_site_weather

        return multiregion_site_weather(source, year_index(int(year)))[0]
    if source.source != "pvlib_tmy":
        raise NotImplementedError(
            f"weather source {source.source!r} ({source.file}) is not readable by the "
            "embedded sources; use source: pvlib_tmy"
        )
    return _load_weather_cached(os.fspath(tmy_path(source.file)), int(year))


def load_weather_years(source: WeatherSource, years: list[int]) -> SiteWeather:
    """``load_weather`` over consecutive calendar years, joined in time order.

    A typical year is mapped onto each year in turn (see the module notes), so a
    multi-year scenario repeats the same typical weather every year.
    """
    parts = [load_weather(source, y) for y in years]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    frame = pd.concat([p.frame for p in parts], axis=0)
    return SiteWeather(
        frame, first.latitude_deg, first.longitude_deg, first.altitude_m, first.tz_offset_h,
        first.station, first.source,
    )
