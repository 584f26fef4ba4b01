"""Study runs under faults, through the real `gridrl` command on geo3: every kind of
damaged unit file is found on `--resume`, moved aside and run again; a second driver on
a held run folder is refused. (Killing a driver: tests/test_experiments_runner.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from experiments_helpers import write_study

from gridrl.experiments.store import RunDirError, RunStore, frame_columns
from gridrl.io import sha256_file

pytestmark = pytest.mark.slow

GRIDRL = [sys.executable, "-m", "gridrl.cli"]
SEEDS = list(range(6))  # one unit per kind of damage


def _gridrl(*args: str) -> subprocess.CompletedProcess[str]:
    # a wide terminal: rich would otherwise wrap the messages the tests look for
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([*GRIDRL, *args], capture_output=True, text=True, env=env)


def _reseal(store: RunStore, unit: str, frame: pd.DataFrame | None = None) -> None:
    """Rewrite the unit's DONE so that it vouches for the (edited) result file: only
    the study-level checks can then find the damage."""
    marker = json.loads(store.done_path(unit).read_text())
    marker["sha256"] = sha256_file(store.result_path(unit))
    if frame is not None:
        marker["rows"], marker["columns"] = len(frame), frame_columns(frame)
    store.done_path(unit).write_text(json.dumps(marker))


def _rewrite(store: RunStore, unit: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    frame = edit(pd.read_parquet(store.result_path(unit)))
    frame.to_parquet(store.result_path(unit), index=False)
    _reseal(store, unit, frame)


def _truncate(store: RunStore, unit: str) -> None:
    path = store.result_path(unit)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _reseal(store, unit)


def _random_bytes(store: RunStore, unit: str) -> None:
    store.result_path(unit).write_bytes(os.urandom(4096))
    _reseal(store, unit)


def _wrong_columns(store: RunStore, unit: str) -> None:
    _rewrite(store, unit, lambda f: f.rename(columns={"J": "objective"}))


def _wrong_rows(store: RunStore, unit: str) -> None:
    _rewrite(store, unit, lambda f: f.iloc[:1])


def _empty_done(store: RunStore, unit: str) -> None:
    store.done_path(unit).write_text("")


def _checksum(store: RunStore, unit: str) -> None:
    # a readable table with the right schema whose numbers changed after the marker
    frame = pd.read_parquet(store.result_path(unit))
    frame["J"] = frame["J"] + 1.0
    frame.to_parquet(store.result_path(unit), index=False)


# damage -> (the file the message names, what it says)
DAMAGES: dict[str, tuple[Callable[[RunStore, str], None], str, str]] = {
    "truncated parquet": (_truncate, "result.parquet", "not a readable parquet file"),
    "random bytes": (_random_bytes, "result.parquet", "not a readable parquet file"),
    "wrong columns": (_wrong_columns, "result.parquet", "missing column(s) J"),
    "wrong row count": (_wrong_rows, "result.parquet", "1 rows, expected 2"),
    "empty DONE": (_empty_done, "DONE", "empty file"),
    "checksum mismatch": (_checksum, "result.parquet", "checksum mismatch"),
}


@pytest.fixture(scope="module")
def damaged_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished reference study, one unit damaged per kind, then `gridrl run --resume`."""
    tmp = tmp_path_factory.mktemp("damaged")
    study = write_study(
        tmp / "study.yaml",
        agents=[{"name": "run_now", "reference": "run_now"}],
        seeds=SEEDS,
        backend={"kind": "local", "max_workers": 1},
        report={"dispatch_week": False},
    )
    run_dir = tmp / "run"
    first = _gridrl("run", str(study), "--out", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    store = RunStore(run_dir)
    before = pd.read_parquet(run_dir / "results.parquet")
    units = {}
    for seed, (name, (damage, _, _)) in zip(SEEDS, DAMAGES.items(), strict=True):
        units[name] = f"run_now-seed{seed}-perfect"
        damage(store, units[name])
    report = _gridrl("report", str(run_dir))
    assert report.returncode == 0, report.stderr[-3000:]
    report_of_damaged = (run_dir / "report.md").read_text()
    resumed = _gridrl("run", str(study), "--out", str(run_dir), "--resume")
    return {
        "run_dir": run_dir,
        "units": units,
        "before": before,
        "report_of_damaged": report_of_damaged,
        "resumed": resumed,
    }


def test_resume_names_each_damaged_file_and_runs_its_unit_again(
    damaged_and_resumed: dict[str, Any],
) -> None:
    s = damaged_and_resumed
    out = s["resumed"]
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    for name, (_, file, says) in DAMAGES.items():
        unit = s["units"][name]
        path = str(s["run_dir"] / unit / file)
        said = [line for line in lines if line.startswith(f"unit {unit} runs again: {path}: ")]
        assert len(said) == 1 and says in said[0], (name, out.stderr[-3000:])
    assert "6 to run" in out.stderr


def test_rerun_units_are_whole_again_and_nothing_was_deleted(
    damaged_and_resumed: dict[str, Any],
) -> None:
    s = damaged_and_resumed
    store = RunStore(s["run_dir"])
    assert store.finished_units() == sorted(s["units"].values())
    assert store.invalid_units() == {}
    after = pd.read_parquet(s["run_dir"] / "results.parquet")
    keys = ["unit_id", "episode"]
    pd.testing.assert_frame_equal(  # run_now is deterministic: the same rows again
        after.sort_values(keys, ignore_index=True), s["before"].sort_values(keys, ignore_index=True)
    )
    for name, (_, file, says) in DAMAGES.items():
        moved = list((s["run_dir"] / s["units"][name] / "rejected").glob("*"))
        assert len(moved) == 1, name
        assert (moved[0] / file).exists(), name  # the damaged file is kept
        assert says in (moved[0] / "REASON.txt").read_text(), name


def test_report_of_a_damaged_run_names_the_damaged_units(
    damaged_and_resumed: dict[str, Any],
) -> None:
    report = damaged_and_resumed["report_of_damaged"]
    assert "- units: 0 of 6 finished" in report
    for name, (_, _file, says) in DAMAGES.items():
        unit = damaged_and_resumed["units"][name]
        assert f"**damaged unit** `{unit}`" in report and says in report, name


def test_a_second_driver_on_a_held_run_folder_is_refused(tmp_path: Path) -> None:
    study = write_study(
        tmp_path / "study.yaml",
        agents=[{"name": "run_now", "reference": "run_now", "seeds": [0]}],
    )
    run_dir = tmp_path / "run"
    store = RunStore(run_dir)
    with store.lock():  # this process holds the folder, as a running driver would
        with pytest.raises(RunDirError, match=f"pid {os.getpid()} on host"):
            with RunStore(run_dir).lock():
                pass
        refused = _gridrl("run", str(study), "--out", str(run_dir), "--resume")
    assert refused.returncode == 2
    said = refused.stderr + refused.stdout
    assert f"in use by another gridrl run (pid {os.getpid()} on host" in said
    assert not (run_dir / "run.json").exists()  # the refused driver wrote nothing
    with store.lock():  # released: the folder can be taken again
        pass
