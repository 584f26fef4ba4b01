"""Job-level replay: push a bundle's decisions through real jobs and compare with run_now.

The environment trains on a fluid model (GPU-hours in slack buckets). A scheduler acts
on whole jobs. The replay closes that gap: real jobs from a GPU pod trace
(:mod:`.replay_jobs`) arrive hour by hour at the scenario's sites, under the scenario's
real signals (PV, wind, headroom, carbon, price, temperature). Every hour:

1. the bundle's observation is built from the job queues with the environment's own
   observation builder (so the policy sees what it was trained on);
2. the torch-free runtime decides per site;
3. the decisions become job-level actions through the same planner as the Slurm
   adapter (:func:`gridrl.integrations.slurm_plan.plan_decisions`): migrate (the job
   arrives at its new site one hour later), release earliest deadline first, defer;
4. released jobs start when their GPUs are free (inference first, it cannot wait) and
   run at the site's power cap, doing ``gpus x throughput(cap)`` GPU-hours of work per
   hour;
5. energy follows the environment's physics: ``IT = busy (cap Pmax - P0) + G P0``,
   ``facility = PUE(temp) IT + migration``, ``import = max(facility - PV - wind, 0)``;
   import above headroom is reported as overdraw (no battery, no curtailment here:
   the same for every policy).

``run_now`` (release every job at arrival, full power, never move) goes through the same
replay. Work is never dropped: what is not done at the end is reported as left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.errors import GridrlError
from gridrl.export.manifest import ObservationLayout
from gridrl.integrations.replay_jobs import ReplayJob, ReplayWorkload
from gridrl.integrations.slurm_plan import ManagedJob, plan_decisions
from gridrl.integrations.slurm_queue import SlurmJob
from gridrl.integrations.slurm_sites import SitesConfig

EPS_GPU_H = 1e-9  # work below this is done (float round-off of fractional hours)

Decide = Callable[[np.ndarray], Sequence[Any]]


class ReplayError(GridrlError, ValueError):
    """The bundle and the scenario or trace do not fit together."""


@dataclass
class _Job:
    spec: ReplayJob
    site: str
    remaining: float
    status: str = "future"  # future, pending, transit, running, done
    released: bool = False
    arrive_h: float = 0.0  # when it may run at its current site
    start_h: float = math.nan
    finish_h: float = math.nan
    moved_to: str | None = None


@dataclass
class ReplayResult:
    """One policy's replay: KPIs, hourly per-site values, per-job outcomes."""

    policy: str
    kpis: dict[str, float]
    hourly: pd.DataFrame
    jobs: pd.DataFrame


def run_now_decider(sites: Sequence[str]) -> Decide:
    """The status quo: start everything now, full power, never migrate."""
    fixed = [
        {"site": s, "run_share": 1.0, "power_cap_fraction": 1.0,
         "route_weight": 1.0 / len(sites), "migrate_share": 0.0}
        for s in sites
    ]  # fmt: skip
    return lambda obs: fixed


def _planner_config(params: Any, interval_s: float) -> SitesConfig:
    return SitesConfig.model_validate(
        {
            "decision_interval_s": interval_s,
            "protect_deadlines": False,
            "power_cap_digits": 6,
            "sites": [
                {"name": s, "partitions": [s], "gpus": max(int(g), 1)}
                for s, g in zip(params.site_names, params.gpus, strict=True)
            ],
        }
    )


def _get(decision: Any, key: str) -> float:
    return float(decision[key] if isinstance(decision, dict) else getattr(decision, key))


def _slack_h(job: _Job, t: float) -> float:
    # hours the job may still wait at full speed before it misses its deadline
    return job.spec.deadline_h - t - job.remaining / job.spec.gpus


