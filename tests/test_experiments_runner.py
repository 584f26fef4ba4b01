"""The runner on real (tiny) SB3 training: resume after SIGKILL, run folder, policy
contract, report, and the Ray backend giving the local backend's results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from experiments_helpers import training_only_unit, write_study

from gridrl.experiments.report import write_report
from gridrl.experiments.runner import plan_units, run_study
from gridrl.experiments.schema import load_study
from gridrl.experiments.store import RunStore

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A study killed (SIGKILL, driver and workers) after its first unit, then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    study = write_study(tmp / "study.yaml", backend={"kind": "local", "max_workers": 1})
    run_dir = tmp / "run"
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from experiments_helpers import training_only_unit\n"
        "from gridrl.experiments.runner import run_study\n"
        f"run_study({str(study)!r}, out_dir={str(run_dir)!r}, unit_fn=training_only_unit,"
        " report=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = RunStore(run_dir)
    deadline = time.monotonic() + 300
    try:
        while not store.finished_units():
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no unit finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers
        proc.wait()
    finished = store.finished_units()
    state = {
        "study": study,
        "run_dir": run_dir,
        "finished": finished,
        "mtimes": {u: store.done_path(u).stat().st_mtime_ns for u in finished},
        "rows": {u: pd.read_parquet(store.result_path(u)) for u in finished},
    }
    run_study(study, out_dir=run_dir, resume=True, unit_fn=training_only_unit, report=False)
    return state


def test_resume_after_kill_redoes_nothing_and_loses_nothing(
    killed_and_resumed: dict[str, Any],
) -> None:
    s = killed_and_resumed
    store = RunStore(s["run_dir"])
    units = sorted(u.unit_id for u in plan_units(load_study(s["study"])))
    assert 0 < len(s["finished"]) < len(units), "the kill must land mid-way"
    assert store.finished_units() == units
    for u in s["finished"]:  # finished units were not redone
        assert store.done_path(u).stat().st_mtime_ns == s["mtimes"][u]
    results = pd.read_parquet(s["run_dir"] / "results.parquet")
    for u, rows in s["rows"].items():
        got = results[results["unit_id"] == u].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, rows)
    assert set(results["unit_id"]) == set(units)


def test_run_folder_holds_config_results_and_policy_dirs(
    killed_and_resumed: dict[str, Any],
) -> None:
    run_dir = killed_and_resumed["run_dir"]
    units = plan_units(load_study(killed_and_resumed["study"]))
    assert (run_dir / "config.resolved.yaml").exists()
    results = pd.read_parquet(run_dir / "results.parquet")
    expected_rows = 0
    for u in units:
        d = run_dir / u.unit_id
        # the policy-directory contract read by gridrl.export
        assert (d / "model.zip").exists() and (d / "vecnormalize.pkl").exists()
        meta = json.loads((d / "meta.json").read_text())
        assert meta["algo"] == "PPO"
        assert meta["forecast_mode"] == "perfect"
        assert len(meta["scenario_hash"]) == 16
        assert meta["observation_layout"]["fields"] and meta["action_layout"]["fields"]
        assert meta["training"]["timesteps"] >= 384
        assert meta["training"]["env_steps_per_s"] > 0
        assert list((d / "checkpoints").glob("model_*_steps.zip"))
        monitor = pd.read_csv(d / "monitor.csv", skiprows=1)
        assert len(monitor) > 0
        expected_rows += len(monitor)
    assert len(results) == expected_rows


def test_report_has_leaderboard_and_learning_curves(killed_and_resumed: dict[str, Any]) -> None:
    run_dir = killed_and_resumed["run_dir"]
    report = write_report(run_dir).read_text()
    assert "## Leaderboard" in report and "| ppo |" in report
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 0
    assert (run_dir / "plots" / "leaderboard.png").stat().st_size > 0


def test_ray_backend_gives_the_local_results(
    killed_and_resumed: dict[str, Any], tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    # a private single-machine Ray cluster on this host (Ray maps 127.0.0.1 to the node IP)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        import experiments_helpers
        import ray.cloudpickle

        # the test helper module is not importable on Ray workers: ship it by value
        ray.cloudpickle.register_pickle_by_value(experiments_helpers)
        ray_dir = run_study(
            killed_and_resumed["study"],
            out_dir=tmp_path / "ray",
            backend="ray",
            unit_fn=training_only_unit,
            report=False,
        )
    finally:
        ray.shutdown()
    keys = ["unit_id", "episode"]
    local = pd.read_parquet(killed_and_resumed["run_dir"] / "results.parquet")
    remote = pd.read_parquet(ray_dir / "results.parquet")
    pd.testing.assert_frame_equal(
        local.sort_values(keys, ignore_index=True), remote.sort_values(keys, ignore_index=True)
    )
