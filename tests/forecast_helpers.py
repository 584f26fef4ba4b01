"""Real data for the forecasting tests, through the project's loaders.

The national ENTSO-E signals get an approximate location (the country's centroid, PV
fleet facing south at 30 degrees) for the solar features; CityLearn's homes are in
Fontana, California.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.loaders.citylearn import CITYLEARN_FORECAST_HORIZONS_H, load_citylearn
from gridrl.data.loaders.entsoe import load_entsoe_carbon, load_entsoe_production
from gridrl.data.loaders.multiregion import load_multiregion_price
from gridrl.data.signals import Signals
from gridrl.forecast.config import BoundsConfig, ForecastConfig, PVConfig
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts

# Approximate geographic centres used for the sun geometry of national PV fleets.
NATIONAL_CENTROIDS = {
    "fr": SiteLocation(46.6, 2.4, pv_tilt_deg=30.0, pv_azimuth_deg=180.0),
    "gb": SiteLocation(53.0, -1.5, pv_tilt_deg=30.0, pv_azimuth_deg=180.0),
}
FONTANA_CA = SiteLocation(34.09, -117.43, altitude_m=377.0)
SINGAPORE = SiteLocation(1.30, 103.83)  # the multiregion data set's weather point (site SG)
YEAR_START, YEAR_END = "2020-01-01", "2021-01-01"
ENTSOE_TARGETS = ["carbon_g_per_kwh", "solar_mw", "wind_mw"]


def entsoe_signals(shared_data: Path, country: str) -> Signals:
    """Hourly 2020 carbon intensity, national solar and wind (onshore + offshore, MW)."""
    base = shared_data / "grid" / "entsoe_2020"
    carbon = load_entsoe_carbon(base / f"{country}_carbon_intensity.csv", site=country,
                                resample="mean")
    prod = load_entsoe_production(base / f"{country}_production.csv", site=country,
                                  resample="mean")
    parts = [carbon.frame, prod.frame]
    frame = pd.concat(parts, axis=1, join="inner")
    start, end = pd.Timestamp(YEAR_START, tz="UTC"), pd.Timestamp(YEAR_END, tz="UTC")
    frame = frame[(frame.index >= start) & (frame.index < end)]
    wind_cols = [c for c in frame.columns if c[1] in ("wind_onshore_mw", "wind_offshore_mw")]
    out = pd.DataFrame({
        (country, "carbon_g_per_kwh"): frame[(country, "carbon_g_per_kwh")],
        (country, "solar_mw"): frame[(country, "solar_mw")],
        (country, "wind_mw"): frame[wind_cols].sum(axis=1),
    }, index=frame.index)
    out.index.name = "time"
    return Signals.from_frame(out, source=f"entsoe_2020/{country}")


def entsoe_config() -> ForecastConfig:
    """Forecaster for national series: no weather forecasts.

    A national PV fleet spans many longitudes, so the clear-sky model of one point
    misplaces dawn and dusk; national solar is modelled as the change from the same hour
    on the latest day known (``seasonal``) instead of as a clear-sky index. ENTSO-E
    national solar reports small nonzero values at night, so it is bounded below by 0
    only (no night bound)."""
    return ForecastConfig(
        targets=ENTSOE_TARGETS, weather=[], weather_for={}, pv=PVConfig(signals=[]),
        reference={"solar_mw": "seasonal"}, bounds=BoundsConfig(zero_at_night=[]),
    )


def citylearn_pv(shared_data: Path, building: str = "Building_1"
                 ) -> tuple[Signals, WeatherForecasts, dict]:
    """A CityLearn home's PV with the set's observed irradiance, and its real 6/12/24 h
    irradiance forecasts as weather covariates (issued at row t for t + lead)."""
    sig = load_citylearn(shared_data / "buildings" / "citylearn_2022", buildings=[building])
    shared = sig.site("neighbourhood")
    frame = pd.DataFrame({
        (building, "pv_kw"): sig.frame[(building, "pv_kw")],
        (building, "direct_w_per_m2"): shared["direct_w_per_m2"],
        (building, "diffuse_w_per_m2"): shared["diffuse_w_per_m2"],
    }, index=sig.index)
    frame.index.name = "time"
    weather = None
    for name in ("direct_w_per_m2", "diffuse_w_per_m2"):
        by_lead = {h: shared[f"{name}_fcst_{h}h"].to_numpy(dtype=np.float64)
                   for h in CITYLEARN_FORECAST_HORIZONS_H}
        w = WeatherForecasts.from_issue_arrays(name, by_lead)
        weather = w if weather is None else weather.merge(w)
    return Signals.from_frame(frame, source="citylearn_2022"), weather, {building: FONTANA_CA}


def citylearn_config(with_weather: bool = True) -> ForecastConfig:
    """PV forecaster for a CityLearn home (its irradiance forecasts as covariates)."""
    covs = ["direct_w_per_m2", "diffuse_w_per_m2"] if with_weather else []
    return ForecastConfig(targets=["pv_kw"], weather=[], weather_for={"pv_kw": covs})


def tmy_pv_signals(file: str = "723170TYA.CSV", kwp: float = 200.0) -> tuple[Signals, dict]:
    """Hourly PV of a horizontal ``kwp`` array from a TMY3 file shipped with pvlib.

    PV (kW) = GHI (W/m2) / 1000 x ``kwp`` (no losses: a simple real-weather PV signal).
    TMY3 rows are hour-ending local standard time: shifted to UTC start labels and laid
    on 2021. Returns the signals (site ``tmy``) and ``{"tmy": SiteLocation}``.
    """
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / file
    data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
    first_local_start = pd.Timestamp("2021-01-01 00:00")
    start_utc = first_local_start - pd.Timedelta(hours=float(meta["TZ"]))
    index = pd.date_range(start_utc.tz_localize("UTC"), periods=len(data), freq="h",
                          name="time")
    frame = pd.DataFrame(
        {("tmy", "pv_kw"): data["ghi"].to_numpy(dtype=float) / 1000.0 * kwp,
         ("tmy", "temp_c"): data["temp_air"].to_numpy(dtype=float)},
        index=index,
    )
    loc = SiteLocation(float(meta["latitude"]), float(meta["longitude"]),
                       float(meta["altitude"]))
    return Signals.from_frame(frame, source=str(path)), {"tmy": loc}


REPO = Path(__file__).resolve().parents[1]


def geo3_inputs():
    """The embedded geo3 scenario, its signals (pvlib TMY weather) and site locations."""
    from gridrl.forecast.pipeline import load_inputs

    return load_inputs(REPO / "envs" / "geo3.yaml")


def small_config(**update) -> ForecastConfig:
    """A quick forecaster for unit tests (few small trees, one fit per 1 h model, three
    folds)."""
    from gridrl.forecast.config import CrossFitConfig, LightGBMConfig, TrainingConfig

    cfg = ForecastConfig(
        lightgbm=LightGBMConfig(n_estimators=15, num_leaves=7),
        training=TrainingConfig(own_model_bags=1),
        crossfit=CrossFitConfig(folds=3, gap_h=24),
    )
    return cfg.model_copy(update=update)


def singapore_price() -> pd.DataFrame:
    """Singapore's hourly 2023 market price (site ``SG``, ``price_per_mwh``), from the
    multiregion data set under the data root."""
    return load_multiregion_price("SG", (2023, 2023)).frame


def plain_candidate_config(**update) -> ForecastConfig:
    """A quick market-price forecaster whose 1 h model may be the plain per-horizon
    LightGBM (one candidate at a time: no blends). Its issue rows start where the plain
    model's lags do, so both fit the same pairs."""
    from gridrl.forecast.config import SelectionConfig, TrainingConfig
    from gridrl.forecast.plain import first_plain_row

    cfg = small_config(
        targets=["price_per_mwh"], weather=[], weather_for={}, pv=PVConfig(signals=[]),
        bounds=BoundsConfig(zero_at_night=[]),
        training=TrainingConfig(min_history_h=first_plain_row(), own_model_bags=1),
        selection=SelectionConfig(models=["own"], blend=False, plain_candidate=True))
    return cfg.model_copy(update=update)
