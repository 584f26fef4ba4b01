"""The registry of public data sets gridrl reads, and where their local copies are.

A data set is asked for by name (``dataset_dir("multiregion_2021_2024")``), never by a
path outside the project. ``registry.yaml`` beside this module pins each data set to an
upstream commit and lists every file with its sha256, size, upstream path and checksum,
and the transformation from the upstream bytes (``rename``, ``gzip``). Local copies live
under the data root: ``$GRIDRL_DATA_DIR`` when set (an existing copy, e.g. a lab's shared
folder), else ``data/`` in the user cache folder, where ``gridrl data fetch`` puts them.
Finding data never touches the network; a missing data set names the command that
fetches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from gridrl.errors import GridrlError

DATA_DIR_ENV_VAR = "GRIDRL_DATA_DIR"
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
CACHE_APP_NAME = "gridrl"
CACHE_DATA_FOLDER = "data"
# Upstream forms whose stored copy may be gzip-compressed (and read in either form).
GZIP_SUFFIX = ".gz"
KNOWN_TRANSFORMS = frozenset({"rename", "gzip"})


class DataNotFoundError(GridrlError, FileNotFoundError):
    """A named data set (or one of its files) is not where gridrl looks for it."""


class RegistryError(GridrlError, ValueError):
    """``registry.yaml`` is malformed; the message names the key path."""


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: as stored by gridrl and as published upstream."""

    path: str  # relative to the data set's folder, "/"-separated
    sha256: str
    size_bytes: int
    upstream_path: str  # relative to the upstream repository at the pinned commit
    upstream_sha256: str
    upstream_size_bytes: int
    upstream_git_blob: str
    transform: tuple[str, ...]  # applied in order to the upstream bytes

    @property
    def gzipped(self) -> bool:
        return "gzip" in self.transform