def simulate(
    policy: str,
    decide: Decide,
    workload: ReplayWorkload,
    params: Any,
    data: Any,
    builder: Any,
    row0: int,
) -> ReplayResult:
    """Replay ``workload`` hour by hour under ``decide`` (see the module notes).

    Parameters
    ----------
    policy
        Name in the results.
    decide
        Observation ``[D]`` -> one decision per site (SiteDecision or dict).
    workload
        Jobs and inference demand (:func:`~.replay_jobs.trace_workload`).
    params, data, builder
        The scenario's ``EnvParams``, ``EnvData`` and ``ObservationBuilder``.
    row0
        Data row of the replay's first hour.
    """
    sites = list(params.site_names)
    pos = {s: i for i, s in enumerate(sites)}
    cfg = _planner_config(params, 3600.0)
    jobs = sorted(
        (_Job(j, j.site, j.work_gpu_h) for j in workload.jobs), key=lambda j: j.spec.arrival_h
    )
    by_id = {j.spec.job_id: j for j in jobs}
    hours = len(workload.index)
    cap = np.ones(len(sites))
    rows: list[dict[str, Any]] = []
    nxt = 0
    for t in range(hours):
        nxt = _arrive(jobs, nxt, t)
        seen = jobs[:nxt]
        state = _queue_state(seen, t, pos, params, cap)
        decisions = decide(builder.build(np.array([row0 + t]), state)[0])
        plans = plan_decisions(_managed(seen, t), decisions, cfg)
        by_site = {(d["site"] if isinstance(d, dict) else d.site): d for d in decisions}
        cap = np.array([_get(by_site[s], "power_cap_fraction") for s in sites])
        e_mig = _apply_plans(plans, by_id, pos, params.migration_kwh_per_gpu_h, t)
        tau = params.throughput(cap)
        tau_inf = params.inference_throughput_at(cap)
        for i, site in enumerate(sites):
            demand = float(workload.inference_gpus[t, i])
            served = _run_site(seen, site, t, float(params.gpus[i]), demand, tau[i],
                               tau_inf[i])
            rows.append({"hour": t, "time": workload.index[t], "site": site, "cap": cap[i],
                         **served, **_energy(params, data.exo[row0 + t], i, cap[i],
                                             served, e_mig[i])})
    hourly = pd.DataFrame(rows)
    table = _job_table(jobs)
    return ReplayResult(policy, kpis(hourly, table, hours), hourly, table)


def _arrive(jobs: list[_Job], nxt: int, t: int) -> int:
    """Jobs arriving by the end of hour ``t`` become pending, moved jobs whose transit
    ends arrive; returns how many jobs have arrived."""
    while nxt < len(jobs) and jobs[nxt].spec.arrival_h < t + 1:
        jobs[nxt].status = "pending"
        jobs[nxt].arrive_h = jobs[nxt].spec.arrival_h
        nxt += 1
    for j in jobs[:nxt]:
        if j.status == "transit" and j.arrive_h <= t:
            j.status = "pending"
    return nxt


def _queue_state(jobs: list[_Job], t: int, pos: dict[str, int], params: Any,
                 cap: np.ndarray) -> Any:
    """The job queues as the environment's state (slack buckets), for the observation."""
    from gridrl.env.state import EnvState

    n, s_buckets = len(pos), params.slack_buckets
    queue = np.zeros((1, n, s_buckets + 1))
    transit = np.zeros((1, n, s_buckets + 1))
    for j in jobs:
        if j.status in ("pending", "transit"):
            slack = _slack_h(j, t)
            b = 0 if slack < 0 else 1 + min(int(slack), s_buckets - 1)
            (queue if j.status == "pending" else transit)[0, pos[j.site], b] += j.remaining
    return EnvState(
        queue, transit, np.asarray(params.soc_initial_kwh)[None].copy(), cap[None].copy()
    )


def _managed(jobs: list[_Job], t: int) -> list[ManagedJob]:
    """Pending jobs as the Slurm adapter's planner sees them."""
    return [
        ManagedJob(
            SlurmJob(
                job_id=j.spec.job_id, name=str(j.spec.trace_row), partition=j.site,
                state="PENDING", reason="", qos="", submit_time=j.spec.arrival_h,
                eligible_time=None, deadline=j.spec.deadline_h,
                time_limit_s=j.remaining / j.spec.gpus * 3600.0, gpus=1, cpus=1, comment="",
            ),
            j.site, j.remaining, _slack_h(j, t), None,
        )
        for j in jobs if j.status == "pending"
    ]  # fmt: skip


