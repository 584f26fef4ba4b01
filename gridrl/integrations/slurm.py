"""Slurm adapter: queue -> observation -> policy runtime -> ``scontrol`` actions.

One tick reads the queue (``squeue --json``), checks the adapter's own records against it
(:mod:`.slurm_state`, :func:`.slurm_plan.reconcile`), builds the bundle's observation from
the queue, the clock and the site signals (:mod:`.slurm_observation`), asks the
torch-free runtime for per-site decisions, turns them into job-level plans
(:mod:`.slurm_plan`) and applies them with ``scontrol`` (or only prints the commands with
``dry_run``), recording what it did.

A tick whose signal inputs are bad (file empty, malformed, stale, non-finite, out of
physical range, repeated times) logs the error and takes the safe default decision
(:func:`.slurm_plan.safe_plans`): run_now for what is queued, release only the adapter's
own deferrals whose deadline requires it. A daemon (``run`` with ``on_error``) never
exits on a tick's problem; the health file says when the last good tick was.

Depends on :mod:`gridrl.export.runtime` only (no torch, no stable-baselines3).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from gridrl.errors import GridrlError
from gridrl.export.runtime import PolicyRuntime, SiteDecision
from gridrl.integrations.slurm_events import active_limits, cap_for_events
from gridrl.integrations.slurm_observation import ObservationError, raw_observation
from gridrl.integrations.slurm_plan import (
    JobPlan,
    ManagedJob,
    commands_for,
    managed_jobs,
    plan_decisions,
    reconcile,
    record_for,
    safe_plans,
)
from gridrl.integrations.slurm_queue import SlurmClient, SlurmError, SlurmJob
from gridrl.integrations.slurm_sites import SitesConfig, SitesConfigError
from gridrl.integrations.slurm_state import (
    AdapterState,
    JobRecord,
    StateError,
    write_health,
    write_node_caps,
)

POLICY = "policy"
SECONDS_PER_MINUTE = 60.0
SAFE_DEFAULT = "safe_default"


@dataclass
class TickResult:
    """What one tick saw, decided and did.

    ``decision`` is ``policy`` or ``safe_default`` (then ``input_error`` says why);
    ``notes`` tell which of the adapter's records no longer hold (someone else acted);
    ``events`` how demand-response events changed the policy's caps."""

    now_s: float
    observation: dict[str, float]
    decisions: list[SiteDecision]
    plans: list[JobPlan]
    applied: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    decision: str = POLICY
    input_error: str | None = None
    notes: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[list[str]]:
        """Every command of every plan, in order."""
        return [c for p in self.plans for c in p.commands]

    @property
    def ok(self) -> bool:
        """The policy decided and every command worked."""
        return self.input_error is None and not self.errors

    def summary(self) -> dict[str, Any]:
        """Counts per action and site (for logs)."""
        counts: dict[str, int] = {}
        for p in self.plans:
            counts[p.action] = counts.get(p.action, 0) + 1
        return {
            "decision": self.decision,
            "jobs": len(self.plans),
            "actions": counts,
            "commands": len(self.commands),
            "applied": len(self.applied),
            "errors": len(self.errors),
        }


def _previous_health(cfg: SitesConfig) -> dict[str, Any]:
    """The health file of an earlier run (its last good tick stays known after a restart);
    a fresh one when there is none or it is not the adapter's JSON."""
    fresh: dict[str, Any] = {"last_good_tick_s": None, "consecutive_errors": 0}
    path = cfg.health_path()
    try:
        old = json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return fresh
    return {**fresh, **old} if isinstance(old, dict) else fresh


def _iso(t_s: float | None) -> str | None:
    return None if t_s is None else datetime.fromtimestamp(t_s, tz=timezone.utc).isoformat()


