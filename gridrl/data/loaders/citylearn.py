"""CityLearn data sets: buildings with PV, their weather, carbon and tariff, hourly.

The files have no timestamps: rows are consecutive hours with calendar columns
``month``, ``hour`` (1..24), ``day_type`` (1 = Monday .. 7 = Sunday, 8 = holiday) and a
``daylight_savings_status`` (1 on days the local clock is on daylight saving time). The
loader builds the UTC index and checks every row's calendar columns against it:

- ``hour`` h labels the hour *ending* at h:00 (CityLearn/EnergyPlus convention): the
  weather's irradiance lines up best with the sun's position under this reading (for
  every month of the 2022 set), and its time-of-use price peak (labels 16..20) falls in
  15-20 h.
- Rows run on in local *standard* time, a fixed offset ``utc_offset_h`` from UTC: every
  year has 8760 rows, with no hour missing in spring or repeated in autumn, whatever
  ``daylight_savings_status`` says. The files do not state the offset, so it must be
  given, except for the registered ``citylearn_2022`` set (Pacific, -8; see below).
- ``daylight_savings_status`` is checked (0 or 1) and, when it is 1 anywhere in a
  building's file, returned as that building's ``daylight_saving_fraction`` (the rows
  stay in standard time; the flag says on which days the building's schedules ran on
  daylight-saving clock time; buildings of one set may differ). The flagged hours per
  building are counted in the provenance.
- Multi-year sets (the 2021 challenge: 35040 rows) are 365-day years of 8760 rows, each
  starting 1 January: there is no 29 February, so years are placed on consecutive
  calendar years from ``year`` and a leap year among them is an error naming it. Load a
  subset of years with ``years_from_file`` (0-based, consecutive) to avoid one.
- ``day_type`` must match the weekday of the placed date (8 = holiday always passes).
  Some sets break the weekday sequence (the 2021 set's fourth year, on its first
  day); ``check_day_type=False`` accepts that explicitly and records how many days
  differ.

The 2022 challenge set (17 homes in Fontana, California, one year): the calendar fits a
year starting on Sunday 31 July with a 28-day February and weekend prices on day types
6-7: Aug 2016 - Jul 2017 (also 2022-23), so ``year`` defaults to 2016 for it. Known
property of that data, kept as is: the homes' PV and load follow the local clock with
daylight saving while the weather does not (the status column is 0 throughout), so from
November to March the PV peaks about one hour later in this index than the weather's
irradiance.

Units: ``solar_generation`` is W per kW of installed PV (CityLearn's convention), turned
into ``pv_kw`` with each home's ``pv.attributes.nominal_power`` (kW) from
``schema.json`` (a building without PV has no ``pv_kw``); ``non_shiftable_load`` kWh per
hour = mean kW (``load_kw``); carbon intensity kg/kWh -> ``carbon_g_per_kwh``; price
$/kWh -> ``price_per_mwh``. A set whose schema names no pricing or carbon file (the
2020 and 2021 sets have no tariff) has no such signals; the provenance says so.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.loaders._common import read_csv, require_columns, row_error
from gridrl.data.signals import SignalError, Signals

__all__ = [
    "CITYLEARN_2022",
    "CITYLEARN_FORECAST_HORIZONS_H",
    "DAYLIGHT_SAVING_SIGNAL",
    "load_citylearn",
]

# ``*_predicted_1/2/3`` hold the values forecast 6, 12 and 24 hours ahead (CityLearn's
# observation table); at row t each is the forecast issued at t for t + horizon.
CITYLEARN_FORECAST_HORIZONS_H = (6, 12, 24)
# Calendar of the registered 2022 challenge set (see the module notes).
CITYLEARN_2022 = {"dataset": "citylearn_2022", "year": 2016, "utc_offset_h": -8.0}
KG_TO_G = 1000.0
PER_KWH_TO_PER_MWH = 1000.0
W_TO_KW = 1.0 / 1000.0
CALENDAR_COLUMNS = ("month", "hour", "day_type")
DST_COLUMN = "daylight_savings_status"
DAYLIGHT_SAVING_SIGNAL = "daylight_saving_fraction"
HOLIDAY_DAY_TYPE = 8
HOURS_PER_YEAR = 8760  # a 365-day year

_WEATHER_NAMES = {
    "outdoor_dry_bulb_temperature": "temp_c",
    "outdoor_relative_humidity": "relative_humidity_pct",
    "diffuse_solar_irradiance": "diffuse_w_per_m2",
    "direct_solar_irradiance": "direct_w_per_m2",
}


def _with_forecasts(names: dict[str, str]) -> dict[str, str]:
    out = dict(names)
    for raw, name in names.items():
        for k, h in enumerate(CITYLEARN_FORECAST_HORIZONS_H, start=1):
            out[f"{raw}_predicted_{k}"] = f"{name}_fcst_{h}h"
    return out


def _is_2022_set(directory: Path) -> bool:
    from gridrl.data.datasets import DataNotFoundError, dataset_dir

    try:
        return directory.resolve() == dataset_dir(CITYLEARN_2022["dataset"]).resolve()
    except DataNotFoundError:
        return False


def _calendar_options(
    directory: Path, year: int | None, utc_offset_h: float | None
) -> tuple[int, float]:
    """``year`` and ``utc_offset_h``: given, or the registered 2022 set's, else an error."""
    if year is not None and utc_offset_h is not None:
        return year, utc_offset_h
    if _is_2022_set(directory):
        return (
            CITYLEARN_2022["year"] if year is None else year,
            CITYLEARN_2022["utc_offset_h"] if utc_offset_h is None else utc_offset_h,
        )
    missing = [n for n, v in (("year", year), ("utc_offset_h", utc_offset_h)) if v is None]
    raise SignalError(
        str(directory),
        f"give {' and '.join(missing)}: CityLearn files carry no year or time zone "
        "(utc_offset_h: hours from UTC of the data's local standard time, e.g. -8 for "
        "Pacific, -6 for Central; year: the calendar year of the first row)",
    )


