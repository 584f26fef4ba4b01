"""Features: only information known at the issue time (no look-ahead), vectorised helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from forecast_helpers import geo3_inputs

from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.features import (
    FeatureBuilder,
    target_hour_arrays,
    trailing_sums,
)
from gridrl.forecast.inputs import signal_table
from gridrl.forecast.model import reference_of
from gridrl.forecast.weather import WeatherForecasts, simulate_weather

CFG = ForecastConfig()


@pytest.fixture(scope="module")
def geo3():
    data = geo3_inputs()
    table = signal_table(data.signals)
    weather = simulate_weather(table, CFG.weather, seed=1)
    hours = target_hour_arrays(table, data.locations)
    return data, table, weather, hours


def _features(table, weather, hours, target, t0, scale, cs_scale):
    b = FeatureBuilder(table, target, CFG, reference_of(target, CFG), hours, weather)
    n_sites = len(table.sites)
    h = np.tile(np.arange(1, CFG.max_horizon_h + 1), n_sites)
    n = np.repeat(np.arange(n_sites), CFG.max_horizon_h)
    t = np.full(h.size, t0)
    return b.build(t, n, h, scale, cs_scale), b.names


def _perturb_after(table, weather, t0, rng):
    """Every signal value after row t0 and every weather forecast issued after t0 replaced
    by noise."""
    data = table.data.copy()
    data[t0 + 1:] = data[t0 + 1:] * rng.uniform(0.2, 3.0, data[t0 + 1:].shape) + 7.0
    leaked = {}
    for name, by_lead in weather.forecasts.items():
        leaked[name] = {}
        for lead, arr in by_lead.items():
            a = arr.copy()
            issued_after = np.arange(len(a)) - lead > t0  # target row s issued at s - lead
            a[issued_after] = rng.uniform(-1e3, 1e3, a[issued_after].shape)
            leaked[name][lead] = a
    return dataclasses.replace(table, data=data), WeatherForecasts(leaked)


@pytest.mark.parametrize("target", CFG.targets)
def test_features_do_not_look_ahead(geo3, target):
    _, table, weather, hours = geo3
    rng = np.random.default_rng(7)
    n_sites = len(table.sites)
    scale = np.full(n_sites, 10.0)
    cs_scale = np.full(n_sites, 1.5)
    for t0 in (200, 4000, len(table.index) - CFG.max_horizon_h - 1):
        before, names = _features(table, weather, hours, target, t0, scale, cs_scale)
        table2, weather2 = _perturb_after(table, weather, t0, rng)
        after, _ = _features(table2, weather2, hours, target, t0, scale, cs_scale)
        np.testing.assert_array_equal(before, after, err_msg=f"{target} at t={t0}")
        # the test is sensitive: perturbing the issue row itself changes the features
        data = table.data.copy()
        data[t0] += 1.0 + np.abs(data[t0])
        changed, _ = _features(dataclasses.replace(table, data=data), weather, hours, target,
                               t0, scale, cs_scale)
        assert not np.array_equal(np.nan_to_num(before), np.nan_to_num(changed))
        assert np.isfinite(before[:, names.index("h")]).all()


def test_weather_uses_freshest_forecast_issued_before(geo3):
    _, table, _, _ = geo3
    t_len = len(table.index)
    # forecasts equal to the lead so the chosen lead can be read back
    wx = WeatherForecasts({"x": {L: np.full((t_len, 3), float(L)) for L in (6, 12, 24)}})
    h = np.array([1, 6, 7, 12, 13, 24, 25, 48])
    t = np.full(h.size, 100)
    n = np.zeros(h.size, dtype=int)
    got = wx.at_target("x", t, h, n)
    np.testing.assert_array_equal(got[:-2], [6, 6, 12, 12, 24, 24])
    assert np.isnan(got[-2:]).all()  # beyond the longest lead: no forecast


def test_issue_arrays_are_shifted_to_target_rows():
    a = np.arange(10, dtype=float)
    wx = WeatherForecasts.from_issue_arrays("x", {3: a})
    got = wx.forecasts["x"][3][:, 0]
    assert np.isnan(got[:3]).all()
    np.testing.assert_array_equal(got[3:], a[:-3])  # row s holds the forecast made at s-3


def test_calendar_is_local_mean_solar_time(geo3):
    data, table, _, hours = geo3
    n = table.sites.index("greensboro")
    lon = data.locations["greensboro"].longitude_deg
    utc = table.index.hour.to_numpy()
    expect = np.floor(utc + lon / 15.0) % 24
    np.testing.assert_array_equal(hours.hour[:, n], expect)
    # solar elevation peaks near local solar noon
    day = slice(24 * 180, 24 * 181)
    assert abs(hours.hour[day, n][np.argmax(hours.elevation_deg[day, n])] - 12) <= 1


def test_trailing_sums_match_pandas():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 2))
    y[rng.random(y.shape) < 0.1] = np.nan
    s1, s2, cnt = trailing_sums(y, 24)
    frame = pd.DataFrame(y)
    np.testing.assert_allclose(s1, frame.rolling(24, min_periods=1).sum().fillna(0).to_numpy(),
                               atol=1e-9)
    np.testing.assert_array_equal(cnt, frame.notna().rolling(24, min_periods=1).sum())


@pytest.mark.parametrize("reference", ["last", "seasonal", "ramp", "level"])
def test_references_follow_their_formula_and_do_not_look_ahead(geo3, reference):
    _, table, weather, hours = geo3
    target = "carbon_g_per_kwh"
    y = table.column(target)
    t0 = 4000
    h = np.tile(np.arange(1, 49), len(table.sites))
    n = np.repeat(np.arange(len(table.sites)), 48)
    t = np.full(h.size, t0)
    d = 24 * -(-h // 24)  # the latest day known at the target's hour
    expected = {"last": y[t, n], "seasonal": y[t + h - d, n],
                "ramp": y[t, n] + y[t + h - d, n] - y[t - d, n], "level": 0.0 * h}[reference]
    b = FeatureBuilder(table, target, CFG, reference, hours, weather)
    np.testing.assert_allclose(b.base(t, n, h), expected)
    table2, weather2 = _perturb_after(table, weather, t0, np.random.default_rng(3))
    b2 = FeatureBuilder(table2, target, CFG, reference, hours, weather2)
    np.testing.assert_array_equal(b2.base(t, n, h), b.base(t, n, h))
    scale = np.full(len(table.sites), 10.0)
    np.testing.assert_array_equal(b2.build(t, n, h, scale), b.build(t, n, h, scale))