class SlurmAdapter:
    """Drives a Slurm cluster with a policy bundle.

    Parameters
    ----------
    runtime
        The loaded bundle.
    cfg
        SITES.yaml; its sites must be exactly the bundle's sites. ``state_dir`` is
        required unless ``dry_run``.
    client
        Runs the Slurm commands (default: from ``cfg.commands``).
    dry_run
        Plan and print, never change the cluster, the records or the health file.
    clock
        Returns now in Unix seconds (injectable for replays).

    Raises
    ------
    ValueError
        when the sites differ from the bundle's or ``state_dir`` is missing;
        StateError when the state folder is unsafe.
    """

    def __init__(
        self,
        runtime: PolicyRuntime,
        cfg: SitesConfig,
        client: SlurmClient | None = None,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg_sites = [s.name for s in cfg.sites]
        if set(cfg_sites) != set(runtime.sites):
            raise SitesConfigError(
                f"SITES.yaml sites {sorted(cfg_sites)} must be the bundle's sites "
                f"{sorted(runtime.sites)}"
            )
        step_s = runtime.manifest.step_minutes * SECONDS_PER_MINUTE
        if cfg.decision_interval_s != step_s:
            raise SitesConfigError(
                f"SITES.yaml: decision_interval_s = {cfg.decision_interval_s:g} s, but the "
                f"bundle's policy decides every {runtime.manifest.step_minutes} min "
                f"(manifest step_minutes): set decision_interval_s to {step_s:g}, the step "
                "the policy was trained with")
        if cfg.state_dir is None and not dry_run:
            raise SitesConfigError(
                "SITES.yaml: state_dir is required to change the cluster: a folder only "
                "the adapter's account can write, for its records of what it did"
            )
        self.runtime = runtime
        self.cfg = cfg
        self.client = client or SlurmClient(
            cfg.commands.squeue, cfg.commands.scontrol, timeout_s=cfg.commands.timeout_s
        )
        self.dry_run = dry_run
        self.clock = clock
        self.state = AdapterState(cfg.state_dir) if cfg.state_dir is not None else None
        if self.state is not None and not dry_run:
            self.state.ensure_dir()
        self.health = {**_previous_health(cfg), "pid": os.getpid()}

    def tick(self) -> TickResult:
        """Read, decide, plan and (unless dry-run) apply and record once.

        Raises
        ------
        SlurmError
            when the queue cannot be read; StateError when the records cannot be read
            or written. Bad signal inputs do not raise: the tick takes the safe default
            (``TickResult.input_error``). Failures of single ``scontrol`` calls do not
            raise either: they are collected in ``TickResult.errors``.
        """
        now_s = float(self.clock())
        jobs = self.client.jobs()
        lock = self.state.lock() if self.state is not None and not self.dry_run else nullcontext()
        with lock:
            loaded = self.state.load() if self.state is not None else {}
            records, notes = reconcile(loaded, jobs, self.cfg, now_s)
            managed = managed_jobs(jobs, self.cfg, now_s, records)
            result = self._decide(now_s, managed, jobs, records)
            result.notes = notes
            by_id = {m.job.job_id: m for m in managed}
            for plan in result.plans:
                plan.commands = commands_for(
                    plan, by_id[plan.job_id], self.cfg, self.client.scontrol_cmd
                )
            if not self.dry_run:
                self._apply(result, by_id, records)
        if not self.dry_run and self.cfg.node_caps_file is not None:
            nodes = node_caps(jobs, result.decisions, self.cfg)
            write_node_caps(self.cfg.node_caps_file, nodes, now_s, result.decision)
        return result

    def _decide(
        self,
        now_s: float,
        managed: list[ManagedJob],
        jobs: list[SlurmJob],
        records: dict[str, JobRecord],
    ) -> TickResult:
        """The policy's plans, or the safe default's when an input is bad."""
        fields = self.runtime.manifest.observation.fields
        try:
            raw = raw_observation(fields, self.cfg, managed, jobs, now_s, records)
            limits = active_limits(self.cfg, now_s)
        except ObservationError as exc:
            plans = safe_plans(managed, self.cfg)
            return TickResult(now_s, {}, [], plans, decision=SAFE_DEFAULT, input_error=str(exc))
        decisions = self.runtime.decide(self.runtime.observation_from_values(raw))
        assert isinstance(decisions, list)
        # demand-response events bound the policy's caps (slurm_events)
        decisions, events = cap_for_events(decisions, limits, self.cfg)
        plans = plan_decisions(managed, decisions, self.cfg)
        return TickResult(now_s, raw, decisions, plans, events=events)

    def _apply(
        self, result: TickResult, by_id: dict[int, ManagedJob], records: dict[str, JobRecord]
    ) -> None:
        """Run the commands and record what was done.

        The records of the plans are saved before any command runs, still open to the next
        tick: a crash in between leaves claims that the next tick checks against Slurm
        (and drops where nothing happened). Once a job's commands all worked, its decision
        stands for one step; a job whose command failed is decided again next tick."""
        assert self.state is not None
        ahead, after = dict(records), dict(records)
        key_of: dict[int, str] = {}
        for plan in result.plans:
            m = by_id[plan.job_id]
            rec = record_for(plan, m, self.cfg, result.now_s)
            if rec is None:
                continue
            key_of[plan.job_id] = rec.key
            after[rec.key] = rec
            old_at = m.record.decided_at_s if m.record is not None else 0.0
            ahead[rec.key] = replace(rec, decided_at_s=old_at)
        self.state.save(ahead)
        for plan in result.plans:
            for argv in plan.commands:
                try:
                    self.client.run(argv)
                    result.applied.append(argv)
                except SlurmError as exc:
                    result.errors.append(f"job {plan.job_id}: {exc}")
                    after[key_of[plan.job_id]] = ahead[key_of[plan.job_id]]
                    break  # later commands of this job assume the earlier ones worked
        self.state.save(after)

    def run(
        self,
        *,
        interval_s: float | None = None,
        once: bool = False,
        max_ticks: int | None = None,
        on_tick: Callable[[TickResult], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[TickResult]:
        """Tick once (``once``) or every ``interval_s`` seconds (default: the decision
        interval of SITES.yaml), at most ``max_ticks`` times. Returns the results of the
        ticks (only the last one is kept in memory when ticking forever).

        When ticking repeatedly with ``on_error``, a tick that fails (queue unreadable,
        records unusable) is reported to ``on_error`` and the next tick still runs. The
        health file is rewritten after every tick (not in a dry run)."""
        interval = interval_s if interval_s is not None else self.cfg.decision_interval_s
        results: list[TickResult] = []
        n = 0
        while True:
            start = time.monotonic()
            try:
                result = self.tick()
            except GridrlError as exc:
                # A daemon keeps going: the queue or the state may be back next time.
                # the tick's own error matters more than a failed health write
                self._report(None, exc, on_error or (lambda _: None))
                if once or on_error is None:
                    raise
                on_error(exc)
            else:
                self._report(result, None, on_error)
                if on_tick is not None:
                    on_tick(result)
                if max_ticks is None and not once:
                    results = [result]
                else:
                    results.append(result)
            n += 1
            if once or (max_ticks is not None and n >= max_ticks):
                return results
            sleep(max(interval - (time.monotonic() - start), 0.0))

    def _report(
        self,
        result: TickResult | None,
        exc: Exception | None,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        """Update and write the health file (a write failure goes to ``on_error``)."""
        now_s = result.now_s if result is not None else float(self.clock())
        h = self.health
        h["last_tick_s"], h["last_tick"] = now_s, _iso(now_s)
        problem = str(exc) if exc is not None else None
        if result is not None:
            h["decision"] = result.decision
            h["commands_applied"] = len(result.applied)
            problem = "; ".join(filter(None, [result.input_error, *result.errors])) or None
        if problem is None:
            h["last_good_tick_s"], h["last_good_tick"] = now_s, _iso(now_s)
            h["consecutive_errors"] = 0
        else:
            h["last_error"], h["last_error_s"], h["last_error_at"] = problem, now_s, _iso(now_s)
            h["consecutive_errors"] = h.get("consecutive_errors", 0) + 1
        path = self.cfg.health_path()
        if self.dry_run or path is None:
            return
        try:
            write_health(path, h)
        except StateError as err:
            if on_error is None:
                raise
            on_error(err)


def node_caps(
    jobs: list[SlurmJob], decisions: list[SiteDecision], cfg: SitesConfig
) -> dict[str, dict[int, tuple[float, list[int]]]]:
    """``{node: {job id: (cap, GPU indices)}}`` of the running jobs of the sites'
    partitions: each gets its site's decided cap, as every GPU of a site does in the
    environment. No decisions (the safe default) means no caps."""
    cap = {d.site: round(d.power_cap_fraction, cfg.power_cap_digits) for d in decisions}
    site_of = cfg.site_of_partition()
    out: dict[str, dict[int, tuple[float, list[int]]]] = {}
    for job in jobs:
        site = site_of.get(job.partition)
        if job.state != "RUNNING" or site not in cap:
            continue
        for node, gpus in job.gpu_indices.items():
            out.setdefault(node, {})[job.job_id] = (cap[site], list(gpus))
    return out


def format_command(argv: list[str]) -> str:
    """A command as a copy-pasteable shell line (for ``--dry-run`` output)."""
    return shlex.join(argv)
