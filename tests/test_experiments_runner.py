"""A small real study through the `gridrl` command: tiny PPO (2 seeds), run_now and
lp_bound on geo3 test weeks. Its driver is killed (SIGKILL, the driver alone) after the
first unit: its pool worker ends with it; the study is resumed with `--resume` and
reported; the Ray backend gives the same results."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from experiments_helpers import TINY_PPO, WITH_REFERENCES, write_study

from gridrl.experiments.progress import LogProgress
from gridrl.experiments.runner import plan_units, run_study
from gridrl.experiments.schema import load_study
from gridrl.experiments.store import RunStore

pytestmark = pytest.mark.slow

GRIDRL = [sys.executable, "-m", "gridrl.cli"]
RUN_MARK = "GRIDRL_TEST_RUN_MARK"  # inherited by every process the driver starts
WORKERS_GONE_S = 10.0


def run_processes(mark: str) -> dict[int, str]:
    """Live processes (pid -> command line) whose environment carries ``RUN_MARK=mark``:
    the driver started with it and every process it started. Zombies hold nothing."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile, or another user's
            continue
        if f"{RUN_MARK}={mark}".encode() in env and state != "Z":
            found[int(entry.name)] = cmd
    return found


def kill_driver(proc: subprocess.Popen, mark: str) -> tuple[dict[int, str], dict[int, str]]:
    """SIGKILL the driver alone; the run's other processes before, and those still
    alive ``WORKERS_GONE_S`` later."""
    before = {p: c for p, c in run_processes(mark).items() if p != proc.pid}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + WORKERS_GONE_S
    while run_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    return before, run_processes(mark)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`gridrl run` whose driver is killed after its first unit, then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    study = write_study(
        tmp / "study.yaml", agents=WITH_REFERENCES, backend={"kind": "local", "max_workers": 1}
    )
    run_dir = tmp / "run"
    mark = f"{os.getpid()}-{time.time_ns()}"
    proc = subprocess.Popen(
        [*GRIDRL, "run", str(study), "--out", str(run_dir)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, RUN_MARK: mark},
    )
    store = RunStore(run_dir)
    deadline = time.monotonic() + 300
    try:
        while not store.finished_units():
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no unit finished in time"
            time.sleep(0.2)
        workers, survivors = kill_driver(proc, mark)
    finally:
        try:  # whatever the outcome, leave nothing behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    finished = store.finished_units()
    state = {
        "study": study,
        "run_dir": run_dir,
        "workers": workers,
        "survivors": survivors,
        "finished": finished,
        "mtimes": {u: store.done_path(u).stat().st_mtime_ns for u in finished},
        "rows": {u: pd.read_parquet(store.result_path(u)) for u in finished},
    }
    done = subprocess.run(
        [*GRIDRL, "run", str(study), "--out", str(run_dir), "--resume"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return state


def test_killing_the_driver_ends_its_workers(killed_and_resumed: dict[str, Any]) -> None:
    s = killed_and_resumed
    # the pool worker was running the next unit when its driver was killed
    assert any("multiprocessing" in cmd for cmd in s["workers"].values()), s["workers"]
    assert s["survivors"] == {}, f"alive {WORKERS_GONE_S} s after the driver: {s['survivors']}"


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


def test_results_hold_every_kpi_per_policy_seed_episode(
    killed_and_resumed: dict[str, Any],
) -> None:
    from gridrl.env.kpis import KPIS

    results = pd.read_parquet(killed_and_resumed["run_dir"] / "results.parquet")
    assert {k.name for k in KPIS} | {"J"} <= set(results.columns)
    counts = results.groupby(["policy", "seed"]).size()
    assert counts.to_dict() == {("lp_bound", 0): 2, ("ppo", 0): 2, ("ppo", 1): 2, ("run_now", 0): 2}
    # every policy met the same test weeks
    starts = results.groupby("policy")["start"].apply(lambda s: tuple(sorted(set(s))))
    assert starts.nunique() == 1
    j = results.groupby("policy")["J"].mean()
    assert j["lp_bound"] >= j["run_now"] and j["lp_bound"] >= j["ppo"]
    assert results["work_lost_gpu_h"].abs().max() < 1e-6


def test_policy_dirs_keep_the_export_contract(killed_and_resumed: dict[str, Any]) -> None:
    run_dir = killed_and_resumed["run_dir"]
    for seed in (0, 1):
        d = run_dir / f"ppo-seed{seed}-perfect"
        assert (d / "model.zip").exists() and (d / "vecnormalize.pkl").exists()
        meta = json.loads((d / "meta.json").read_text())
        assert meta["algo"] == "PPO" and meta["forecast_mode"] == "perfect"
        assert len(meta["scenario_hash"]) == 16
        assert meta["observation_layout"]["fields"] and meta["action_layout"]["fields"]
        assert meta["training"]["timesteps"] >= 384 and meta["training"]["seed"] == seed
        assert meta["training"]["env_steps_per_s"] > 0
        assert list((d / "checkpoints").glob("model_*_steps.zip"))
        assert len(pd.read_csv(d / "monitor.csv", skiprows=1)) > 0


def test_report_shows_leaderboard_gap_closed_and_plots(killed_and_resumed: dict[str, Any]) -> None:
    run_dir = killed_and_resumed["run_dir"]
    report = (run_dir / "report.md").read_text()
    assert "## Leaderboard" in report
    for policy in ("| ppo |", "| run_now |", "| lp_bound |"):
        assert policy in report
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("policy")
    assert board.loc["run_now", "gap_closed"] == pytest.approx(0.0)
    assert board.loc["lp_bound", "gap_closed"] == pytest.approx(1.0)
    for png in ("leaderboard.png", "learning_curves.png", "dispatch_week.png"):
        assert (run_dir / "plots" / png).stat().st_size > 0


def test_ray_backend_gives_the_local_results(
    killed_and_resumed: dict[str, Any], tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    # two of the study's units (a trained PPO and a reference) on a private Ray cluster
    ppo = {**TINY_PPO, "seeds": [1]}
    study = write_study(
        tmp_path / "study.yaml",
        agents=[ppo, {"name": "run_now", "reference": "run_now", "seeds": [0]}],
        backend={"kind": "ray", "address": "auto"},
    )
    # a single-machine cluster on this host (Ray maps 127.0.0.1 to the node IP); the
    # runner uses the running connection instead of looking for one at address auto
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        ray_dir = run_study(study, out_dir=tmp_path / "ray", report=False)
    finally:
        ray.shutdown()
    remote = pd.read_parquet(ray_dir / "results.parquet")
    units = sorted(remote["unit_id"].unique())
    assert units == ["ppo-seed1-perfect", "run_now-seed0-perfect"]
    local = pd.read_parquet(killed_and_resumed["run_dir"] / "results.parquet")
    local = local[local["unit_id"].isin(units)]
    keys = ["unit_id", "episode"]
    pd.testing.assert_frame_equal(
        local.sort_values(keys, ignore_index=True), remote.sort_values(keys, ignore_index=True)
    )


class _StopAtStart:
    """Progress that interrupts the driver (as Ctrl-C would) when the units start."""

    def message(self, text: str, level: str = "info") -> None:
        pass

    def units_started(self, total: int, finished: int) -> None:
        raise KeyboardInterrupt

    def unit_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        pass

    def unit_finished(self, unit_id: str, error: str | None) -> None:
        pass


def test_an_interrupted_driver_still_records_its_command_commit_and_time(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study.yaml", agents=WITH_REFERENCES,
                        backend={"kind": "local", "max_workers": 1})
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out_dir=tmp_path / "run", report=False, progress=_StopAtStart())
    (driver,) = json.loads((tmp_path / "run" / "run.json").read_text())["drivers"]
    assert driver["stopped"] is True and driver["wall_s"] >= 0 and driver["commit"]
    assert driver["started_utc"] and driver["command"]


class _TerminateWhileRunning(LogProgress):
    """Progress that sends the driver SIGTERM (as ``kill`` would) once a unit runs."""

    def unit_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.timeout(120)  # without ending its worker the driver waits for 5M steps
def test_a_terminated_driver_ends_its_workers_and_records_its_time(tmp_path: Path) -> None:
    # a process of the caller's own, not the runner's: it must survive the stop
    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(300,))
    bystander.start()
    study = write_study(tmp_path / "study.yaml", seeds=[0],
                        training={"timesteps": 5_000_000, "n_envs": 2, "tensorboard": False},
                        backend={"kind": "local", "max_workers": 1})
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(study, out_dir=tmp_path / "run", report=False,
                      progress=_TerminateWhileRunning())
        assert multiprocessing.active_children() == [bystander]
    finally:
        bystander.terminate()
    (driver,) = json.loads((tmp_path / "run" / "run.json").read_text())["drivers"]
    assert driver["stopped"] is True and driver["commit"]
    assert not list((tmp_path / "run").glob("*/DONE"))
    assert signal.getsignal(signal.SIGTERM) is before
