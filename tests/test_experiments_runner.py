"""The runner on real (tiny) SB3 training: run folder, policy contract, Ray, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("local")
    study = write_study(tmp / "study.yaml")
    run_dir = run_study(study, out_dir=tmp / "run", unit_fn=training_only_unit, report=False)
    return study, run_dir


def test_run_folder_holds_config_results_and_policy_dirs(local_run: tuple[Path, Path]) -> None:
    study_path, run_dir = local_run
    study = load_study(study_path)
    units = plan_units(study)
    assert (run_dir / "config.resolved.yaml").exists()
    results = pd.read_parquet(run_dir / "results.parquet")
    expected_rows = 0
    for u in units:
        d = run_dir / u.unit_id
        assert (d / "DONE").exists()
        # the policy-directory contract read by gridrl.export
        assert (d / "model.zip").exists() and (d / "vecnormalize.pkl").exists()
        meta = json.loads((d / "meta.json").read_text())
        assert meta["algo"] == "PPO"
        assert meta["forecast_mode"] == "perfect"
        assert len(meta["scenario_hash"]) == 16
        assert meta["observation_layout"]["fields"] and meta["action_layout"]["fields"]
        assert meta["training"]["timesteps"] >= 384 and meta["training"]["env_steps_per_s"] > 0
        assert list((d / "checkpoints").glob("model_*_steps.zip"))
        expected_rows += len(pd.read_csv(d / "monitor.csv", skiprows=1))
    assert len(results) == expected_rows
    assert set(results["unit_id"]) == {u.unit_id for u in units}


def test_report_has_leaderboard_and_learning_curves(local_run: tuple[Path, Path]) -> None:
    _, run_dir = local_run
    report = write_report(run_dir).read_text()
    assert "## Leaderboard" in report and "| ppo |" in report
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 0
    assert (run_dir / "plots" / "leaderboard.png").stat().st_size > 0


def test_ray_backend_gives_the_local_results(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    study_path, run_dir = local_run
    # a private single-machine Ray cluster on this host (Ray maps 127.0.0.1 to the node IP)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        import experiments_helpers
        import ray.cloudpickle

        # the test helper module is not importable on Ray workers: ship it by value
        ray.cloudpickle.register_pickle_by_value(experiments_helpers)
        ray_dir = run_study(
            study_path,
            out_dir=tmp_path / "ray",
            backend="ray",
            unit_fn=training_only_unit,
            report=False,
        )
    finally:
        ray.shutdown()
    keys = ["unit_id", "episode"]
    a = pd.read_parquet(run_dir / "results.parquet").sort_values(keys, ignore_index=True)
    b = pd.read_parquet(ray_dir / "results.parquet").sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_resume_after_kill_redoes_nothing_and_loses_nothing(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study.yaml", backend={"kind": "local", "max_workers": 1})
    run_dir = tmp_path / "run"
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
    units = [u.unit_id for u in plan_units(load_study(study))]
    assert 0 < len(finished) < len(units)
    before = {u: store.done_path(u).stat().st_mtime_ns for u in finished}
    rows_before = {u: pd.read_parquet(store.result_path(u)) for u in finished}

    run_study(study, out_dir=run_dir, resume=True, unit_fn=training_only_unit, report=False)

    assert store.finished_units() == sorted(units)
    for u in finished:  # finished units were not redone
        assert store.done_path(u).stat().st_mtime_ns == before[u]
    results = pd.read_parquet(run_dir / "results.parquet")
    for u, rows in rows_before.items():
        pd.testing.assert_frame_equal(results[results["unit_id"] == u].reset_index(drop=True), rows)
    assert set(results["unit_id"]) == set(units)
