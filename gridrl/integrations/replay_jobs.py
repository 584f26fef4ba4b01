"""Jobs and site inputs of a job-level replay, from a real GPU pod trace.

A window of ``days`` whole days at the end of the trace (where the Alibaba trace holds
its pods) is mapped onto the scenario's hours from ``start``. Like the environment's
``alibaba`` workload source, every site sees the traced cluster scaled to its size
(``site.gpus / cluster GPUs``): each flexible pod of the window becomes one job per site
with its GPU share scaled, and inference demand is the trace's inference GPUs scaled.

A job keeps the pod's real arrival time and run length; its deadline is
``arrival + run length + slack`` with the slack drawn uniformly from the site's
``workload.deadline_slack_h_min .. max`` (the trace has no deadlines). Pods that never
ran (no run length) and CPU-only pods are not jobs; ``report`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24


@dataclass
class ReplayJob:
    """One flexible job at its home site. Times in hours from the replay start."""

    job_id: int
    site: str
    trace_row: int
    gpus: float
    work_gpu_h: float  # uncapped GPU-hours
    arrival_h: float
    deadline_h: float
    censored: bool  # still running at the trace end: run length is a lower bound


@dataclass
class ReplayWorkload:
    """Jobs and hourly inference demand of the replay window."""

    jobs: list[ReplayJob]
    inference_gpus: np.ndarray  # [T, N] GPUs of uncapped inference work per hour
    flexible_gpu_h: np.ndarray  # [T, N] flexible GPU-h arriving per hour
    index: pd.DatetimeIndex  # the T replay hours (UTC)
    report: dict[str, Any] = field(default_factory=dict)


def trace_workload(
    trace_path: str | Path,
    nodes_path: str | Path | None,
    sites: list[Any],
    start: pd.Timestamp,
    days: int,
    seed: int,
) -> ReplayWorkload:
    """Jobs and inference demand of the last ``days`` whole days of the trace.

    Parameters
    ----------
    trace_path
        ``pods.csv`` of the Alibaba GPU trace (read by
        :func:`gridrl.data.loaders.alibaba.load_alibaba_pods`).
    nodes_path
        ``gpu_nodes.csv`` (cluster GPU count); default: beside ``trace_path``.
    sites
        The scenario's :class:`~gridrl.scenario.SiteConfig` list.
    start
        UTC time the window's first hour is mapped onto.
    days
        Window length in days.
    seed
        Seeds the deadline slack draws.
    """
    from gridrl.data.loaders.alibaba import load_alibaba_pods, trace_cluster_gpus

    trace_path = Path(trace_path)
    nodes = Path(nodes_path) if nodes_path else trace_path.with_name("gpu_nodes.csv")
    trace = load_alibaba_pods(trace_path)
    cluster_gpus = trace_cluster_gpus(nodes)
    hours = days * HOURS_PER_DAY
    end_h = int(trace.trace_end_s // SECONDS_PER_HOUR)
    if hours > end_h:
        raise ValueError(
            f"{trace_path}: the trace has {end_h} whole hours, the replay needs {hours}"
        )
    w0_s = (end_h - hours) * SECONDS_PER_HOUR
    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    index = pd.date_range(start, periods=hours, freq="h", name="time")

    # hourly inference GPUs and flexible arrivals of the window (the loader's own sums)
    hourly = trace.hourly(start - pd.Timedelta(seconds=w0_s), site="cluster").frame["cluster"]
    hourly = hourly.loc[index]
    scale = np.array([s.gpus / cluster_gpus for s in sites])
    inference = hourly["inference_gpus"].to_numpy()[:, None] * scale[None, :]
    arrivals = hourly["flexible_gpu_h"].to_numpy()[:, None] * scale[None, :]

    j = trace.jobs
    in_window = (j["creation_s"] >= w0_s) & (j["creation_s"] < w0_s + hours * SECONDS_PER_HOUR)
    flex = j[in_window & (j["workload_class"] == "flexible")]
    usable = flex[(flex["gpu_equiv"] > 0) & ~flex["unscheduled"]]
    rng = np.random.default_rng(seed)
    jobs: list[ReplayJob] = []
    for i, site in enumerate(sites):
        wl = site.workload
        slack = rng.uniform(wl.deadline_slack_h_min, wl.deadline_slack_h_max, size=len(usable))
        arrival = (usable["creation_s"].to_numpy() - w0_s) / SECONDS_PER_HOUR
        run_h = usable["lifetime_h"].to_numpy()
        gpus = usable["gpu_equiv"].to_numpy() * scale[i]
        for k, row in enumerate(usable["row"].to_numpy()):
            jobs.append(
                ReplayJob(
                    job_id=len(jobs),
                    site=site.name,
                    trace_row=int(row),
                    gpus=float(gpus[k]),
                    work_gpu_h=float(gpus[k] * run_h[k]),
                    arrival_h=float(arrival[k]),
                    deadline_h=float(arrival[k] + run_h[k] + slack[k]),
                    censored=bool(usable["running_at_end"].to_numpy()[k]),
                )
            )
    report = {
        "trace": str(trace_path),
        "cluster_gpus": cluster_gpus,
        "window_trace_s": [w0_s, w0_s + hours * SECONDS_PER_HOUR],
        "replay_start": str(index[0]),
        "hours": hours,
        "flexible_pods_in_window": int(len(flex)),
        "jobs_per_site": int(len(usable)),
        "excluded_cpu_only": int((flex["gpu_equiv"] == 0).sum()),
        "excluded_never_ran": int(((flex["gpu_equiv"] > 0) & flex["unscheduled"]).sum()),
        "censored_run_length": int(usable["running_at_end"].sum()),
        "scale_site_over_cluster": {s.name: float(x) for s, x in zip(sites, scale, strict=True)},
    }
    return ReplayWorkload(jobs, inference, arrivals, index, report)
