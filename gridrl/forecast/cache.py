"""Content hashes that key cached forecast artefacts (folder: ``gridrl.io.default_cache_dir``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["frame_hash", "key_hash"]


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
