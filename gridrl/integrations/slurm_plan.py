"""Turn per-site decisions into job-level Slurm actions, mirroring the environment's step.

For each site, in the order the simulation core applies them (``gridrl.env.core``):

1. **migrate**: a share ``migrate_share`` of the site's queued flexible work leaves,
   spread evenly over deadlines (the core moves the same share of every slack bucket).
   Work leaving site ``i`` goes to ``j != i`` in proportion ``route_weight[j] /
   (1 - route_weight[i])``. A moved job waits one decision step at its new site (the
   core's one-step transit) and gets the destination's power cap.
2. **run**: of the work still queued, a share ``run_share`` is released now, earliest
   deadline first; the rest is deferred for one decision step.
3. **cap**: every managed job of the site gets the site's ``power_cap_fraction``,
   published in its AdminComment for a prolog to apply (``nvidia-smi -pl``).

Jobs are indivisible, so shares of work become sets of jobs by apportionment: a job is
selected when the running selected work crosses the target at the job's midpoint.

What the adapter did lives in its own records (:mod:`.slurm_state`), never in the
job's Comment (its owner can edit that). :func:`reconcile` checks every record against
Slurm before a tick trusts it; only a deferral the adapter set and that is still in
force is ever undone, and admin holds (``JobHeldAdmin``) and holds it did not set are
never touched. A decision on a job stands for one decision step (``fresh_s``): a later
tick within it issues nothing for the job (a moved job stays where it was moved, a
deferral is not pushed again), unless the deadline now needs the job released.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gridrl.integrations.slurm_queue import ADMIN_HOLD, USER_HOLD, SlurmJob
from gridrl.integrations.slurm_sites import SitesConfig, SitesConfigError
from gridrl.integrations.slurm_state import JobRecord, job_key

CAP_KEY = "power_cap"
RUN, DEFER, MOVE = "run", "defer", "move"
WAIT = "wait"  # the last decision on the job still stands: nothing to do
KEEP = "keep"  # safe default after a bad input: leave the job as it is
_NO_COMMANDS = (WAIT, KEEP)


@dataclass(frozen=True)
class ManagedJob:
    """A pending flexible job the adapter may defer, release, move or cap."""

    job: SlurmJob
    site: str
    work: float  # units x time limit (GPU-h or CPU-h)
    slack_h: float  # hours the job may still wait before it misses its deadline
    deferred_by_us: str | None  # "start_time" / "hold": the adapter's deferral in force
    record: JobRecord | None = None  # the adapter's record (checked by reconcile)
    frozen: bool = False  # decided within the last decision step
    in_transit: bool = False  # moved within the last decision step


@dataclass
class JobPlan:
    """What the adapter does to one job, and the commands that do it.

    ``power_cap_fraction`` None leaves the job's cap as it is."""

    job_id: int
    site: str
    action: str  # "run", "defer", "move", "wait" or "keep"
    to_site: str
    partition: str
    power_cap_fraction: float | None
    commands: list[list[str]] = field(default_factory=list)


def _deferral_gone(rec: JobRecord, job: SlurmJob, cfg: SitesConfig, now_s: float) -> str | None:
    """Why the adapter's deferral of ``job`` is no longer in force ("" when silently so)."""
    if job.state != "PENDING":
        return ""  # started (or ended)
    if job.reason == ADMIN_HOLD:
        return "an administrator holds it"
    if rec.deferred == "hold":
        return None if job.reason == USER_HOLD else "it is no longer held"
    if job.reason == USER_HOLD:
        return "its owner holds it"
    until = rec.deferred_until_s
    if until is None:
        return ""
    eligible = job.eligible_time
    if eligible is None or abs(eligible - until) > cfg.start_time_tolerance_s:
        return "" if until <= now_s else "its begin time is not the one the adapter set"
    return "" if eligible <= now_s else None  # "" once the begin time has passed


