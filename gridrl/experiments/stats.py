"""Aggregate statistics of a study from ``rliable`` (Agarwal et al. 2021).

A policy's scores form a matrix ``runs x tasks``: a run is a training seed (a
deterministic reference evaluated once has one run), a task is an evaluation episode
(an evaluation week, identified by its start hour). Aggregates are rliable's
interquartile mean (IQM) and mean; their 95 % intervals are rliable's stratified
bootstrap, resampling runs within each task and the tasks themselves
(``task_bootstrap``), so an interval covers the spread over weeks as well as over
seeds. Performance profiles are rliable's score distributions: the share of
(run, week) scores above each threshold.

Nothing here re-implements a statistic: every number comes from an rliable call.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

from gridrl.errors import GridrlError

__all__ = [
    "StatsError", "interval_table", "performance_profiles", "score_matrices", "seeded_numpy",
]


class StatsError(GridrlError, ValueError):
    """Scores that do not form the full runs x tasks matrix rliable needs (names the policy)."""


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for the block, then restore its state.

    rliable's stratified bootstrap draws its resampling indices from
    ``np.random.choice`` (the global generator), whatever ``random_state`` it is given,
    so this is what makes its intervals reproducible. Its ``random_state`` reaches
    ``arch``, which warns that it is deprecated: that warning is silenced here.
    """
    state = np.random.get_state()  # noqa: NPY002 - rliable draws from the global one
    np.random.seed(seed)  # noqa: NPY002
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def score_matrices(
    results: pd.DataFrame, column: str, *, run: str = "seed", task: str = "start"
) -> dict[str, np.ndarray]:
    """Per policy, the ``runs x tasks`` matrix of ``column`` (rows sorted by run and task).

    Raises
    ------
    StatsError
        when a policy lacks a score for some (run, task) pair: rliable needs full
        matrices, and filling a hole would invent a score (names the policy).
    """
    out: dict[str, np.ndarray] = {}
    for policy, g in results.groupby("policy", sort=False):
        wide = g.pivot_table(index=run, columns=task, values=column, aggfunc="mean")
        if wide.isna().to_numpy().any():
            holes = int(wide.isna().to_numpy().sum())
            raise StatsError(
                f"policy {policy!r}: {holes} missing {column} score(s) in its "
                f"{run} x {task} matrix (every run must be evaluated on every task)"
            )
        out[str(policy)] = wide.to_numpy(dtype=float)
    return out


def interval_table(
    matrices: dict[str, np.ndarray], *, reps: int, confidence: float, seed: int
) -> pd.DataFrame:
    """IQM and mean with stratified bootstrap intervals, one row per policy.

    Returns
    -------
    pandas.DataFrame
        indexed by policy: ``mean``, ``iqm``, ``iqm_ci_low``, ``iqm_ci_high``,
        ``mean_ci_low``, ``mean_ci_high``, ``runs``, ``tasks``.
    """

    def aggregates(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    with seeded_numpy(seed):
        points, intervals = rly.get_interval_estimates(
            matrices, aggregates, reps=reps, confidence_interval_size=confidence,
            task_bootstrap=True,
        )  # fmt: skip
    rows = {}
    for name, m in matrices.items():
        p, ci = points[name], intervals[name]
        rows[name] = {
            "mean": p[1], "iqm": p[0], "iqm_ci_low": ci[0, 0], "iqm_ci_high": ci[1, 0],
            "mean_ci_low": ci[0, 1], "mean_ci_high": ci[1, 1],
            "runs": m.shape[0], "tasks": m.shape[1],
        }  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")


def performance_profiles(
    matrices: dict[str, np.ndarray], taus: np.ndarray, *, reps: int, confidence: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score-distribution profiles and their bootstrap bands at ``taus``."""
    with seeded_numpy(seed):
        return rly.create_performance_profile(
            matrices, taus, reps=reps, confidence_interval_size=confidence,
            task_bootstrap=True,
        )  # fmt: skip
