"""Causal forecasts of the evaluation periods: a forecast issued at t cannot change when
anything after t changes; training-period forecasts stay cross-fitted.

The data are geo3's real signals (pvlib TMY weather) from 1 January to 14 March: two
test weeks (22-28 January and February) among three training blocks, every forecast
target of the default config, its simulated weather forecasts as covariates.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from forecast_helpers import (
    SINGAPORE,
    geo3_inputs,
    plain_candidate_config,
    singapore_price,
    small_config,
)

from gridrl.data.signals import signal_spec
from gridrl.forecast import ForecastConfig, ForecastError, make_cube
from gridrl.forecast.backtest import backtest
from gridrl.forecast.causal import evaluation_mask, grown_origins, origin_mask, refit_plan
from gridrl.forecast.config import CalibrationConfig, CausalConfig
from gridrl.forecast.crossfit import crossfit_mask, fold_blocks, lookback_gap_h, weather_for
from gridrl.forecast.inputs import signal_table
from gridrl.forecast.plain import PLAIN
from gridrl.forecast.weather import WeatherForecasts
from gridrl.scenario import Period

ROWS = 24 * 73  # 1 January .. 14 March
TARGETS = ForecastConfig().targets  # every target of the default config
FIRST_TEST_ROW = 24 * 21  # 22 January 00:00 UTC
SECOND_TEST_ROW = 24 * (31 + 21)  # 22 February


@pytest.fixture(scope="module")
def geo3():
    data = geo3_inputs()
    frame = data.signals.frame.iloc[:ROWS].copy()
    cfg = small_config(calibration=CalibrationConfig(window_h=168),
                       causal=CausalConfig(min_train_h=240))
    weather = weather_for(signal_table(frame), cfg, None, seed=0)
    # the test weeks only: the tests below place validation blocks themselves
    periods = data.scenario.periods.model_copy(update={"validation": []})
    return SimpleNamespace(frame=frame, periods=periods, cfg=cfg,
                           weather=weather, locations=data.locations)


def _cube(geo3, cache, frame=None, weather=None, periods="scenario", config=None):
    return make_cube(
        geo3.frame if frame is None else frame, "lightgbm", targets=TARGETS,
        horizons_h=list(range(1, 25)), quantiles=[0.1, 0.5, 0.9],
        config=config or geo3.cfg, cache_dir=cache, locations=geo3.locations,
        weather=geo3.weather if weather is None else weather,
        periods=geo3.periods if periods == "scenario" else periods,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cubes")


@pytest.fixture(scope="module")
def base(geo3, cache):
    return _cube(geo3, cache)


def _changed(values: np.ndarray, name: str, rows: slice, rng: np.random.Generator
             ) -> np.ndarray:
    """A copy of ``values`` with ``rows`` changed: scaled for nonnegative signals, shifted
    (possibly below zero) for the others."""
    out = np.array(values, dtype=np.float64, copy=True)
    part = out[rows]
    if signal_spec(name).nonnegative:
        out[rows] = part * rng.lognormal(0.0, 0.5, part.shape)
    else:
        out[rows] = part + rng.normal(0.0, 2.0 * np.nanstd(values), part.shape)
    return out


def perturbed(frame: pd.DataFrame, weather: WeatherForecasts, after: int,
              until: int | None = None, seed: int = 1
              ) -> tuple[pd.DataFrame, WeatherForecasts]:
    """Every signal changed at rows ``after + 1 .. until`` (to the end if None), and every
    weather forecast issued after row ``after`` for a target row up to ``until``."""
    rng = np.random.default_rng(seed)
    stop = len(frame) if until is None else until + 1
    out = frame.copy()
    for col in frame.columns:
        out[col] = _changed(frame[col].to_numpy(), col[1], slice(after + 1, stop), rng)
    forecasts = {}
    for name, by_lead in weather.forecasts.items():
        forecasts[name] = {}
        for lead, arr in by_lead.items():
            target = np.arange(len(arr))
            issued_later = (target - lead > after) & (target < stop)
            changed = _changed(arr, name, slice(None), rng)
            forecasts[name][lead] = np.where(issued_later[:, None], changed, arr)
    return out, WeatherForecasts(forecasts)


# ------------------------------------------------------------------ the plan


def test_refit_origins_are_first_evaluation_hours_of_each_month(geo3):
    index = geo3.frame.index
    mask = evaluation_mask(index, geo3.periods)
    assert mask.sum() == 2 * 7 * 24
    plan = refit_plan(index, mask, geo3.cfg)
    warm = FIRST_TEST_ROW - 168 - geo3.cfg.max_horizon_h  # calibration warm-up
    assert plan.origins == (warm, FIRST_TEST_ROW, SECOND_TEST_ROW) and plan.warmup
    assert plan.ends == (FIRST_TEST_ROW, SECOND_TEST_ROW, SECOND_TEST_ROW + 7 * 24)
    weekly = refit_plan(index, mask, geo3.cfg.model_copy(update={"causal": CausalConfig(
        refit="weekly", min_train_h=240, refit_growth=None)}))
    # 22 January 2021 is a Friday: that test week spans two calendar weeks
    assert weekly.origins[1:3] == (FIRST_TEST_ROW, FIRST_TEST_ROW + 3 * 24)
    # the model of an origin trains on rows before it only (and within the window)
    m = origin_mask(ROWS, FIRST_TEST_ROW, CausalConfig(origin="rolling", rolling_window_h=100))
    assert np.array_equal(np.flatnonzero(m), np.arange(FIRST_TEST_ROW - 100, FIRST_TEST_ROW))
    assert not origin_mask(ROWS, FIRST_TEST_ROW, CausalConfig())[FIRST_TEST_ROW:].any()


def test_validation_blocks_are_forecast_causally_and_early_ones_refused(geo3):
    index = geo3.frame.index
    periods = SimpleNamespace(train=[], test=geo3.periods.test,
                              validation=[Period(start="2021-03-05", end="2021-03-07")])
    mask = evaluation_mask(index, periods)
    assert mask[24 * 63: 24 * 66].all() and mask.sum() == 2 * 7 * 24 + 3 * 24
    every = CausalConfig(min_train_h=240, refit_growth=None)
    plan = refit_plan(index, mask, geo3.cfg.model_copy(update={"causal": every}))
    assert plan.origins[-1] == 24 * 63  # March's first evaluation hour
    # by default March is served by February's model: 264 h since its origin, less
    # than a quarter of the 1248 h of history before it
    assert refit_plan(index, mask, geo3.cfg).origins[-1] == SECOND_TEST_ROW
    early = SimpleNamespace(train=[], test=[Period(start="2021-01-05", end="2021-01-08")])
    with pytest.raises(ForecastError, match=r"causal.min_train_h = 240"):
        refit_plan(index, evaluation_mask(index, early), geo3.cfg)


def test_refit_growth_keeps_origins_where_the_history_has_grown(geo3):
    index = geo3.frame.index
    mask = evaluation_mask(index, geo3.periods)
    every = refit_plan(index, mask, geo3.cfg).origins  # (warm-up, 22 January, 22 February)

    def plan(growth):
        causal = geo3.cfg.causal.model_copy(update={"refit_growth": growth})
        return refit_plan(index, mask, geo3.cfg.model_copy(update={"causal": causal}))

    assert grown_origins(list(every), None) == list(every) and plan(0.5).origins == every
    # 22 January is 192 h after the warm-up origin (312 h of history): less than it
    one = plan(1.0)
    assert one.origins == (every[0], every[2]) and one.warmup
    assert one.ends == (every[2], SECOND_TEST_ROW + 7 * 24)
    assert plan(4.0).origins == (every[0],)  # the warm-up model serves both test weeks
    for growth in (0.3, 1.0, 2.5):
        kept = plan(growth).origins
        assert kept[0] == every[0] and set(kept) <= set(every)
        last = kept[0]
        for o in every[1:]:  # a candidate is kept exactly when the history has grown
            assert (o in kept) == (o - last >= growth * last)
            last = o if o in kept else last


# ------------------------------------------------------------------ causality


@pytest.mark.parametrize("t", [FIRST_TEST_ROW + 83, SECOND_TEST_ROW + 101])
def test_sparse_refits_stay_causal(geo3, cache, t):
    """With ``refit_growth`` the calibration warm-up model (fitted on rows before
    FIRST_TEST_ROW - 192) serves both test weeks: a forecast issued five weeks after its
    model's origin still ignores everything after its issue time, for every target."""
    cfg = geo3.cfg.model_copy(update={"causal": geo3.cfg.causal.model_copy(
        update={"refit_growth": 4.0})})
    base = _cube(geo3, cache, config=cfg)
    assert len(base.meta["causal"]["origins"]) == 1 and base.meta["causal"]["warmup_origin"]
    frame, weather = perturbed(geo3.frame, geo3.weather, after=t)
    cube = _cube(geo3, cache, frame, weather, config=cfg)
    for k, name in enumerate(TARGETS):
        np.testing.assert_array_equal(cube.values[t, :, k], base.values[t, :, k],
                                      err_msg=f"{name}: the forecast issued at {t} changed")
    assert not np.allclose(cube.values[t + 1], base.values[t + 1])


