"""The evaluation harness: same episodes for every policy, one KPI definition,
reproducible under a seed; gap closed; the policy protocol; the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from agents_helpers import K, make_env, scenario, site, synthetic_exo
from env_helpers import ONE_CURVE

from gridrl.agents.evaluate import (
    SITE_KPIS,
    SITE_SEP,
    evaluate,
    evaluate_detailed,
    gap_closed,
    make_setup,
)
from gridrl.agents.lp import LPInputs, LPStructure, Solver
from gridrl.agents.mpc import plan_to_action
from gridrl.agents.policy import ForecastView, actions_from
from gridrl.agents.registry import REFERENCES, load_policy, make_policy
from gridrl.env import core, physics
from gridrl.env.kpis import KPIS
from gridrl.env.params import build_params

HOURS = 24 * 14


@pytest.fixture(scope="module")
def env():
    sc = scenario([site("a", pv={"kwp": 5.0}),
                   site("b", battery={"capacity_kwh": 12.0, "power_kw": 4.0})])
    return make_env(sc, synthetic_exo(2, HOURS, seed=2), forecast="perfect", period="test")


@pytest.fixture(scope="module")
def setup(env):
    return make_setup(env, period="test")


def test_every_policy_gets_the_same_episodes_and_the_same_kpi_columns(setup):
    per_site = [f"{k}{SITE_SEP}{site}" for site in setup.params.site_names for k in SITE_KPIS]
    expect = ["episode", "start", *[k.name for k in KPIS], "J", "terminal_charge", *per_site]
    starts = None
    for name in REFERENCES:
        table = evaluate(make_policy(name), setup, episodes=3, seed=7)
        assert list(table.columns) == expect, name
        if starts is None:
            starts = table["start"].tolist()
        assert table["start"].tolist() == starts, name
        assert np.isfinite(table["J"]).all()
    other = evaluate("run_now", setup, episodes=3, seed=8)["start"].tolist()
    assert other != starts  # the seed chooses the episodes


def test_evaluation_is_reproducible_under_a_seed(setup):
    for name in ("random", "carbon_aware", "mpc"):
        kwargs = {"horizon_h": 8} if name == "mpc" else {}
        a = evaluate(make_policy(name, **kwargs), setup, episodes=2, seed=4)
        b = evaluate(make_policy(name, **kwargs), setup, episodes=2, seed=4)
        pd.testing.assert_frame_equal(a, b)


def test_kpis_are_the_envs_own(env, setup):
    # a hand-driven GridEnv episode with run_now gives the harness's row
    table = evaluate("run_now", setup, episodes=1, seed=1)
    start = setup.data.index.get_loc(table["start"].iloc[0])
    env.reset(options={"start": int(start)})
    action = np.ones(env.action_space.shape, dtype=np.float32)
    action[2::4] = 0.0  # route neutral
    action[3::4] = -1.0  # no migration
    total = 0.0
    while True:
        _, r, _, truncated, info = env.step(action)
        total += r
        if truncated:
            break
    kpis = info["episode_summary"]["kpis"]
    row = table.iloc[0]
    assert row["J"] == pytest.approx(total)
    for k in KPIS:
        assert row[k.name] == pytest.approx(kpis[k.name], nan_ok=True), k.name


def test_gap_closed():
    assert gap_closed(-80.0, -100.0, -60.0) == pytest.approx(0.5)
    assert gap_closed(-100.0, -100.0, -60.0) == 0.0
    assert gap_closed(-60.0, -100.0, -60.0) == 1.0
    out = gap_closed(np.array([-90.0, -5.0]), np.array([-100.0, -10.0]), np.array([-80.0, -10.0]))
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])  # no gap to close


def test_lp_bound_rows_and_traces(setup):
    res = evaluate_detailed("lp_bound", setup, episodes=2, seed=1, trace_episodes=(1,))
    assert set(res.traces) == {1}
    trace = res.traces[1]
    assert trace.values.shape == (24, 2, len(core.OUTPUT_FIELDS))
    assert trace.signal("carbon_g_per_kwh").shape == (24, 2)
    row = res.table.iloc[1]
    assert row["work_lost_gpu_h"] == pytest.approx(0.0, abs=1e-6)
    assert row["carbon_kg"] == pytest.approx(trace.field("carbon_kg").sum())


def test_forecast_view_modes(env):
    data = env.data
    rows = np.array([30, 100])
    perfect = ForecastView(data, "perfect").p50(rows, 6)
    assert perfect == pytest.approx(data.exo[rows[:, None] + np.arange(6)])
    # a cube: its P50 at its horizons, the observed value at h = 0, linear between
    cube_view = ForecastView(data, "noisy")  # any cube-backed mode reads the cube
    fc = cube_view.p50(rows, 9)
    cube = data.forecast
    k = cube.signals.index("carbon_g_per_kwh")
    q50 = cube.quantiles.index(0.5)
    h4 = cube.horizons_h.index(4)
    h8 = cube.horizons_h.index(8)
    kk = K["carbon_g_per_kwh"]
    assert fc[:, 0, :, kk] == pytest.approx(data.exo[rows][:, :, kk])
    assert fc[:, 4, :, kk] == pytest.approx(cube.values[rows, :, k, h4, q50])
    assert fc[:, 6, :, kk] == pytest.approx(
        0.5 * (cube.values[rows, :, k, h4, q50] + cube.values[rows, :, k, h8, q50]), rel=1e-6)
    # signals the cube lacks: same hour of the latest observed day
    ka = K["flexible_gpu_h"]
    assert fc[:, 3, :, ka] == pytest.approx(data.exo[rows + 3 - 24][:, :, ka])
    # none: the observed value held
    flat = ForecastView(data, "none").p50(rows, 5)
    assert flat[:, 4, :, kk] == pytest.approx(data.exo[rows][:, :, kk])


def test_actions_from_inverts_the_envs_mapping(setup):
    p = setup.params
    rng = np.random.default_rng(0)
    run, cap = rng.uniform(0, 1, (4, 2)), rng.uniform(p.cap_min, 1, (4, 2))
    route, mig = rng.uniform(-1, 1, (4, 2)), rng.uniform(0, p.max_migration_fraction, (4, 2))
    a = actions_from(p, run, cap, route=route, migrate=mig).reshape(4, 2, -1)
    phys = core.physical_action(p, a)
    assert phys.run == pytest.approx(run)
    assert phys.cap == pytest.approx(cap)
    assert phys.migrate == pytest.approx(mig)
    assert phys.route_logit == pytest.approx(route * p.route_logit_scale)


def test_mpc_action_carries_out_the_plans_first_hour():
    # one throttle curve for both kinds of work: the LP's level mix is then one env cap
    # (with two curves the LP may cap inference and flexible work apart, a relaxation
    # the env's single cap per site can only approximate)
    sc = scenario([site("a")], env={"episode_hours": 12}, throttle=ONE_CURVE)
    p = build_params(sc)
    x = synthetic_exo(1, 12, seed=4)
    x[..., K["headroom_kw"]] = 50.0  # no curtailment: the env runs what it is told
    st = core.reset(p, 1)
    st.queue_gpu_h[0, 0, 3] = 6.0  # queued work with slack 2
    sol = Solver(LPStructure(p, 12)).solve(LPInputs(
        x, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
        physics.terminal_value_per_gpu_h(p, x)))
    q1 = st.queue_gpu_h[0] + x[0, :, K["flexible_gpu_h"]][:, None] * p.arrival_split
    st_caps = LPStructure(p, 12)
    a = plan_to_action(p, q1, sol.first, st_caps.caps, st_caps.taus)
    _, out = core.step(p, st, a.reshape(1, 1, -1), x[0][None])
    f = core.OUTPUT_FIELDS
    first = sol.values[0, 0]
    for name in ("work_done_gpu_h", "busy_gpus", "facility_kwh", "grid_import_kwh"):
        assert out.values[0, 0, f.index(name)] == pytest.approx(first[f.index(name)],
                                                                rel=1e-6, abs=1e-6), name


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown reference policy 'nope'.*carbon_aware"):
        make_policy("nope")
    with pytest.raises(ValueError, match="quantile"):
        make_policy("carbon_aware", quantile=2.0)
    with pytest.raises(ValueError, match="horizon_hours"):
        make_policy("mpc", horizon_hours=3)
    with pytest.raises(ValueError, match="neither a reference"):
        load_policy("/nonexistent/folder")


def test_cli_evaluate_writes_tables_plot_and_gap(tmp_path):
    from typer.testing import CliRunner

    from gridrl.cli import app

    sc = {
        "name": "cli_tiny",
        "year": 2021,
        "sites": [{
            "name": "a", "weather": {"source": "pvlib_tmy", "file": "723170TYA.CSV"},
            "gpus": 20, "gpu_board_idle_kw": 0.075, "gpu_board_max_kw": 0.7,
            "host_idle_kw_per_gpu": 0.03, "host_busy_kw_per_gpu": 0.1, "pue": 1.2,
            "pv": {"kwp": 10.0}, "battery": {"capacity_kwh": 10.0, "power_kw": 3.0},
            "grid": {"feeder_capacity_kw": 60.0, "background_base_kw": 30.0},
        }],
        "throttle": {w: {"cap_fraction": [0.6, 1.0], "throughput_fraction": [0.7, 1.0],
                         "source": "test"} for w in ("training", "inference")},
        "env": {"episode_hours": 24, "forecast_horizons_h": [1, 2, 4]},
        "periods": {"train": [{"start": "2021-03-01", "end": "2021-03-10"}],
                    "test": [{"start": "2021-03-11", "end": "2021-03-13"}]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sc))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", str(path), "--policy", "carbon_aware",
                                   "--episodes", "2", "--seed", "1", "--forecast",
                                   "persistence", "--param", "quantile=0.4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "gap closed by carbon_aware" in res.output
    table = pd.read_parquet(out / "kpis.parquet")
    assert set(table["policy"]) == {"carbon_aware", "run_now", "lp_bound"}
    assert len(table) == 6
    assert (out / "dispatch.png").stat().st_size > 10_000
    assert (out / "kpis.csv").is_file() and (out / "summary.csv").is_file()
    bad = CliRunner().invoke(app, ["evaluate", str(path), "--policy", "nope"])
    assert bad.exit_code == 2 and "neither a reference" in bad.output


def test_env_factory_and_env_give_the_same_table(env):
    a = evaluate("carbon_aware", env, episodes=2, seed=3)
    b = evaluate("carbon_aware", lambda: env, episodes=2, seed=3)
    pd.testing.assert_frame_equal(a, b)
