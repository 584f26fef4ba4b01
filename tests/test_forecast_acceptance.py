"""Acceptance on data no one here made: LightGBM beats seasonal naive out of sample.

Printed numbers (``pytest -s``) are the ones reported: MAE averaged over horizons 1-24.
"""

from __future__ import annotations

import numpy as np
import pytest
from forecast_helpers import (
    NATIONAL_CENTROIDS,
    citylearn_config,
    citylearn_pv,
    entsoe_config,
    entsoe_signals,
    geo3_inputs,
)

from gridrl.data.loaders.eia930 import load_eia930
from gridrl.data.loaders.multiregion import load_multiregion_price
from gridrl.forecast import ForecastConfig
from gridrl.forecast import baselines as bl
from gridrl.forecast.backtest import backtest, evaluation_rows
from gridrl.forecast.causal import evaluation_mask
from gridrl.forecast.config import BacktestConfig, BoundsConfig, PVConfig
from gridrl.forecast.inputs import signal_table
from gridrl.forecast.metrics import mae
from gridrl.forecast.solar import SiteLocation

pytestmark = pytest.mark.slow


def _report(name, result):
    s = result.summary
    for _, row in s[s.model.isin(["lightgbm", "seasonal_naive", "smart_persistence"])].iterrows():
        print(f"{name} {row.signal:<18} {row.model:<18} MAE {row.mae:10.3f} "
              f"skill {row.skill_vs_seasonal_naive:+.3f} coverage {row.coverage_outer:.3f}")
    return s


def _mae(summary, signal, model):
    row = summary[(summary.signal == signal) & (summary.model == model)]
    return float(row["mae"].iloc[0])


@pytest.fixture(scope="module")
def geo3_result():
    data = geo3_inputs()
    rows = evaluation_rows(data.signals.index, data.scenario.periods.test)
    # the cube's scheme: test-week forecasts from models fitted on earlier data only
    return backtest(data.signals, ForecastConfig(), scheme="causal",
                    locations=data.locations, eval_rows=rows,
                    causal_rows=evaluation_mask(data.signals.index, data.scenario.periods))


def test_geo3_test_period(geo3_result):
    s = _report("geo3", geo3_result)
    for signal in geo3_result.targets:
        assert _mae(s, signal, "lightgbm") < _mae(s, signal, "seasonal_naive"), signal
        cov = float(s[(s.signal == signal) & (s.model == "lightgbm")]["coverage_outer"].iloc[0])
        assert 0.70 <= cov <= 0.90, (signal, cov)
    skill = geo3_result.day_ahead("lightgbm", "smart_persistence", range(1, 25))["pv_kw"]
    print(f"geo3 pv_kw day-ahead skill vs smart persistence (h 1-24): {skill:+.3f}")
    assert np.isfinite(skill)
    # only issue times in the test weeks were evaluated
    assert geo3_result.meta["eval_rows"] == 12 * 7 * 24


@pytest.mark.parametrize("country", ["fr", "gb"])
def test_entsoe_2020(shared_data, country):
    # origins on 30 April and 30 August: two fits of the full forecaster, not four
    cfg = entsoe_config().model_copy(update={
        "backtest": BacktestConfig(initial_train_h=2880, refit_every_h=2928)})
    result = backtest(entsoe_signals(shared_data, country), cfg, scheme="rolling",
                      locations={country: NATIONAL_CENTROIDS[country]})
    s = _report(f"entsoe {country}", result)
    for signal in ("carbon_g_per_kwh", "solar_mw", "wind_mw"):
        assert _mae(s, signal, "lightgbm") < _mae(s, signal, "seasonal_naive"), signal


def test_citylearn_pv_with_irradiance_forecasts(shared_data):
    sig, weather, locations = citylearn_pv(shared_data)
    result = backtest(sig, citylearn_config(), scheme="rolling", locations=locations,
                      weather=weather)
    s = _report("citylearn", result)
    assert _mae(s, "pv_kw", "lightgbm") < _mae(s, "pv_kw", "seasonal_naive")


def _eia930_wind(root):
    sig = load_eia930(root / "grid" / "eia930_2022" / "CISO.csv", columns={"WND": "wind_mw"},
                      fill="interpolate")
    return sig.frame, SiteLocation(37.0, -120.0)


def _multiregion_price(root):
    sig = load_multiregion_price("DE-LU", (2023, 2023))  # the data set under ``root``
    return sig.frame, SiteLocation(50.12, 8.68)


@pytest.mark.parametrize("series", [_eia930_wind, _multiregion_price])
def test_one_hour_ahead_as_good_as_a_per_horizon_lightgbm(shared_data, series):
    """Fitted on January-August, issued every hour of September-December: at 1 h gridrl's
    P50 is at least as good as a per-horizon LightGBM on lags and calendar, and better
    averaged over the horizons."""
    frame, location = series(shared_data)
    table = signal_table(frame)
    signal, site = table.signals[0], table.sites[0]
    t_len = len(table.index)
    origin = int(table.index.searchsorted(table.index[0].replace(month=9, day=1)))
    cfg = ForecastConfig(targets=[signal], weather=[], weather_for={}, pv=PVConfig(signals=[]),
                         bounds=BoundsConfig(zero_at_night=[]),
                         backtest=BacktestConfig(initial_train_h=origin, refit_every_h=t_len))
    hz = np.array([1, 2, 3, 6, 12, 24])
    res = backtest(table, cfg, scheme="rolling", locations={site: location},
                   eval_rows=np.arange(origin, t_len - hz.max()))
    plain = bl.per_horizon_lightgbm(table.column(signal), table.index, res.rows, hz,
                                    np.arange(t_len) < origin)
    truth = res.truth[:, :, 0, hz - 1]
    ours = mae(res.forecasts[:, :, 0, hz - 1, cfg.quantiles.index(0.5)], truth, axis=(0, 1))
    theirs = mae(plain, truth, axis=(0, 1))
    print(f"{site}/{signal} MAE at {hz.tolist()} h: gridrl {np.round(ours, 1).tolist()}, "
          f"per-horizon LightGBM {np.round(theirs, 1).tolist()}")
    assert ours[0] <= theirs[0]
    assert ours.mean() < theirs.mean()
