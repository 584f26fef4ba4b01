"""benchmarks/levers.py: a removed lever is really gone from the bound's plan, and the
static-cap policies run through the real env."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from agents_helpers import index, scenario, site, synthetic_exo

from gridrl.agents.evaluate import evaluate_detailed, make_setup
from gridrl.agents.registry import make_policy
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import Out
from gridrl.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("levers", ROOT / "benchmarks" / "levers.py")
levers = importlib.util.module_from_spec(_spec)
sys.modules["levers"] = levers  # dataclasses look their module up there
_spec.loader.exec_module(levers)

HOURS = 48  # one two-day episode
DAYS = 12  # data from the train period's start to the end of the test window
BATTERY = {"capacity_kwh": 20.0, "power_kw": 5.0, "round_trip_efficiency": 0.9}


@pytest.fixture(scope="module")
def case():
    """Two sites with batteries, one 48-hour test window, synthetic signals."""
    sc = scenario([site("a", battery=BATTERY), site("b", battery=BATTERY, gpus=12)],
                  env={"episode_hours": HOURS, "max_migration_fraction": 0.5},
                  test=("2021-01-11", "2021-01-12"))
    exo = synthetic_exo(2, 24 * DAYS, seed=3)
    data = EnvData.from_arrays(index(24 * DAYS), exo, ["a", "b"])
    start = make_setup(sc, data=data).windows.fixed[0].start
    return sc, data, start


def _plan(sc, data, start) -> np.ndarray:
    """``[L, N, F]`` the lp_bound's optimal plan of the window."""
    res = evaluate_detailed(make_policy("lp_bound"), make_setup(sc, data=data), starts=[start],
                            trace_episodes=(0,))
    return res.traces[0].values


def test_without_battery_the_plan_never_uses_one(case):
    sc, data, start = case
    full = _plan(sc, data, start)
    gone = _plan(levers.without(sc, "battery"), data, start)
    moved = (Out.BATTERY_CHARGE_KWH, Out.BATTERY_DISCHARGE_KWH)
    assert full[..., moved].sum() > 1.0  # the lever exists in the full scenario
    assert np.all(gone[..., moved] == 0.0)
    assert np.all(gone[..., Out.SOC_KWH] == 0.0)


def test_without_cap_every_cap_is_one(case):
    sc, data, start = case
    full = _plan(sc, data, start)
    gone = _plan(levers.without(sc, "cap"), data, start)
    assert full[..., Out.CAP].min() < 0.99
    np.testing.assert_allclose(gone[..., Out.CAP], 1.0)


def test_without_migration_nothing_moves(case):
    sc, data, start = case
    gone = _plan(levers.without(sc, "migration"), data, start)
    assert np.all(gone[..., Out.MIGRATED_GPU_H] == 0.0)
    assert np.all(gone[..., Out.TRANSIT_GPU_H] == 0.0)


def test_without_deferral_queued_work_is_overdue(case):
    """Slack 0: work due in its arrival hour, so whatever waits is overdue. (The restart
    overhead of migrated work has no deadline row in the LP, a relaxation: set to 0
    here so that every GPU-h queued has one.)"""
    sc, data, start = case
    sc = sc.model_copy(update={"network": sc.network.model_copy(
        update={"restart_overhead_gpu_h_per_gpu_h": 0.0})})
    full = _plan(sc, data, start)
    gone = _plan(levers.without(sc, "deferral"), data, start)
    waits = full[..., Out.QUEUED_GPU_H] - full[..., Out.OVERDUE_GPU_H]
    assert waits.max() > 1.0  # the full plan defers work within its slack
    np.testing.assert_allclose(gone[..., Out.QUEUED_GPU_H], gone[..., Out.OVERDUE_GPU_H],
                               atol=1e-6)


def test_levers_a_scenario_lacks_are_not_applicable(case):
    sc, _, _ = case
    one = scenario([site("a")], test=("2021-01-11", "2021-01-12"))
    assert levers.without(one, "migration") is None  # one site
    assert levers.without(one, "battery") is None  # no battery
    assert levers.without(sc, "inference_routing") is None  # no remote inference
    with pytest.raises(ValueError, match="unknown lever"):
        levers.without(sc, "wind")


def test_flattening_a_site_group_keeps_its_sites():
    sc = load_scenario(ROOT / "envs" / "edge24.yaml")
    flat = levers.flatten_sites(sc)
    assert not flat.site_groups
    assert flat.expanded_sites() == sc.expanded_sites()
    no_battery = levers.without(sc, "battery").expanded_sites()
    assert [s.gpus for s in no_battery] == [s.gpus for s in sc.expanded_sites()]
    assert all(s.battery.capacity_kwh == 0.0 for s in no_battery)


def test_fixed_caps_at_one_is_run_now_and_best_per_site_beats_uniform(case):
    sc, data, start = case
    setup = make_setup(sc, data=data)
    j_run_now = evaluate_detailed(make_policy("run_now"), setup, starts=[start]).table["J"]
    search = levers.SiteSearch(2, (0.6, 0.8, 1.0))
    rows = np.asarray(search.rows)
    j = evaluate_detailed(levers.FixedCaps(rows), setup,
                          starts=[start] * len(rows)).table["J"].to_numpy()
    assert j[2] == pytest.approx(float(j_run_now.iloc[0]), abs=1e-9)  # uniform cap 1
    best, predicted = search.best_per_site(j)
    j_best = evaluate_detailed(levers.FixedCaps(best[None, :]), setup,
                               starts=[start]).table["J"].iloc[0]
    assert j_best == pytest.approx(predicted, abs=1e-6)  # sites do not interact
    assert j_best >= j[:3].max() - 1e-9
