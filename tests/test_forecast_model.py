"""Quantile LightGBM forecaster: bounds, non-crossing, save/load, config and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from forecast_helpers import (
    REPO,
    SINGAPORE,
    geo3_inputs,
    plain_candidate_config,
    singapore_price,
    small_config,
)

from gridrl.forecast import ForecastConfig, ForecastConfigError, ForecastError
from gridrl.forecast.baselines import per_horizon_lightgbm
from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.config import (
    BoundsConfig,
    PVConfig,
    SelectionConfig,
    TrainingConfig,
    load_forecast_config,
)
from gridrl.forecast.crossfit import weather_for
from gridrl.forecast.features import required_history_h
from gridrl.forecast.inputs import signal_table
from gridrl.forecast.model import (
    HOLD,
    MODEL_FORMAT_VERSION,
    Member,
    QuantileForecaster,
    own_model_horizons,
)
from gridrl.forecast.plain import PLAIN, quantile_params

TARGETS = ["pv_kw", "wind_kw", "headroom_kw", "carbon_g_per_kwh"]
HORIZONS = [1, 6, 24]


@pytest.fixture(scope="module")
def fitted():
    data = geo3_inputs()
    table = signal_table(data.signals)
    cfg = small_config(targets=TARGETS)
    weather = weather_for(table, cfg, None, seed=0)
    t_len = len(table.index)
    train = np.arange(t_len) < t_len // 2
    model = QuantileForecaster(cfg, data.locations, weather, seed=0).fit(table, train)
    rows = np.arange(t_len // 2, t_len)
    return data, table, cfg, weather, model, rows, model.predict(table, rows, HORIZONS)


def test_quantiles_sorted_and_bounds_hold(fitted):
    data, table, cfg, _, _, rows, pred = fitted
    assert pred.shape == (len(rows), 3, len(TARGETS), len(HORIZONS), 3)
    assert pred.dtype == np.float32 and np.isfinite(pred).all()
    assert (np.diff(pred, axis=-1) >= 0).all()
    k_pv, k_wind, k_head = (TARGETS.index(s) for s in ("pv_kw", "wind_kw", "headroom_kw"))
    assert (pred[:, :, [k_pv, k_wind]] >= 0).all()
    cap = table.column("feeder_capacity_kw").max(axis=0)  # [N]
    assert (pred[:, :, k_head] <= cap[None, :, None, None]).all()
    b = physical_bounds(table.data, table.index, table.sites, table.signals, TARGETS,
                        cfg.bounds, data.locations)
    tgt = np.minimum(rows[:, None] + np.asarray(HORIZONS)[None], len(table.index) - 1)
    night = np.moveaxis(b.night[tgt][..., k_pv], 1, 2)  # [R, N, H]
    assert night.mean() > 0.3
    assert (pred[:, :, k_pv][night] == 0).all()
    # a site without a turbine is forecast as exactly zero wind
    miami = table.sites.index("miami")
    assert (pred[:, miami, k_wind] == 0).all()


def test_p50_beats_seasonal_naive_out_of_sample(fitted):
    _, table, _, _, _, rows, pred = fitted
    k = TARGETS.index("carbon_g_per_kwh")
    y = table.column("carbon_g_per_kwh")
    ok = rows + 24 < len(y)
    truth = y[rows[ok] + 24]
    p50 = pred[ok, :, k, HORIZONS.index(24), 1]
    seasonal = y[rows[ok]]  # same hour yesterday for h = 24
    assert np.mean(np.abs(p50 - truth)) < np.mean(np.abs(seasonal - truth))


def test_save_load_roundtrip(fitted, tmp_path):
    _, table, _, weather, model, rows, pred = fitted
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "forecaster.json").exists()
    text = (tmp_path / "m" / "pv_kw_pooled_clearsky_q0.5.txt").read_text()
    assert text.startswith("tree")  # LightGBM's native text format
    back = QuantileForecaster.load(tmp_path / "m", weather=weather)
    np.testing.assert_array_equal(back.predict(table, rows[:200], HORIZONS), pred[:200])
    with pytest.raises(ForecastError, match="no forecaster.json"):
        QuantileForecaster.load(tmp_path / "missing")


def test_targets_past_the_data_hold_the_last_row(fitted):
    _, table, _, _, model, _, _ = fitted
    t_len = len(table.index)
    last = model.predict(table, [t_len - 1], HORIZONS)
    y_last = table.data[-1][:, [table.signals.index(s) for s in TARGETS]]  # [N, K]
    np.testing.assert_allclose(last[0, :, :, :, 1], np.repeat(y_last[..., None], 3, -1),
                               rtol=1e-6)


def test_bad_input_names_signal_and_site(fitted):
    data, table, cfg, weather, model, _, _ = fitted
    short = data.signals.frame.iloc[:100]
    with pytest.raises(ForecastError, match="history too short for the lags: signal 'pv_kw' "
                                            "at site 'greensboro'"):
        QuantileForecaster(cfg, data.locations, weather).fit(signal_table(short))
    frame = data.signals.frame.copy()
    frame[("miami", "carbon_g_per_kwh")] = np.nan
    with pytest.raises(ForecastError, match="'carbon_g_per_kwh' at site 'miami' is all NaN"):
        QuantileForecaster(cfg, data.locations, weather).fit(signal_table(frame))
    with pytest.raises(ForecastError, match="horizon 48 h is beyond the fitted maximum 24 h"):
        model.predict(table, [10], [1, 48])
    with pytest.raises(ForecastError, match="not fitted"):
        QuantileForecaster(cfg).predict(table, [10], [1])
    cfg_nowx = cfg.model_copy(update={"weather_for": {"pv_kw": ["cloud_fraction"]}})
    with pytest.raises(ForecastError, match="cloud_fraction"):
        QuantileForecaster(cfg_nowx, data.locations, weather).fit(table)


def test_default_yaml_equals_schema_defaults():
    cfg = load_forecast_config(REPO / "forecasts" / "default.yaml")
    a = cfg.model_dump()
    b = ForecastConfig().model_dump()
    a.pop("description"), b.pop("description")
    assert a == b


def test_config_errors_name_the_yaml_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lightgbm:\n  num_leaves: 1\nquantiles: [0.9, 0.1]\nfoo: 1\n")
    with pytest.raises(ForecastConfigError) as err:
        load_forecast_config(bad)
    msg = str(err.value)
    assert "lightgbm.num_leaves" in msg and "foo" in msg and str(bad) in msg
    with pytest.raises(ForecastConfigError, match="not found"):
        load_forecast_config(tmp_path / "nope.yaml")
    bad.write_text("quantiles: [0.1, 0.9]\n")
    with pytest.raises(ForecastConfigError, match="0.5"):
        load_forecast_config(bad)
    bad.write_text("lightgbm:\n  num_threads: true\nfeatures:\n  lags_h: [1, false]\n")
    with pytest.raises(ForecastConfigError) as err:
        load_forecast_config(bad)
    msg = str(err.value)
    assert "lightgbm.num_threads: Input should be a valid integer (got True)" in msg, msg
    assert "features.lags_h[1]: Input should be a valid integer (got False)" in msg, msg


def test_index_must_be_hourly(fitted):
    data = fitted[0]
    frame = data.signals.frame.drop(data.signals.frame.index[5])
    with pytest.raises(ForecastError, match="regular hourly index; step at row 5"):
        signal_table(frame)
    naive = data.signals.frame.copy()
    naive.index = pd.DatetimeIndex(naive.index.tz_localize(None))
    with pytest.raises(ForecastError, match="tz-aware"):
        signal_table(naive)


def test_one_hour_ahead_has_its_own_model_fitted_on_every_issue_time(fitted):
    model = fitted[4]
    for m in model.models.values():
        assert set(m.own) == {1}
        assert set(m.own[1][0].boosters) == set(m.pooled[0].boosters) == set(cfg_q(model))
    cfg = small_config(training=TrainingConfig(horizons_per_issue=2, own_model_horizons_h=[1],
                                               own_model_bags=1))
    t_len, n_sites = 1000, 2
    mask = np.ones(t_len, dtype=bool)
    mask[600:650] = False
    t, n, h = QuantileForecaster(cfg, seed=3)._training_pairs(t_len, n_sites, mask)
    pairs = pd.DataFrame({"t": t, "n": n, "h": h})
    assert not pairs.duplicated().any()
    assert mask[t].all() and mask[t + h].all() and (t + h < t_len).all()
    first = max(cfg.training.min_history_h, required_history_h(cfg))
    issues = np.flatnonzero(mask[first: t_len - 1]) + first
    ok1 = issues[mask[issues + 1]]
    one = pairs[pairs.h == 1]
    assert len(one) == ok1.size * n_sites  # every issue time with an allowed target, once
    per = pairs.groupby(["t", "n"]).size()
    assert per.max() == 3 and (pairs.h > cfg.max_horizon_h).sum() == 0
    rand = pairs[pairs.h > 1].h  # the random ones spread over 2..24
    assert set(rand) == set(range(2, cfg.max_horizon_h + 1))
    bad = small_config(training=TrainingConfig(own_model_horizons_h=[25]))
    with pytest.raises(ForecastError, match="own_model_horizons_h: 25 h"):
        QuantileForecaster(bad)._training_pairs(t_len, n_sites, mask)
    # a single horizon needs no model of its own: the pooled one is it
    one = small_config(max_horizon_h=1)
    assert own_model_horizons(one).size == 0


def cfg_q(model):
    return model.config.quantiles


def test_own_horizon_models_may_use_their_own_reference(fitted, tmp_path):
    data, table, _, weather, _, rows, _ = fitted
    cfg = small_config(targets=["price_per_mwh"], reference={"price_per_mwh": "seasonal"},
                       training=TrainingConfig(own_model_reference={"price_per_mwh": "last"}),
                       selection=SelectionConfig(models=[]))
    train = np.arange(len(table.index)) < len(table.index) // 2
    model = QuantileForecaster(cfg, data.locations, weather, seed=0).fit(table, train)
    m = model.models["price_per_mwh"]
    assert m.references() == {"pooled": "seasonal", "h1": "last"} and not m.selection
    assert "last_rel" not in m.own[1][0].boosters[0.5].feature_name()
    pred = model.predict(table, rows, HORIZONS)
    again = QuantileForecaster.load(model.save(tmp_path / "m"), weather)
    np.testing.assert_array_equal(again.predict(table, rows, HORIZONS), pred)
    y = table.column("price_per_mwh")
    r = rows[:-1]  # 1 h ahead (HORIZONS[0]): from the latest value, and better than it
    err = np.abs(pred[:-1, :, 0, 0, cfg.quantiles.index(0.5)] - y[r + 1]).mean()
    assert HORIZONS[0] == 1 and err < np.abs(y[r] - y[r + 1]).mean()


def test_one_hour_models_are_chosen_on_the_training_data_only(fitted, tmp_path):
    data, table, cfg, weather, model, rows, pred = fitted
    refs = cfg.selection.references
    for target, m in model.models.items():
        if target == "pv_kw":  # clear-sky index: no choice
            assert not m.selection and m.references()["h1"] == "clearsky"
            continue
        assert set(m.selection) == {"pooled", "h1"}
        for tag, members in (("pooled", m.pooled), ("h1", m.own[1])):
            scores = m.selection[tag]
            assert len(scores) == 2 ** len(refs) - 1
            chosen = m.references()[tag]
            assert scores[chosen] == min(scores.values()), (target, tag, scores)
            assert [mem.reference for mem in members] == chosen.split("+")
    # what follows the training rows cannot change the choice nor the models
    t_len = len(table.index)
    train = np.arange(t_len) < t_len // 2
    later = table.data.copy()
    later[~train] *= np.random.default_rng(1).uniform(0.5, 1.5, later[~train].shape)
    other = dataclasses.replace(table, data=later)
    refit = QuantileForecaster(cfg, data.locations, weather, seed=0).fit(other, train)
    for target, m in model.models.items():
        assert refit.models[target].selection == m.selection
    np.testing.assert_array_equal(refit.predict(table, rows, HORIZONS), pred)
    # scores and blends survive save and load
    back = QuantileForecaster.load(model.save(tmp_path / "m"), weather)
    for target, m in model.models.items():
        assert back.models[target].selection == m.selection
        assert back.models[target].references() == m.references()


def test_pooled_model_may_be_chosen_too(fitted):
    data, table, _, weather, _, _, _ = fitted
    cfg = small_config(targets=["carbon_g_per_kwh"],
                       selection=SelectionConfig(models=["own", "pooled"],
                                                 references=["last", "seasonal"],
                                                 blend=False))
    train = np.arange(len(table.index)) < len(table.index) // 2
    m = QuantileForecaster(cfg, data.locations, weather, seed=0).fit(table, train).models[
        "carbon_g_per_kwh"]
    assert set(m.selection) == {"pooled", "h1"}
    for tag in ("pooled", "h1"):
        assert set(m.selection[tag]) == {"last", "seasonal"}
        assert m.references()[tag] == min(m.selection[tag], key=m.selection[tag].get)
    # solar output chooses among its own candidates (not changes from the latest value)
    pv = table.frame.xs("pv_kw", axis=1, level=1, drop_level=False)
    solar = signal_table(pv.rename(columns={"pv_kw": "solar_mw"}, level=1))
    cfg = small_config(targets=["solar_mw"], reference={"solar_mw": "seasonal"},
                       pv=PVConfig(signals=[]), bounds=BoundsConfig(zero_at_night=[]))
    m = QuantileForecaster(cfg, data.locations, seed=0).fit(solar, train).models["solar_mw"]
    assert set(m.selection) == {"pooled", "h1"}
    for tag in ("pooled", "h1"):
        assert set(m.selection[tag]) == {"seasonal", "ramp", "seasonal+ramp"}
    # too little data before the validation window: the configured reference is kept
    short = small_config(targets=["carbon_g_per_kwh"],
                         selection=SelectionConfig(min_train_h=len(table.index)))
    m = QuantileForecaster(short, data.locations, weather, seed=0).fit(table, train).models[
        "carbon_g_per_kwh"]
    assert not m.selection and m.references() == {"pooled": "last", "h1": "last"}


# ------------------------------------------------------------------ the plain candidate

@pytest.fixture(scope="module")
def sg_price(shared_data):
    """Singapore's 2023 market price, fitted on January-October."""
    table = signal_table(singapore_price())
    origin = int(table.index.searchsorted(pd.Timestamp("2023-11-01", tz="UTC")))
    train = np.arange(len(table.index)) < origin
    cfg = plain_candidate_config()
    model = QuantileForecaster(cfg, {"SG": SINGAPORE}, seed=0).fit(table, train)
    return table, cfg, train, origin, model


