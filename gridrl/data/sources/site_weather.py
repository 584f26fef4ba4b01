"""The weather of one site as every source delivers it (typical-year files, real years).

Kept apart from the readers so that each reader (``weather`` for TMY files,
``multiregion`` for real years) and each model that consumes weather (``pv``, ``wind``)
import the type without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

WEATHER_COLUMNS = (
    "ghi_w_per_m2",
    "dni_w_per_m2",
    "dhi_w_per_m2",
    "temp_c",
    "wind_speed_m_per_s",
    "pressure_pa",
)


@dataclass(frozen=True)
class SiteWeather:
    """Hourly weather of one location mapped onto a calendar year (UTC, start labels).

    Attributes
    ----------
    frame : pandas.DataFrame
        Index: hourly UTC ``DatetimeIndex`` named ``time`` covering the year. Columns:
        ``ghi_w_per_m2``, ``dni_w_per_m2``, ``dhi_w_per_m2`` (hour means, W/m2),
        ``temp_c`` (dry-bulb, degC), ``wind_speed_m_per_s`` (at the station's
        measurement height, m/s), ``pressure_pa`` (station pressure, Pa). Read-only by
        convention: it is shared between sites that use the same file.
    latitude_deg, longitude_deg, altitude_m : float
        Station position from the file's metadata.
    tz_offset_h : float
        Local standard time minus UTC, hours (-5 for Greensboro).
    station : str
        Station name from the metadata.
    source : str
        Path of the TMY file.
    """

    frame: pd.DataFrame
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    tz_offset_h: float
    station: str
    source: str
