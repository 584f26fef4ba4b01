"""Node agent: apply the Slurm adapter's power caps to the GPUs of running jobs.

The adapter publishes, at every tick, which running job holds which GPUs on which node
and the cap its site's decision sets (:func:`.slurm_state.write_node_caps`). The agent
runs on each GPU node and, every ``interval_s``:

1. reads its node's entry of the caps file; a file that is missing, malformed or older
   than ``max_age_s`` (adapter down, shared storage stale) counts as *no caps*;
2. sets each capped GPU's limit to ``cap_fraction x`` the GPU's **maximum settable
   limit** (board power), clamped to the allowed range, whenever the limit differs
   (so a limit someone else changed is set again);
3. restores the GPUs of jobs no longer listed to the GPU's **default** limit.

What the agent changed lives in its own state file, written before any limit is set:
on stop (SIGTERM/SIGINT) every GPU there is restored, and on start-up the limits left by
a run that crashed are restored before the first step. A GPU index is Slurm's GRES index
on the node, taken as the NVML index: true when gres.conf lists the GPUs in PCI bus
order (``AutoDetect=nvml`` does).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridrl.errors import GridrlError
from gridrl.integrations.nvml import GpuPower, NvmlError
from gridrl.integrations.slurm_state import NODE_CAPS_VERSION
from gridrl.io import atomic_path

DEFAULT_INTERVAL_S = 60.0  # re-apply period: undoes drift within a minute
DEFAULT_MAX_AGE_S = 7200.0  # two hourly decision steps without a new file: caps lapse
DEFAULT_STATE_FILE = "/var/lib/gridrl-node-agent/state.json"
AGENT_STATE_VERSION = 1
_STATE_MODE = 0o600


class NodeCapsError(GridrlError, ValueError):
    """The caps file is missing, malformed or stale; the message names file and key."""


class AgentStateError(GridrlError, RuntimeError):
    """The agent's state file cannot be read or written; it is never overwritten blind."""


