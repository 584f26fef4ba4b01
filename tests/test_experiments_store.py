"""Run folder, merge, statistics and report on hand-made result tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gridrl.experiments.backends import run_local
from gridrl.experiments.report import gap_closed_per_seed, t_interval
from gridrl.experiments.store import RunDirError, RunStore


def _rows(policy: str, algo: str, seed: int, j: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policy": policy,
            "kind": "reference",
            "algo": algo,
            "seed": seed,
            "forecast_mode": "perfect",
            "unit_id": f"{policy}-seed{seed}-perfect",
            "episode": np.arange(len(j)),
            "J": j,
            "carbon_kg": np.abs(j),
        }
    )


def _unit_rows(policy: str, algo: str, seed: int, j: list[float], mode: str) -> pd.DataFrame:
    """``_rows`` with every column a unit writes: episode starts and every KPI."""
    from gridrl.env.kpis import KPIS

    rows = _rows(policy, algo, seed, j).assign(forecast_mode=mode)
    rows["unit_id"] = f"{policy}-seed{seed}-{mode}"
    rows["start"] = pd.date_range("2021-01-04", periods=len(j), freq="7D", tz="UTC")
    for k in KPIS:
        if k.name not in rows:
            rows[k.name] = 0.0
    return rows


def test_unit_is_done_only_after_result_and_marker(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.start("name: x\n", "h1", resume=False)
    assert not store.is_done("a-seed0-perfect")
    store.write_unit("a-seed0-perfect", _rows("a", "run_now", 0, [1.0, 2.0]), {"kind": "x"})
    assert store.is_done("a-seed0-perfect")
    store.result_path("a-seed0-perfect").unlink()  # a marker without its result is not done
    assert not store.is_done("a-seed0-perfect")


def test_fresh_run_refuses_a_used_folder_and_resume_says_whether_the_study_changed(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "run")
    store.start("name: x\n", "h1", resume=False)
    store.write_unit("u", _rows("a", "run_now", 0, [1.0]), {})
    with pytest.raises(RunDirError, match="--resume"):
        store.start("name: x\n", "h1", resume=False)
    assert store.start("name: x\n", "h1", resume=True) is False
    # a folder recorded under the study's former hash resumes, and records the new one
    assert store.start("name: x\n", "h3", resume=True, also_accept=("h1",)) is False
    assert store.start("name: x\n", "h3", resume=True) is False
    # another study: units record their keys, the runner compares them (test_experiments_keys)
    assert store.start("name: x\n", "h2", resume=True) is True


def test_merge_keeps_every_row_of_every_finished_unit(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.start("name: x\n", "h", resume=False)
    for seed in range(3):
        store.write_unit(f"a-seed{seed}", _rows("a", "run_now", seed, [1.0, 2.0, 3.0]), {})
    (tmp_path / "run" / "half-seed0").mkdir()  # a killed unit: no marker, not merged
    merged = store.merge()
    assert len(merged) == 9
    assert sorted(merged["seed"].unique()) == [0, 1, 2]
    assert len(pd.read_parquet(store.results_path)) == 9
    assert len(pd.read_parquet(store.units_path)) == 3


def test_gap_closed_is_paired_per_seed() -> None:
    results = pd.concat(
        [
            _rows("run_now", "run_now", 0, [-10.0, -14.0]),  # mean -12
            _rows("lp_bound", "lp_bound", 0, [-2.0, -2.0]),  # mean -2
            _rows("mpc", "mpc", 0, [-4.0, -6.0]),  # mean -5 -> (7 / 10)
            _rows("run_now", "run_now", 1, [-20.0]),
            _rows("lp_bound", "lp_bound", 1, [0.0]),
            _rows("mpc", "mpc", 1, [-10.0]),  # 10 / 20
        ]
    )
    gap = gap_closed_per_seed(results).set_index(["policy", "seed"])["gap_closed"]
    assert gap["mpc", 0] == pytest.approx(0.7)
    assert gap["mpc", 1] == pytest.approx(0.5)
    assert gap["run_now", 0] == pytest.approx(0.0)
    assert gap["lp_bound", 1] == pytest.approx(1.0)


def test_t_interval_matches_scipy() -> None:
    v = np.array([0.5, 0.7, 0.65, 0.4, 0.55])
    mean, half = t_interval(v, 0.95)
    lo, hi = stats.t.interval(0.95, df=4, loc=v.mean(), scale=stats.sem(v))
    assert mean == pytest.approx(v.mean())
    assert half == pytest.approx((hi - lo) / 2)
    assert math.isnan(t_interval(np.array([1.0]), 0.95)[1])


def test_local_pool_runs_every_payload_and_reports_errors() -> None:
    out = {i: (r, e) for i, r, e in run_local(math.factorial, [3, 5, -1], max_workers=2)}
    assert out[0] == (6, None)
    assert out[1] == (120, None)
    assert out[2][0] is None and "ValueError" in out[2][1]


def test_gap_closed_pairs_by_episode_start_across_seeds() -> None:
    # references evaluated once (seed 0) on the same windows every seed of ppo meets
    starts = pd.to_datetime(["2021-01-22", "2021-02-22"], utc=True)

    def rows(policy: str, algo: str, seed: int, j: list[float]) -> pd.DataFrame:
        return _rows(policy, algo, seed, j).assign(start=starts)

    results = pd.concat(
        [
            rows("run_now", "run_now", 0, [-10.0, -20.0]),
            rows("lp_bound", "lp_bound", 0, [0.0, -10.0]),
            rows("ppo", "PPO", 0, [-5.0, -15.0]),  # (-10 + 15) / 10
            rows("ppo", "PPO", 1, [-10.0, -10.0]),  # (-10 + 15) / 10 too, other episodes
            rows("ppo", "PPO", 2, [-2.0, -20.0]).iloc[:1],  # first episode only: 8 / 10
        ]
    )
    gap = gap_closed_per_seed(results).set_index(["policy", "seed"])["gap_closed"]
    assert gap["ppo", 0] == pytest.approx(0.5)
    assert gap["ppo", 1] == pytest.approx(0.5)
    assert gap["ppo", 2] == pytest.approx(0.8)


def test_report_of_an_ablation_study(tmp_path: Path) -> None:
    from gridrl.experiments.report import write_report
    from gridrl.experiments.schema import Study, dump_study

    study = Study.model_validate(
        {
            "name": "abl",
            "scenario": "envs/geo3.yaml",
            "forecast": {"mode": "lightgbm"},
            "agents": [
                {"name": "mpc", "reference": "mpc"},
                {"name": "run_now", "reference": "run_now"},
                {"name": "lp_bound", "reference": "lp_bound"},
            ],
            "seeds": [0, 1],
            "ablation": {"forecast_modes": ["lightgbm", "perfect", "none"], "agents": ["mpc"]},
            "report": {"dispatch_week": False},
        }
    )
    store = RunStore(tmp_path / "run")
    store.start(dump_study(study), study.content_hash(), resume=False)
    j_mpc = {"lightgbm": [-6.0, -7.0], "perfect": [-3.0, -4.0], "none": [-9.0, -10.0]}
    for seed in (0, 1):
        for mode, j in j_mpc.items():
            rows = _unit_rows("mpc", "mpc", seed, j, mode)
            store.write_unit(f"mpc-seed{seed}-{mode}", rows, {"kind": "reference"})
        for name, j in (("run_now", [-12.0, -13.0]), ("lp_bound", [-2.0, -3.0])):
            rows = _unit_rows(name, name, seed, j, "lightgbm")
            store.write_unit(f"{name}-seed{seed}-lightgbm", rows, {"kind": "reference"})
    report = write_report(tmp_path / "run").read_text()
    assert "## Forecast ablation" in report
    assert (tmp_path / "run" / "plots" / "forecast_ablation.png").stat().st_size > 0
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    gap = board.set_index(["policy", "forecast_mode"])["gap_closed"]
    # references of mode lightgbm serve the other modes too: (J - (-12.5)) / 10
    assert gap["mpc", "perfect"] == pytest.approx(0.9)
    assert gap["mpc", "lightgbm"] == pytest.approx(0.6)
    assert gap["mpc", "none"] == pytest.approx(0.3)