def _year_rows(n_rows: int, years_from_file: Sequence[int] | None, source: str) -> slice:
    """Rows of the selected 365-day years (consecutive), or all rows."""
    if years_from_file is None:
        return slice(0, n_rows)
    picked = list(years_from_file)
    n_years, rest = divmod(n_rows, HOURS_PER_YEAR)
    if rest or not n_years:
        raise SignalError(
            source,
            f"years_from_file needs whole 365-day years of {HOURS_PER_YEAR} rows; the file "
            f"has {n_rows} rows",
        )
    if not picked or picked != list(range(picked[0], picked[0] + len(picked))):
        raise SignalError(source, f"years_from_file {picked}: expected consecutive years")
    if picked[0] < 0 or picked[-1] >= n_years:
        raise SignalError(source, f"years_from_file {picked}: the file has years 0..{n_years - 1}")
    return slice(picked[0] * HOURS_PER_YEAR, (picked[-1] + 1) * HOURS_PER_YEAR)


def _check_leap_years(cal: pd.DataFrame, source: str, year: int) -> None:
    """365-day years laid on a leap year would need a 29 February the file lacks."""
    if len(cal) <= HOURS_PER_YEAR or len(cal) % HOURS_PER_YEAR:
        return
    starts = cal.iloc[::HOURS_PER_YEAR]
    if not ((starts["month"] == 1) & (starts["hour"] == 1)).all():
        return
    first_year = year if int(cal["month"].iloc[0]) == 1 else year + 1
    years = [first_year + k for k in range(len(starts))]
    leap = [y for y in years if calendar.isleap(y)]
    if leap:
        k = years.index(leap[0])
        raise SignalError(
            source,
            f"{len(starts)} 365-day years (no 29 February) placed on {years[0]}..{years[-1]}: "
            f"{leap[0]} is a leap year (year {k} of the file, rows {k * HOURS_PER_YEAR + 1}.."
            f"{(k + 1) * HOURS_PER_YEAR}); choose year= so that no year is a leap year, or "
            "load fewer years with years_from_file=[...]",
        )


def _local_hours(cal: pd.DataFrame, source: str, year: int) -> pd.DatetimeIndex:
    """Local standard start times of the hour-ending rows, placed by the first new month."""
    month = cal["month"].to_numpy()
    change = np.flatnonzero(month[1:] != month[:-1]) + 1
    if not change.size:
        raise SignalError(
            source, "month never changes: cannot place the rows in the calendar", column="month"
        )
    k = int(change[0])
    # Row k is the first hour of day 1 of its month; its year follows the first row's.
    y = year if month[k] > month[0] else year + 1
    first_start = pd.Timestamp(year=y, month=int(month[k]), day=1) + pd.Timedelta(
        hours=int(cal["hour"].iloc[k]) - 1
    )
    return pd.date_range(first_start - pd.Timedelta(hours=k), periods=len(cal), freq="h")


