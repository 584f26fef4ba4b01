"""Benchmark protocol: rliable statistics, validation-tuned baselines, the leaderboard."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from experiments_helpers import GEO3, PERIODS
from rliable import library as rly
from rliable import metrics

from gridrl.agents.evaluate import EvaluationError, evaluate, make_setup, select_windows
from gridrl.agents.heuristics import SiteSettingsError
from gridrl.agents.registry import PolicySpecError, make_policy
from gridrl.env.gym_env import make_data
from gridrl.experiments.report import leaderboard
from gridrl.experiments.runner import RunPlan, run_study
from gridrl.experiments.schema import ReferenceAgentSpec, StudyError, load_study
from gridrl.experiments.stats import StatsError, interval_table, score_matrices
from gridrl.experiments.tuning import TUNING_FILE, VALIDATION_FILE, tune_agent
from gridrl.experiments.units import plan_units
from gridrl.scenario import Periods, load_scenario

# --------------------------------------------------------------------------- rliable


def test_interval_table_is_rliables_own_iqm_mean_and_stratified_bootstrap() -> None:
    rng = np.random.default_rng(7)
    matrices = {"a": rng.normal(0.0, 1.0, (5, 8)), "b": rng.normal(1.0, 2.0, (3, 8))}
    table = interval_table(matrices, reps=500, confidence=0.9, seed=3)

    def agg(m: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(m), metrics.aggregate_mean(m)])

    # rliable resamples with NumPy's global generator: seeded as interval_table seeds it
    np.random.seed(3)  # noqa: NPY002
    points, cis = rly.get_interval_estimates(
        matrices, agg, reps=500, confidence_interval_size=0.9, task_bootstrap=True
    )
    for name in matrices:
        row = table.loc[name]
        assert row["iqm"] == pytest.approx(points[name][0])
        assert row["mean"] == pytest.approx(points[name][1])
        assert [row["iqm_ci_low"], row["iqm_ci_high"]] == pytest.approx(cis[name][:, 0])
        assert [row["mean_ci_low"], row["mean_ci_high"]] == pytest.approx(cis[name][:, 1])
        assert row["iqm_ci_low"] < row["iqm"] < row["iqm_ci_high"]
    assert table.loc["b", "runs"] == 3 and table.loc["b", "tasks"] == 8
    again = interval_table(matrices, reps=500, confidence=0.9, seed=3)
    pd.testing.assert_frame_equal(again, table)


def test_score_matrix_is_seeds_by_weeks_and_refuses_holes() -> None:
    rows = pd.DataFrame({
        "policy": ["p"] * 4, "seed": [0, 0, 1, 1],
        "start": pd.to_datetime(["2021-01-01", "2021-02-01"] * 2), "J": [1.0, 2.0, 3.0, 4.0],
    })
    assert score_matrices(rows, "J")["p"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(StatsError, match="policy 'p': 1 missing J score"):
        score_matrices(rows.iloc[:3], "J")


def _rows(policy: str, algo: str, seed: int, js: list[float]) -> pd.DataFrame:
    return pd.DataFrame({
        "policy": policy, "kind": "reference", "algo": algo, "seed": seed,
        "forecast_mode": "perfect", "episode": range(len(js)),
        "start": pd.date_range("2021-01-04", periods=len(js), freq="7D", tz="UTC"),
        "J": js, "carbon_kg": [-j for j in js],
        "carbon_kg@a": [-j / 2 for j in js], "carbon_kg@b": [-j / 2 for j in js],
    })


def test_leaderboard_gaps_against_run_now_and_best_static() -> None:
    results = pd.concat([
        _rows("run_now", "run_now", 0, [-10.0, -12.0]),
        _rows("lp_bound", "lp_bound", 0, [-2.0, -4.0]),
        _rows("static_a", "static", 0, [-8.0, -8.0]),
        _rows("static_b", "static", 0, [-6.0, -8.0]),  # the best static (mean -7)
        _rows("rule", "carbon_aware", 0, [-5.0, -5.0]),
        _rows("rule", "carbon_aware", 1, [-3.0, -5.0]),
    ], ignore_index=True)
    board = leaderboard(results, reps=200, confidence=0.95, seed=0).set_index("policy")
    for col in ("kind", "learned", "J_mean", "J_iqm", "J_ci_low", "J_ci_high", "gap_closed",
                "gap_closed_vs_static", "carbon_kg", "saving_carbon_kg@a"):
        assert col in board.columns, col
    # references' mean J: run_now -11, lp_bound -3, best static -7; rule seeds -5 and -4
    assert board.loc["rule", "gap_closed"] == pytest.approx(((6 / 8) + (7 / 8)) / 2)
    assert board.loc["rule", "gap_closed_vs_static"] == pytest.approx(((2 / 4) + (3 / 4)) / 2)
    assert board.loc["static_b", "gap_closed_vs_static"] == pytest.approx(0.0)
    assert bool(board.loc["static_b", "best_static"]) and not board.loc["static_a", "best_static"]
    assert board.loc["rule", "J_mean"] == pytest.approx(-4.5)
    assert board.loc["rule", "seeds"] == 2 and board.loc["rule", "weeks"] == 2
    # run_now's carbon at site a is 5.5 on average, the rule's 2.25: it saves 3.25
    assert board.loc["rule", "saving_carbon_kg@a"] == pytest.approx(3.25)
    assert not board.loc["rule", "learned"]


# --------------------------------------------------------------------------- rules


@pytest.fixture(scope="module")
def geo3_validation():
    """geo3 with validation weeks, its perfect-forecast inputs (built once)."""
    raw = yaml.safe_load(GEO3.read_text())
    scenario = load_scenario(GEO3).model_copy(update={"periods": Periods(**PERIODS)})
    assert raw["name"] == scenario.name
    data = make_data(scenario, forecast_mode="perfect", base_dir=GEO3.parent, seed=scenario.seed)
    return scenario, data


def test_degenerate_rules_are_run_now(geo3_validation) -> None:
    scenario, data = geo3_validation
    setup = make_setup(scenario, period="validation", data=data)
    j = {name: evaluate(make_policy(name, **params), setup, period="validation")["J"].to_numpy()
         for name, params in (("run_now", {}), ("static", {"cap": 1.0, "run_share": 1.0}),
                              ("price_threshold", {"quantile": 1.0}))}
    assert j["static"] == pytest.approx(j["run_now"])
    assert j["price_threshold"] == pytest.approx(j["run_now"])
    capped = evaluate(make_policy("static", cap=[0.7, 1.0, 1.0], run_share=1.0), setup,
                      period="validation")
    assert capped["mean_cap"].mean() < 1.0


def test_static_needs_one_value_per_site() -> None:
    with pytest.raises(PolicySpecError, match="cap"):
        make_policy("static", cap=1.5)
    policy = make_policy("static", cap=[0.8, 0.9])
    scenario = load_scenario(GEO3).model_copy(update={"periods": Periods(**PERIODS)})
    data = make_data(scenario, forecast_mode="perfect", base_dir=GEO3.parent)
    with pytest.raises(SiteSettingsError, match="cap: expected one value or 3"):
        evaluate(policy, make_setup(scenario, period="validation", data=data),
                 period="validation", episodes=1)


# --------------------------------------------------------------------------- tuning


def _perturbed(data, scenario, period: str):
    """``data`` with carbon, price and headroom of every ``period`` row scrambled."""
    rows = np.zeros(len(data.index), dtype=bool)
    for block in getattr(scenario.periods, period):
        rows[block.hours(data.index)] = True
    exo = data.exo.copy()
    rng = np.random.default_rng(1)
    cols = [3, 4, 2]  # carbon_g_per_kwh, price_per_mwh, headroom_kw
    exo[np.ix_(rows, np.arange(exo.shape[1]), cols)] *= rng.uniform(
        0.2, 3.0, (rows.sum(), exo.shape[1], len(cols)))
    return dataclasses.replace(data, exo=exo)


def test_tuning_reads_only_validation_rows(geo3_validation) -> None:
    scenario, data = geo3_validation
    spec = ReferenceAgentSpec(name="carbon_aware", reference="carbon_aware")
    grid = {"quantile": [0.1, 0.5, 0.9]}

    def tune(d):
        setup = make_setup(scenario, period="validation", forecast_mode="perfect", data=d)
        return tune_agent(spec, grid, setup)

    base = tune(data)
    test_scrambled = tune(_perturbed(data, scenario, "test"))
    assert test_scrambled.chosen == base.chosen
    assert [t["J"] for t in test_scrambled.trials] == [t["J"] for t in base.trials]
    # the check can fail: scrambling the validation rows moves the scores
    val_scrambled = tune(_perturbed(data, scenario, "validation"))
    assert [t["J"] for t in val_scrambled.trials] != pytest.approx([t["J"] for t in base.trials])


def test_per_site_static_search_keeps_the_best(geo3_validation) -> None:
    scenario, data = geo3_validation
    spec = ReferenceAgentSpec(name="static", reference="static")
    setup = make_setup(scenario, period="validation", data=data)
    res = tune_agent(spec, {"cap": [0.7, 1.0]}, setup, episodes=1, per_site=True)
    assert len(res.chosen["cap"]) == 3
    assert res.score == max(t["J"] for t in res.trials)
    assert len(res.trials) == 2 + 3  # the grid, then one other value per site


def test_study_tuning_needs_validation_blocks_and_reference_agents(tmp_path: Path) -> None:
    study = {
        "name": "t", "scenario": str(GEO3), "forecast": {"mode": "perfect"},
        "periods": {"train": PERIODS["train"], "test": PERIODS["test"]},
        "agents": [{"name": "st", "reference": "static"}], "seeds": [0],
        "tuning": {"grid": {"st": {"cap": [0.8, 1.0]}}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(StudyError, match="no periods.validation"):
        load_study(path)
    study["tuning"]["grid"]["st"]["cap"] = [0.8, 2.0]
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(StudyError, match=r"tuning.grid.st: candidate \(2.0,\)"):
        load_study(path)


def test_tuned_study_runs_end_to_end(tmp_path: Path) -> None:
    periods = {**PERIODS, "validation": PERIODS["validation"][:1], "test": PERIODS["test"][:1]}
    study = {
        "name": "tuned", "scenario": str(GEO3), "forecast": {"mode": "perfect"},
        "periods": periods, "seeds": [0],
        "agents": [{"name": "run_now", "reference": "run_now"},
                   {"name": "lp_bound", "reference": "lp_bound"},
                   {"name": "static", "reference": "static"},
                   {"name": "price", "reference": "price_threshold"}],
        "tuning": {"grid": {"static": {"cap": [0.7, 1.0]}, "price": {"quantile": [0.2, 0.6]}}},
        "backend": {"kind": "local", "max_workers": 1},
        "report": {"dispatch_week": False, "bootstrap_reps": 200},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    run_dir = run_study(path, out_dir=tmp_path / "run")
    record = json.loads((run_dir / TUNING_FILE).read_text())
    assert set(record["agents"]) == {"static", "price"}
    for name, agent in record["agents"].items():
        best = max(agent["trials"], key=lambda t: t["J"])
        assert agent["chosen"] == best["params"], name
    report = (run_dir / "report.md").read_text()
    for section in ("## Tuned on validation", "## Leaderboard", "## Validation beside test"):
        assert section in report
    assert json.dumps(record["agents"]["static"]["chosen"]) in report
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("policy")
    assert board.loc["run_now", "gap_closed"] == pytest.approx(0.0)
    assert board.loc["static", "gap_closed_vs_static"] == pytest.approx(0.0)
    val = pd.read_parquet(run_dir / "static-seed0-perfect" / VALIDATION_FILE)
    assert val["J"].mean() == pytest.approx(record["agents"]["static"]["validation_J"])
    for png in ("leaderboard.png", "performance_profile.png", "per_week.png"):
        assert (run_dir / "plots" / png).stat().st_size > 0


def test_best_static_of_several_entries_is_chosen_on_validation() -> None:
    test = pd.concat([
        _rows("run_now", "run_now", 0, [-10.0, -12.0]),
        _rows("lp_bound", "lp_bound", 0, [-2.0, -4.0]),
        _rows("static_a", "static", 0, [-8.0, -8.0]),
        _rows("static_b", "static", 0, [-6.0, -8.0]),  # the better one on test
    ], ignore_index=True)
    validation = pd.concat([
        _rows("static_a", "static", 0, [-5.0, -5.0]),  # the better one on validation
        _rows("static_b", "static", 0, [-7.0, -7.0]),
    ], ignore_index=True)
    board = leaderboard(test, reps=200, confidence=0.95, seed=0,
                        validation=validation).set_index("policy")
    assert bool(board.loc["static_a", "best_static"]) and not board.loc["static_b", "best_static"]
    # the gap against the best static is measured on test from static_a's test mean -8
    assert board.loc["static_b", "gap_closed_vs_static"] == pytest.approx((-7 + 8) / (-3 + 8))


def test_an_agents_own_episodes_are_a_subset_of_the_studys(tmp_path: Path) -> None:
    # a costly reference on fewer weeks: its rows are drawn among the study's, so they
    # pair with run_now's and lp_bound's, on test and on validation
    periods = {**PERIODS, "test": [{"start": "2021-10-01", "end": "2021-11-25"}]}
    study = {
        "name": "subset", "scenario": str(GEO3), "forecast": {"mode": "perfect"},
        "periods": periods, "seeds": [0],
        "agents": [{"name": "run_now", "reference": "run_now"},
                   {"name": "lp_bound", "reference": "lp_bound"},
                   {"name": "few", "reference": "static", "episodes": 2,
                    "validation_episodes": 1}],
        "evaluation": {"episodes": 4, "validation": True},
        "backend": {"kind": "local", "max_workers": 1},
        "report": {"dispatch_week": False, "bootstrap_reps": 200},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    run_dir = run_study(path, out_dir=tmp_path / "run")
    rows = {name: pd.read_parquet(run_dir / f"{name}-seed0-perfect" / "result.parquet")
            for name in ("run_now", "few")}
    val = {name: pd.read_parquet(run_dir / f"{name}-seed0-perfect" / VALIDATION_FILE)
           for name in ("run_now", "few")}
    assert len(rows["run_now"]) == 4 and len(rows["few"]) == 2
    assert set(rows["few"]["start"]) < set(rows["run_now"]["start"])
    assert len(val["run_now"]) == 2 and len(val["few"]) == 1
    assert set(val["few"]["start"]) < set(val["run_now"]["start"])
    # the resume check expects the agent's own row count: nothing runs again
    plan = RunPlan(load_study(path), run_dir, resume=True, units=plan_units(load_study(path)))
    assert plan.todo() == []
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("policy")
    assert np.isfinite(board.loc["few", "gap_closed"])
    assert "few 2 test / 1 validation" in (run_dir / "report.md").read_text()


def test_select_windows_within_draws_among_the_studys_windows() -> None:
    setup = make_setup(GEO3, period="test", forecast_mode="none")
    study = select_windows(setup.windows, 6, seed=3)
    for k in (1, 3, 6):
        own = select_windows(setup.windows, k, seed=3, within=6)
        assert {w.start for w in own} <= {w.start for w in study} and len(own) == k
    # without within it is the plain draw among every fixed window
    assert select_windows(setup.windows, 4, 3, None) == select_windows(setup.windows, 4, 3)
    with pytest.raises(EvaluationError, match="must not exceed the 6 windows"):
        select_windows(setup.windows, 7, seed=3, within=6)
