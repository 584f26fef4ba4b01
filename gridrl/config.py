"""Reading YAML config files into pydantic models, with errors that name the key path.

Every config file of gridrl (scenarios, forecasters, studies, Slurm site maps) is read
through :func:`read_yaml_mapping` and validated with :func:`format_validation_errors`,
so a bad key is reported the same way everywhere: ``file: sites[0].battery.power_kw:
message (got value)``. :data:`Count` and its bounded forms type every whole-number key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, Strict, ValidationError

# Whole numbers of things (GPUs, seeds, steps, folds). Strict: YAML's ``true`` is not 1,
# and ``2.5`` is not silently truncated.
Count = Annotated[int, Strict()]
PositiveCount = Annotated[int, Strict(), Field(gt=0)]
NonNegativeCount = Annotated[int, Strict(), Field(ge=0)]


def json_hash(data: Any) -> str:
    """A short stable hash of JSON-able ``data`` (keys sorted): cache keys and the
    hashes that tell whether two runs or scenarios are the same."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def drop_unused(node: dict, path: tuple[str, ...], unused: Any) -> None:
    """Remove the key at ``path`` (``*``: every entry) below ``node`` where it holds
    ``unused`` (or nothing): a key added after hashes were recorded then counts only
    when set."""
    head, *rest = path
    if not rest:
        if node.get(head) in (None, {}, unused):
            node.pop(head, None)
        return
    for child in node.values() if head == "*" else [node.get(head)]:
        if isinstance(child, dict):
            drop_unused(child, tuple(rest), unused)


def key_path(loc: tuple[Any, ...], prefix: str = "", tags: Collection[str] = ()) -> str:
    """A pydantic error location as a YAML key path: ``sites[1].battery.power_kw``.

    ``tags`` are the discriminator tags of tagged unions: pydantic puts them after a list
    index, but they are not keys of the YAML file, so they are left out.
    """
    path = prefix
    prev: Any = None
    for part in loc:
        is_tag = part in tags and isinstance(prev, int)
        prev = part
        if is_tag:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "<root>"


def format_validation_errors(
    exc: ValidationError, source: str, prefix: str = "", tags: Collection[str] = (),
    *, show_input: bool = True,
) -> str:
    """One line per error: ``source: key.path: message (got value)``; ``show_input=False``
    leaves the values out (one of them may be a secret)."""
    lines = []
    for err in exc.errors(include_input=show_input):
        got = err.get("input")
        got_txt = "" if not show_input or isinstance(got, dict | list) else f" (got {got!r})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key_path(err['loc'], prefix, tags)}: {msg}{got_txt}")
    return "\n".join(lines)


def read_yaml_mapping(
    path: str | Path, error: type[Exception], what: str, *, empty_ok: bool = False
) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping.

    Parameters
    ----------
    path : path
        The file.
    error : exception class
        Raised (with the file name in the message) when the file is missing, is not
        YAML or is not a mapping.
    what : str
        What the file is, for the messages ("scenario file").
    empty_ok : bool
        An empty file reads as ``{}`` (every key takes its default).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if raw is None and empty_ok:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return raw
