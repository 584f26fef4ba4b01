"""Run folder: resolved config, per-unit results with done markers, merged results.

Layout of ``RUN_DIR``::

    config.resolved.yaml        the validated study with absolute paths
    run.json                    study hash, gridrl version, start time; per driver that
                                ran it: command, code commit, wall time
    scenario.yaml               the scenario the run used (periods override applied)
    <unit_id>/                  one folder per unit (agent x seed x forecast mode);
        KEY.json                what the unit depends on (written before it runs)
        result.parquet          for SB3 agents also the policy: model.zip,
        DONE                    vecnormalize.pkl, meta.json, checkpoints/, logs
                                (and scenario.yaml when the agent overrides it)
        rejected/<UTC time>/    damaged DONE and result found on resume, or every
                                file of a unit whose key changed; REASON.txt
    results.parquet             every finished unit's rows, merged
    units.parquet               one row per finished unit (wall time, env-steps/s, ...)
    report.md, plots/*.png      written by gridrl.experiments.report
    LOCK                        held (``flock``) by the driver using the folder

Every file is written atomically (:mod:`gridrl.io`). A unit counts as finished only
once its ``DONE`` marker exists and its files check out (:meth:`RunStore.check_unit`):
the marker is written after the result and holds the result's SHA-256, row count and
columns, so neither a killed run nor a damaged file leaves a unit that looks finished
without its result. Damaged units are moved aside (:meth:`RunStore.reject_unit`), never
deleted.

A study may change between drivers of one run folder: each unit's key
(:mod:`gridrl.experiments.keys`) is recorded in its ``KEY.json`` before it runs, and a
unit whose key no longer matches is moved aside whole (results, policy, checkpoints) and
runs again; the others are kept. Folders made before keys were recorded resume only
with the same study.

One driver at a time: :meth:`RunStore.lock` takes an exclusive ``flock`` on ``LOCK`` for
the driver's life (the kernel drops it when the driver dies, however it dies) and
records the holder's pid and host, so a second driver is refused with their names.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl import __version__
from gridrl.errors import GridrlError
from gridrl.io import sha256_file, write_json_atomic, write_text_atomic, write_with

RESULT_FILE = "result.parquet"
DONE_FILE = "DONE"
ERROR_FILE = "ERROR.txt"
PROGRESS_FILE = "progress.json"
LOCK_FILE = "LOCK"
KEY_FILE = "KEY.json"
REJECTED_DIR = "rejected"
# what a done marker must hold for its unit to be trusted
MARKER_KEYS = ("unit_id", "rows", "sha256", "columns")


ResultCheck = Callable[[str, pd.DataFrame], str | None]


class RunDirError(GridrlError, RuntimeError):
    """The run folder cannot be used as asked (study changed, results would be mixed,
    another driver holds it)."""


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())



def frame_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Column name -> dtype name of a result table (recorded in the done marker)."""
    return {str(c): str(t) for c, t in frame.dtypes.items()}


