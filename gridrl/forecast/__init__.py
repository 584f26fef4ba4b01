"""gridrl.forecast: LightGBM quantile forecasts of site signals, baselines and backtests.

The environment reads a :class:`ForecastCube` made by :func:`make_cube`.
"""

from gridrl.forecast.config import ForecastConfig, ForecastConfigError, load_forecast_config
from gridrl.forecast.cube import ForecastCube, make_cube, parse_mode
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.sites import site_locations
from gridrl.forecast.solar import SiteLocation

__all__ = [
    "ForecastConfig",
    "ForecastConfigError",
    "ForecastCube",
    "ForecastError",
    "SiteLocation",
    "load_forecast_config",
    "make_cube",
    "parse_mode",
    "site_locations",
]
