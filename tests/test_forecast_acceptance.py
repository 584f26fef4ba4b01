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

from gridrl.forecast import ForecastConfig
from gridrl.forecast.backtest import backtest, evaluation_rows
from gridrl.forecast.causal import evaluation_mask

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
    result = backtest(entsoe_signals(shared_data, country), entsoe_config(), scheme="rolling",
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
