"""Slurm adapter: queue -> observation -> policy runtime -> ``scontrol`` actions.

One tick reads the queue (``squeue --json``), builds the bundle's observation from the
queue, the clock and the site signals (:mod:`.slurm_observation`), asks the torch-free
runtime for per-site decisions, turns them into job-level plans (:mod:`.slurm_plan`) and
applies them with ``scontrol`` (or only prints the commands with ``dry_run``).

Depends on :mod:`gridrl.export.runtime` only (no torch, no stable-baselines3).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridrl.export.runtime import PolicyRuntime, SiteDecision
from gridrl.integrations.slurm_observation import ObservationError, raw_observation
from gridrl.integrations.slurm_plan import JobPlan, commands_for, managed_jobs, plan_decisions
from gridrl.integrations.slurm_queue import SlurmClient, SlurmError
from gridrl.integrations.slurm_sites import SitesConfig


@dataclass
class TickResult:
    """What one tick saw, decided and did."""

    now_s: float
    observation: dict[str, float]
    decisions: list[SiteDecision]
    plans: list[JobPlan]
    applied: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[list[str]]:
        """Every command of every plan, in order."""
        return [c for p in self.plans for c in p.commands]

    def summary(self) -> dict[str, Any]:
        """Counts per action and site (for logs)."""
        counts: dict[str, int] = {}
        for p in self.plans:
            counts[p.action] = counts.get(p.action, 0) + 1
        return {
            "jobs": len(self.plans),
            "actions": counts,
            "commands": len(self.commands),
            "applied": len(self.applied),
            "errors": len(self.errors),
        }


class SlurmAdapter:
    """Drives a Slurm cluster with a policy bundle.

    Parameters
    ----------
    runtime
        The loaded bundle.
    cfg
        SITES.yaml; its sites must be exactly the bundle's sites.
    client
        Runs the Slurm commands (default: from ``cfg.commands``).
    dry_run
        Plan and print, never change the cluster.
    clock
        Returns now in Unix seconds (injectable for replays).
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
            raise ValueError(
                f"SITES.yaml sites {sorted(cfg_sites)} must be the bundle's sites "
                f"{sorted(runtime.sites)}"
            )
        self.runtime = runtime
        self.cfg = cfg
        self.client = client or SlurmClient(
            cfg.commands.squeue, cfg.commands.scontrol, timeout_s=cfg.commands.timeout_s
        )
        self.dry_run = dry_run
        self.clock = clock

    def tick(self) -> TickResult:
        """Read, decide, plan and (unless dry-run) apply once.

        Raises
        ------
        SlurmError
            when the queue cannot be read; ObservationError when a signal is missing.
            Failures of single ``scontrol`` calls do not raise: they are collected in
            ``TickResult.errors`` and the other jobs are still handled.
        """
        now_s = float(self.clock())
        jobs = self.client.jobs()
        managed = managed_jobs(jobs, self.cfg, now_s)
        fields = self.runtime.manifest.observation.fields
        raw = raw_observation(fields, self.cfg, managed, jobs, now_s)
        decisions = self.runtime.decide(self.runtime.observation_from_values(raw))
        assert isinstance(decisions, list)
        plans = plan_decisions(managed, decisions, self.cfg)
        by_id = {m.job.job_id: m for m in managed}
        for plan in plans:
            plan.commands = commands_for(
                plan, by_id[plan.job_id], self.cfg, self.client.scontrol_cmd
            )
        result = TickResult(now_s, raw, decisions, plans)
        if self.dry_run:
            return result
        for plan in plans:
            for argv in plan.commands:
                try:
                    self.client.run(argv)
                    result.applied.append(argv)
                except SlurmError as exc:
                    result.errors.append(f"job {plan.job_id}: {exc}")
                    break  # later commands of this job assume the earlier ones worked
        return result

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

        When ticking repeatedly with ``on_error``, a tick that cannot read the queue or
        a signal is reported to ``on_error`` and the next tick still runs."""
        interval = interval_s if interval_s is not None else self.cfg.decision_interval_s
        results: list[TickResult] = []
        n = 0
        while True:
            start = time.monotonic()
            try:
                result = self.tick()
            except (SlurmError, ObservationError) as exc:
                # A daemon keeps going: the queue or a signal file may be back next time.
                if once or on_error is None:
                    raise
                on_error(exc)
                n += 1
                if max_ticks is not None and n >= max_ticks:
                    return results
                sleep(max(interval - (time.monotonic() - start), 0.0))
                continue
            n += 1
            if on_tick is not None:
                on_tick(result)
            if max_ticks is None and not once:
                results = [result]
            else:
                results.append(result)
            if once or (max_ticks is not None and n >= max_ticks):
                return results
            sleep(max(interval - (time.monotonic() - start), 0.0))


def format_command(argv: list[str]) -> str:
    """A command as a copy-pasteable shell line (for ``--dry-run`` output)."""
    return shlex.join(argv)