def _apply_plans(plans: Sequence[Any], by_id: dict[Any, _Job], pos: dict[str, int],
                 kappa_kwh_per_gpu_h: float, t: int) -> np.ndarray:
    """Carry out the plan's moves and releases; returns the migration energy ``[N]``
    (kWh, charged at the source)."""
    e_mig = np.zeros(len(pos))
    for p in plans:
        j = by_id[p.job_id]
        if p.action == "move":
            e_mig[pos[j.site]] += kappa_kwh_per_gpu_h * j.remaining
            j.site, j.moved_to, j.status = p.to_site, p.to_site, "transit"
            j.arrive_h, j.released = t + 1.0, False
        else:
            j.released = p.action == "run"
    return e_mig


def _run_site(jobs: list[_Job], site: str, t: int, gpus: float, demand: float,
              tau: float, tau_inf: float) -> dict[str, float]:
    """Inference first (throughput ``tau_inf``), then released jobs earliest slack first
    on the free GPUs (``tau``), for one hour of ``site``; returns the work done and the
    busy GPU-h."""
    inf_gpus = min(demand / tau_inf, gpus)
    slo = max(demand - gpus * tau_inf, 0.0)  # exactly 0 unless capacity binds
    running = [j for j in jobs if j.status == "running" and j.site == site]
    free = gpus - inf_gpus - sum(j.spec.gpus for j in running)
    ready = sorted(
        (j for j in jobs if j.status == "pending" and j.site == site and j.released),
        key=lambda j: (_slack_h(j, t), j.spec.job_id),
    )
    for j in ready:
        if j.spec.gpus <= free + EPS_GPU_H:
            j.status, j.start_h = "running", max(float(t), j.arrive_h)
            free -= j.spec.gpus
            running.append(j)
    busy_gpu_h = inf_gpus
    work = 0.0
    for j in running:
        begin = max(float(t), j.start_h)
        rate = j.spec.gpus * tau
        run_h = min(t + 1.0 - begin, j.remaining / rate)
        busy_gpu_h += j.spec.gpus * run_h
        done = rate * run_h
        work += done
        j.remaining -= done
        if j.remaining <= EPS_GPU_H:
            j.remaining, j.status, j.finish_h = 0.0, "done", begin + run_h
    return {"flexible_work_gpu_h": work, "inference_served_gpu_h": inf_gpus * tau_inf,
            "slo_gpu_h": slo, "busy_gpu_h": busy_gpu_h}


def _energy(params: Any, exo: np.ndarray, i: int, cap: float, served: dict[str, float],
            e_mig_kwh: float) -> dict[str, float]:
    """Energy of site ``i`` in an hour, by the environment's formulas (no battery, no
    curtailment): facility power, local generation used, import, overdraw, carbon, cost."""
    from gridrl.env import kernel
    from gridrl.env.kernel import Exo

    e_kwh = [kernel.it_kwh_per_gpu_h(float(params.power_at(cap, inf)), float(tau),
                                     params.gpu_idle_kw[i], params.gpu_board_max_kw[i],
                                     params.host_busy_kw_per_gpu[i])
             for inf, tau in ((True, params.inference_throughput_at(cap)),
                              (False, params.throughput(cap)))]
    it = kernel.it_kw(served["inference_served_gpu_h"], served["flexible_work_gpu_h"],
                      e_kwh[0], e_kwh[1], params.gpus[i], params.gpu_idle_kw[i])
    pue = kernel.pue_at(exo[i, Exo.TEMP_C], params.pue[i], params.pue_temp_slope_per_c[i],
                        params.pue_temp_threshold_c[i])
    facility = float(kernel.facility_kw(params.facility_fixed_kw[i], pue, it, e_mig_kwh))
    gen = exo[i, Exo.PV_KW] + exo[i, Exo.WIND_KW]
    imp = max(facility - gen, 0.0)
    return {
        "facility_kwh": facility, "migration_kwh": e_mig_kwh,
        "renewable_used_kwh": min(gen, facility), "grid_import_kwh": imp,
        "overdraw_kwh": max(imp - exo[i, Exo.HEADROOM_KW], 0.0),
        "carbon_kg": imp * exo[i, Exo.CARBON_G_PER_KWH] * kernel.KG_PER_G,
        "cost": imp * exo[i, Exo.PRICE_PER_MWH] * kernel.MWH_PER_KWH,
        "carbon_g_per_kwh": exo[i, Exo.CARBON_G_PER_KWH],
    }  # fmt: skip


