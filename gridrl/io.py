"""Atomic file writes: a reader never sees a half-written file, a crash never loses one."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "GRIDRL_CACHE"
HASH_BLOCK_BYTES = 1 << 20  # files are hashed in blocks, never read whole


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


def merge_time_csv(
    new: Any, out: str | Path, error: type[Exception], time_column: str = "time"
) -> tuple[int, int]:
    """Merge rows ``new`` (a pandas frame on a UTC time index) into the CSV ``out`` and
    return (rows in the file, stored values replaced).

    A new value replaces the stored one of the same time and column; every other stored
    row and column is kept; the file is replaced atomically. An existing file that cannot
    be read (no ``time_column``, unparsable or repeated times) raises ``error`` naming the
    file and row, and is left untouched.
    """
    out = Path(out)
    old = _read_time_csv(out, error, time_column)
    replaced = 0
    merged = new
    if old is not None:
        both = old.reindex(index=new.index, columns=new.columns)
        replaced = int((both.notna() & (both != new)).to_numpy().sum())
        merged = new.combine_first(old)
        merged = merged[list(dict.fromkeys([*old.columns, *new.columns]))]
    merged = merged.sort_index()
    frame = merged.reset_index(names=time_column)
    frame[time_column] = frame[time_column].map(lambda t: t.isoformat())
    write_with(out, lambda tmp: frame.to_csv(tmp, index=False))
    return len(merged), replaced


def _read_time_csv(path: Path, error: type[Exception], time_column: str) -> Any:
    """The stored CSV on its UTC time index, or None when there is no file."""
    import pandas as pd

    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise error(f"{path}: existing signal file unreadable, not replaced: {err}") from None
    if time_column not in df.columns:
        raise error(
            f"{path}: existing signal file has no {time_column!r} column (columns "
            f"{list(df.columns)}); not replaced"
        )
    try:
        times = pd.to_datetime(df[time_column], utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise error(f"{path}: column {time_column!r}: not times ({err}); not replaced") from None
    if times.duplicated().any():
        p = int(times.duplicated().to_numpy().argmax())
        raise error(
            f"{path}: row {p + 1} (line {p + 2}): duplicate time {times.iloc[p]}; not replaced"
        )
    return df.drop(columns=[time_column]).set_axis(pd.DatetimeIndex(times, name="time"))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (bundle checksums, done markers, data sets)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