@dataclass(frozen=True)
class JobCap:
    """A running job's cap on this node."""

    job_id: int
    cap_fraction: float
    gpus: tuple[int, ...]


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise NodeCapsError(f"{where}: expected a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _job_cap(key: str, raw: Any, where: str) -> JobCap:
    if not key.isdigit():
        raise NodeCapsError(f"{where}: expected a job id, got {key!r}")
    if not isinstance(raw, dict) or set(raw) != {"cap_fraction", "gpus"}:
        raise NodeCapsError(f"{where}: expected {{'cap_fraction': ..., 'gpus': [...]}}")
    cap = _number(raw["cap_fraction"], f"{where}.cap_fraction", 0.0, 1.0)
    gpus = raw["gpus"]
    if not isinstance(gpus, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus
    ):
        raise NodeCapsError(f"{where}.gpus: expected a list of GPU indices, got {gpus!r}")
    return JobCap(int(key), cap, tuple(gpus))


def read_node_caps(path: str | Path, node: str, now_s: float, max_age_s: float) -> list[JobCap]:
    """The caps of ``node``'s running jobs (none when the node is not listed).

    Raises
    ------
    NodeCapsError
        naming the file and key when it is missing, not the adapter's format, or its
        ``written_at_s`` is more than ``max_age_s`` away from ``now_s``.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NodeCapsError(f"{path}: cannot read the caps file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != NODE_CAPS_VERSION:
        raise NodeCapsError(f"{path}: expected {{'version': {NODE_CAPS_VERSION}, ...}}")
    written = _number(doc.get("written_at_s"), f"{path}: written_at_s", 0.0, math.inf)
    if abs(now_s - written) > max_age_s:
        raise NodeCapsError(
            f"{path}: written_at_s {written:.0f} is {now_s - written:.0f} s from now, "
            f"beyond the max age of {max_age_s:g} s (adapter stopped or file stale)"
        )
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict):
        raise NodeCapsError(f"{path}: nodes: expected an object")
    jobs = nodes.get(node, {})
    if not isinstance(jobs, dict):
        raise NodeCapsError(f"{path}: nodes.{node}: expected an object")
    return [_job_cap(k, v, f"{path}: nodes.{node}.{k}") for k, v in jobs.items()]


@dataclass(frozen=True)
class AgentConfig:
    """Where the agent reads and keeps things, and how often it acts.

    ``max_age_s``: a caps file older than this is refused (defaults restored)."""

    caps_file: Path
    node: str
    state_file: Path = Path(DEFAULT_STATE_FILE)
    interval_s: float = DEFAULT_INTERVAL_S
    max_age_s: float = DEFAULT_MAX_AGE_S


@dataclass
class StepResult:
    """What one step saw and did. ``capped``: GPU index -> (job id, limit mW)."""

    now_s: float
    capped: dict[int, tuple[int, int]] = field(default_factory=dict)
    set_mw: list[tuple[int, int]] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)
    caps_error: str | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "now_s": self.now_s,
            "capped": {str(i): {"job_id": j, "limit_mw": mw} for i, (j, mw) in self.capped.items()},
            "set": len(self.set_mw),
            "restored": self.restored,
            "caps_error": self.caps_error,
            "errors": self.errors,
        }


class NodeAgent:
    """Applies the caps of one node's running jobs to its GPUs (see the module doc).

    Parameters
    ----------
    cfg
        Files, node name and timing.
    gpus
        The node's GPUs (:class:`~gridrl.integrations.nvml.PynvmlPower` on a GPU node).
    clock
        Returns now in Unix seconds.
    """

    def __init__(
        self, cfg: AgentConfig, gpus: GpuPower, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.gpus = gpus
        self.clock = clock
        self.stop_event = threading.Event()

    # ------------------------------------------------------------ state file

    def _load_state(self) -> dict[int, int]:
        """GPU index -> job id of every GPU the agent may have changed."""
        path = self.cfg.state_file
        if not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != AGENT_STATE_VERSION:
                raise ValueError(doc.get("version"))
            return {int(k): int(v) for k, v in doc["gpus"].items()}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise AgentStateError(
                f"{path}: not the node agent's state ({{'version': {AGENT_STATE_VERSION}, "
                "'gpus': {index: job id}}); set the GPUs' default limits (nvidia-smi "
                "-q -d POWER shows them; nvidia-smi -i N -pl W) and delete it"
            ) from None

    def _save_state(self, gpus: dict[int, int]) -> None:
        doc = {"version": AGENT_STATE_VERSION, "node": self.cfg.node,
               "gpus": {str(i): j for i, j in sorted(gpus.items())}}  # fmt: skip
        try:
            with atomic_path(self.cfg.state_file) as tmp:
                tmp.write_text(json.dumps(doc, indent=1))
                tmp.chmod(_STATE_MODE)
        except OSError as exc:
            raise AgentStateError(f"{self.cfg.state_file}: cannot write: {exc}") from None

    # ------------------------------------------------------------ actions

    def _targets(self, jobs: list[JobCap], result: StepResult) -> dict[int, tuple[int, float]]:
        """GPU index -> (job id, cap fraction); a GPU two jobs share takes the lower cap."""
        present = set(self.gpus.gpu_indices())
        out: dict[int, tuple[int, float]] = {}
        for job in jobs:
            for g in job.gpus:
                if g not in present:
                    result.errors.append(f"job {job.job_id}: GPU {g} is not on this node")
                elif g not in out or job.cap_fraction < out[g][1]:
                    out[g] = (job.job_id, job.cap_fraction)
        return out

    def _restore(self, indices: list[int], result: StepResult) -> list[int]:
        """Set each GPU back to its default limit; the indices that failed."""
        failed = []
        for g in indices:
            try:
                default = self.gpus.limits(g).default_mw
                if self.gpus.power_limit_mw(g) != default:
                    self.gpus.set_power_limit_mw(g, default)
                result.restored.append(g)
            except NvmlError as exc:
                result.errors.append(str(exc))
                failed.append(g)
        return failed

    def step(self) -> StepResult:
        """Read the caps, set the limits of capped GPUs, restore the others the agent
        changed. NVML errors of single GPUs are collected, not raised."""
        result = StepResult(now_s=float(self.clock()))
        try:
            jobs = read_node_caps(
                self.cfg.caps_file, self.cfg.node, result.now_s, self.cfg.max_age_s
            )
        except NodeCapsError as exc:
            jobs, result.caps_error = [], str(exc)
        targets = self._targets(jobs, result)
        before = self._load_state()
        # every GPU that may be off its default from here on is on record before a change
        self._save_state({**before, **{g: j for g, (j, _) in targets.items()}})
        for g, (job_id, frac) in sorted(targets.items()):
            try:
                lim = self.gpus.limits(g)
                limit_mw = lim.clamp(round(frac * lim.max_mw))
                if self.gpus.power_limit_mw(g) != limit_mw:
                    self.gpus.set_power_limit_mw(g, limit_mw)
                    result.set_mw.append((g, limit_mw))
                result.capped[g] = (job_id, limit_mw)
            except NvmlError as exc:
                result.errors.append(f"job {job_id}: {exc}")
        failed = self._restore(sorted(set(before) - set(targets)), result)
        kept = {g: before[g] for g in failed}
        self._save_state({**kept, **{g: j for g, (j, _) in targets.items()}})
        return result

    def restore_all(self) -> StepResult:
        """Restore every GPU on the agent's record to its default limit (stop, start-up)."""
        result = StepResult(now_s=float(self.clock()))
        before = self._load_state()
        failed = self._restore(sorted(before), result)
        self._save_state({g: before[g] for g in failed})
        return result

    # ------------------------------------------------------------ daemon

    def stop(self, *_: object) -> None:
        """Ask :meth:`run` to restore and return (signal handler)."""
        self.stop_event.set()

    def run(
        self,
        *,
        once: bool = False,
        max_steps: int | None = None,
        on_step: Callable[[StepResult], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Restore what a crashed run left, then step every ``interval_s`` until
        SIGTERM/SIGINT (or ``max_steps``), then restore every GPU it capped.

        ``once`` steps one time and leaves the caps in force (for timer-driven use: the
        next step restores what is no longer listed, a stop everything)."""
        report = on_step or (lambda _: None)
        if once:
            report(self.step())
            return
        stops = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        previous = {sig: signal.signal(sig, self.stop) for sig in stops}
        n = 0
        try:
            report(self.restore_all())
            while not self.stop_event.is_set():
                report(self.step())
                n += 1
                if max_steps is not None and n >= max_steps:
                    break
                self.stop_event.wait(self.cfg.interval_s)
        finally:
            report(self.restore_all())
            for sig, handler in previous.items():
                signal.signal(sig, handler)