class RunStore:
    """Reads and writes one run folder.

    Parameters
    ----------
    run_dir
        The run folder; created when missing.
    check_result
        ``(unit_id, result) -> reason or None``: what the study requires of a unit's
        result beyond its marker (columns, rows, identity); a unit whose result fails it
        is not finished.
    """

    def __init__(self, run_dir: str | Path, check_result: ResultCheck | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self._check_result = check_result
        # unit id -> (file signatures, reason): a file is checked again only once changed
        self._checked: dict[str, tuple[tuple[Any, ...], str | None]] = {}

    # ------------------------------------------------------------------ layout

    def unit_dir(self, unit_id: str) -> Path:
        """Folder of one unit (also the policy folder of an SB3 unit)."""
        return self.run_dir / unit_id

    def result_path(self, unit_id: str) -> Path:
        """The unit's result table."""
        return self.unit_dir(unit_id) / RESULT_FILE

    def done_path(self, unit_id: str) -> Path:
        """The unit's done marker (JSON: finish time, host, result checksum, summary)."""
        return self.unit_dir(unit_id) / DONE_FILE

    @property
    def results_path(self) -> Path:
        """Merged results of every finished unit."""
        return self.run_dir / "results.parquet"

    @property
    def units_path(self) -> Path:
        """One row per finished unit with its done-marker summary."""
        return self.run_dir / "units.parquet"

    # ------------------------------------------------------------------ run level

    def start(
        self, config_yaml: str, study_hash: str, *, resume: bool, also_accept: tuple[str, ...] = ()
    ) -> bool:
        """Prepare the folder for a run of the study with hash ``study_hash``.

        A fresh run refuses a folder that already holds finished units (they would be
        mixed or overwritten). ``resume`` continues a folder made by this study
        (recorded hash ``study_hash`` or one of ``also_accept``) or, where units record
        their keys, by an earlier version of it: the caller then compares every unit's key.

        Returns
        -------
        bool
            True when the folder was made by another version of the study.

        Raises
        ------
        RunDirError
            when the folder cannot be used as asked.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.run_dir / "run.json"
        old: dict = {}
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
        changed = bool(old) and old.get("study_hash") not in (study_hash, *also_accept)
        if resume and changed and not old.get("unit_keys"):
            raise RunDirError(
                f"{self.run_dir}: made by a different study (hash {old.get('study_hash')},"
                f" now {study_hash}) before units recorded their keys; resume only with the"
                " same study, scenario and forecaster config values, or use another output"
                " folder"
            )
        # every marker counts, damaged or not: a fresh run never mixes with an old one
        finished = self.marked_units()
        if finished and not resume:
            raise RunDirError(
                f"{self.run_dir}: already holds {len(finished)} finished unit(s); "
                "pass --resume to continue it or --out to start a new run folder"
            )
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_text_atomic(self.run_dir / "config.resolved.yaml", config_yaml)
        write_json_atomic(
            meta_path,
            {
                "study_hash": study_hash,
                "unit_keys": True,
                "gridrl_version": __version__,
                "python": platform.python_version(),
                "host": socket.gethostname(),
                "started_utc": started,
                "resumed": resume and bool(finished),
                # a resumed run keeps the record of the drivers before it
                "drivers": old.get("drivers", []) if resume else [],
                "study_changes": [
                    *(old.get("study_changes", []) if resume else []),
                    *([{"utc": started, "from": old.get("study_hash"), "to": study_hash}]
                      if resume and changed else []),
                ],
            },
        )
        return resume and changed

    def record_driver(self, command: str, commit: str, started_utc: str, wall_s: float,
                      *, stopped: bool = False) -> None:
        """Append one driver's command, code commit, start and wall time to ``run.json``
        (the report states them; a resumed run's wall time is the drivers' sum).
        ``stopped``: the driver was interrupted before every unit had run."""
        meta_path = self.run_dir / "run.json"
        meta = json.loads(meta_path.read_text())
        record = {"command": command, "commit": commit, "started_utc": started_utc,
                  "wall_s": round(wall_s, 1), "study_hash": meta.get("study_hash")}
        if stopped:
            record["stopped"] = True
        meta.setdefault("drivers", []).append(record)
        write_json_atomic(meta_path, meta)

    def run_meta(self) -> dict:
        """``run.json`` ({} before the first run)."""
        path = self.run_dir / "run.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the run folder for this process (``with store.lock(): ...``).

        An exclusive, non-blocking ``flock`` on ``RUN_DIR/LOCK``. The kernel releases it
        when the holder exits or is killed, so a lock is never stale; the file keeps the
        last holder's pid, host and start time for the message.

        Raises
        ------
        RunDirError
            naming the holder when another process holds the folder.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        # O_CLOEXEC (Python's default): worker processes never inherit the lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise RunDirError(
                    f"{self.run_dir}: in use by another gridrl run ({_holder(path)}); wait "
                    "for it to end or stop it, then resume"
                ) from None
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since_utc": _utc_now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            yield path
        finally:
            os.close(fd)  # releases the flock

    # ------------------------------------------------------------------ unit level

    def is_done(self, unit_id: str) -> bool:
        """True when the unit's done marker and result exist and check out."""
        return self.done_path(unit_id).exists() and self.check_unit(unit_id) is None

    def marked_units(self) -> list[str]:
        """Ids of every unit with a done marker, sorted (checked or not)."""
        if not self.run_dir.exists():
            return []
        return sorted(p.parent.name for p in self.run_dir.glob(f"*/{DONE_FILE}"))

    def finished_units(self) -> list[str]:
        """Ids of every finished unit (marker and result check out), sorted."""
        return [u for u in self.marked_units() if self.check_unit(u) is None]

    def invalid_units(self) -> dict[str, str]:
        """Units with a done marker whose files do not check out: id -> reason."""
        out = {u: self.check_unit(u) for u in self.marked_units()}
        return {u: r for u, r in out.items() if r is not None}

    def write_unit(self, unit_id: str, result: pd.DataFrame, summary: dict[str, Any]) -> None:
        """Write a unit's result, then its done marker (both atomically, in that order).

        The marker records the result's SHA-256, row count and columns, which
        :meth:`check_unit` compares with the file before the unit is trusted.
        """
        d = self.unit_dir(unit_id)
        d.mkdir(parents=True, exist_ok=True)
        error = d / ERROR_FILE
        if error.exists():
            error.unlink()  # a previous failed attempt; this one succeeded
        write_with(self.result_path(unit_id), lambda p: result.to_parquet(p, index=False))
        marker = {
            **summary,
            "unit_id": unit_id,
            "finished_utc": _utc_now(),
            "host": socket.gethostname(),
            "rows": len(result),
            "columns": frame_columns(result),
            "sha256": sha256_file(self.result_path(unit_id)),
        }
        write_json_atomic(self.done_path(unit_id), marker)

    def check_unit(self, unit_id: str) -> str | None:
        """Why the unit's files cannot be trusted (naming the file), or None when the done
        marker parses, names the unit, and the result matches its checksum, row count
        and columns. Results are cached until a file changes."""
        paths = (self.done_path(unit_id), self.result_path(unit_id))
        sig = tuple(_signature(p) for p in paths)
        cached = self._checked.get(unit_id)
        if cached is not None and cached[0] == sig:
            return cached[1]
        reason = self._check_files(unit_id)
        self._checked[unit_id] = (sig, reason)
        return reason

    def _check_files(self, unit_id: str) -> str | None:
        done, result = self.done_path(unit_id), self.result_path(unit_id)
        marker, reason = _read_marker(done)
        if reason is not None:
            return f"{done}: {reason}"
        if marker["unit_id"] != unit_id:
            return f"{done}: names unit {marker['unit_id']!r}, not {unit_id!r}"
        if not result.exists():
            return f"{result}: missing"
        digest = sha256_file(result)
        if digest != marker["sha256"]:
            return (
                f"{result}: checksum mismatch (SHA-256 {digest[:12]}..., DONE records "
                f"{str(marker['sha256'])[:12]}...)"
            )
        try:
            frame = pd.read_parquet(result)
        except Exception as exc:  # noqa: BLE001 - any reader error means a damaged file
            return f"{result}: not a readable parquet file ({type(exc).__name__}: {exc})"
        if len(frame) != marker["rows"]:
            return f"{result}: {len(frame)} rows, DONE says {marker['rows']}"
        diff = column_diff(frame_columns(frame), marker["columns"])
        if diff is not None:
            return f"{result}: columns differ from DONE's: {diff}"
        bad = None if self._check_result is None else self._check_result(unit_id, frame)
        return None if bad is None else f"{result}: {bad}"

    def read_result(self, unit_id: str) -> pd.DataFrame:
        """The result table of a finished unit.

        Raises
        ------
        RunDirError
            naming the file and the reason when the unit's files do not check out.
        """
        reason = self.check_unit(unit_id)
        if reason is not None:
            raise RunDirError(reason)
        return pd.read_parquet(self.result_path(unit_id))

    def reject_unit(self, unit_id: str, reason: str, *, whole: bool = False) -> Path:
        """Move a unit's done marker and result aside (``<unit>/rejected/<UTC time>/``,
        with ``REASON.txt``) so the unit runs again; nothing is deleted. ``whole``: every
        file of the unit (policy, checkpoints, key), so that nothing of it is reused."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.unit_dir(unit_id) / REJECTED_DIR / stamp
        n = 1
        while dest.exists():  # two rejections within one second
            dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
            n += 1
        dest.mkdir(parents=True)
        # the marker first: once it is gone the unit no longer looks finished
        paths = [self.done_path(unit_id), self.result_path(unit_id)]
        if whole:
            paths += sorted(p for p in self.unit_dir(unit_id).iterdir()
                            if p.name != REJECTED_DIR and p not in paths)
        for path in paths:
            if path.exists():
                shutil.move(path, dest / path.name)
        write_text_atomic(dest / "REASON.txt", reason + "\n")
        self._checked.pop(unit_id, None)
        return dest

    def write_key(self, unit_id: str, key: dict[str, str]) -> None:
        """Record what the unit depends on (:mod:`gridrl.experiments.keys`)."""
        self.unit_dir(unit_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.unit_dir(unit_id) / KEY_FILE, key)

    def read_key(self, unit_id: str) -> dict[str, Any] | None:
        """The unit's recorded key; None when none was recorded (or it is unreadable)."""
        try:
            key = json.loads((self.unit_dir(unit_id) / KEY_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return key if isinstance(key, dict) else None

    def write_error(self, unit_id: str, text: str) -> None:
        """Record why a unit failed (the unit stays unfinished and reruns on resume)."""
        write_text_atomic(self.unit_dir(unit_id) / ERROR_FILE, text)

    def read_done(self, unit_id: str) -> dict[str, Any]:
        """The unit's done-marker content.

        Raises
        ------
        RunDirError
            naming the file when the marker is missing, empty or not a JSON object.
        """
        marker, reason = _read_marker(self.done_path(unit_id), keys=())
        if reason is not None:
            raise RunDirError(f"{self.done_path(unit_id)}: {reason}")
        return marker

    def write_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        """Training progress of a running unit, polled by the driver's progress bar."""
        write_json_atomic(
            self.unit_dir(unit_id) / PROGRESS_FILE,
            {"done": int(done_steps), "total": int(total_steps), "time": time.time()},
        )

    def read_progress(self, unit_id: str) -> tuple[int, int] | None:
        """``(done, total)`` training steps of a running unit, or None."""
        p = self.unit_dir(unit_id) / PROGRESS_FILE
        try:
            data = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return int(data["done"]), int(data["total"])

    # ------------------------------------------------------------------ merged tables

    def merge(self) -> pd.DataFrame:
        """Merge every finished unit into ``results.parquet`` and ``units.parquet``.

        Returns
        -------
        pandas.DataFrame
            The merged results (one row per policy x seed x forecast mode x episode).
        """
        units = self.finished_units()
        frames = [self.read_result(u) for u in units]
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        write_with(self.results_path, lambda p: results.to_parquet(p, index=False))
        rows = []
        for u in units:
            marker = self.read_done(u)
            skip = ("columns", "sha256")  # file checks, not unit facts
            rows.append({
                k: v for k, v in marker.items() if k not in skip and not isinstance(v, dict | list)
            })
        table = pd.DataFrame(rows)
        write_with(self.units_path, lambda p: table.to_parquet(p, index=False))
        return results

    def load_results(self) -> pd.DataFrame:
        """The merged results; merges first when ``results.parquet`` is missing or stale."""
        if not self.results_path.exists():
            return self.merge()
        newest = max(
            (self.done_path(u).stat().st_mtime for u in self.finished_units()), default=0.0
        )
        if newest > self.results_path.stat().st_mtime:
            return self.merge()
        return pd.read_parquet(self.results_path)

    def load_units(self) -> pd.DataFrame:
        """The per-unit summary table (merging first when needed)."""
        self.load_results()
        return pd.read_parquet(self.units_path)


def column_diff(got: dict[str, str], want: dict[str, Any]) -> str | None:
    """What differs between two ``name -> dtype`` maps (missing, unexpected, retyped
    columns), or None when they agree."""
    if got == want:
        return None
    parts = []
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    retyped = [f"{c} {got[c]} (expected {want[c]})" for c in got if c in want and got[c] != want[c]]
    for label, items in (("missing", missing), ("unexpected", extra), ("dtype", retyped)):
        if items:
            parts.append(f"{label}: {', '.join(items)}")
    return "; ".join(parts) or "column order differs"


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _read_marker(
    path: Path, keys: tuple[str, ...] = MARKER_KEYS
) -> tuple[dict[str, Any], str | None]:
    """A done marker's content and None, or ``({}, reason)`` when it cannot be used."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, "missing"
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"unreadable ({exc})"
    if not text.strip():
        return {}, "empty file (expected the JSON done marker)"
    try:
        marker = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc})"
    if not isinstance(marker, dict):
        return {}, f"expected a JSON object, got {type(marker).__name__}"
    missing = [k for k in keys if k not in marker]
    if missing:
        return {}, f"lacks {', '.join(missing)} (written by an older gridrl or edited)"
    return marker, None


def _holder(path: Path) -> str:
    """``pid N on host H since T`` from a lock file, for the refusal message."""
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on host {h['host']} since {h['since_utc']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"holder not recorded in {path}"
