"""Resuming a changed study: only the units (and tunings) the change touches run again,
the others are kept bit for bit, nothing is deleted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from experiments_helpers import GEO3, PERIODS, TINY_PPO

from gridrl.experiments.runner import run_study
from gridrl.experiments.store import KEY_FILE, REJECTED_DIR, RunDirError, RunStore
from gridrl.experiments.tuning import TUNING_FILE

UNITS = ("ppo", "run_now", "lp_bound", "static", "price")


def _study() -> dict[str, Any]:
    periods = {**PERIODS, "validation": PERIODS["validation"][:1], "test": PERIODS["test"][:1]}
    return {
        "name": "keyed", "scenario": str(GEO3), "forecast": {"mode": "perfect"},
        "periods": periods, "seeds": [0],
        "agents": [copy.deepcopy(TINY_PPO),
                   {"name": "run_now", "reference": "run_now"},
                   {"name": "lp_bound", "reference": "lp_bound"},
                   {"name": "static", "reference": "static"},
                   {"name": "price", "reference": "price_threshold"}],
        "training": {"timesteps": 192, "n_envs": 1, "checkpoint_every_steps": 96,
                     "tensorboard": False},
        "tuning": {"grid": {"static": {"cap": [0.7, 1.0]}, "price": {"quantile": [0.2, 0.6]}}},
        "backend": {"kind": "local", "max_workers": 2},
        "report": {"dispatch_week": False, "bootstrap_reps": 200},
    }


def _run(tmp: Path, study: dict[str, Any], *, resume: bool, report: bool = True) -> Path:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return run_study(path, out_dir=tmp / "run", resume=resume, report=report)


def _done_times(run_dir: Path) -> dict[str, int]:
    store = RunStore(run_dir)
    return {u.split("-")[0]: store.done_path(u).stat().st_mtime_ns for u in store.marked_units()}


@pytest.fixture(scope="module")
def changed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tuned study run, then resumed after PPO's and one tuned agent's entries changed."""
    tmp = tmp_path_factory.mktemp("keys")
    study = _study()
    run_dir = _run(tmp, study, resume=False)
    before = {"times": _done_times(run_dir),
              "tuning": json.loads((run_dir / TUNING_FILE).read_text()),
              "rows": pd.read_parquet(run_dir / "results.parquet")}
    study["agents"][0]["hyperparameters"]["n_epochs"] = 3
    study["tuning"]["grid"]["price"]["quantile"] = [0.3, 0.6]
    _run(tmp, study, resume=True)
    return {"tmp": tmp, "study": study, "run_dir": run_dir, "before": before}


def test_only_the_changed_units_run_again(changed_run: dict[str, Any]) -> None:
    run_dir, before = changed_run["run_dir"], changed_run["before"]
    after = _done_times(run_dir)
    assert set(after) == set(UNITS)
    for name in ("run_now", "lp_bound", "static"):
        assert after[name] == before["times"][name], name
    for name in ("ppo", "price"):
        assert after[name] > before["times"][name], name
    rows = pd.read_parquet(run_dir / "results.parquet")
    kept = rows[rows["policy"] == "run_now"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        kept, before["rows"][before["rows"]["policy"] == "run_now"].reset_index(drop=True))


def test_a_changed_unit_is_moved_aside_whole_with_its_reason(changed_run: dict[str, Any]) -> None:
    unit = changed_run["run_dir"] / "ppo-seed0-perfect"
    [moved] = (unit / REJECTED_DIR).iterdir()
    for name in ("DONE", "result.parquet", "model.zip", KEY_FILE, "checkpoints"):
        assert (moved / name).exists(), name
    assert "the study changed its agent" in (moved / "REASON.txt").read_text()
    # the rerun trained from scratch with the new entry: no checkpoint of the old one
    meta = json.loads((unit / "meta.json").read_text())
    assert json.dumps(meta).count('"n_epochs": 3') >= 1
    assert json.loads((unit / KEY_FILE).read_text()) != json.loads((moved / KEY_FILE).read_text())


def test_only_the_changed_tuning_runs_again(changed_run: dict[str, Any]) -> None:
    run_dir, before = changed_run["run_dir"], changed_run["before"]["tuning"]
    record = json.loads((run_dir / TUNING_FILE).read_text())
    assert record["agents"]["static"] == before["agents"]["static"]
    tried = [t["params"]["quantile"] for t in record["agents"]["price"]["trials"]]
    assert tried == [0.3, 0.6]
    [former] = run_dir.glob("tuning.*.json")
    assert json.loads(former.read_text()) == before


def test_the_report_says_the_study_changed(changed_run: dict[str, Any]) -> None:
    report = (changed_run["run_dir"] / "report.md").read_text()
    meta = json.loads((changed_run["run_dir"] / "run.json").read_text())
    [change] = meta["study_changes"]
    assert change["from"] == meta["drivers"][0]["study_hash"] != change["to"]
    assert f"(hash `{change['from']}` -> `{change['to']}`): units whose key changed" in report


def test_an_unchanged_resume_runs_nothing_and_a_dropped_agent_leaves_the_results(
    changed_run: dict[str, Any],
) -> None:
    run_dir, study = changed_run["run_dir"], copy.deepcopy(changed_run["study"])
    times = _done_times(run_dir)
    _run(changed_run["tmp"], study, resume=True, report=False)
    assert _done_times(run_dir) == times
    assert len(json.loads((run_dir / "run.json").read_text())["study_changes"]) == 1
    study["agents"] = [a for a in study["agents"] if a["name"] != "price"]
    del study["tuning"]["grid"]["price"]
    _run(changed_run["tmp"], study, resume=True, report=False)
    rows = pd.read_parquet(run_dir / "results.parquet")
    assert "price" not in set(rows["policy"]) and "static" in set(rows["policy"])
    moved = sorted((run_dir / "price-seed0-perfect" / REJECTED_DIR).iterdir())[-1]
    assert "not a unit of the study any more" in (moved / "REASON.txt").read_text()


def test_a_folder_without_keys_resumes_only_the_same_study(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    (store.run_dir / "run.json").write_text(json.dumps({"study_hash": "h1", "drivers": []}))
    with pytest.raises(RunDirError, match="before units recorded their keys"):
        store.start("name: x\n", "h2", resume=True)
    assert store.start("name: x\n", "h1", resume=True) is False
    # from then on the folder records keys, and a changed study may resume it
    assert store.start("name: x\n", "h2", resume=True) is True
