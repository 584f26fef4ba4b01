"""Where forecast artefacts are cached, and the content hashes that key them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CACHE_ENV_VAR = "GRIDRL_CACHE"


def default_cache_dir() -> Path:
    """``$GRIDRL_CACHE`` if set, else ``~/.cache/gridrl``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gridrl"


def frame_hash(frame: pd.DataFrame) -> str:
    """SHA-256 (hex) of a frame's index, column labels and float64 values."""
    h = hashlib.sha256()
    h.update(np.asarray(frame.index.asi8, dtype=np.int64).tobytes())
    h.update(json.dumps([list(map(str, c)) if isinstance(c, tuple) else str(c)
                         for c in frame.columns]).encode())
    h.update(np.ascontiguousarray(frame.to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


def key_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (cache keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:20]