@dataclass(frozen=True)
class Dataset:
    """A registered data set: provenance, licence and files."""

    name: str
    folder: str  # relative to the data root
    title: str
    licence: str
    attribution: str
    uses: str
    repository: str
    commit: str
    url_template: str  # "{path}" is the upstream path of a file
    check: str
    files: tuple[DataFile, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def file(self, path: str) -> DataFile:
        for f in self.files:
            if f.path == path:
                return f
        raise DataNotFoundError(f"data set {self.name!r} has no file {path!r} in {REGISTRY_FILE}")


def _need(mapping: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise RegistryError(f"{REGISTRY_FILE}: {where}: missing key {key!r}")
    return mapping[key]


def _parse_file(path: str, raw: dict[str, Any], where: str) -> DataFile:
    up = _need(raw, "upstream", where)
    transform = tuple(_need(raw, "transform", where) or ())
    unknown = set(transform) - KNOWN_TRANSFORMS
    if unknown:
        raise RegistryError(
            f"{REGISTRY_FILE}: {where}.transform: unknown {sorted(unknown)}; "
            f"expected some of {sorted(KNOWN_TRANSFORMS)}"
        )
    return DataFile(
        path=path, sha256=str(_need(raw, "sha256", where)),
        size_bytes=int(_need(raw, "size", where)),
        upstream_path=str(_need(up, "path", f"{where}.upstream")),
        upstream_sha256=str(_need(up, "sha256", f"{where}.upstream")),
        upstream_size_bytes=int(_need(up, "size", f"{where}.upstream")),
        upstream_git_blob=str(_need(up, "git_blob", f"{where}.upstream")),
        transform=transform,
    )


def _parse_dataset(name: str, raw: dict[str, Any]) -> Dataset:
    where = f"datasets.{name}"
    up = _need(raw, "upstream", where)
    files = _need(raw, "files", where)
    return Dataset(
        name=name, folder=str(_need(raw, "folder", where)),
        title=str(_need(raw, "title", where)), licence=str(_need(raw, "licence", where)),
        attribution=str(_need(raw, "attribution", where)), uses=str(_need(raw, "uses", where)),
        repository=str(_need(up, "repository", f"{where}.upstream")),
        commit=str(_need(up, "commit", f"{where}.upstream")),
        url_template=str(_need(up, "url", f"{where}.upstream")),
        check=str(_need(raw, "check", where)),
        files=tuple(_parse_file(p, f, f"{where}.files.{p}") for p, f in files.items()),
    )


@lru_cache(maxsize=1)
def registry() -> dict[str, Dataset]:
    """Every registered data set by name (read once from ``registry.yaml``)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 7x faster at import
    with open(REGISTRY_FILE, encoding="utf-8") as fh:
        raw = yaml.load(fh, Loader=loader)
    sets = _need(raw, "datasets", "top level")
    return {name: _parse_dataset(name, body) for name, body in sets.items()}


def dataset_names() -> list[str]:
    return sorted(registry())


# Registry name -> folder under the data root (the layout of the reference copies).
DATASET_FOLDERS: dict[str, str] = {name: ds.folder for name, ds in registry().items()}


def fetch_command(name: str, only: str | None = None) -> str:
    """The exact command that downloads data set ``name`` (or its files matching ``only``)."""
    return f"gridrl data fetch {name}" + (f" --only '{only}'" if only else "")


def default_data_root() -> Path:
    """Where ``gridrl data fetch`` stores data sets when ``$GRIDRL_DATA_DIR`` is unset."""
    return platformdirs.user_cache_path(CACHE_APP_NAME) / CACHE_DATA_FOLDER


def data_root() -> Path:
    """The folder of local data-set copies: ``$GRIDRL_DATA_DIR``, else the user cache."""
    env = os.environ.get(DATA_DIR_ENV_VAR)
    return Path(env).expanduser() if env else default_data_root()


def dataset(name: str) -> Dataset:
    """The registry entry of ``name``; a clear error listing the known names."""
    sets = registry()
    if name not in sets:
        raise DataNotFoundError(f"unknown data set {name!r}; known: {', '.join(sorted(sets))}")
    return sets[name]


def _where() -> str:
    env = os.environ.get(DATA_DIR_ENV_VAR)
    return f"{DATA_DIR_ENV_VAR}={env}" if env else f"{DATA_DIR_ENV_VAR} unset: the user cache"


def dataset_dir(name: str) -> Path:
    """The local folder of data set ``name``; a clear error when unknown or absent."""
    folder = data_root() / dataset(name).folder
    if not folder.is_dir():
        raise DataNotFoundError(
            f"data set {name!r} not found: expected the folder {folder} ({_where()}); "
            f"fetch it with `{fetch_command(name)}` or point {DATA_DIR_ENV_VAR} at a copy"
        )
    return folder


def other_form(path: Path) -> Path:
    """The same file in its other form: ``x.csv.gz`` <-> ``x.csv``."""
    if path.name.endswith(GZIP_SUFFIX):
        return path.with_name(path.name[: -len(GZIP_SUFFIX)])
    return path.with_name(path.name + GZIP_SUFFIX)


def existing_form(path: str | Path) -> Path:
    """``path`` if it exists, else its other form (``.csv`` / ``.csv.gz``) if that exists.

    Loaders call this so a copy stored compressed or decompressed reads the same; pandas
    reads ``.gz`` by its suffix.
    """
    path = Path(path)
    if path.exists() or not other_form(path).exists():
        return path
    return other_form(path)


def dataset_file(name: str, path: str) -> Path:
    """The local copy of file ``path`` of data set ``name`` (either form); error if absent."""
    entry = dataset(name).file(path)
    target = existing_form(dataset_dir(name) / entry.path)
    if not target.exists():
        raise DataNotFoundError(
            f"data set {name!r}: file {target} is missing ({_where()}); "
            f"fetch it with `{fetch_command(name)}`"
        )
    return target
