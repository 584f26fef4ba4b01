"""Turn per-site decisions into job-level Slurm actions, mirroring the environment's step.

For each site, in the order the simulation core applies them (``gridrl.env.core``):

1. **migrate**: a share ``migrate_share`` of the site's queued flexible work leaves,
   spread evenly over deadlines (the core moves the same share of every slack bucket).
   Work leaving site ``i`` goes to ``j != i`` in proportion ``route_weight[j] /
   (1 - route_weight[i])``. A moved job waits one decision step at its new site (the
   core's one-hour transit) and gets the destination's power cap.
2. **run**: of the work still queued, a share ``run_share`` is released now, earliest
   deadline first; the rest is deferred for one decision step.
3. **cap**: every managed job of the site carries the site's ``power_cap_fraction`` in
   its Comment, for a prolog to apply (``nvidia-smi -pl``).

Jobs are indivisible, so shares of work become sets of jobs by apportionment: a job is
selected when the running selected work crosses the target at the job's midpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gridrl.integrations.slurm_queue import SlurmJob
from gridrl.integrations.slurm_sites import SitesConfig

CAP_KEY = "power_cap"
DEFER_KEY = "deferred"


@dataclass(frozen=True)
class ManagedJob:
    """A pending flexible job the adapter may defer, release, move or cap."""

    job: SlurmJob
    site: str
    work: float  # units x time limit (GPU-h or CPU-h)
    slack_h: float  # hours the job may still wait before it misses its deadline
    deferred_by_us: str | None  # "start_time" / "hold" when our tag says we deferred it


@dataclass
class JobPlan:
    """What the adapter does to one job, and the commands that do it."""

    job_id: int
    site: str
    action: str  # "run", "defer" or "move"
    to_site: str
    partition: str
    power_cap_fraction: float
    commands: list[list[str]] = field(default_factory=list)


def comment_tokens(comment: str, prefix: str) -> tuple[dict[str, str], list[str]]:
    """Split a Comment into our ``prefix``-ed ``key=value`` tokens and everything else."""
    ours: dict[str, str] = {}
    other: list[str] = []
    for tok in comment.split():
        if tok.startswith(prefix) and "=" in tok:
            key, _, value = tok[len(prefix) :].partition("=")
            ours[key] = value
        else:
            other.append(tok)
    return ours, other


def build_comment(other: Sequence[str], ours: dict[str, str], prefix: str) -> str:
    """Comment text: the user's own tokens first, then ours (sorted)."""
    return " ".join([*other, *(f"{prefix}{k}={v}" for k, v in sorted(ours.items()))])


def managed_jobs(jobs: Sequence[SlurmJob], cfg: SitesConfig, now_s: float) -> list[ManagedJob]:
    """Pending jobs of the configured partitions the policy may act on.

    Left alone: jobs of other partitions, inflexible QOS, zero units of the counted
    resource, unlimited time, holds or future begin times that are not ours, and
    jobs waiting on something else (dependencies, reservations).
    """
    site_of = cfg.site_of_partition()
    out = []
    for job in jobs:
        site = site_of.get(job.partition)
        if site is None or job.state != "PENDING" or job.qos in cfg.inflexible_qos:
            continue
        units = job.units(cfg.resource)
        if units <= 0 or not math.isfinite(job.time_limit_s):
            continue
        ours, _ = comment_tokens(job.comment, cfg.comment_prefix)
        tag = ours.get(DEFER_KEY)
        if job.held and tag != "hold":
            continue  # someone else's hold
        future_begin = job.eligible_time is not None and job.eligible_time > now_s
        if job.reason == "BeginTime" and future_begin and tag != "start_time":
            continue  # the user's own --begin
        if job.reason in ("Dependency", "DependencyNeverSatisfied", "Reservation"):
            continue
        limit_h = job.time_limit_s / 3600.0
        deadline = job.deadline
        if deadline is None:
            deadline = job.submit_time + job.time_limit_s + cfg.default_slack_h * 3600.0
        slack_h = (deadline - now_s) / 3600.0 - limit_h
        out.append(ManagedJob(job, site, units * limit_h, slack_h, tag))
    return out


def _select(work: np.ndarray, share: float) -> np.ndarray:
    """Boolean mask choosing jobs (in the given order) whose total ~ share x total work.

    Stride apportionment: job k is selected when ``share * cumsum`` passes a multiple of
    its own size at its midpoint, so selections spread evenly over the order."""
    if work.size == 0:
        return np.zeros(0, dtype=bool)
    target = share * np.cumsum(work)
    taken = np.zeros(work.size, dtype=bool)
    done = 0.0
    for k, w in enumerate(work):  # jobs are few (one site's queue); clarity over speed
        if target[k] - done >= 0.5 * w:
            taken[k] = True
            done += w
    return taken


def _select_edf(work: np.ndarray, share: float) -> np.ndarray:
    """Jobs taken earliest-deadline-first until ~ share x total work (midpoint rule)."""
    if work.size == 0:
        return np.zeros(0, dtype=bool)
    before = np.cumsum(work) - work
    return before + 0.5 * work <= share * work.sum() + 1e-12


