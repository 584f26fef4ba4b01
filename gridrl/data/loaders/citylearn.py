"""CityLearn 2022 challenge set: 17 homes with PV in Fontana, California, one year hourly.

The files have no timestamps: rows are consecutive hours with calendar columns
``month``, ``hour`` (1..24), ``day_type`` (1 = Monday .. 7 = Sunday, 8 = holiday) and a
``daylight_savings_status`` that is 0 throughout. The loader builds the UTC index and
checks every row's calendar columns against it:

- ``hour`` h labels the hour *ending* at h:00 (CityLearn/EnergyPlus convention): the
  weather's irradiance lines up best with the sun's position under this reading (for
  every month tested), and the time-of-use price peak (labels 16..20) falls in 15-20 h.
- Local time is Pacific Standard Time, a fixed UTC-8 (``utc_offset_h``), since the
  rows run on without the daylight-saving jumps.
- The calendar fits a year starting on Sunday 31 July with a 28-day February and
  weekend prices on day types 6-7: Aug 2016 - Jul 2017 (also 2022-23). ``year`` is the
  calendar year of the first row, default 2016.

Known property of the data, kept as is: the homes' PV and load follow the local clock
with daylight saving while the weather does not, so from November to March the PV
peaks about one hour later in this index than the weather's irradiance.

Units: ``solar_generation`` is W per kW of installed PV (CityLearn's convention), turned
into ``pv_kw`` with each home's ``pv.attributes.nominal_power`` (kW) from
``schema.json``; ``non_shiftable_load`` kWh per hour = mean kW (``load_kw``); carbon
intensity kg/kWh -> ``carbon_g_per_kwh``; price $/kWh -> ``price_per_mwh``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.loaders._common import read_csv, require_columns
from gridrl.data.signals import SignalError, Signals

__all__ = ["CITYLEARN_FORECAST_HORIZONS_H", "load_citylearn"]

# ``*_predicted_1/2/3`` hold the values forecast 6, 12 and 24 hours ahead (CityLearn's
# observation table); at row t each is the forecast issued at t for t + horizon.
CITYLEARN_FORECAST_HORIZONS_H = (6, 12, 24)
KG_TO_G = 1000.0
PER_KWH_TO_PER_MWH = 1000.0
W_TO_KW = 1.0 / 1000.0
CALENDAR_COLUMNS = ("month", "hour", "day_type")
HOLIDAY_DAY_TYPE = 8

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


def _calendar_index(
    cal: pd.DataFrame, source: str, year: int, utc_offset_h: float
) -> pd.DatetimeIndex:
    """UTC index of the hour-ending rows, placed by the first change of month."""
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
    start_local = first_start - pd.Timedelta(hours=k)
    local = pd.date_range(start_local, periods=len(cal), freq="h")
    expected = {
        "month": local.month.to_numpy(),
        "hour": local.hour.to_numpy() + 1,
        "day_type": local.dayofweek.to_numpy() + 1,
    }
    for col, want in expected.items():
        got = cal[col].to_numpy()
        bad = got != want
        if col == "day_type":
            bad &= got != HOLIDAY_DAY_TYPE
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise SignalError(
                source,
                f"calendar mismatch: {got[r]} where {want[r]} was expected for the hour "
                f"ending {local[r] + pd.Timedelta(hours=1)} local (year={year}, hour-ending "
                f"labels, UTC{utc_offset_h:+g}); {int(bad.sum())} rows differ",
                column=col,
                row=r + 1,
                line=r + 2,
            )
    return (local - pd.Timedelta(hours=utc_offset_h)).tz_localize("UTC").rename("time")


def load_citylearn(
    directory: str | Path,
    *,
    year: int = 2016,
    utc_offset_h: float = -8.0,
    buildings: Sequence[str] | None = None,
    shared_site: str = "neighbourhood",
) -> Signals:
    """Load the CityLearn 2022 set as hourly UTC signals.

    Parameters
    ----------
    directory : path
        Folder with ``schema.json`` and the CSV files it names.
    year : int
        Calendar year of the first row (see the module notes; 2016 fits the calendar).
    utc_offset_h : float
        Offset of the data's local standard time from UTC in hours (PST: -8).
    buildings : sequence of str, optional
        Building names as in ``schema.json`` (``Building_1``...); default every building
        the schema includes.
    shared_site : str
        Site name for the neighbourhood-wide signals.

    Returns
    -------
    Signals
        Per building site: ``pv_kw``, ``load_kw``. Site ``shared_site``: ``temp_c``,
        ``relative_humidity_pct``, ``diffuse_w_per_m2``, ``direct_w_per_m2`` (each with
        ``_fcst_6h/_12h/_24h``), ``carbon_g_per_kwh``, ``price_per_mwh`` (with its
        forecasts).
    """
    directory = Path(directory)
    schema_path = directory / "schema.json"
    if not schema_path.is_file():
        raise SignalError(str(schema_path), "file not found")
    try:
        schema = json.loads(schema_path.read_text())
        all_buildings: dict = schema["buildings"]
    except (json.JSONDecodeError, KeyError) as err:
        raise SignalError(str(schema_path), f"not a CityLearn schema: {err}") from err
    names = [b for b, spec in all_buildings.items() if spec.get("include", True)]
    if buildings is not None:
        unknown = [b for b in buildings if b not in all_buildings]
        if unknown:
            raise SignalError(
                str(schema_path), f"unknown building {unknown[0]!r}; the schema has {names}"
            )
        names = list(buildings)
    if not names:
        raise SignalError(str(schema_path), "no building selected")

    parts: list[Signals] = []
    index: pd.DatetimeIndex | None = None
    n_rows: int | None = None
    first = all_buildings[names[0]]
    for name in names:
        spec = all_buildings[name]
        path = directory / spec["energy_simulation"]
        df = read_csv(path)
        require_columns(df, [*CALENDAR_COLUMNS, "non_shiftable_load", "solar_generation"], path)
        if index is None:
            index = _calendar_index(df, str(path), year, utc_offset_h)
            n_rows = len(df)
        elif len(df) != n_rows:
            raise SignalError(str(path), f"{len(df)} rows where {n_rows} were expected")
        else:
            _calendar_index(df, str(path), year, utc_offset_h)
        try:
            kw_installed = float(spec["pv"]["attributes"]["nominal_power"])
        except (KeyError, TypeError) as err:
            raise SignalError(
                str(schema_path), f"building {name}: no pv.attributes.nominal_power ({err})"
            ) from err
        # Keep the raw names so that errors point at the file's columns.
        frame = pd.DataFrame(
            {
                "solar_generation": df["solar_generation"].to_numpy(float) * kw_installed * W_TO_KW,
                "non_shiftable_load": df["non_shiftable_load"].to_numpy(float),
            },
            index=index,
        )
        parts.append(
            Signals.from_frame(
                frame,
                source=str(path),
                site=name,
                columns={"solar_generation": "pv_kw", "non_shiftable_load": "load_kw"},
                _line_offset=1,
            )
        )

    shared: list[tuple[str, dict[str, str], float]] = [
        (first["weather"], _with_forecasts(_WEATHER_NAMES), 1.0),
        (first["carbon_intensity"], {"carbon_intensity": "carbon_g_per_kwh"}, KG_TO_G),
        (
            first["pricing"],
            _with_forecasts({"electricity_pricing": "price_per_mwh"}),
            PER_KWH_TO_PER_MWH,
        ),
    ]
    for filename, mapping, scale in shared:
        path = directory / filename
        df = read_csv(path)
        require_columns(df, mapping, path)
        if len(df) != n_rows:
            raise SignalError(str(path), f"{len(df)} rows where {n_rows} were expected")
        df = df.loc[:, list(mapping)] * scale
        df.index = index
        parts.append(
            Signals.from_frame(
                df, source=str(path), site=shared_site, columns=mapping, _line_offset=1
            )
        )
    combined = Signals.combine(parts)
    combined.frame.attrs["provenance"] = combined.provenance + [
        {
            "step": "citylearn_calendar",
            "year": year,
            "utc_offset_h": utc_offset_h,
            "hour_label": "hour ending",
            "buildings": names,
            "excluded_by_schema": [b for b in all_buildings if b not in names],
        }
    ]
    return Signals(combined.frame, str(directory))
