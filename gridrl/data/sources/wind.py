"""Wind power from TMY wind speed through a real turbine power curve (windpowerlib).

1. Hub-height wind speed with the logarithmic profile
   (``windpowerlib.wind_speed.logarithmic_profile``, no obstacle):
   ``v_hub = v_meas * ln(h_hub / z0) / ln(h_meas / z0)``.
2. Turbine output from the manufacturer power curve shipped in windpowerlib's OEDB
   turbine library (``WindTurbine(turbine_type=...)`` reads it offline), through
   ``windpowerlib.power_output.power_curve`` (linear interpolation, 0 below cut-in and
   above cut-out). No air-density correction: the TMY sites lie near sea level to
   ~270 m, where it changes the output by a few percent at most.
3. Scaled to the site's ``capacity_kw``: ``P = capacity_kw * P_curve(v_hub) / P_nominal``
   (a fleet of identical turbines whose nameplate sum is ``capacity_kw``; no wake
   losses).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from gridrl.data.signals import SignalError
from gridrl.data.sources.weather import SiteWeather
from gridrl.scenario import WindConfig


@functools.lru_cache(maxsize=32)
def turbine_curve(turbine_type: str, hub_height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Power curve of an OEDB turbine type: wind speeds (m/s) and output per nominal power.

    Raises
    ------
    SignalError
        When windpowerlib's bundled library has no power curve for the type; the
        message lists the available types.
    """
    from windpowerlib import WindTurbine
    from windpowerlib.tools import WindpowerlibUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WindpowerlibUserWarning)
        try:
            turbine = WindTurbine(hub_height=hub_height_m, turbine_type=turbine_type)
        except ValueError as err:  # e.g. hub lower than half the rotor diameter
            raise SignalError("wind.turbine_type", f"{turbine_type}: {err}") from err
    if turbine.power_curve is None or not turbine.nominal_power:
        raise SignalError(
            "wind.turbine_type",
            f"no power curve for {turbine_type!r} in windpowerlib's bundled OEDB library; "
            f"available: {', '.join(available_turbine_types())}",
        )
    curve = turbine.power_curve.sort_values("wind_speed")
    speeds = curve["wind_speed"].to_numpy(dtype=np.float64)
    per_unit = curve["value"].to_numpy(dtype=np.float64) / float(turbine.nominal_power)
    return speeds, per_unit


@functools.lru_cache(maxsize=1)
def available_turbine_types() -> tuple[str, ...]:
    """Turbine types with a power curve in windpowerlib's bundled (offline) library."""
    import warnings as _w

    from windpowerlib import get_turbine_types

    with _w.catch_warnings():
        _w.simplefilter("ignore", FutureWarning)
        df = get_turbine_types(turbine_library="local", print_out=False)
    return tuple(df.loc[df["has_power_curve"].astype(bool), "turbine_type"])


def hub_wind_speed_m_per_s(wind: WindConfig, weather: SiteWeather) -> np.ndarray:
    """Hub-height wind speed, m/s, by the logarithmic profile (windpowerlib)."""
    from windpowerlib.wind_speed import logarithmic_profile

    return logarithmic_profile(
        weather.frame["wind_speed_m_per_s"].to_numpy(dtype=np.float64),
        wind.measurement_height_m,
        wind.hub_height_m,
        wind.roughness_length_m,
    )


def wind_capacity_factor(wind: WindConfig, weather: SiteWeather) -> np.ndarray:
    """Hourly output of the turbine type as a fraction of its nominal power.

    In ``[0, max(curve) / nominal]``, which is 1 or slightly above (published curves).
    """
    from windpowerlib.power_output import power_curve

    speeds, per_unit = turbine_curve(wind.turbine_type, float(wind.hub_height_m))
    v_hub = hub_wind_speed_m_per_s(wind, weather)
    return np.asarray(power_curve(v_hub, speeds, per_unit), dtype=np.float64)


def wind_power_kw(wind: WindConfig, weather: SiteWeather) -> np.ndarray:
    """Hourly wind power of the site, kW: ``capacity_kw`` times the capacity factor.

    Parameters
    ----------
    wind : WindConfig
        ``capacity_kw`` (nameplate sum), ``turbine_type`` (OEDB name such as
        ``E-82/2350``), hub and measurement heights (m), roughness length (m).
    weather : SiteWeather
        Hourly wind speed at the measurement height (m/s).

    Returns
    -------
    numpy.ndarray
        Shape ``[T]``, kW, in ``[0, capacity_kw * max(curve) / nominal]``: some
        manufacturer curves top out slightly above nameplate (the E48/800 curve reaches
        810 kW) and are kept as published. All zeros when ``capacity_kw == 0`` (the
        turbine type is still checked).
    """
    cf = wind_capacity_factor(wind, weather)
    return wind.capacity_kw * cf