def plan_decisions(
    managed: Sequence[ManagedJob],
    decisions: Sequence[dict[str, float]] | Sequence[object],
    cfg: SitesConfig,
) -> list[JobPlan]:
    """Job plans for one decision (one entry per site, in the runtime's site order).

    ``decisions`` are :class:`~gridrl.export.runtime.SiteDecision` objects (or dicts with
    the same keys).
    """

    def get(d: object, key: str) -> float:
        return float(d[key] if isinstance(d, dict) else getattr(d, key))

    by_site = {
        (d["site"] if isinstance(d, dict) else d.site): d  # type: ignore[union-attr]
        for d in decisions
    }
    sites = [s.name for s in cfg.sites]
    missing = [s for s in sites if s not in by_site]
    if missing:
        raise ValueError(f"SITES.yaml sites {missing} are not sites of the bundle {list(by_site)}")
    first_partition = {s.name: s.partitions[0] for s in cfg.sites}
    weight = {s: get(by_site[s], "route_weight") for s in sites}
    cap = {s: round(get(by_site[s], "power_cap_fraction"), cfg.power_cap_digits) for s in sites}
    interval_h = cfg.decision_interval_s / 3600.0
    plans: list[JobPlan] = []
    for site in sites:
        d = by_site[site]
        jobs = sorted(
            (m for m in managed if m.site == site), key=lambda m: (m.slack_h, m.job.job_id)
        )
        if not jobs:
            continue
        protected = np.array(
            [cfg.protect_deadlines and m.slack_h < interval_h for m in jobs], dtype=bool
        )
        work = np.array([m.work for m in jobs])
        # 1. migration, spread over deadlines, never of protected jobs
        movable_work = np.where(protected, 0.0, work)
        moved = _select(movable_work, get(d, "migrate_share")) & ~protected
        dests = [s for s in sites if s != site]
        dest_of: dict[int, str] = {}
        if moved.any() and dests:
            w_other = np.array([weight[s] for s in dests])
            share = (
                w_other / w_other.sum()
                if w_other.sum() > 0
                else np.full(len(dests), 1 / len(dests))
            )
            sent = np.zeros(len(dests))
            for k in np.flatnonzero(moved):
                # largest deficit against the route shares receives the next job
                target = share * (sent.sum() + work[k])
                j = int(np.argmax(target - sent))
                sent[j] += work[k]
                dest_of[k] = dests[j]
        else:
            moved[:] = False
        # 2. run share of what stays, earliest deadline first; protected jobs always run
        stay = np.flatnonzero(~moved)
        run = np.zeros(len(jobs), dtype=bool)
        run[stay] = _select_edf(work[stay], get(d, "run_share"))
        run |= protected
        for k, m in enumerate(jobs):
            if moved[k]:
                to = dest_of[k]
                plans.append(JobPlan(m.job.job_id, site, "move", to, first_partition[to], cap[to]))
            else:
                action = "run" if run[k] else "defer"
                plans.append(JobPlan(m.job.job_id, site, action, site, m.job.partition, cap[site]))
    return plans


def commands_for(
    plan: JobPlan, managed: ManagedJob, cfg: SitesConfig, scontrol: str = "scontrol"
) -> list[list[str]]:
    """The ``scontrol`` argument lists that bring the job to its plan (none if already there).

    ``defer_mode: start_time`` defers with ``StartTime=now+<interval>`` and releases with
    ``StartTime=now``; ``hold`` uses ``scontrol hold`` / ``scontrol release``. Our tags in
    the Comment record the cap and that we deferred the job (so only our own deferrals
    are ever undone).
    """
    job = managed.job
    ours, other = comment_tokens(job.comment, cfg.comment_prefix)
    new = dict(ours)
    new[CAP_KEY] = f"{plan.power_cap_fraction:.{cfg.power_cap_digits}f}"
    defer = plan.action in ("defer", "move")
    updates: list[str] = []
    cmds: list[list[str]] = []
    if plan.partition != job.partition:
        updates.append(f"Partition={plan.partition}")
    if defer:
        new[DEFER_KEY] = cfg.defer_mode
        if cfg.defer_mode == "start_time":
            updates.append(f"StartTime=now+{int(cfg.decision_interval_s)}")
    else:
        new.pop(DEFER_KEY, None)
        if managed.deferred_by_us == "start_time":
            updates.append("StartTime=now")
    comment = build_comment(other, new, cfg.comment_prefix)
    if comment != job.comment:
        updates.append(f"Comment={comment}")
    if updates:
        cmds.append([scontrol, "update", f"JobId={job.job_id}", *updates])
    if defer and cfg.defer_mode == "hold" and not job.held:
        cmds.append([scontrol, "hold", str(job.job_id)])
    if not defer and managed.deferred_by_us == "hold" and job.held:
        cmds.append([scontrol, "release", str(job.job_id)])
    return cmds
