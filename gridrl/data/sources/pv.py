"""PV AC power of a fixed-tilt array through pvlib's models.

Chain (all pvlib functions, one hour at a time, vectorised over the year):

1. Solar position at the middle of each hour (``pvlib.solarposition.get_solarposition``,
   NREL SPA), because TMY irradiance is the mean over the hour ``[t, t + 1 h)``.
2. Plane-of-array irradiance with the Perez transposition model
   (``pvlib.irradiance.get_total_irradiance``) from GHI, DNI, DHI, extraterrestrial DNI
   and relative air mass; ground reflection with the configured albedo.
3. Angle-of-incidence loss on the beam component (``pvlib.iam.physical``, Fresnel/Snell
   for glass): ``E_eff = POA_direct * IAM(aoi) + POA_diffuse``.
4. Cell temperature with the Sandia model (``pvlib.temperature.sapm_cell``), parameter
   set ``PVConfig.temperature_model``, from POA, air temperature and wind speed.
5. DC power ``P_dc = PVWatts_dc(E_eff, T_cell, kWp, gamma) * (1 - system_loss_fraction)``
   (``pvlib.pvsystem.pvwatts_dc``).
6. AC power through the PVWatts inverter (``pvlib.inverter.pvwatts``) with AC rating
   ``kWp / dc_ac_ratio``: ``P_ac = min(eta(P_dc) * P_dc, P_ac0)``, ``P_ac >= 0``.

The result is in kW, non-negative, and exactly 0 when the sun is below the horizon
(the TMY irradiance is 0 then, and we also zero hours with zenith >= 90 degrees so a
non-zero twilight diffuse value cannot produce power from behind the horizon).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridrl.data.sources.site_weather import SiteWeather
from gridrl.scenario import PVConfig

HALF_HOUR = pd.Timedelta(minutes=30)
W_PER_KW = 1000.0
HORIZON_ZENITH_DEG = 90.0

_GEOMETRY_CACHE: dict[tuple[str, pd.Timestamp, int], pd.DataFrame] = {}


def solar_geometry(weather: SiteWeather) -> pd.DataFrame:
    """Sun position, extraterrestrial DNI, air mass and clear-sky GHI at mid-hour.

    Parameters
    ----------
    weather : SiteWeather
        Location and hourly index.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``weather.frame``: ``apparent_zenith``, ``zenith``, ``azimuth``
        (degrees), ``dni_extra`` (W/m2), ``airmass`` (relative, NaN below the
        horizon), ``ghi_clearsky`` (W/m2, Ineichen with Linke turbidity from pvlib's
        climatology). Cached per location and year.
    """
    import pvlib

    index = weather.frame.index
    key = (weather.source, index[0], len(index))
    if key in _GEOMETRY_CACHE:
        return _GEOMETRY_CACHE[key]
    mid = index + HALF_HOUR
    location = pvlib.location.Location(
        weather.latitude_deg, weather.longitude_deg, altitude=weather.altitude_m
    )
    sp = location.get_solarposition(
        mid,
        pressure=weather.frame["pressure_pa"].to_numpy(),
        temperature=weather.frame["temp_c"].to_numpy(),
    )
    clearsky = location.get_clearsky(mid, model="ineichen", solar_position=sp)
    out = pd.DataFrame(
        {
            "apparent_zenith": sp["apparent_zenith"].to_numpy(),
            "zenith": sp["zenith"].to_numpy(),
            "azimuth": sp["azimuth"].to_numpy(),
            "dni_extra": pvlib.irradiance.get_extra_radiation(mid).to_numpy(),
            "airmass": pvlib.atmosphere.get_relative_airmass(sp["apparent_zenith"]).to_numpy(),
            "ghi_clearsky": clearsky["ghi"].to_numpy(),
        },
        index=index,
    )
    _GEOMETRY_CACHE[key] = out
    return out


def pv_power_kw(pv: PVConfig, weather: SiteWeather) -> np.ndarray:
    """Hourly mean AC power of the array, kW (see the module notes for the chain).

    Parameters
    ----------
    pv : PVConfig
        Array: ``kwp`` (DC at STC), tilt/azimuth (degrees, azimuth 180 = south),
        temperature coefficient (1/degC), system losses, inverter efficiency and
        DC/AC ratio, albedo, SAPM mounting.
    weather : SiteWeather
        Hourly GHI/DNI/DHI (W/m2), air temperature (degC), wind speed (m/s).

    Returns
    -------
    numpy.ndarray
        Shape ``[T]``, kW, ``>= 0``, 0 at night. All zeros when ``kwp == 0``.
    """
    import pvlib

    n = len(weather.frame)
    if pv.kwp == 0:
        return np.zeros(n)
    geo = solar_geometry(weather)
    w = weather.frame
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=pv.tilt_deg,
        surface_azimuth=pv.azimuth_deg,
        solar_zenith=geo["apparent_zenith"],
        solar_azimuth=geo["azimuth"],
        dni=w["dni_w_per_m2"],
        ghi=w["ghi_w_per_m2"],
        dhi=w["dhi_w_per_m2"],
        dni_extra=geo["dni_extra"],
        airmass=geo["airmass"],
        albedo=pv.albedo,
        model="perez",
    )
    aoi = pvlib.irradiance.aoi(pv.tilt_deg, pv.azimuth_deg, geo["apparent_zenith"], geo["azimuth"])
    iam = pvlib.iam.physical(aoi)
    poa_direct = poa["poa_direct"].fillna(0.0).to_numpy()
    poa_diffuse = poa["poa_diffuse"].fillna(0.0).to_numpy()
    poa_global = poa_direct + poa_diffuse
    effective = poa_direct * np.nan_to_num(iam.to_numpy(), nan=0.0) + poa_diffuse
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][pv.temperature_model]
    temp_cell = pvlib.temperature.sapm_cell(
        poa_global, w["temp_c"].to_numpy(), w["wind_speed_m_per_s"].to_numpy(), **params
    )
    pdc0_w = pv.kwp * W_PER_KW
    dc_w = pvlib.pvsystem.pvwatts_dc(effective, temp_cell, pdc0_w, pv.gamma_pdc_per_c)
    dc_w = np.asarray(dc_w) * (1.0 - pv.system_loss_fraction)
    pac0_w = pdc0_w / pv.dc_ac_ratio
    ac_w = pvlib.inverter.pvwatts(
        dc_w, pac0_w / pv.inverter_efficiency, eta_inv_nom=pv.inverter_efficiency
    )
    ac_kw = np.asarray(ac_w, dtype=np.float64) / W_PER_KW
    night = geo["zenith"].to_numpy() >= HORIZON_ZENITH_DEG
    return np.where(night, 0.0, ac_kw)


def cloud_cover_ghi(
    cloud_cover_pct: np.ndarray, ghi_clearsky: np.ndarray, offset_fraction: float
) -> np.ndarray:
    """GHI from cloud cover, linear in the cover (Larson et al. 2016), W/m2.

    ``GHI = (offset + (1 - offset) (1 - cover / 100)) GHI_clear``: clear sky at 0 %
    cover, ``offset`` times it under full cover (the ``cloud_cover_to_ghi_linear`` of
    pvlib's former forecast module, offset 35 %).
    """
    clear = 1.0 - np.asarray(cloud_cover_pct, dtype=np.float64) / 100.0
    return (offset_fraction + (1.0 - offset_fraction) * clear) * ghi_clearsky


def cloud_cover_irradiance(
    cloud_cover_pct: np.ndarray,
    geometry: pd.DataFrame,
    pressure_pa: np.ndarray,
    offset_fraction: float,
) -> pd.DataFrame:
    """GHI, DNI and DHI (W/m2) of each hour from cloud cover and clear-sky GHI.

    As pvlib's former forecast module did (``cloud_cover_to_irradiance_clearsky_scaling``):
    GHI by the linear cloud-cover model, DNI by the DISC decomposition
    (``pvlib.irradiance.disc``) at mid-hour, ``DHI = GHI - DNI cos(zenith)``. 0 at night.

    Parameters
    ----------
    geometry : pandas.DataFrame
        ``solar_geometry`` of the hours (``zenith``, ``ghi_clearsky``), UTC hour-start
        index.
    """
    import pvlib

    ghi = cloud_cover_ghi(cloud_cover_pct, geometry["ghi_clearsky"].to_numpy(), offset_fraction)
    zenith = geometry["zenith"].to_numpy()
    mid = geometry.index + HALF_HOUR
    dni = pvlib.irradiance.disc(ghi, zenith, mid, pressure=pressure_pa)["dni"]
    dni = np.nan_to_num(np.asarray(dni, dtype=np.float64), nan=0.0)
    night = zenith >= HORIZON_ZENITH_DEG
    cos_z = np.cos(np.radians(zenith))
    dhi = np.where(night, 0.0, ghi - dni * cos_z)
    return pd.DataFrame(
        {
            "ghi_w_per_m2": np.where(night, 0.0, ghi),
            "dni_w_per_m2": np.where(night, 0.0, dni),
            "dhi_w_per_m2": dhi,
        },
        index=geometry.index,
    )