def test_plain_model_is_chosen_where_it_forecast_the_last_weeks_best(sg_price):
    """In October (the selection window) the plain model's 1 h P50 beat every reference
    by more than 3 %: it is the 1 h model, and its forecasts are the plain model's."""
    table, cfg, train, origin, model = sg_price
    m = model.models["price_per_mwh"]
    scores = m.selection["h1"]
    assert set(scores) == {*cfg.selection.references, PLAIN} and "pooled" not in m.selection
    assert m.references() == {"pooled": "last", "h1": PLAIN}
    assert scores[PLAIN] < 0.97 * min(v for k, v in scores.items() if k != PLAIN), scores
    rows = np.arange(origin, len(table.index) - 1)
    q50 = cfg.quantiles.index(0.5)
    ours = model.predict(table, rows, [1], bounds=False)[:, 0, 0, 0, q50]
    plain = per_horizon_lightgbm(table.column("price_per_mwh"), table.index, rows, [1], train,
                                 params=quantile_params(0.5),
                                 num_threads=cfg.lightgbm.num_threads)[:, 0, 0]
    np.testing.assert_allclose(ours, plain, rtol=1e-6)
    # every quantile of its own, in order; the horizons after 1 h stay the pooled model's
    pred = model.predict(table, rows, HORIZONS)
    assert np.isfinite(pred).all() and (np.diff(pred, axis=-1) >= 0).all()
    assert (np.diff(pred[:, 0, 0, 0], axis=-1) > 0).mean() > 0.9