def _job_table(jobs: list[_Job]) -> pd.DataFrame:
    """One row per job: where it ran, when, and what is left."""
    return pd.DataFrame(
        [
            {
                "job_id": j.spec.job_id, "trace_row": j.spec.trace_row, "home_site": j.spec.site,
                "site": j.site, "moved": j.moved_to is not None, "gpus": j.spec.gpus,
                "work_gpu_h": j.spec.work_gpu_h, "arrival_h": j.spec.arrival_h,
                "deadline_h": j.spec.deadline_h, "start_h": j.start_h, "finish_h": j.finish_h,
                "left_gpu_h": j.remaining, "status": j.status, "censored": j.spec.censored,
            }
            for j in jobs
        ]
    )  # fmt: skip


def kpis(hourly: pd.DataFrame, jobs: pd.DataFrame, hours: int) -> dict[str, float]:
    """The report KPIs of one replay (units in the names)."""
    energy = float(hourly["facility_kwh"].sum())
    useful = float(hourly["flexible_work_gpu_h"].sum() + hourly["inference_served_gpu_h"].sum())
    carbon = float(hourly["carbon_kg"].sum())
    done = jobs["status"] == "done"
    late_done = done & (jobs["finish_h"] > jobs["deadline_h"] + EPS_GPU_H)
    late_open = ~done & (jobs["deadline_h"] < hours)
    arrived = float(jobs.loc[jobs["arrival_h"] < hours, "work_gpu_h"].sum())
    work_done = float(hourly["flexible_work_gpu_h"].sum())
    left = float(jobs["left_gpu_h"].sum())
    wait = (
        jobs.loc[jobs["start_h"].notna(), "start_h"]
        - jobs.loc[jobs["start_h"].notna(), "arrival_h"]
    )
    return {
        "energy_kwh": energy,
        "grid_import_kwh": float(hourly["grid_import_kwh"].sum()),
        "carbon_kg": carbon,
        "cost": float(hourly["cost"].sum()),
        "renewable_share": float(hourly["renewable_used_kwh"].sum()) / energy
        if energy
        else math.nan,
        "energy_per_useful_gpu_h_kwh": energy / useful if useful else math.nan,
        "carbon_per_useful_gpu_h_kg": carbon / useful if useful else math.nan,
        "flexible_work_done_gpu_h": work_done,
        "jobs_done": int(done.sum()),
        "jobs_moved": int(jobs["moved"].sum()),
        "deadline_misses": int(late_done.sum() + late_open.sum()),
        "mean_wait_h": float(wait.mean()) if len(wait) else math.nan,
        "p95_wait_h": float(wait.quantile(0.95)) if len(wait) else math.nan,
        "slo_violation_gpu_h": float(hourly["slo_gpu_h"].sum()),
        "headroom_overdraw_kwh": float(hourly["overdraw_kwh"].sum()),
        "work_left_gpu_h": left,
        "work_lost_gpu_h": arrived - work_done - left,
    }


