"""Sun geometry of a site from pvlib: solar elevation, clear-sky GHI and the night mask.

Used for the solar features of the target hour and for the physical bound "PV is zero
at night". Hourly labels may mark the start or the end of the hour depending on the
source, so an hour counts as *night* only if the sun stays below the horizon during the
whole window from one hour before to one hour after its label: that window contains the
hour whichever the convention, so a night hour never hides real generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pvlib

# Sampling step (minutes) of the night window; fine enough to catch a sunrise inside it.
_NIGHT_STEP_MIN = 10
_NIGHT_HALF_WINDOW_MIN = 60


@dataclass(frozen=True)
class SiteLocation:
    """Where a site is: latitude and longitude in degrees (north, east), altitude in m."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float = 0.0


def _hourly_index(start_ns: int, periods: int) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start_ns, tz="UTC"), periods=periods, freq="h")


@lru_cache(maxsize=64)
def _elevation_cached(start_ns: int, periods: int, loc: SiteLocation, offset_min: int):
    times = _hourly_index(start_ns, periods) + pd.Timedelta(minutes=offset_min)
    sp = pvlib.solarposition.ephemeris(times, loc.latitude_deg, loc.longitude_deg)
    return sp["apparent_elevation"].to_numpy(dtype=np.float64)


def _start_ns(index: pd.DatetimeIndex) -> int:
    return int(index[0].tz_convert("UTC").value)


def solar_elevation_deg(index: pd.DatetimeIndex, loc: SiteLocation) -> np.ndarray:
    """Apparent solar elevation (degrees) at each hourly label of ``index``.

    ``index`` must be a regular hourly, tz-aware index (the signals index extended by the
    forecast horizon).
    """
    return _elevation_cached(_start_ns(index), len(index), loc, 0).copy()


def night_mask(index: pd.DatetimeIndex, loc: SiteLocation) -> np.ndarray:
    """True where the sun stays below the horizon for the whole hour around each label.

    Returns
    -------
    numpy.ndarray
        bool ``[len(index)]``.
    """
    start, n = _start_ns(index), len(index)
    night = np.ones(n, dtype=bool)
    for off in range(-_NIGHT_HALF_WINDOW_MIN, _NIGHT_HALF_WINDOW_MIN + 1, _NIGHT_STEP_MIN):
        night &= _elevation_cached(start, n, loc, off) < 0.0
    return night


@lru_cache(maxsize=64)
def _clearsky_cached(start_ns: int, periods: int, loc: SiteLocation) -> np.ndarray:
    times = _hourly_index(start_ns, periods)
    site = pvlib.location.Location(loc.latitude_deg, loc.longitude_deg, altitude=loc.altitude_m)
    cs = site.get_clearsky(times, model="ineichen")
    return cs["ghi"].to_numpy(dtype=np.float64)


def clearsky_ghi_w_per_m2(index: pd.DatetimeIndex, loc: SiteLocation) -> np.ndarray:
    """Clear-sky global horizontal irradiance (W/m2, Ineichen with Linke turbidity
    climatology) at each hourly label of ``index``."""
    return _clearsky_cached(_start_ns(index), len(index), loc).copy()


def extended_index(index: pd.DatetimeIndex, extra_h: int) -> pd.DatetimeIndex:
    """``index`` followed by ``extra_h`` more hours (targets beyond the last issue time)."""
    return pd.date_range(index[0], periods=len(index) + extra_h, freq="h")
