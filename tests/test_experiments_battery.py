"""Per-agent battery control in a study: an agent with ``battery_control: rule`` in a
scenario whose batteries are an action (geo3: ``residual``) runs in its own in-memory
scenario copy and meets the same episodes; a rule-following controller gets the same J
either way; a trained agent's policy folder keeps the scenario it learned in."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from experiments_helpers import GEO3, TINY_PPO, write_study

from gridrl.experiments.runner import run_study
from gridrl.experiments.schema import load_study
from gridrl.experiments.units import agent_scenario
from gridrl.scenario import load_scenario


def test_battery_control_override_runs_its_own_scenario_and_keeps_the_rule(
    tmp_path: Path,
) -> None:
    study = write_study(
        tmp_path / "study.yaml",
        agents=[
            {"name": "run_now", "reference": "run_now", "seeds": [0]},
            {"name": "run_now_rule", "reference": "run_now", "seeds": [0],
             "battery_control": "rule"},
            {"name": "mpc_rule", "reference": "mpc", "seeds": [0], "battery_control": "rule",
             "params": {"horizon_h": 12}},
            {**TINY_PPO, "name": "ppo_rule", "seeds": [0], "battery_control": "rule"},
        ],
        evaluation={"episodes": 2},
        backend={"kind": "local", "max_workers": 1},
    )
    run = run_study(study, out_dir=tmp_path / "run", report=True)
    # overrides stay in memory; a trained policy keeps the scenario it learned in
    policy_dir = run / "ppo_rule-seed0-perfect"
    assert list(run.glob("**/scenario*.yaml")) == [policy_dir / "scenario.yaml"]
    meta = json.loads((policy_dir / "meta.json").read_text())
    assert meta["scenario_path"] == str(policy_dir / "scenario.yaml")
    assert load_scenario(meta["scenario_path"]).env.battery_control == "rule"
    assert meta["action_layout"]["battery_control"] == "rule"
    assert all(f["component"] != "battery" for f in meta["action_layout"]["fields"])
    spec = load_study(study)
    own_rule = agent_scenario(spec, load_scenario(GEO3), "mpc_rule")
    assert own_rule.env.battery_control == "rule"
    assert load_scenario(GEO3).env.battery_control == "residual"
    assert own_rule.model_dump(exclude={"env"}) == load_scenario(GEO3).model_dump(exclude={"env"})
    res = pd.read_parquet(run / "results.parquet").set_index(["policy", "start"])["J"]
    own, rule = res.loc["run_now"], res.loc["run_now_rule"]
    assert len(own) == 2
    pd.testing.assert_series_equal(own, rule, check_names=False)  # action 0 is the rule
    assert (res.loc["mpc_rule"] > own).all()
    assert "run_now_rule `env.battery_control: rule`" in (run / "report.md").read_text()
