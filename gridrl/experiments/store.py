"""Run folder: resolved config, per-unit results with done markers, merged results.

Layout of ``RUN_DIR``::

    config.resolved.yaml        the validated study with absolute paths
    run.json                    study hash, gridrl version, start time
    scenario.yaml               the scenario the run used (periods override applied)
    <unit_id>/                  one folder per unit (agent x seed x forecast mode);
        result.parquet          for SB3 agents also the policy: model.zip,
        DONE                    vecnormalize.pkl, meta.json, checkpoints/, logs
    results.parquet             every finished unit's rows, merged
    units.parquet               one row per finished unit (wall time, env-steps/s, ...)
    report.md, plots/*.png      written by gridrl.experiments.report

Every file is written atomically (:mod:`gridrl.io`). A unit counts as finished only
once its ``DONE`` marker exists, and the marker is written after the result, so a
killed run never leaves a unit that looks finished without its result.
"""

from __future__ import annotations

import json
import platform
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl import __version__
from gridrl.errors import GridrlError
from gridrl.io import write_json_atomic, write_text_atomic, write_with

RESULT_FILE = "result.parquet"
DONE_FILE = "DONE"
ERROR_FILE = "ERROR.txt"
PROGRESS_FILE = "progress.json"


class RunDirError(GridrlError, RuntimeError):
    """The run folder cannot be used as asked (study changed, results would be mixed)."""


class RunStore:
    """Reads and writes one run folder.

    Parameters
    ----------
    run_dir
        The run folder; created when missing.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir).resolve()

    # ------------------------------------------------------------------ layout

    def unit_dir(self, unit_id: str) -> Path:
        """Folder of one unit (also the policy folder of an SB3 unit)."""
        return self.run_dir / unit_id

    def result_path(self, unit_id: str) -> Path:
        """The unit's result table."""
        return self.unit_dir(unit_id) / RESULT_FILE

    def done_path(self, unit_id: str) -> Path:
        """The unit's done marker (JSON: finish time, wall time, host, summary)."""
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

    def start(self, config_yaml: str, study_hash: str, *, resume: bool) -> None:
        """Prepare the folder for a run of the study with hash ``study_hash``.

        A fresh run refuses a folder that already holds finished units (they would be
        mixed or overwritten); ``resume`` refuses a folder made by a different study.

        Raises
        ------
        RunDirError
            when the folder cannot be used as asked.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.run_dir / "run.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if resume and old.get("study_hash") != study_hash:
                raise RunDirError(
                    f"{self.run_dir}: made by a different study (hash {old.get('study_hash')},"
                    f" now {study_hash}); resume only with the same study file, or use"
                    " another output folder"
                )
        finished = self.finished_units()
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
                "gridrl_version": __version__,
                "python": platform.python_version(),
                "host": socket.gethostname(),
                "started_utc": started,
                "resumed": resume and bool(finished),
            },
        )

    # ------------------------------------------------------------------ unit level

    def is_done(self, unit_id: str) -> bool:
        """True when the unit's done marker and result both exist."""
        return self.done_path(unit_id).exists() and self.result_path(unit_id).exists()

    def finished_units(self) -> list[str]:
        """Ids of every finished unit in the folder, sorted."""
        if not self.run_dir.exists():
            return []
        names = (p.parent.name for p in self.run_dir.glob(f"*/{DONE_FILE}"))
        return sorted(n for n in names if self.is_done(n))

    def write_unit(self, unit_id: str, result: pd.DataFrame, summary: dict[str, Any]) -> None:
        """Write a unit's result, then its done marker (both atomically, in that order)."""
        d = self.unit_dir(unit_id)
        d.mkdir(parents=True, exist_ok=True)
        error = d / ERROR_FILE
        if error.exists():
            error.unlink()  # a previous failed attempt; this one succeeded
        write_with(self.result_path(unit_id), lambda p: result.to_parquet(p, index=False))
        marker = {
            "unit_id": unit_id,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(),
            "rows": len(result),
            **summary,
        }
        write_json_atomic(self.done_path(unit_id), marker)

    def write_error(self, unit_id: str, text: str) -> None:
        """Record why a unit failed (the unit stays unfinished and reruns on resume)."""
        write_text_atomic(self.unit_dir(unit_id) / ERROR_FILE, text)

    def read_done(self, unit_id: str) -> dict[str, Any]:
        """The unit's done-marker content."""
        return json.loads(self.done_path(unit_id).read_text())

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
        frames = [pd.read_parquet(self.result_path(u)) for u in units]
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        write_with(self.results_path, lambda p: results.to_parquet(p, index=False))
        rows = []
        for u in units:
            marker = self.read_done(u)
            rows.append({k: v for k, v in marker.items() if not isinstance(v, dict | list)})
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