def test_plain_member_survives_save_and_load(sg_price, tmp_path):
    table, _, _, origin, model = sg_price
    rows = np.arange(origin, origin + 24 * 14)
    pred = model.predict(table, rows, HORIZONS)
    d = model.save(tmp_path / "m")
    assert (d / "price_per_mwh_h1_plain_site0_q0.9.txt").read_text().startswith("tree")
    back = QuantileForecaster.load(d)
    assert back.models["price_per_mwh"].references() == {"pooled": "last", "h1": PLAIN}
    assert back.models["price_per_mwh"].selection == model.models["price_per_mwh"].selection
    np.testing.assert_array_equal(back.predict(table, rows, HORIZONS), pred)
    # a forecaster written in an earlier layout is refused, not misread
    meta = d / "forecaster.json"
    meta.write_text(meta.read_text().replace(f'"format_version": {MODEL_FORMAT_VERSION}',
                                             '"format_version": 3'))
    with pytest.raises(ForecastError, match=f"forecaster format 3, expected "
                                            f"{MODEL_FORMAT_VERSION} \\(fit it again\\)"):
        QuantileForecaster.load(d)


def test_hold_candidate_scored_as_persistence_and_kept_on_save(sg_price, tmp_path):
    """``hold`` is scored as the no-change forecast of the selection window, and a model
    whose member it is forecasts the issue-time value at every quantile."""
    table, cfg, train, origin, _ = sg_price
    hold = cfg.model_copy(update={"selection": SelectionConfig(
        models=["own"], references=["last"], blend=False, hold_candidate=True)})
    model = QuantileForecaster(hold, {"SG": SINGAPORE}, seed=0).fit(table, train)
    m = model.models["price_per_mwh"]
    y = table.column("price_per_mwh")[:, 0]
    issue = np.arange(origin - 1 - hold.selection.window_h, origin - 1)  # pairs inside
    assert m.selection["h1"][HOLD] == pytest.approx(np.mean(np.abs(y[issue + 1] - y[issue])))
    m.own[1] = [Member(HOLD, {})]
    rows = np.arange(origin, origin + 24 * 7)
    pred = model.predict(table, rows, HORIZONS, bounds=False)
    want = np.repeat(y[rows, None], len(hold.quantiles), axis=1).astype(np.float32)
    np.testing.assert_array_equal(pred[:, 0, 0, 0, :], want)
    back = QuantileForecaster.load(model.save(tmp_path / "m"))
    assert back.models["price_per_mwh"].references()["h1"] == HOLD
    np.testing.assert_array_equal(back.predict(table, rows, HORIZONS, bounds=False), pred)


