"""Sun geometry of a site from pvlib: solar elevation, clear-sky GHI and the night mask.

Used for the solar features of the target hour and for the physical bound "PV is zero
at night". Hourly labels may mark the start or the end of the hour depending on the
source, so an hour counts as *night* only if the sun stays below the horizon during the
whole window from one hour before to one hour after its label: that window contains the
hour whichever the convention, so a night hour never hides real generation.

gridrl labels an hour by its start (the value at ``t`` covers ``[t, t + 1 h)``), so the
features (elevation, clear-sky irradiance) are taken at the middle of the hour.
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
_HOUR_CENTRE_MIN = 30


@dataclass(frozen=True)
class SiteLocation:
    """Where a site is: latitude and longitude in degrees (north, east), altitude in m,
    and optionally the tilt and azimuth of its PV array (degrees; azimuth 180 = south)
    for the clear-sky power of its own geometry."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float = 0.0
    pv_tilt_deg: float | None = None
    pv_azimuth_deg: float | None = None


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
    """Apparent solar elevation (degrees) at the middle of each hour of ``index`` (a
    regular hourly, tz-aware index)."""
    return _elevation_cached(_start_ns(index), len(index), loc, _HOUR_CENTRE_MIN).copy()


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
def _clearsky_cached(start_ns: int, periods: int, loc: SiteLocation) -> tuple[np.ndarray, ...]:
    times = _hourly_index(start_ns, periods) + pd.Timedelta(minutes=_HOUR_CENTRE_MIN)
    site = pvlib.location.Location(loc.latitude_deg, loc.longitude_deg, altitude=loc.altitude_m)
    cs = site.get_clearsky(times, model="ineichen")
    ghi = cs["ghi"].to_numpy(dtype=np.float64)
    if loc.pv_tilt_deg is None or loc.pv_azimuth_deg is None:
        return ghi, ghi
    sp = site.get_solarposition(times)
    poa = pvlib.irradiance.get_total_irradiance(
        loc.pv_tilt_deg, loc.pv_azimuth_deg, sp["apparent_zenith"], sp["azimuth"],
        cs["dni"], cs["ghi"], cs["dhi"],
    )["poa_global"].to_numpy(dtype=np.float64)
    return ghi, np.nan_to_num(poa, nan=0.0)


def clearsky_ghi_w_per_m2(index: pd.DatetimeIndex, loc: SiteLocation) -> np.ndarray:
    """Clear-sky global horizontal irradiance (W/m2, Ineichen with Linke turbidity
    climatology) at the middle of each hour of ``index``."""
    return _clearsky_cached(_start_ns(index), len(index), loc)[0].copy()


def clearsky_array_w_per_m2(index: pd.DatetimeIndex, loc: SiteLocation) -> np.ndarray:
    """Clear-sky irradiance on the site's PV array (plane of array, W/m2) at the middle
    of each hour; the clear-sky GHI when the array geometry is not given."""
    return _clearsky_cached(_start_ns(index), len(index), loc)[1].copy()


def extended_index(index: pd.DatetimeIndex, extra_h: int) -> pd.DatetimeIndex:
    """``index`` followed by ``extra_h`` more hours (targets beyond the last issue time)."""
    return pd.date_range(index[0], periods=len(index) + extra_h, freq="h")