@pytest.mark.parametrize("t", [FIRST_TEST_ROW, FIRST_TEST_ROW + 83, SECOND_TEST_ROW + 101])
def test_forecast_issued_at_t_ignores_everything_after_t(geo3, cache, base, t):
    frame, weather = perturbed(geo3.frame, geo3.weather, after=t)
    cube = _cube(geo3, cache, frame, weather)
    assert cube.meta["scheme"] == "causal"
    for k, name in enumerate(TARGETS):
        np.testing.assert_array_equal(cube.values[t, :, k], base.values[t, :, k],
                                      err_msg=f"{name}: the forecast issued at {t} changed")
    # the change is real: the next issue time already sees it
    assert not np.allclose(cube.values[t + 1], base.values[t + 1])


def test_a_plain_one_hour_model_stays_causal(shared_data, tmp_path):
    """Singapore's market price, the plain per-horizon LightGBM among the candidates of
    the 1 h model: the model of 1 November (fitted on January-October, where the plain
    model forecast October best) serves the test fortnight with it, and a forecast it
    issues at t ignores everything after t."""
    frame = singapore_price()
    cfg = plain_candidate_config(causal=CausalConfig(refit_growth=None))
    periods = SimpleNamespace(test=[Period(start="2023-11-01", end="2023-11-14")])

    def cube(data: pd.DataFrame):
        return make_cube(data, "lightgbm", targets=["price_per_mwh"],
                         horizons_h=list(range(1, 25)), quantiles=cfg.quantiles, config=cfg,
                         cache_dir=tmp_path, locations={"SG": SINGAPORE}, periods=periods)

    base = cube(frame)
    causal = base.meta["causal"]
    assert causal["origins"][-1] == "2023-11-01 00:00:00+00:00"
    assert causal["models"]["price_per_mwh"][-1] == {"pooled": "last", "h1": PLAIN}
    t = int(frame.index.searchsorted(pd.Timestamp("2023-11-04 11:00", tz="UTC")))
    later = frame.copy()
    col = frame.columns[0]
    later[col] = _changed(frame[col].to_numpy(), col[1], slice(t + 1, None),
                          np.random.default_rng(1))
    moved = cube(later)
    np.testing.assert_array_equal(moved.values[t], base.values[t])
    assert not np.allclose(moved.values[t + 1], base.values[t + 1])


