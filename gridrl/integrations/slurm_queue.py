"""Read Slurm's queue: ``squeue --json`` -> typed jobs, and the ``scontrol`` calls.

Handles both JSON dialects: Slurm 22.05 (plain integers, ``job_state`` a string) and
23.02+ (numbers as ``{"set", "infinite", "number"}`` objects, ``job_state`` a list).
Every subprocess gets an argument list, never a shell string.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gridrl.errors import GridrlError

# Slurm's uint32 sentinels in the 22.05 dialect: NO_VAL and INFINITE.
_NO_VAL32 = 0xFFFFFFFE
_INFINITE32 = 0xFFFFFFFF
# state_reason of held jobs: a user hold (the owner may release it) and an admin hold
USER_HOLD = "JobHeldUser"
ADMIN_HOLD = "JobHeldAdmin"
_GPU_RE = re.compile(r"gres[/:]gpu(?::[^=:,]+)?[=:](\d+)")
# one node's entry of gres_detail: "gpu:2(IDX:0-1)", "gpu:a100:3(IDX:0,2-3)"
_GPU_IDX_RE = re.compile(r"(?:^|,)gpu(?::[^(,]*)?\(IDX:([0-9,-]+)\)")


class SlurmError(GridrlError, RuntimeError):
    """A Slurm command failed or printed something that is not what it documents."""


def _num(value: Any) -> float | None:
    """A Slurm number in either dialect; None when unset, ``inf`` when infinite."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if value.get("infinite"):
            return math.inf
        if not value.get("set", True):
            return None
        value = value.get("number")
        if value is None:
            return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        if value == _INFINITE32:
            return math.inf
        if value == _NO_VAL32:
            return None
        return float(value)
    raise SlurmError(f"expected a number in squeue JSON, got {value!r}")


def _gpu_count(raw: Mapping[str, Any]) -> int:
    """GPUs a job asks for in total: from the job-wide request (``tres_req_str``,
    ``tres_per_job``), else per node x nodes, else per task x tasks; 0 without GPUs."""
    for key, times in (
        ("tres_req_str", None),
        ("tres_per_job", None),
        ("tres_per_node", "node_count"),
        ("tres_per_task", "tasks"),
    ):
        found = _GPU_RE.findall(_text(raw.get(key)))
        if found:
            factor = _num(raw.get(times)) if times else 1.0
            return int(found[0]) * int(factor or 1)
    return 0


def _index_list(text: str) -> tuple[int, ...]:
    """``"0,2-3"`` -> ``(0, 2, 3)``."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)


def _allocated_nodes(raw: Mapping[str, Any]) -> list[str]:
    """Node names of a job's allocation in ``gres_detail`` order (22.05:
    ``allocated_nodes[].nodename``; 23.02+: ``nodes.allocation[].name``)."""
    res = raw.get("job_resources") or {}
    old = res.get("allocated_nodes")
    if isinstance(old, list):
        return [str(n.get("nodename")) for n in old]
    nodes = res.get("nodes")
    if isinstance(nodes, Mapping) and isinstance(nodes.get("allocation"), list):
        return [str(n.get("name")) for n in nodes["allocation"]]
    return []


def _gpu_indices(raw: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """GPU indices (GRES ``IDX``) per allocated node: ``{node: (0, 1)}``."""
    detail = raw.get("gres_detail") or []
    nodes = _allocated_nodes(raw)
    out: dict[str, tuple[int, ...]] = {}
    for node, text in zip(nodes, detail, strict=False):
        idx = [i for m in _GPU_IDX_RE.findall(str(text)) for i in _index_list(m)]
        if idx:
            out[node] = tuple(sorted(idx))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class SlurmJob:
    """A job as the adapter needs it. Times are Unix seconds; ``time_limit_s`` may be inf."""

    job_id: int
    name: str
    partition: str
    state: str  # PENDING, RUNNING, ...
    reason: str  # state_reason: JobHeldUser, BeginTime, Priority, ...
    qos: str
    submit_time: float
    eligible_time: float | None  # pending: earliest start (begin time)
    deadline: float | None
    time_limit_s: float
    gpus: int
    cpus: int
    comment: str
    admin_comment: str = ""  # only Slurm administrators can change it
    # running jobs: GPU indices (GRES IDX) allocated on each node
    gpu_indices: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False)

    @property
    def held(self) -> bool:
        """Held by a user or an admin (``scontrol hold`` / ``uhold``)."""
        return self.state == "PENDING" and self.reason in (USER_HOLD, ADMIN_HOLD)

    def units(self, resource: str) -> int:
        """GPUs or CPUs the job asks for."""
        return self.gpus if resource == "gpu" else self.cpus


def parse_squeue_json(text: str) -> list[SlurmJob]:
    """Jobs of ``squeue --json`` output.

    Raises
    ------
    SlurmError
        when the text is not JSON, reports errors, or a job lacks a required field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SlurmError(f"squeue --json printed invalid JSON: {exc}") from None
    errors = data.get("errors") or []
    if errors:
        raise SlurmError(f"squeue --json reported errors: {errors}")
    jobs = []
    for raw in data.get("jobs", []):
        try:
            state = raw["job_state"]
            state = state[0] if isinstance(state, list) and state else state
            limit_min = _num(raw.get("time_limit"))
            gpus = _gpu_count(raw)
            deadline = _num(raw.get("deadline"))
            eligible = _num(raw.get("eligible_time"))
            jobs.append(
                SlurmJob(
                    job_id=int(_num(raw["job_id"])),
                    name=_text(raw.get("name")),
                    partition=_text(raw["partition"]),
                    state=str(state),
                    reason=_text(raw.get("state_reason")),
                    qos=_text(raw.get("qos")),
                    submit_time=float(_num(raw.get("submit_time")) or 0.0),
                    eligible_time=eligible if eligible else None,
                    deadline=deadline if deadline else None,
                    time_limit_s=math.inf if limit_min is None else limit_min * 60.0,
                    gpus=gpus,
                    cpus=int(_num(raw.get("cpus")) or 0),
                    comment=_text(raw.get("comment")),
                    admin_comment=_text(raw.get("admin_comment")),
                    gpu_indices=_gpu_indices(raw),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SlurmError(
                f"squeue --json: job {raw.get('job_id')!r}: bad field: {exc}"
            ) from None
    return jobs


class SlurmClient:
    """Runs ``squeue`` / ``scontrol`` with argument lists.

    Parameters
    ----------
    squeue, scontrol
        Executables (names on PATH or absolute paths).
    env
        Environment for the commands (e.g. with ``SLURM_CONF``); default: inherited.
    timeout_s
        Per-command timeout.
    """

    def __init__(
        self,
        squeue: str = "squeue",
        scontrol: str = "scontrol",
        env: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.squeue_cmd = squeue
        self.scontrol_cmd = scontrol
        self.env = dict(env) if env is not None else None
        self.timeout_s = timeout_s

    def run(self, argv: Sequence[str]) -> str:
        """Run one command (argument list), return stdout; SlurmError with stderr on failure."""
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=self.env if self.env is not None else os.environ.copy(),
                check=False,
            )
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{shlex.join(argv)}: no answer within {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            raise SlurmError(
                f"{shlex.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def jobs(self) -> list[SlurmJob]:
        """All jobs Slurm knows (``squeue --json``; filtering happens in the caller, because
        Slurm 22.05 ignores filters with ``--json``)."""
        return parse_squeue_json(self.run([self.squeue_cmd, "--json"]))

    def scontrol(self, *args: str) -> list[str]:
        """The argument list of an ``scontrol`` call (not run)."""
        return [self.scontrol_cmd, *args]
