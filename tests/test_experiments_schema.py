"""Study files are validated completely before any work, with the YAML path in errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from experiments_helpers import GEO3, REPO, write_study

from gridrl.experiments.runner import Unit, plan_units
from gridrl.experiments.schema import BackendSpec, StudyError, load_study
from gridrl.experiments.tuning import TUNING_FILE, TuningError, load_tuning, tune_study

FORECAST_CONFIG = REPO / "forecasts" / "default.yaml"
TINY_SCENARIO = {
    "name": "tiny",
    "sites": [
        {
            "name": "a",
            "weather": {"file": "723170TYA.CSV"},
            "gpus": 8,
            "gpu_board_idle_kw": 0.075,
            "gpu_board_max_kw": 0.7,
            "grid": {"feeder_capacity_kw": 50.0},
        }
    ],
    "throttle": {w: {
        "cap_fraction": [0.6, 1.0],
        "throughput_fraction": [0.8, 1.0],
        "source": "test curve",
    } for w in ("training", "inference")},
    "periods": {
        "train": {"start": "2021-01-01", "end": "2021-01-31"},
        "test": {"start": "2021-02-01", "end": "2021-02-14"},
    },
}


def _study(tmp_path: Path, **over: object) -> Path:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY_SCENARIO))
    data = {
        "name": "t",
        "scenario": str(scenario),
        "forecast": {"mode": "perfect"},
        "agents": [
            {"name": "ppo", "algo": "PPO", "hyperparameters": {"n_steps": 64}},
            {"name": "run_now", "reference": "run_now"},
        ],
        "seeds": 2,
    }
    data.update(over)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_study_resolves_paths_and_plans_units(tmp_path: Path) -> None:
    study = load_study(_study(tmp_path))
    assert Path(study.scenario).is_absolute()
    assert study.seeds == [0, 1]
    units = plan_units(study)
    assert [u.unit_id for u in units] == [
        "ppo-seed0-perfect",
        "ppo-seed1-perfect",
        "run_now-seed0-perfect",
        "run_now-seed1-perfect",
    ]


def test_ablation_multiplies_only_the_ablated_agents(tmp_path: Path) -> None:
    study = load_study(
        _study(tmp_path, ablation={"forecast_modes": ["perfect", "none"], "agents": ["ppo"]})
    )
    units = plan_units(study)
    assert Unit("ppo", 1, "none") in units
    assert Unit("run_now", 0, "none") not in units
    assert len(units) == 2 * 2 + 2


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (
            {"agents": [{"name": "p", "algo": "PPO", "hyperparameters": {"n_step": 8}}]},
            "agents[0].hyperparameters: unknown PPO hyperparameter(s) ['n_step']",
        ),
        ({"agents": [{"name": "p", "algo": "DQN"}]}, "agents[0].algo"),
        ({"agents": [{"name": "x", "reference": "oracle"}]}, "agents[0].reference"),
        ({"agents": [{"name": "x"}]}, "agents[0]: expected an agent with either"),
        (
            {"agents": [{"name": "c", "reference": "carbon_aware", "params": {"bogus": 1}}]},
            "agents[0]: carbon_aware: params.bogus",
        ),
        ({"seeds": [1, 1]}, "seeds: seeds must be unique"),
        ({"forecast": {"mode": "noisy(abc)"}}, "forecast.mode"),
        ({"training": {"timesteps": -5}}, "training.timesteps"),
        ({"training": {"n_envs": True}}, "training.n_envs: Input should be a valid integer"),
        ({"seeds": [0, True]}, "seeds[1]: Input should be a valid integer (got True)"),
        (
            {"agents": [{"name": "p", "algo": "PPO", "timesteps": True}]},
            "agents[0].timesteps: Input should be a valid integer (got True)",
        ),
        (
            {"agents": [{"name": "p", "algo": "PPO", "imitation": {"expert": "lp_bound"}}]},
            "agents[0].imitation: expected a reference that acts step by step",
        ),
        (
            {"agents": [{"name": "p", "algo": "SAC", "imitation": {"expert": "mpc"}}]},
            "SAC cannot imitate",
        ),
        (
            {"agents": [{"name": "p", "algo": "PPO", "imitation": {"episodes": 0}}]},
            "agents[0].imitation.episodes",
        ),
        ({"backend": {"max_workers": True}}, "backend.max_workers"),
        ({"backend": {"kind": "slurm"}}, "backend.kind"),
        ({"evaluation": {"episodes": 0, "bogus": 1}}, "evaluation.bogus"),
        ({"ablation": {"forecast_modes": ["perfect"], "agents": ["nobody"]}}, "ablation.agents"),
    ],
)
def test_bad_study_names_file_and_yaml_path(tmp_path: Path, over: dict, expected: str) -> None:
    path = _study(tmp_path, **over)
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert str(path) in msg
    assert expected in msg


def test_missing_and_invalid_scenario_fail_before_work(tmp_path: Path) -> None:
    path = _study(tmp_path, scenario="nowhere/geo.yaml")
    with pytest.raises(StudyError, match=r"scenario: file not found"):
        load_study(path)
    bad = tmp_path / "bad_scenario.yaml"
    bad.write_text(yaml.safe_dump({**TINY_SCENARIO, "sites": [{"name": "a", "gpus": -1}]}))
    path = _study(tmp_path, scenario=str(bad))
    with pytest.raises(StudyError, match=r"sites\[0\]\.gpus"):
        load_study(path)


def test_periods_override_is_validated(tmp_path: Path) -> None:
    path = _study(tmp_path, periods={"train": {"start": "2021-03-01"}})
    with pytest.raises(StudyError, match=r"periods\.train"):
        load_study(path)


def test_invalid_forecaster_config_fails_before_work(tmp_path: Path) -> None:
    bad = tmp_path / "forecaster.yaml"
    bad.write_text("name: x\nmax_horizon_h: -3\n")
    path = _study(tmp_path, forecast={"mode": "lightgbm", "config": str(bad)})
    with pytest.raises(StudyError, match=r"forecast\.config: invalid forecaster config"):
        load_study(path)
    path = _study(tmp_path, forecast={"mode": "lightgbm", "config": "nowhere.yaml"})
    with pytest.raises(StudyError, match=r"forecast\.config: file not found"):
        load_study(path)


@pytest.mark.parametrize(
    "name", ["quickstart.yaml", "geo3_benchmark.yaml", "edge24_benchmark.yaml"]
)
def test_shipped_studies_validate(name: str) -> None:
    path = Path(__file__).resolve().parents[1] / "experiments" / name
    study = load_study(path)
    units = plan_units(study)
    agents = {u.agent for u in units}
    assert {"run_now", "lp_bound", "mpc", "ppo"} <= agents
    if name == "geo3_benchmark.yaml":
        assert study.ablation is not None
        assert {"sac", "rppo"} <= agents and len(study.seeds) == 5


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_study_validates_and_plans(path: Path) -> None:
    assert plan_units(load_study(path))


def test_cli_run_rejects_a_bad_study_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridrl.cli import app

    out = tmp_path / "run"
    path = _study(tmp_path, training={"timesteps": 0}, output_dir=str(out))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    flat = "".join(result.output.split())  # the console wraps long lines
    assert "training.timesteps" in flat and str(path) in flat
    assert not out.exists()  # nothing was started


def test_run_hash_counts_files_by_content_not_by_path(tmp_path: Path) -> None:
    # a run folder resumes from another checkout; not after a value it reads changed
    studies = {}
    for name, workers in (("here", 1), ("there", 2)):
        d = tmp_path / name
        d.mkdir()
        (d / "geo3.yaml").write_text(GEO3.read_text())
        (d / "forecast.yaml").write_text(FORECAST_CONFIG.read_text())
        write_study(d / "study.yaml", scenario="geo3.yaml",
                    forecast={"mode": "lightgbm", "config": "forecast.yaml"},
                    backend={"kind": "local", "max_workers": workers})
        studies[name] = load_study(d / "study.yaml")
    here, there = studies["here"], studies["there"]
    assert here.scenario != there.scenario
    assert here.run_hash() == there.run_hash()
    assert here.path_run_hash() != there.path_run_hash()

    def rehash(file: str, text: str) -> str:
        (tmp_path / "there" / file).write_text(text)
        return load_study(tmp_path / "there" / "study.yaml").run_hash()

    # comments do not count, values do
    assert rehash("forecast.yaml", "# edited\n" + FORECAST_CONFIG.read_text()) == here.run_hash()
    config = yaml.safe_load(FORECAST_CONFIG.read_text())
    config["lightgbm"]["n_estimators"] += 1
    assert rehash("forecast.yaml", yaml.safe_dump(config)) != here.run_hash()
    rehash("forecast.yaml", FORECAST_CONFIG.read_text())
    assert rehash("geo3.yaml", GEO3.read_text() + "\n# edited\n") == here.run_hash()
    changed = yaml.safe_load(GEO3.read_text())
    changed["sites"][0]["gpus"] += 1
    assert rehash("geo3.yaml", yaml.safe_dump(changed)) != here.run_hash()


def test_a_forecaster_config_no_mode_reads_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "forecast.yaml").write_text(FORECAST_CONFIG.read_text())
    path = write_study(tmp_path / "study.yaml",
                       forecast={"mode": "perfect", "config": "forecast.yaml"})
    with_config = load_study(path).run_hash()
    (tmp_path / "forecast.yaml").unlink()
    assert load_study(path).run_hash() == with_config


def test_run_hash_needs_resolved_files(tmp_path: Path) -> None:
    path = write_study(tmp_path / "study.yaml", scenario="geo3.yaml")
    with pytest.raises(StudyError, match="check_files=True"):
        load_study(path, check_files=False).run_hash()


def test_folders_of_the_former_hash_resume_and_move_to_the_run_hash(tmp_path: Path) -> None:
    study = load_study(write_study(
        tmp_path / "study.yaml",
        agents=[{"name": "static", "reference": "static"}],
        tuning={"grid": {"static": {"cap": [0.8, 1.0]}}}))
    # the formula of run folders recorded before run_hash: the study with its file paths
    former = hashlib.sha256(json.dumps(
        study.model_copy(update={"backend": BackendSpec(), "output_dir": None}).model_dump(
            mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    assert study.path_run_hash() == former
    # a record from before tuning keys: its choice is kept, and it gets the keys
    static = {"reference": "static", "chosen": {"cap": 0.8}, "validation_J": -1.0, "trials": []}
    record = {"study_hash": former, "agents": {"static": static}}
    (tmp_path / TUNING_FILE).write_text(json.dumps(record))
    assert load_tuning(tmp_path) == record
    tuned = tune_study(study, Path(study.scenario), tmp_path)
    assert tuned["study_hash"] == study.run_hash()
    assert tuned["agents"]["static"]["chosen"] == {"cap": 0.8}
    assert tuned == json.loads((tmp_path / TUNING_FILE).read_text())
    assert tuned["agents"]["static"]["key"] is not None
    # the same under the current hash: nothing else differs, the keys are still written
    unkeyed = {**tuned, "agents": {"static": static}}
    (tmp_path / TUNING_FILE).write_text(json.dumps(unkeyed))
    assert tune_study(study, Path(study.scenario), tmp_path) == tuned
    assert json.loads((tmp_path / TUNING_FILE).read_text()) == tuned
    (tmp_path / TUNING_FILE).write_text(json.dumps({**record, "study_hash": "other"}))
    with pytest.raises(TuningError, match="another study"):
        tune_study(study, Path(study.scenario), tmp_path)
