"""Atomic file writes: a reader never sees a half-written file, a crash never loses one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "GRIDRL_CACHE"


def default_cache_dir() -> Path:
    """Where built signals and forecast cubes are cached: ``$GRIDRL_CACHE`` if set, else
    ``~/.cache/gridrl``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gridrl"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Use it with writers that take a path (``df.to_parquet(tmp)``, ``fig.savefig(tmp)``).
    On error the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _create_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path``.

    Created with mode 0666 filtered by the umask, as ``open()`` would (``mkstemp`` makes
    0600 files, which a service running as another account of the group cannot read).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """Create a uniquely named folder in ``parent`` with mode 0777 filtered by the umask
    (``mkdtemp`` makes it 0700)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return tmp


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (indented, keys sorted)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str, **kwargs))


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
