"""Site weather from a zone of the multiregion data set (Open-Meteo, 2021-2024).

The files give air temperature, relative humidity, cloud cover and the 10 m wind speed,
no irradiance and no pressure. ``multiregion_site_weather`` turns them into the
``SiteWeather`` every other source reads:

- time: UTC hours of the scenario's years (``loaders.multiregion`` converts the
  fixed-offset labels and reports DST days and edge hours);
- pressure: constant, the standard atmosphere at the grid point's elevation
  (``pvlib.atmosphere.alt2pres``); it only enters refraction and DISC;
- irradiance: Ineichen clear sky at mid-hour (``sources.pv.solar_geometry``) reduced
  by the hour's cloud cover with the linear model of Larson et al. 2016, decomposed by
  DISC (``sources.pv.cloud_cover_irradiance``). Open-Meteo's cloud cover is the value
  at the label; it stands for the hour that starts there;
- wind: the 10 m speed in m/s (PV cooling; wind turbines extrapolate it to hub height).

PV power then runs through ``sources.pv.pv_power_kw``, the same steps as pvlib's
``ModelChain`` with PVWatts DC and inverter, Perez transposition, physical IAM and SAPM
cell temperature (the tests check the two agree hour by hour).

``tz_offset_h`` is the zone's standard time, as for the TMY files, so background load
and workload calendars run on local standard time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridrl.data.loaders.multiregion import load_multiregion_weather
from gridrl.data.sources.pv import cloud_cover_irradiance, solar_geometry
from gridrl.data.sources.site_weather import WEATHER_COLUMNS, SiteWeather
from gridrl.scenario import WeatherSource


def _loader_kwargs(source: WeatherSource) -> dict:
    return {
        "utc_offset_h": source.utc_offset_h,
        "offset_check_lag_h": source.offset_check_lag_h,
        "edge_fill": source.edge_fill,
        "resample": source.resample,
        "fill": source.fill,
        "max_fill_h": source.max_fill_h,
    }


def multiregion_site_weather(
    source: WeatherSource, index: pd.DatetimeIndex
) -> tuple[SiteWeather, dict]:
    """Weather of ``source.zone`` on ``index`` (UTC hours inside ``source.years``).

    Returns
    -------
    weather : SiteWeather
        ``WEATHER_COLUMNS`` on ``index``; GHI/DNI/DHI from clear sky and cloud cover.
    report : dict
        The loader's record (offsets, their check, DST days, edge hours filled).

    Raises
    ------
    SignalError
        From the loader, or when ``index`` leaves the source's years.
    """
    import pvlib

    from gridrl.data.signals import SignalError

    zw = load_multiregion_weather(source.zone, source.years, **_loader_kwargs(source))
    frame = zw.signals.site(source.zone)
    if not index.isin(frame.index).all():
        raise SignalError(
            zw.signals.source,
            f"weather years {source.years} do not cover the scenario's hours "
            f"{index[0]}..{index[-1]}",
            column="years",
        )
    frame = frame.loc[index]
    pressure = np.full(len(index), float(pvlib.atmosphere.alt2pres(zw.elevation_m)))
    name = f"{zw.signals.source} [{source.model_dump_json()}]"  # keys the geometry cache
    partial = pd.DataFrame(
        {
            "temp_c": frame["temp_c"].to_numpy(),
            "wind_speed_m_per_s": frame["wind_speed_m_per_s"].to_numpy(),
            "pressure_pa": pressure,
        },
        index=index,
    )
    weather = SiteWeather(
        partial, zw.latitude_deg, zw.longitude_deg, zw.elevation_m, zw.standard_offset_h,
        f"{source.zone} (Open-Meteo)", name,
    )
    irradiance = cloud_cover_irradiance(
        frame["cloud_cover_pct"].to_numpy(), solar_geometry(weather), pressure,
        source.cloud_offset_fraction,
    )
    full = pd.concat([partial, irradiance], axis=1).loc[:, list(WEATHER_COLUMNS)]
    full.index.name = "time"
    report = {**zw.report, "cloud_offset_fraction": source.cloud_offset_fraction,
              "pressure_pa": float(pressure[0])}
    return SiteWeather(
        full, zw.latitude_deg, zw.longitude_deg, zw.elevation_m, zw.standard_offset_h,
        weather.station, name,
    ), report
