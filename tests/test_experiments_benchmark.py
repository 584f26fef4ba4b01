"""Benchmark studies: scenario seeds, the published report, the multiregion study file's
protocol, and that file on a Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from experiments_helpers import GEO3, REPO

from gridrl.experiments.publish import LEADERBOARD_COLUMNS, PublishError, publish_report
from gridrl.experiments.runner import run_study
from gridrl.experiments.schema import ReferenceAgentSpec, SB3AgentSpec, StudyError, load_study
from gridrl.experiments.tuning import TUNING_FILE, VALIDATION_FILE
from gridrl.experiments.units import plan_units, write_run_scenario
from gridrl.scenario import load_scenario

BENCHMARK = REPO / "experiments" / "multiregion_benchmark.yaml"
LEVERS = REPO / "docs" / "benchmarks" / "levers.csv"

# one validation and one test week of geo3, weeks apart (as the protocol tests)
PERIODS = {
    "train": [{"start": "2021-01-01", "end": "2021-06-21"}],
    "validation": [{"start": "2021-07-01", "end": "2021-07-07"}],
    "test": [{"start": "2021-10-22", "end": "2021-10-28"}],
}


def _tiny_seeded(tmp_path: Path, **over: Any) -> Path:
    study = {
        "name": "seeded", "scenario": str(GEO3), "forecast": {"mode": "perfect"},
        "periods": PERIODS, "seeds": [0], "scenario_seeds": [3, 7],
        "agents": [{"name": "run_now", "reference": "run_now"},
                   {"name": "lp_bound", "reference": "lp_bound"},
                   # the rule-battery bound: a second lp_bound entry, not the gap's bound
                   {"name": "lp_bound_rule", "reference": "lp_bound", "battery_control": "rule",
                    "params": {"battery": "rule", "time_limit_s": 20.0}},
                   {"name": "static", "reference": "static"}],
        "tuning": {"grid": {"static": {"cap": [0.7, 1.0]}}},
        "backend": {"kind": "local", "max_workers": 2},
        "report": {"bootstrap_reps": 200},
        **over,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_scenario_seeds_make_units_and_scenario_copies(tmp_path: Path) -> None:
    study = load_study(_tiny_seeded(tmp_path, seeds=2))
    units = plan_units(study)
    assert len(units) == 4 * 2 * 2  # agents x scenario seeds x training seeds
    assert "static-seed1-perfect-scen7" in {u.unit_id for u in units}
    paths = write_run_scenario(study, tmp_path / "run")
    assert [p.name for p in paths] == ["scenario-seed3.yaml", "scenario-seed7.yaml"]
    for seed, path in zip([3, 7], paths, strict=True):
        scenario = load_scenario(path)
        assert scenario.seed == seed
        assert str(scenario.periods.test[0].start)[:10] == "2021-10-22"
    bad = tmp_path / "bad.yaml"
    bad.write_text(_tiny_seeded(tmp_path, scenario_seeds=[1, 1]).read_text())
    with pytest.raises(StudyError, match=r"scenario_seeds.*unique"):
        load_study(bad)


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("seeded")
    run_dir = run_study(_tiny_seeded(tmp), out_dir=tmp / "run")
    docs = publish_report(run_dir, tmp / "docs", levers_csv=LEVERS)
    return {"run_dir": run_dir, "docs": docs}


def test_scenario_seeds_are_tasks_with_their_own_events(seeded_run: dict[str, Path]) -> None:
    run_dir = seeded_run["run_dir"]
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results["scenario_seed"]) == {3, 7}
    run_now = results[results["policy"] == "run_now"].set_index("scenario_seed")
    # the same week under other random events and workload: other outcomes
    assert run_now.loc[3, "J"] != run_now.loc[7, "J"]
    assert run_now.loc[3, "start"] == run_now.loc[7, "start"]
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("policy")
    assert (board["weeks"] == 2).all()  # tasks: scenario seed x week
    # gaps are measured against the entry named lp_bound, paired per scenario seed
    assert board.loc["run_now", "gap_closed"] == pytest.approx(0.0)
    assert board.loc["lp_bound", "gap_closed"] == pytest.approx(1.0)
    assert board.loc["lp_bound_rule", "J_mean"] <= board.loc["lp_bound", "J_mean"] + 1e-6


def test_tuning_scores_every_scenario_seed(seeded_run: dict[str, Path]) -> None:
    run_dir = seeded_run["run_dir"]
    record = json.loads((run_dir / TUNING_FILE).read_text())
    assert record["scenario_seeds"] == [3, 7]
    static = record["agents"]["static"]
    val = pd.concat([pd.read_parquet(run_dir / f"static-seed0-perfect-scen{s}" / VALIDATION_FILE)
                     for s in (3, 7)])
    assert set(val["scenario_seed"]) == {3, 7}
    assert val["J"].mean() == pytest.approx(static["validation_J"])


def test_published_report_has_every_part(seeded_run: dict[str, Path]) -> None:
    doc = seeded_run["docs"]
    assert doc.name == "seeded.md"
    text = doc.read_text()
    for section in ("## How this was run", "## Tuned on validation", "## Leaderboard",
                    "## Objective terms", "## Savings per site", "## Distributions",
                    "## Validation beside test", "## Dispatch of one test week",
                    "## What each lever is worth"):
        assert section in text, section
    meta = json.loads((seeded_run["run_dir"] / "run.json").read_text())
    (driver,) = meta["drivers"]
    assert driver["commit"] in text and driver["wall_s"] > 0
    for png in ("performance_profile.png", "per_week.png", "savings_carbon_kg.png",
                "savings_cost.png", "dispatch_week.png", "leaderboard.png"):
        assert f"](seeded/{png})" in text
        assert (doc.parent / "seeded" / png).stat().st_size > 0
    board = pd.read_csv(doc.parent / "seeded_leaderboard.csv")
    assert tuple(board.columns[: len(LEADERBOARD_COLUMNS)]) == LEADERBOARD_COLUMNS
    assert board["policy"].is_unique
    assert not board.loc[board["policy"] == "static", "learned"].item()
    # carbon, cost, delay, SLO, overdraw, and the backup and demand-response terms
    for term in ("carbon_kg", "cost", "deadline_miss_gpu_h", "slo_violation_gpu_h",
                 "overdraw_kwh", "backup_kwh", "backup_fuel_cost", "dr_payment"):
        assert term in text.split("## Objective terms")[1].split("##")[0]


def test_header_states_the_scenario_seeds(seeded_run: dict[str, Path]) -> None:
    text = seeded_run["docs"].read_text()
    assert "- scenario seeds: [3, 7], each with its own random events" in text


def test_publish_under_a_page_name(seeded_run: dict[str, Path], tmp_path: Path) -> None:
    """``multiregion.md`` for study ``multiregion_benchmark``: the page name replaces the
    study's in the documents, the figure folder and the figures' links."""
    docs = tmp_path / "docs"
    doc = publish_report(seeded_run["run_dir"], docs, name="page")
    assert doc == docs / "page.md"
    assert (docs / "page_leaderboard.csv").is_file() and not (docs / "seeded.md").exists()
    text = doc.read_text()
    assert "](page/performance_profile.png)" in text and "](seeded/" not in text
    assert (docs / "page" / "performance_profile.png").stat().st_size > 0
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(PublishError, match="expected a plain file name"):
            publish_report(seeded_run["run_dir"], tmp_path / "other", name=bad)
    assert not (tmp_path / "other").exists()  # refused before anything is written


def test_cli_report_name_needs_docs(seeded_run: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridrl.cli import app

    run_dir = str(seeded_run["run_dir"])
    alone = CliRunner().invoke(app, ["report", run_dir, "--name", "page"])
    assert alone.exit_code == 2 and "--name needs --docs" in alone.output
    ok = CliRunner().invoke(app, ["report", run_dir, "--docs", str(tmp_path), "--name", "page"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "page.md").is_file()


def test_publish_names_a_bad_lever_table(seeded_run: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "levers.csv"
    bad.write_text("scenario,J\ngeo3,1.0\n")
    with pytest.raises(PublishError, match=r"levers.csv: lever table lacks column"):
        publish_report(seeded_run["run_dir"], tmp_path / "docs", levers_csv=bad)


# --------------------------------------------------------------------------- the study file


def test_multiregion_benchmark_protocol() -> None:
    """Everything tuned is tuned on 2023; 2024 is only evaluated; >= 5 x 5 seeds."""
    study = load_study(BENCHMARK)
    scenario = load_scenario(study.scenario)
    assert study.periods is None  # the scenario's year splits
    assert study.evaluation.period == "test" and study.evaluation.validation
    assert study.evaluation.episodes is None  # every test week of 2024
    assert study.tuning is not None and study.tuning.period == "validation"
    years = {name: {y for b in getattr(scenario.periods, name)
                    for y in range(pd.Timestamp(b.start).year, pd.Timestamp(b.end).year + 1)}
             for name in ("train", "validation", "test")}
    assert years == {"train": {2021, 2022}, "validation": {2023}, "test": {2024}}
    assert len(study.scenario_seeds or []) >= 5
    learned = [a for a in study.agents if isinstance(a, SB3AgentSpec)]
    assert learned and all(len(a.seeds or study.seeds) >= 5 for a in learned)
    refs = {a.name: a for a in study.agents if isinstance(a, ReferenceAgentSpec)}
    kinds = {a.reference for a in refs.values()}
    assert {"run_now", "static", "carbon_aware", "price_threshold", "greedy_spatial", "mpc",
            "lp_bound"} <= kinds
    assert any(a.params.get("battery") == "rule" and a.battery_control == "rule"
               for a in refs.values() if a.reference == "lp_bound")
    # rule thresholds come from the validation grid only: none is fixed in the file
    for name in ("static", "carbon_aware", "price_threshold", "greedy_spatial"):
        assert name in study.tuning.grid
        assert not set(refs[name].params) & set(study.tuning.grid[name]), name
    assert "static" in study.tuning.per_site
    assert study.ablation is not None
    assert {"lightgbm", "perfect"} <= set(study.ablation.forecast_modes)
    assert "mpc" in (study.ablation.agents or [])


def test_multiregion_benchmark_header_states_measurement_and_estimate() -> None:
    head = "".join(line for line in BENCHMARK.read_text().splitlines(keepends=True)
                   if line.startswith("#"))
    for words in ("measured", "estimate", "wall time", "--backend ray"):
        assert words in head.lower(), words


def test_multiregion_benchmark_on_ray(shared_data: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny variant of the study file (one week of each period, references only,
    perfect forecasts) on a private Ray cluster gives the local results."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("GRIDRL_DATA_DIR", str(shared_data))
    raw = yaml.safe_load(BENCHMARK.read_text())
    raw.update(
        scenario=str(REPO / "envs" / "multiregion.yaml"),
        forecast={"mode": "perfect"}, scenario_seeds=[0, 1], seeds=[0], ablation=None,
        periods={"train": [{"start": "2021-01-01", "end": "2022-12-31"}],
                 "validation": [{"start": "2023-03-06", "end": "2023-03-12"}],
                 "test": [{"start": "2024-03-04", "end": "2024-03-10"}]},
        agents=[a for a in raw["agents"] if a["name"] in ("run_now", "lp_bound", "static")],
        tuning={**raw["tuning"], "grid": {"static": {"cap": [0.8, 1.0]}},
                "per_site": [], "episodes": None},
        evaluation={**raw["evaluation"], "episodes": None, "validation_episodes": None},
        report={**raw.get("report", {}), "bootstrap_reps": 100},
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        ray_dir = run_study(path, out_dir=tmp_path / "ray", backend="ray", report=False)
    finally:
        ray.shutdown()
    local_dir = run_study(path, out_dir=tmp_path / "local", backend="local", report=False)
    keys = ["unit_id", "episode"]
    remote, local = (pd.read_parquet(d / "results.parquet").sort_values(keys, ignore_index=True)
                     for d in (ray_dir, local_dir))
    assert len(remote) == 3 * 2  # agents x scenario seeds, one test week each
    assert len([c for c in remote.columns if c.startswith("carbon_kg@")]) == 8  # regions
    pd.testing.assert_frame_equal(local, remote)
    doc = publish_report(ray_dir, tmp_path / "docs")
    assert "## Leaderboard" in doc.read_text()