def test_causal_backtest_of_the_test_weeks_skips_cross_fitting(geo3):
    """A causal backtest that evaluates only test rows forecasts them as one of every
    row does (same refits, same calibration), without cross-fitting the other rows."""
    mask = evaluation_mask(geo3.frame.index, geo3.periods)
    rows = np.flatnonzero(mask)
    kw = {"scheme": "causal", "locations": geo3.locations, "weather": geo3.weather,
          "causal_rows": mask}
    every = backtest(geo3.frame, geo3.cfg, **kw)
    tests = backtest(geo3.frame, geo3.cfg, eval_rows=rows, **kw)
    assert "folds" in every.meta and "folds" not in tests.meta  # cross-fitted or not
    assert len(every.rows) > 2 * len(rows)
    np.testing.assert_array_equal(tests.rows, rows)
    np.testing.assert_array_equal(tests.forecasts, every.forecasts[np.isin(every.rows, rows)])


def test_whole_year_crossfitting_fails_the_same_check(geo3, cache, base):
    """Without the periods every row is cross-fitted, and the forecast issued at t
    moves with data after t: the check above has teeth."""
    t = FIRST_TEST_ROW + 83
    old = _cube(geo3, cache, periods=None)
    assert old.meta["scheme"] == "crossfit" and base.meta["cache_key"] != old.meta["cache_key"]
    frame, weather = perturbed(geo3.frame, geo3.weather, after=t)
    moved = _cube(geo3, cache, frame, weather, periods=None)
    assert not np.array_equal(moved.values[t], old.values[t])
    assert len(list((cache / "forecast").glob("cube-*.npz"))) >= 3


