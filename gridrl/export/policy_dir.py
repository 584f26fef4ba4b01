"""Read a trained policy directory as the training runner writes it.

A policy directory holds ``model.zip`` (a stable-baselines3 save), optionally
``vecnormalize.pkl`` (VecNormalize statistics) and ``meta.json``: the algorithm name,
the scenario (path and content hash), the forecast mode, the observation and action
layouts (the environment's ``to_dict()``) and training metadata (steps, seed, time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gridrl.errors import GridrlError

MODEL_FILE = "model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
META_FILE = "meta.json"


class PolicyDirError(GridrlError, ValueError):
    """A policy directory is missing a file or its ``meta.json`` is invalid."""


class PolicyMeta(BaseModel):
    """``meta.json`` of a policy directory. Unknown keys are kept (``model_extra``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    algo: str
    scenario_path: str | None = None
    scenario_hash: str | None = None
    step_minutes: int = 60  # the env's step: the policy decides once a step
    forecast_mode: str | None = None
    observation_layout: dict[str, Any]
    action_layout: dict[str, Any]
    training: dict[str, Any] = {}


@dataclass(frozen=True)
class PolicyDir:
    """A validated policy directory."""

    path: Path
    meta: PolicyMeta

    @property
    def model_path(self) -> Path:
        """``model.zip``."""
        return self.path / MODEL_FILE

    @property
    def vecnormalize_path(self) -> Path | None:
        """``vecnormalize.pkl`` when the policy was trained with VecNormalize, else None."""
        p = self.path / VECNORMALIZE_FILE
        return p if p.exists() else None


def read_policy_dir(path: str | Path) -> PolicyDir:
    """Check a policy directory and parse its ``meta.json``.

    Parameters
    ----------
    path
        Folder written by the training runner.

    Raises
    ------
    PolicyDirError
        naming the folder and the missing file, or ``meta.json`` and the bad key.
    """
    path = Path(path)
    if not path.is_dir():
        raise PolicyDirError(f"{path}: not a policy directory (folder not found)")
    for name in (MODEL_FILE, META_FILE):
        if not (path / name).is_file():
            raise PolicyDirError(f"{path}: missing {name} (expected {MODEL_FILE} and {META_FILE})")
    meta_file = path / META_FILE
    try:
        raw = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise PolicyDirError(f"{meta_file}: not valid JSON: {exc}") from None
    try:
        meta = PolicyMeta.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyDirError(f"{meta_file}: {msgs}") from None
    return PolicyDir(path=path, meta=meta)