def reconcile(
    records: Mapping[str, JobRecord],
    jobs: Sequence[SlurmJob],
    cfg: SitesConfig,
    now_s: float,
) -> tuple[dict[str, JobRecord], list[str]]:
    """Records checked against the queue, and notes on what no longer holds.

    Records of jobs that left the queue are dropped; a deferral counts only while the
    job shows the user hold or the begin time the adapter set, a move only while the
    job is in the partition the adapter chose.
    """
    by_key = {job_key(j.job_id, j.submit_time): j for j in jobs}
    out: dict[str, JobRecord] = {}
    notes: list[str] = []
    for key, rec in records.items():
        job = by_key.get(key)
        if job is None:
            continue
        if rec.deferred is not None:
            why = _deferral_gone(rec, job, cfg, now_s)
            if why is not None:
                rec = replace(rec, deferred=None, deferred_until_s=None)
                if why:
                    notes.append(f"job {job.job_id}: {why}; no longer the adapter's deferral")
        if rec.moved_to is not None and job.partition != rec.moved_to:
            notes.append(
                f"job {job.job_id}: in partition {job.partition}, not in {rec.moved_to} "
                "where the adapter moved it"
            )
            rec = replace(rec, moved_to=None, moved_from=None, moved_at_s=None)
        out[key] = rec
    return out, notes


def managed_jobs(
    jobs: Sequence[SlurmJob],
    cfg: SitesConfig,
    now_s: float,
    records: Mapping[str, JobRecord] | None = None,
) -> list[ManagedJob]:
    """Pending jobs of the configured partitions the policy may act on.

    ``records`` are the adapter's records after :func:`reconcile`. Left alone: jobs of
    other partitions, inflexible QOS, zero units of the counted resource, unlimited time,
    admin holds, user holds and future begin times the adapter did not set, and jobs
    waiting on something else (dependencies, reservations).
    """
    records = records or {}
    site_of = cfg.site_of_partition()
    out = []
    for job in jobs:
        site = site_of.get(job.partition)
        if site is None or job.state != "PENDING" or job.qos in cfg.inflexible_qos:
            continue
        units = job.units(cfg.resource)
        if units <= 0 or not math.isfinite(job.time_limit_s):
            continue
        rec = records.get(job_key(job.job_id, job.submit_time))
        ours = rec.deferred if rec is not None else None
        if job.reason == ADMIN_HOLD or (job.reason == USER_HOLD and ours != "hold"):
            continue  # someone else's hold
        if job.eligible_time is not None and job.eligible_time > now_s and ours != "start_time":
            continue  # the owner's own --begin
        if job.reason in ("Dependency", "DependencyNeverSatisfied", "Reservation"):
            continue
        limit_h = job.time_limit_s / 3600.0
        deadline = job.deadline
        if deadline is None:
            deadline = job.submit_time + job.time_limit_s + cfg.default_slack_h * 3600.0
        slack_h = (deadline - now_s) / 3600.0 - limit_h
        frozen = rec is not None and now_s - rec.decided_at_s < cfg.fresh_s
        moved_at = rec.moved_at_s if rec is not None and rec.moved_to is not None else None
        in_transit = moved_at is not None and now_s - moved_at < cfg.fresh_s
        out.append(ManagedJob(job, site, units * limit_h, slack_h, ours, rec, frozen, in_transit))
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
        raise SitesConfigError(
            f"SITES.yaml sites {missing} are not sites of the bundle {list(by_site)}"
        )
    first_partition = {s.name: s.partitions[0] for s in cfg.sites}
    weight = {s: get(by_site[s], "route_weight") for s in sites}
    cap = {s: round(get(by_site[s], "power_cap_fraction"), cfg.power_cap_digits) for s in sites}
    interval_h = cfg.decision_interval_s / 3600.0
    plans: list[JobPlan] = []
    for site in sites:
        d = by_site[site]
        site_jobs = [m for m in managed if m.site == site]
        # decided within the last step: that decision stands (deadlines come first)
        plans += [_standing_plan(m, cfg, WAIT) for m in site_jobs if m.frozen]
        jobs = sorted(
            (m for m in site_jobs if not m.frozen), key=lambda m: (m.slack_h, m.job.job_id)
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


def _standing_plan(m: ManagedJob, cfg: SitesConfig, action: str) -> JobPlan:
    """Leave ``m`` as it is (``action`` wait or keep), except that the adapter's own
    deferral is released once the deadline requires (slack below one decision step)."""
    if m.deferred_by_us is not None and m.slack_h < cfg.decision_interval_s / 3600.0:
        action = RUN
    return JobPlan(m.job.job_id, m.site, action, m.site, m.job.partition, None)


def safe_plans(managed: Sequence[ManagedJob], cfg: SitesConfig) -> list[JobPlan]:
    """The decision when a tick's inputs are bad: run_now for everything queued (no
    deferral, move or cap), and release only the adapter's own deferrals whose deadline
    requires it (the rest end on their own: begin times pass, the next good tick decides)."""
    return [_standing_plan(m, cfg, KEEP) for m in managed]


def _cap_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\S)" + re.escape(f"{prefix}{CAP_KEY}=") + r"\S*")