def prepare(
    bundle: str | Path,
    trace: str | Path,
    *,
    scenario_path: str | Path | None = None,
    nodes: str | Path | None = None,
    days: int | None = None,
    start: str | None = None,
    forecast_mode: str | None = None,
    seed: int = 0,
) -> tuple[Any, ReplayWorkload, Any, Any, Any, int]:
    """Load the bundle, its scenario, the trace window and the environment inputs.

    The workload signals of the replay window (``inference_gpus``, ``flexible_gpu_h``)
    are replaced by the trace's before the forecasts are made, so the policy's
    observation and forecasts describe the jobs it is deciding about.

    Returns
    -------
    (runtime, workload, params, data, builder, row0)

    Raises
    ------
    ReplayError
        when the bundle's ``step_minutes`` is not 60, the scenario is missing, or its
        layouts are not the bundle's.
    """
    from gridrl.data.build import build_signals
    from gridrl.data.signals import Signals
    from gridrl.env.clock import MINUTES_PER_HOUR
    from gridrl.env.inputs import EnvData, make_forecast
    from gridrl.env.layout import ObservationBuilder, action_layout
    from gridrl.env.params import build_params
    from gridrl.export.runtime import PolicyRuntime
    from gridrl.integrations.replay_jobs import trace_workload
    from gridrl.scenario import load_scenario

    runtime = PolicyRuntime(bundle)
    manifest = runtime.manifest
    if manifest.step_minutes != MINUTES_PER_HOUR:
        # the job-level replay steps whole hours; a sub-hourly policy would see hourly
        # arrivals as one step's (k times too large) and decide k times too rarely
        raise ReplayError(
            f"{bundle}: manifest step_minutes = {manifest.step_minutes}; the job-level "
            f"replay runs hourly steps only (step_minutes = {MINUTES_PER_HOUR})"
        )
    path = scenario_path or manifest.scenario.path
    if path is None or not Path(path).is_file():
        raise ReplayError(
            f"scenario file {path!r} not found: pass --scenario (the bundle's scenario)"
        )
    sc = load_scenario(path)
    if manifest.scenario.hash and sc.content_hash() != manifest.scenario.hash:
        raise ReplayError(
            f"{path}: content hash {sc.content_hash()} is not the bundle's "
            f"{manifest.scenario.hash} (the policy was trained on another scenario)"
        )
    params = build_params(sc)
    if action_layout(params).to_dict() != manifest.action.model_dump(mode="json"):
        raise ReplayError(f"{path}: its action layout is not the bundle's")
    sites = sc.expanded_sites()
    days = days or max(sc.env.episode_hours // 24, 1)
    start_ts = pd.Timestamp(start or sc.periods.test[0].start, tz="UTC")
    workload = trace_workload(trace, nodes, sites, start_ts, days, seed + sc.seed)

    signals = build_signals(sc, base_dir=Path(path).parent)
    frame = signals.frame.copy()
    missing = workload.index.difference(frame.index)
    if len(missing):
        raise ReplayError(f"replay hours {missing[0]} .. are outside the scenario's signals")
    for i, site in enumerate(sites):
        frame.loc[workload.index, (site.name, "inference_gpus")] = workload.inference_gpus[:, i]
        frame.loc[workload.index, (site.name, "flexible_gpu_h")] = workload.flexible_gpu_h[:, i]
    signals = Signals(frame, f"{signals.source} + {trace}").validate()
    mode = forecast_mode or manifest.forecast_mode
    cube = make_forecast(sc, signals, mode, seed=seed) if mode else None
    data = EnvData.from_signals(signals, [s.name for s in sites], cube)
    builder = ObservationBuilder(params, data)
    # through the manifest model, so metadata derived on load compares like for like
    layout = ObservationLayout.model_validate(builder.layout.to_dict())
    if layout.model_dump(mode="json") != manifest.observation.model_dump(mode="json"):
        raise ReplayError(
            f"{path} with forecast mode {mode!r}: the observation layout is not the bundle's"
        )
    row0 = int(data.index.get_loc(workload.index[0]))
    return runtime, workload, params, data, builder, row0


def replay(
    bundle: str | Path, trace: str | Path, **kwargs: Any
) -> tuple[ReplayResult, ReplayResult, dict[str, Any]]:
    """Replay the trace window under the bundle and under run_now.

    Returns (bundle result, run_now result, trace report). Keyword arguments go to
    :func:`prepare`.
    """
    runtime, workload, params, data, builder, row0 = prepare(bundle, trace, **kwargs)

    def decide(obs: np.ndarray) -> Any:
        return runtime.decide(obs)

    ours = simulate("bundle", decide, workload, params, data, builder, row0)
    base = simulate(
        "run_now", run_now_decider(params.site_names), workload, params, data, builder, row0
    )
    return ours, base, workload.report


def plot_replay(ours: ReplayResult, base: ReplayResult, path: str | Path) -> Path:
    """PNG: fleet grid import and carbon emitted per hour for both policies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gridrl.io import write_with

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for res, style in ((base, "--"), (ours, "-")):
        h = res.hourly.groupby("time")
        axes[0].plot(h["grid_import_kwh"].sum(), style, label=res.policy)
        axes[1].plot(h["flexible_work_gpu_h"].sum(), style, label=res.policy)
        axes[2].plot(h["carbon_kg"].sum(), style, label=res.policy)
    axes[0].set_ylabel("grid import (kWh/h)")
    axes[1].set_ylabel("flexible work (GPU-h/h)")
    axes[2].set_ylabel("carbon (kg/h)")
    for ax in axes:
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    axes[0].set_title("job-level replay: bundle vs run_now")
    fig.tight_layout()
    out = write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
