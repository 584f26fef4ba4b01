"""Baselines, metrics, the rolling-origin backtest, plots and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from forecast_helpers import NATIONAL_CENTROIDS, REPO, entsoe_config, entsoe_signals
from typer.testing import CliRunner

from gridrl.cli import app
from gridrl.forecast import baselines as bl
from gridrl.forecast.backtest import backtest
from gridrl.forecast.config import BacktestConfig, LightGBMConfig
from gridrl.forecast.metrics import coverage, mae, pinball, summarise
from gridrl.forecast.pipeline import write_plots


def test_baselines_index_the_right_rows():
    t_len = 100
    y = np.arange(t_len, dtype=float)[:, None] * np.array([[1.0, 10.0]])  # [T, 2]
    rows = np.array([30, 99])
    h = [1, 24, 25]
    p = bl.persistence(y, rows, h)
    assert p.shape == (2, 2, 3) and (p[0, 0] == 30).all()
    s = bl.seasonal_naive(y, rows, h)
    np.testing.assert_array_equal(s[0, 0], [30 + 1 - 24, 30 + 24 - 24, 30 + 25 - 48])
    np.testing.assert_array_equal(s[1, 1], [990, 990, 990])  # past the data: last row
    hod = (np.arange(t_len) % 24)[:, None].repeat(2, axis=1)
    c = bl.climatology(y, hod, rows, h, np.arange(t_len) < 48)
    assert c[0, 0, 0] == np.mean([7, 31])  # target row 31 has hour 7: rows 7 and 31
    cs = np.ones((t_len, 2))
    sp = bl.smart_persistence(y, cs, rows, [1], window_h=3)
    np.testing.assert_allclose(sp[0, 0, 0], np.mean([28, 29, 30]))


def test_per_horizon_lightgbm_learns_and_never_looks_ahead():
    t_len = 24 * 60
    index = pd.date_range("2021-01-04", periods=t_len, freq="h", tz="UTC")
    rng = np.random.default_rng(0)
    y = (10 + 5 * np.sin(2 * np.pi * np.arange(t_len) / 24) + rng.normal(0, 0.1, t_len))
    y = y[:, None]
    train = np.arange(t_len) < 24 * 40
    rows = np.arange(24 * 40, t_len - 24, 7)
    hz = [1, 6, 24]
    p = bl.per_horizon_lightgbm(y, index, rows, hz, train)
    assert p.shape == (len(rows), 1, 3)
    truth = y[rows[:, None] + np.array(hz)[None, :], 0]
    assert np.abs(p[:, 0] - truth).mean() < 0.5  # the daily cycle (amplitude 5) is learnt
    # everything after an issue row (targets included) leaves its forecast unchanged
    later = y.copy()
    later[rows[3] + 1:] += 100.0
    np.testing.assert_array_equal(
        bl.per_horizon_lightgbm(later, index, rows[3:4], hz, train)[0], p[3])
    # the lags reach 167 h back: earlier issue rows get no forecast; past the data: last row
    edge = bl.per_horizon_lightgbm(y, index, np.array([100, t_len - 2]), [1, 24], train)
    assert np.isnan(edge[0]).all() and edge[1, 0, 1] == y[-1, 0]


def test_metrics_on_known_values():
    truth = np.array([1.0, 2.0, np.nan])
    pred = np.array([2.0, 2.0, 5.0])
    assert mae(pred, truth) == 0.5
    q = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    # y=1: (0.1*1 + 0 + 0.1*1)/3 ; y=2: (0.1*1 + 0 + 0.1*1)/3
    assert pinball(q, truth, [0.1, 0.5, 0.9]) == pytest.approx(0.2 / 3)
    lo, hi = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 2.0])
    y = np.array([0.5, 0.0, 3.0])
    # the zero-width band that equals the truth (PV at night) is left out
    assert coverage(lo, hi, y) == 0.5


@pytest.fixture(scope="module")
def fr_result(shared_data):
    cfg = entsoe_config().model_copy(update={
        "lightgbm": LightGBMConfig(n_estimators=20, num_leaves=7),
        "backtest": BacktestConfig(initial_train_h=24 * 150, refit_every_h=24 * 120),
    })
    return backtest(entsoe_signals(shared_data, "fr"), cfg, scheme="rolling",
                    locations={"fr": NATIONAL_CENTROIDS["fr"]})


def test_rolling_backtest_table(fr_result):
    t = fr_result.table
    assert set(t["signal"]) == {"carbon_g_per_kwh", "solar_mw", "wind_mw"}
    assert set(t["horizon_h"]) == set(range(1, 25))
    cols = {"mae", "rmse", "nmae", "skill_vs_seasonal_naive", "pinball", "coverage_outer"}
    assert cols <= set(t.columns)
    # nMAE by capacity where one exists
    assert t[t.signal == "wind_mw"]["nmae"].notna().all()
    assert t[t.signal == "carbon_g_per_kwh"]["nmae"].isna().all()
    s = summarise(t)
    assert (s[s.model == "seasonal_naive"]["skill_vs_seasonal_naive"] == 0).all()
    # evaluated rows all lie after the first origin: out of sample
    assert fr_result.rows.min() >= 24 * 150
    assert len(fr_result.meta["origins"]) == 2


def test_results_and_plots_are_written(fr_result, tmp_path):
    fr_result.save(tmp_path / "bt")
    back = pd.read_parquet(tmp_path / "bt" / "metrics.parquet")
    assert len(back) == len(fr_result.table)
    assert (tmp_path / "bt" / "metrics.csv").stat().st_size > 0
    paths = write_plots(fr_result, tmp_path / "plots", title="fr")
    assert len(paths) == 4
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_fit_backtest_show(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDRL_CACHE", str(tmp_path / "cache"))
    cfg = yaml.safe_load((REPO / "forecasts" / "default.yaml").read_text())
    cfg.update(targets=["carbon_g_per_kwh", "inference_gpus"], max_horizon_h=6)
    cfg["lightgbm"].update(n_estimators=10, num_leaves=7)
    cfg["crossfit"].update(folds=2)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    scenario = str(REPO / "envs" / "geo3.yaml")
    runner = CliRunner()
    res = runner.invoke(app, ["forecast", "fit", scenario, "--config", str(path),
                              "--out", str(tmp_path / "fit")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fit" / "model" / "forecaster.json").exists()
    assert (tmp_path / "fit" / "cube.npz").exists()
    res = runner.invoke(app, ["forecast", "backtest", scenario, "--config", str(path),
                              "--out", str(tmp_path / "bt"), "--plots", str(tmp_path / "png")])
    assert res.exit_code == 0, res.output
    assert "lightgbm" in res.output and (tmp_path / "png" / "error_vs_horizon.png").exists()
    for folder in ("fit", "bt"):
        res = runner.invoke(app, ["forecast", "show", str(tmp_path / folder)])
        assert res.exit_code == 0, res.output
    assert "inference_gpus" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("lightgbm: {num_leaves: 0}\n")
    res = runner.invoke(app, ["forecast", "backtest", scenario, "--config", str(bad)])
    assert res.exit_code == 2 and "lightgbm.num_leaves" in res.output
    res = runner.invoke(app, ["forecast", "show", str(tmp_path / "nothing")])
    assert res.exit_code == 2
