"""Grid carbon intensity and energy price: a weather-driven regional-mix model, or a CSV.

The model treats the site's weather as representative of its region (same TMY file)
and builds three indices in [0, 1]:

- regional solar ``s(t) = (w GHI_cs(t) + (1 - w) GHI(t)) / max_t GHI_cs(t)`` with
  ``w = regional_clearsky_weight``: a region's solar fleet averages out local clouds,
  so its output lies between the local measurement and the clear sky (Ineichen,
  pvlib); ``s = 1`` at the sunniest clear-sky noon of the year;
- regional wind ``u(t)``: the capacity factor of the site's turbine type at the site's
  hub-height wind (``sources.wind``), 1 at rated wind;
- regional demand ``d(t) = (L(t) - min L) / (max L - min L)`` from the site's
  temperature-driven background-load model ``L`` (``sources.grid``), 0 when ``L`` is
  constant.

Carbon intensity (g CO2e/kWh)::

    C_det(t) = base - solar_disp * s(t) - wind_disp * u(t) + peak_load * d(t)
    C(t)     = max(C_det(t) + n_C(t), min_g_per_kwh)

where ``n_C`` is stationary AR(1) noise (std ``noise_g_per_kwh``, lag-1 correlation
``noise_ar1``). Solar and wind displace fossil generation (at most ``solar_disp`` /
``wind_disp`` g/kWh at full regional output); high demand brings marginal fossil
plants in. The floor ``min_g_per_kwh`` is part of the model (no mix is cleaner than
its lifecycle emissions); the schema guarantees ``base - solar_disp - wind_disp >=
min_g_per_kwh`` so only noise can reach it, and the number of floored hours is
returned.

Price (currency/MWh), a merit order on the same drivers::

    P(t) = base_per_mwh + carbon_slope * (C_det(t) - base) + peak_adder * d(t)^2 + n_P(t)

Low-carbon hours are cheap (renewables bid near zero), high-demand hours climb the
convex top of the merit curve (``d^2``). ``n_P`` is AR(1) noise (std
``noise_per_mwh``, correlation ``noise_ar1``). Prices may be negative, as real ones do.

``source: csv`` reads a real series instead (``file``, ``column``, ``time_column``,
``assume_tz``, ``resample``, ``fill``): ``sources.series`` reads it like any
``sites[i].series`` entry (gaps, duplicates, NaN, wrong steps are errors unless
resampling or filling is asked for, and recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridrl.data.sources.rng import ar1_noise, stream_rng
from gridrl.data.sources.weather import SiteWeather
from gridrl.scenario import CarbonConfig, PriceConfig


@dataclass(frozen=True)
class MarketDrivers:
    """Regional indices in [0, 1] that drive the carbon and price models, shape ``[T]``."""

    solar: np.ndarray
    wind: np.ndarray
    demand: np.ndarray


def regional_solar_index(
    ghi_w_per_m2: np.ndarray, ghi_clearsky_w_per_m2: np.ndarray, clearsky_weight: float
) -> np.ndarray:
    """``(w GHI_cs + (1 - w) GHI) / max(GHI_cs)``, in [0, ~1]."""
    peak = float(np.max(ghi_clearsky_w_per_m2))
    if peak <= 0:
        return np.zeros_like(ghi_w_per_m2)
    blend = clearsky_weight * ghi_clearsky_w_per_m2 + (1.0 - clearsky_weight) * ghi_w_per_m2
    return blend / peak


def demand_index(load_kw: np.ndarray) -> np.ndarray:
    """Min-max normalised load, in [0, 1]; zeros when the load is constant."""
    lo, hi = float(np.min(load_kw)), float(np.max(load_kw))
    if hi <= lo:
        return np.zeros_like(load_kw)
    return (load_kw - lo) / (hi - lo)


def carbon_model(
    cfg: CarbonConfig, drivers: MarketDrivers, seed: int, site: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Carbon intensity of the regional mix (module equations).

    Parameters
    ----------
    cfg : CarbonConfig
        ``base_g_per_kwh``, displacements, ``peak_load_g_per_kwh``, noise, floor.
    drivers : MarketDrivers
        Regional solar, wind and demand indices.
    seed, site :
        Key the seeded noise stream.

    Returns
    -------
    carbon_g_per_kwh : numpy.ndarray
        ``C(t)``, g CO2e/kWh, ``>= min_g_per_kwh``.
    carbon_det_g_per_kwh : numpy.ndarray
        ``C_det(t)`` (no noise), used by the price model.
    floored_hours : int
        Hours in which the noise pushed ``C`` to the floor.
    """
    det = (
        cfg.base_g_per_kwh
        - cfg.solar_displacement_g_per_kwh * drivers.solar
        - cfg.wind_displacement_g_per_kwh * drivers.wind
        + cfg.peak_load_g_per_kwh * drivers.demand
    )
    noise = ar1_noise(
        stream_rng(seed, site, "carbon"), det.size, cfg.noise_g_per_kwh, cfg.noise_ar1
    )
    raw = det + noise
    floored = int(np.count_nonzero(raw < cfg.min_g_per_kwh))
    return np.maximum(raw, cfg.min_g_per_kwh), det, floored


def price_model(
    cfg: PriceConfig,
    carbon_cfg: CarbonConfig,
    carbon_det_g_per_kwh: np.ndarray,
    drivers: MarketDrivers,
    seed: int,
    site: str,
) -> np.ndarray:
    """Merit-order price, currency/MWh (module equations); may be negative.

    Parameters
    ----------
    cfg : PriceConfig
        ``base_per_mwh``, ``carbon_slope_per_mwh_per_g``, ``peak_adder_per_mwh``, noise.
    carbon_cfg : CarbonConfig
        For ``base_g_per_kwh``: the price moves with the carbon departure from it.
    carbon_det_g_per_kwh : numpy.ndarray
        Noise-free carbon intensity ``C_det``.
    drivers : MarketDrivers
    seed, site :
        Key the seeded noise stream.
    """
    noise = ar1_noise(
        stream_rng(seed, site, "price"), carbon_det_g_per_kwh.size, cfg.noise_per_mwh, cfg.noise_ar1
    )
    return (
        cfg.base_per_mwh
        + cfg.carbon_slope_per_mwh_per_g * (carbon_det_g_per_kwh - carbon_cfg.base_g_per_kwh)
        + cfg.peak_adder_per_mwh * drivers.demand**2
        + noise
    )


def resolve_data_path(file: str, base_dir: Path | None) -> Path:
    """A data file named in a scenario: absolute, else relative to the scenario's folder."""
    path = Path(file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def market_drivers(
    weather: SiteWeather,
    ghi_clearsky: np.ndarray,
    wind_cf: np.ndarray,
    load_kw: np.ndarray,
    clearsky_weight: float,
) -> MarketDrivers:
    """Regional solar, wind and demand indices of a site (see the module notes)."""
    return MarketDrivers(
        solar=regional_solar_index(
            weather.frame["ghi_w_per_m2"].to_numpy(), ghi_clearsky, clearsky_weight
        ),
        wind=wind_cf,
        demand=demand_index(load_kw),
    )
