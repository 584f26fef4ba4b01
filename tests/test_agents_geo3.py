"""MPC on geo3 test weeks against the bound (the benchmark runs all twelve weeks and the
LightGBM forecasts: ``benchmarks/references.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridrl.agents.evaluate import evaluate, gap_closed, make_setup
from gridrl.agents.registry import make_policy
from gridrl.agents.train import env_inputs
from gridrl.scenario import load_scenario

GEO3 = Path(__file__).resolve().parents[1] / "envs" / "geo3.yaml"


@pytest.mark.slow
def test_mpc_with_perfect_forecasts_closes_most_of_the_gap_on_geo3_weeks():
    # geo3's batteries are an action (residual on the site rule): the env's battery is
    # the LP's, so the bound is tight and the gap is what a controller can close
    sc = load_scenario(GEO3)
    assert sc.env.battery_control == "residual"
    setup = make_setup(sc, data=env_inputs(GEO3, "perfect", None))
    weeks = [w.start for w in setup.windows.fixed[:2]]
    j = {name: evaluate(make_policy(name), setup, starts=weeks)["J"].to_numpy()
         for name in ("run_now", "lp_bound", "mpc")}
    assert (j["mpc"] <= j["lp_bound"]).all()
    closed = gap_closed(j["mpc"], j["run_now"], j["lp_bound"])
    assert (closed >= 0.95).all(), closed