def _calendar_index(
    cal: pd.DataFrame,
    source: str,
    year: int,
    utc_offset_h: float,
    check_day_type: bool = True,
) -> tuple[pd.DatetimeIndex, int]:
    """UTC index of the rows and the number of days whose ``day_type`` differs."""
    _check_leap_years(cal, source, year)
    local = _local_hours(cal, source, year)
    expected = {
        "month": local.month.to_numpy(),
        "hour": local.hour.to_numpy() + 1,
        "day_type": local.dayofweek.to_numpy() + 1,
    }
    day_type_days = 0
    for col, want in expected.items():
        got = cal[col].to_numpy()
        bad = got != want
        if col == "day_type":
            bad &= got != HOLIDAY_DAY_TYPE
            if not check_day_type:
                day_type_days = len(np.unique(local[bad].normalize()))
                continue
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            line_row = int(cal.index[r])  # the row in the file, before any year selection
            raise SignalError(
                source,
                f"calendar mismatch: {got[r]} where {want[r]} was expected for the hour "
                f"ending {local[r] + pd.Timedelta(hours=1)} local (year={year}, hour-ending "
                f"labels, UTC{utc_offset_h:+g}); {int(bad.sum())} rows differ"
                + ("" if col != "day_type" else "; check_day_type=False accepts it"),
                column=col,
                row=line_row + 1,
                line=line_row + 2,
            )
    utc = (local - pd.Timedelta(hours=utc_offset_h)).tz_localize("UTC").rename("time")
    return utc, day_type_days