def with_cap(text: str, prefix: str, value: str) -> str:
    """``text`` with the cap token set to ``value``; every other byte is kept."""
    token = f"{prefix}{CAP_KEY}={value}"
    pattern = _cap_pattern(prefix)
    if pattern.search(text):
        return pattern.sub(lambda _: token, text)
    return f"{text} {token}" if text else token


def cap_of(text: str, prefix: str) -> float | None:
    """The cap token's value in an AdminComment (None without one or when not a number)."""
    found = _cap_pattern(prefix).search(text)
    if found is None:
        return None
    try:
        return float(found.group(0).partition("=")[2])
    except ValueError:
        return None


def commands_for(
    plan: JobPlan, managed: ManagedJob, cfg: SitesConfig, scontrol: str = "scontrol"
) -> list[list[str]]:
    """The ``scontrol`` argument lists that bring the job to its plan (none if already there).

    ``defer_mode: start_time`` defers with ``StartTime=now+<interval>`` and releases with
    ``StartTime=now``; ``hold`` uses ``scontrol uhold`` (a user hold: admin holds stay the
    administrators' own) and ``scontrol release``. Only the adapter's own deferral (a
    checked record) is ever undone. The cap goes to the AdminComment
    (``publish_cap: admin_comment``); the job's Comment is never written.
    """
    if plan.action in _NO_COMMANDS and plan.power_cap_fraction is None:
        return []
    job = managed.job
    jid = str(job.job_id)
    defer = plan.action in (DEFER, MOVE)
    ours = managed.deferred_by_us
    updates: list[str] = []
    if plan.action == MOVE and plan.partition != job.partition:
        updates.append(f"Partition={plan.partition}")
    if defer and cfg.defer_mode == "start_time":
        updates.append(f"StartTime=now+{int(cfg.decision_interval_s)}")
    if plan.action == RUN and ours == "start_time":
        updates.append("StartTime=now")
    cmds = [[scontrol, "update", f"JobId={jid}", *updates]] if updates else []
    if defer and cfg.defer_mode == "hold" and job.reason != USER_HOLD:
        cmds.append([scontrol, "uhold", jid])
    if plan.action == RUN and ours == "hold" and job.reason == USER_HOLD:
        cmds.append([scontrol, "release", jid])
    if plan.power_cap_fraction is not None and cfg.publish_cap == "admin_comment":
        value = f"{plan.power_cap_fraction:.{cfg.power_cap_digits}f}"
        text = with_cap(job.admin_comment, cfg.comment_prefix, value)
        if text != job.admin_comment:
            cmds.append([scontrol, "update", f"JobId={jid}", f"AdminComment={text}"])
    return cmds


def record_for(
    plan: JobPlan, managed: ManagedJob, cfg: SitesConfig, now_s: float
) -> JobRecord | None:
    """The adapter's record of the job once ``plan`` is applied (decided at ``now_s``);
    the record as it was for plans that change nothing (None for a job without one)."""
    if plan.action in _NO_COMMANDS:
        return managed.record
    job = managed.job
    rec = managed.record or JobRecord(job.job_id, job.submit_time, now_s)
    cap = plan.power_cap_fraction
    rec = replace(
        rec,
        decided_at_s=now_s,
        power_cap_fraction=rec.power_cap_fraction if cap is None else cap,
    )
    if plan.action == RUN:
        return replace(rec, deferred=None, deferred_until_s=None)
    until = now_s + int(cfg.decision_interval_s) if cfg.defer_mode == "start_time" else None
    rec = replace(rec, deferred=cfg.defer_mode, deferred_until_s=until)
    if plan.action == MOVE:
        rec = replace(rec, moved_to=plan.partition, moved_from=job.partition, moved_at_s=now_s)
    return rec