def test_causal_cube_is_finite_bounded_and_calibrated(geo3, base):
    v = base.values
    assert np.isfinite(v).all() and (np.diff(v, axis=-1) >= 0).all()
    meta = base.meta
    assert meta["causal"]["warmup_origin"] and len(meta["causal"]["origins"]) == 3
    for name in TARGETS:
        cover = meta["coverage_outer_evaluation"][name]["calibrated"]
        assert 0.6 < cover < 0.95, (name, cover)


# ------------------------------------------------------------------ training rows


def test_training_blocks_never_train_on_themselves_or_evaluation_rows(geo3):
    train = ~evaluation_mask(geo3.frame.index, geo3.periods)
    blocks = fold_blocks(ROWS, 3, train)
    assert np.array_equal(np.concatenate(blocks), np.flatnonzero(train))
    after_h = lookback_gap_h(geo3.cfg)
    assert after_h == 167  # rows the weekly lags and 7-day profile of an issue row reach back
    for block in blocks:
        mask = crossfit_mask(ROWS, block, 24, train, after_h)
        assert not mask[block].any() and not mask[~train].any()
        assert not mask[block[0] - 24: block[-1] + after_h + 1].any()


def test_training_forecasts_are_cross_fitted(geo3, cache):
    """Data changed inside a training block after t leaves the block's forecast at t
    unchanged (its model never saw the block) but moves the forecasts of another
    block, whose model trained on it. Calibration off: the models alone are compared."""
    cfg = geo3.cfg.model_copy(update={"calibration": CalibrationConfig(method="none")})
    train = ~evaluation_mask(geo3.frame.index, geo3.periods)
    block = fold_blocks(ROWS, cfg.crossfit.folds, train)[1]
    t = int(block[len(block) // 3])
    before = _cube(geo3, cache, config=cfg)
    frame, weather = perturbed(geo3.frame, geo3.weather, after=t, until=int(block[-1]))
    after = _cube(geo3, cache, frame, weather, config=cfg)
    np.testing.assert_array_equal(after.values[t], before.values[t])
    other = fold_blocks(ROWS, cfg.crossfit.folds, train)[0][-100]
    assert not np.array_equal(after.values[other], before.values[other])