def _dst_flags(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The 0/1 ``daylight_savings_status`` column (all zeros when absent)."""
    if DST_COLUMN not in df.columns:
        return np.zeros(len(df))
    flags = pd.to_numeric(df[DST_COLUMN], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isin(flags, (0.0, 1.0)))
    if bad.size:
        # df.index holds the rows of the file, before any year selection
        raise row_error(path, DST_COLUMN, df.index.to_numpy()[bad],
                        f"{df[DST_COLUMN].iloc[bad[0]]} where 0 or 1 was expected")
    return flags


def _read_schema(directory: Path) -> dict[str, Any]:
    schema_path = directory / "schema.json"
    if not schema_path.is_file():
        raise SignalError(str(schema_path), "file not found")
    try:
        schema = json.loads(schema_path.read_text())
        buildings = schema["buildings"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SignalError(str(schema_path), f"not a CityLearn schema: {err}") from err
    if not isinstance(buildings, dict):
        raise SignalError(str(schema_path), "'buildings' is not a mapping of building specs")
    return buildings


def _pick_buildings(all_buildings: dict, buildings: Sequence[str] | None, schema: Path) -> list:
    names = [b for b, spec in all_buildings.items() if spec.get("include", True)]
    if buildings is not None:
        unknown = [b for b in buildings if b not in all_buildings]
        if unknown:
            raise SignalError(
                str(schema), f"unknown building {unknown[0]!r}; the schema has {names}"
            )
        names = list(buildings)
    if not names:
        raise SignalError(str(schema), "no building selected")
    return names


def _pv_kw_installed(spec: dict, name: str, schema: Path) -> float | None:
    """Installed PV (kW) of a building; None when the schema gives it no PV."""
    pv = spec.get("pv")
    if pv is None:
        return None
    try:
        return float(pv["attributes"]["nominal_power"])
    except (KeyError, TypeError, ValueError) as err:
        raise SignalError(
            str(schema), f"building {name}: no pv.attributes.nominal_power ({err})"
        ) from err


def _building_signals(
    df: pd.DataFrame,
    path: Path,
    name: str,
    index: pd.DatetimeIndex,
    kw_installed: float | None,
    dst_flags: np.ndarray,
) -> Signals:
    # Keep the raw names so that errors point at the file's columns.
    raw, mapping = {}, {}
    if kw_installed is not None:
        raw["solar_generation"] = df["solar_generation"].to_numpy(float) * kw_installed * W_TO_KW
        mapping["solar_generation"] = "pv_kw"
    raw["non_shiftable_load"] = df["non_shiftable_load"].to_numpy(float)
    mapping["non_shiftable_load"] = "load_kw"
    if dst_flags.any():
        raw[DST_COLUMN] = dst_flags
        mapping[DST_COLUMN] = DAYLIGHT_SAVING_SIGNAL
    frame = pd.DataFrame(raw, index=index)
    return Signals.from_frame(
        frame, source=str(path), site=name, columns=mapping, _line_offset=1 + int(df.index[0])
    )


def _shared_signals(
    directory: Path,
    first: dict,
    rows: slice,
    index: pd.DatetimeIndex,
    site: str,
) -> tuple[list[Signals], list[str]]:
    """Weather, carbon and pricing of the neighbourhood; names of the files the schema lacks."""
    shared = [
        ("weather", _with_forecasts(_WEATHER_NAMES), 1.0),
        ("carbon_intensity", {"carbon_intensity": "carbon_g_per_kwh"}, KG_TO_G),
        (
            "pricing",
            _with_forecasts({"electricity_pricing": "price_per_mwh"}),
            PER_KWH_TO_PER_MWH,
        ),
    ]
    parts, absent = [], []
    for key, mapping, scale in shared:
        if not first.get(key):
            absent.append(key)
            continue
        path = directory / first[key]
        df = read_csv(path)
        require_columns(df, mapping, path)
        df = df.iloc[rows]
        if len(df) != len(index):
            raise SignalError(str(path), f"{len(df)} rows where {len(index)} were expected")
        offset = 1 + int(df.index[0])
        df = df.loc[:, list(mapping)] * scale
        df.index = index
        parts.append(
            Signals.from_frame(
                df, source=str(path), site=site, columns=mapping, _line_offset=offset
            )
        )
    return parts, absent


def load_citylearn(
    directory: str | Path,
    *,
    year: int | None = None,
    utc_offset_h: float | None = None,
    buildings: Sequence[str] | None = None,
    shared_site: str = "neighbourhood",
    years_from_file: Sequence[int] | None = None,
    check_day_type: bool = True,
) -> Signals:
    """Load a CityLearn data set as hourly UTC signals.

    Parameters
    ----------
    directory : path
        Folder with ``schema.json`` and the CSV files it names.
    year : int, optional
        Calendar year of the first (selected) row. Required except for the registered
        ``citylearn_2022`` set (2016).
    utc_offset_h : float, optional
        Offset of the data's local standard time from UTC in hours (PST: -8). Required
        except for the registered ``citylearn_2022`` set (-8).
    buildings : sequence of str, optional
        Building names as in ``schema.json`` (``Building_1``...); default every building
        the schema includes.
    shared_site : str
        Site name for the neighbourhood-wide signals.
    years_from_file : sequence of int, optional
        Consecutive 0-based 365-day years of a multi-year set to load (default all).
    check_day_type : bool
        When False, a ``day_type`` that differs from the placed date's weekday is
        accepted and the days are counted in the provenance.

    Returns
    -------
    Signals
        Per building site: ``load_kw``, with PV ``pv_kw``, and ``daylight_saving_fraction``
        when any of its rows is flagged. Site ``shared_site``: ``temp_c``,
        ``relative_humidity_pct``, ``diffuse_w_per_m2``, ``direct_w_per_m2`` (each with
        ``_fcst_6h/_12h/_24h``), ``carbon_g_per_kwh`` and ``price_per_mwh`` (with its
        forecasts) when the set has them.
    """
    directory = Path(directory)
    year, utc_offset_h = _calendar_options(directory, year, utc_offset_h)
    all_buildings = _read_schema(directory)
    names = _pick_buildings(all_buildings, buildings, directory / "schema.json")
    parts: list[Signals] = []
    index: pd.DatetimeIndex | None = None
    rows = slice(0)
    dst_hours: dict[str, int] = {}
    day_type_days: dict[str, int] = {}
    for name in names:
        spec = all_buildings[name]
        path = directory / spec["energy_simulation"]
        df = read_csv(path)
        require_columns(df, [*CALENDAR_COLUMNS, "non_shiftable_load", "solar_generation"], path)
        if index is None:
            rows = _year_rows(len(df), years_from_file, str(path))
        df = df.iloc[rows]
        idx, days = _calendar_index(df, str(path), year, utc_offset_h, check_day_type)
        if index is not None and len(idx) != len(index):
            raise SignalError(str(path), f"{len(idx)} rows where {len(index)} were expected")
        index, day_type_days[name] = idx, days
        flags = _dst_flags(df, path)
        dst_hours[name] = int(flags.sum())
        kw = _pv_kw_installed(spec, name, directory / "schema.json")
        parts.append(_building_signals(df, path, name, index, kw, flags))
    shared, absent = _shared_signals(directory, all_buildings[names[0]], rows, index, shared_site)
    parts += shared
    combined = Signals.combine(parts)
    combined.frame.attrs["provenance"] = combined.provenance + [
        {
            "step": "citylearn_calendar",
            "year": year,
            "utc_offset_h": utc_offset_h,
            "hour_label": "hour ending",
            "rows": "consecutive local standard-time hours",
            "years_from_file": None if years_from_file is None else list(years_from_file),
            "daylight_saving_hours": dst_hours,
            "day_type_checked": check_day_type,
            "day_type_mismatch_days": day_type_days,
            "buildings": names,
            "excluded_by_schema": [b for b in all_buildings if b not in names],
            "not_in_schema": absent,
        }
    ]
    return Signals(combined.frame, str(directory))
