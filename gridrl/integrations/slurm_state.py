"""The Slurm adapter's own records: what it deferred, moved and capped, and its health.

Why a file and not the job: a job's Comment belongs to its owner, who can write
anything into it, so nothing the adapter trusts may live there. The adapter keeps its
records in ``state.json`` inside ``state_dir``, a folder only the adapter's account can
write (created 0700; refused when another account owns it or may write to it),
rewritten atomically after every tick. Records are keyed by job id *and* submit time,
so a job id Slurm reuses is never mistaken for the job the adapter acted on.

A record is a claim that is checked against Slurm at every tick
(:func:`gridrl.integrations.slurm_plan.reconcile`): a deferral counts only while the job
still shows the user hold or begin time the adapter set, a move only while the job is
in the partition the adapter chose. So a record never lets the adapter touch a job
beyond what it did itself.

The power cap is published to the job's AdminComment (only Slurm administrators can
edit it) for a prolog to read; the record here is the adapter's own copy. Caps of
running jobs go to the node caps file (:func:`write_node_caps`) for the node agent
(:mod:`gridrl.integrations.node_agent`).

``health.json`` (path configurable) says when the last tick and the last good tick were
and what the last error was; it is world-readable for monitoring.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gridrl.errors import GridrlError
from gridrl.io import atomic_path

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
STATE_VERSION = 1
DIR_MODE = 0o700
HEALTH_MODE = 0o644  # read by monitoring, written by the adapter only
NODE_CAPS_VERSION = 1
NODE_CAPS_MODE = 0o644  # read by the node agents' account, written by the adapter only
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class StateError(GridrlError, RuntimeError):
    """The state folder or file is unsafe (others may write it) or unreadable."""


def job_key(job_id: int, submit_time: float) -> str:
    """Record key: a reused job id has another submit time."""
    return f"{int(job_id)}@{int(submit_time)}"


@dataclass(frozen=True)
class JobRecord:
    """What the adapter did to one job (times in Unix seconds).

    Attributes
    ----------
    decided_at_s
        When the adapter last decided on the job; the decision stands for one step.
    deferred
        ``"start_time"`` or ``"hold"`` while the adapter's deferral is in force.
    deferred_until_s
        The begin time the adapter set (``start_time`` deferrals).
    moved_to, moved_from, moved_at_s
        The adapter's last move of the job between partitions.
    power_cap_fraction
        The cap the adapter decided for the job.
    """

    job_id: int
    submit_time: float
    decided_at_s: float
    deferred: str | None = None
    deferred_until_s: float | None = None
    moved_to: str | None = None
    moved_from: str | None = None
    moved_at_s: float | None = None
    power_cap_fraction: float | None = None

    @property
    def key(self) -> str:
        return job_key(self.job_id, self.submit_time)


_FLOAT_FIELDS = {"submit_time", "decided_at_s", "deferred_until_s", "moved_at_s"}


def _record_from(raw: Any, where: str) -> JobRecord:
    """A record of state.json, checked field by field."""
    if not isinstance(raw, dict):
        raise StateError(f"{where}: expected an object, got {type(raw).__name__}")
    names = {f.name for f in fields(JobRecord)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise StateError(f"{where}: unknown keys {unknown}")
    for name in names:
        value = raw.get(name)
        if value is None and name not in ("job_id", "submit_time", "decided_at_s"):
            continue
        if name == "job_id":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif name in _FLOAT_FIELDS or name == "power_cap_fraction":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        elif name == "deferred":
            ok = value in ("start_time", "hold")
        else:
            ok = isinstance(value, str)
        if not ok:
            raise StateError(f"{where}.{name}: unexpected value {value!r}")
    return JobRecord(**raw)


def _check_owned(path: Path, what: str) -> os.stat_result:
    """lstat of ``path``; StateError unless it is ours, no link, not writable by others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise StateError(f"{path}: the {what} must not be a symbolic link")
    if st.st_uid != os.geteuid():
        raise StateError(
            f"{path}: the {what} belongs to uid {st.st_uid}, not to the adapter's "
            f"account (uid {os.geteuid()}); only the adapter may write its records"
        )
    if st.st_mode & _OTHERS_WRITE:
        raise StateError(
            f"{path}: the {what} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); run chmod go-w {path}"
        )
    return st


class AdapterState:
    """The records in ``state_dir`` (see the module doc).

    Parameters
    ----------
    directory
        The state folder; created 0700 by :meth:`ensure_dir`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STATE_FILE

    def ensure_dir(self) -> None:
        """Create the folder 0700 when missing; StateError when it is unsafe."""
        try:
            self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            st = _check_owned(self.dir, "state folder")
        except OSError as exc:
            raise StateError(f"{self.dir}: cannot use the state folder: {exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"{self.dir}: the state folder is not a folder")

    def load(self) -> dict[str, JobRecord]:
        """The records (none when the folder or file does not exist yet).

        Raises
        ------
        StateError
            naming the file and the key when it is unsafe or not the adapter's format.
            A damaged file is never overwritten: the operator decides.
        """
        if not self.dir.exists():
            return {}
        _check_owned(self.dir, "state folder")
        if not self.path.exists():
            return {}
        _check_owned(self.path, "state file")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(f"{self.path}: not readable as JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"{self.path}: expected {{'version': {STATE_VERSION}, 'jobs': ...}}")
        jobs = data.get("jobs")
        if not isinstance(jobs, dict):
            raise StateError(f"{self.path}: jobs: expected an object")
        out: dict[str, JobRecord] = {}
        for key, raw in jobs.items():
            rec = _record_from(raw, f"{self.path}: jobs.{key}")
            if rec.key != key:
                raise StateError(f"{self.path}: jobs.{key}: key does not match {rec.key}")
            out[key] = rec
        return out

    def save(self, records: dict[str, JobRecord]) -> None:
        """Replace the records atomically (mode 0600)."""
        self.ensure_dir()
        doc = {
            "version": STATE_VERSION,
            "jobs": {k: asdict(r) for k, r in sorted(records.items())},
        }
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
                tmp.chmod(0o600)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the state: {exc}") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock of the folder for one tick (a second adapter waits)."""
        self.ensure_dir()
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def write_health(path: str | Path, health: dict[str, Any]) -> None:
    """Rewrite the health JSON atomically (world-readable)."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(health, indent=1, sort_keys=True))
            tmp.chmod(HEALTH_MODE)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the health file: {exc}") from None


def write_node_caps(
    path: str | Path,
    nodes: dict[str, dict[int, tuple[float, list[int]]]],
    now_s: float,
    decision: str,
) -> None:
    """Rewrite the node caps file atomically (world-readable, the adapter's only).

    ``nodes`` is ``{node: {job id: (cap fraction, GPU indices on the node)}}``; the
    document is ``{"version", "written_at_s", "decision", "nodes": {node: {job id:
    {"cap_fraction", "gpus"}}}}``. A node agent refuses it once older than its max age."""
    doc = {
        "version": NODE_CAPS_VERSION,
        "written_at_s": now_s,
        "decision": decision,
        "nodes": {
            node: {
                str(jid): {"cap_fraction": cap, "gpus": sorted(gpus)}
                for jid, (cap, gpus) in sorted(jobs.items())
            }
            for node, jobs in sorted(nodes.items())
        },
    }
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.chmod(NODE_CAPS_MODE)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the node caps file: {exc}") from None