def test_plain_candidate_is_off_by_default_and_never_for_solar_output(fitted):
    assert not ForecastConfig().selection.plain_candidate
    assert not ForecastConfig().selection.hold_candidate
    # added later: off, it leaves the cache keys of cubes built before it as they were
    assert "hold_candidate" not in ForecastConfig().key_values()["selection"]
    on = ForecastConfig(selection={"hold_candidate": True})
    assert on.key_values()["selection"]["hold_candidate"] is True
    data, table, _, _, _, _, _ = fitted
    train = np.arange(len(table.index)) < len(table.index) // 2
    pv = table.frame.xs("pv_kw", axis=1, level=1, drop_level=False)
    solar = signal_table(pv.rename(columns={"pv_kw": "solar_mw"}, level=1))
    cfg = plain_candidate_config(targets=["solar_mw"], reference={"solar_mw": "seasonal"})
    m = QuantileForecaster(cfg, data.locations, seed=0).fit(solar, train).models["solar_mw"]
    assert set(m.selection["h1"]) == set(cfg.selection.sun_references)


def test_own_model_bags_average_differently_seeded_medians(fitted, tmp_path):
    """``own_model_bags: 3``: the 1 h model's median is the mean of three fits seeded
    differently, its other quantiles and the pooled model one fit each; save and load keep
    them, and one fit (as before the key existed) leaves cache keys as they were."""
    assert ForecastConfig().key_values()["training"]["own_model_bags"] == 5
    one = ForecastConfig(training=TrainingConfig(own_model_bags=1))
    assert "own_model_bags" not in one.key_values()["training"]
    data, table, _, weather, _, rows, _ = fitted
    cfg = small_config(targets=["carbon_g_per_kwh"], training=TrainingConfig(own_model_bags=3),
                       selection=SelectionConfig(models=[]))
    assert cfg.key_values()["training"]["own_model_bags"] == 3
    train = np.arange(len(table.index)) < len(table.index) // 2
    model = QuantileForecaster(cfg, data.locations, weather, seed=0).fit(table, train)
    m = model.models["carbon_g_per_kwh"]
    (own,), (pooled,) = m.own[1], m.pooled
    assert len(own.median_bags) == 2 and not pooled.median_bags
    assert m.references() == {"pooled": "last", "h1": "last"}
    fits = [own.boosters[0.5], *own.median_bags]
    assert len({b.model_to_string() for b in fits}) == 3  # the seeds differ
    pred = model.predict(table, rows, [1], bounds=False)[:, :, 0, 0, :]
    bags = own.median_bags
    singles = []
    for b in fits:
        own.boosters[0.5], own.median_bags = b, []
        singles.append(model.predict(table, rows, [1], bounds=False)[:, :, 0, 0, :])
    own.boosters[0.5], own.median_bags = fits[0], bags
    q50 = cfg.quantiles.index(0.5)
    np.testing.assert_allclose(pred[..., q50], np.mean(singles, axis=0)[..., q50], rtol=1e-5,
                               atol=1e-4)
    others = [j for j in range(len(cfg.quantiles)) if j != q50]
    np.testing.assert_array_equal(pred[..., others], singles[0][..., others])
    back = QuantileForecaster.load(model.save(tmp_path / "m"), weather)
    assert len(back.models["carbon_g_per_kwh"].own[1][0].median_bags) == 2
    np.testing.assert_array_equal(back.predict(table, rows, [1], bounds=False)[:, :, 0, 0, :],
                                  pred)
