"""Download and check local copies of the registered data sets (with pooch).

``fetch_dataset`` brings a data set into the data root: a file already there with the
registry's checksum is a cache hit (no request); a missing one is downloaded; a corrupt
one is reported and downloaded again. Files come from the upstream repository at the
pinned commit (then renamed or gzip-compressed as the registry says) or, when
``$GRIDRL_DATA_URL`` names one, from a mirror laid out as the data root. Every download
is checked against its sha256 before it is moved into place; a mismatch is refused. An
interrupted download resumes from its ``.part`` file (HTTP range request).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pooch
import requests

from gridrl.data.datasets import (
    DataFile,
    DataNotFoundError,
    Dataset,
    data_root,
    dataset,
    existing_form,
    fetch_command,
)
from gridrl.errors import GridrlError
from gridrl.io import sha256_file, write_with

DATA_URL_ENV_VAR = "GRIDRL_DATA_URL"
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 16
PARTIAL_SUFFIX = ".part"
STAGING_SUFFIX = ".upstream"
# ``gzip -n -9``: deflate level 9, memLevel 9, no name, mtime 0, XFL 2, OS 3 (Unix).
GZIP_LEVEL = 9
GZIP_MEM_LEVEL = 9
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
HTTP_PARTIAL_CONTENT = 206
HTTP_RANGE_NOT_SATISFIABLE = 416


class DataChecksumError(GridrlError, ValueError):
    """A downloaded file does not have the registry's checksum; it was not kept."""


class DataDownloadError(GridrlError, RuntimeError):
    """A file could not be downloaded (network or server error)."""


class DataOfflineError(DataNotFoundError):
    """A file is missing or corrupt and ``offline`` forbids downloading it."""


@dataclass(frozen=True)
class FileCheck:
    """The state of one local file against the registry."""

    path: Path
    ok: bool
    detail: str


@dataclass
class FetchReport:
    """What ``fetch_dataset`` did, file by file (paths relative to the data set)."""

    name: str
    folder: Path
    cached: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    refetched: dict[str, str] = field(default_factory=dict)  # path -> what was wrong



def gzip_exact(data: bytes) -> bytes:
    """``data`` compressed as the registry's gzip transform: ``gzip -n -9``.

    GNU gzip's deflate differs from zlib's on some files, so its bytes match the registry
    only when the ``gzip`` program is there; without it zlib (level 9, memLevel 9, the
    same header) gives the same content, which ``check_file`` then accepts by content.
    """
    program = shutil.which("gzip")
    if program:
        return subprocess.run([program, "-n", "-9", "-c"], input=data, capture_output=True,
                              check=True).stdout
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, GZIP_MEM_LEVEL)
    body = deflate.compress(data) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return GZIP_HEADER + body + trailer


def _gunzip_sha256(path: Path) -> str | None:
    """sha256 of the decompressed content, None when ``path`` is not valid gzip."""
    try:
        with gzip.open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (OSError, EOFError, zlib.error):
        return None


def check_file(entry: DataFile, target: Path) -> FileCheck:
    """Check the local copy of ``entry`` at ``target`` (or its other .gz / plain form)."""
    found = existing_form(target)
    if not found.exists():
        return FileCheck(target, False, "missing")
    if found != target:  # the other form: compare the content with the upstream bytes
        plain = _gunzip_sha256(found) if found.name.endswith(".gz") else sha256_file(found)
        ok = plain == entry.upstream_sha256
        return FileCheck(found, ok, f"{'content ok' if ok else 'content differs'} "
                                    f"({found.name} instead of {target.name})")
    size = found.stat().st_size
    if size != entry.size_bytes:
        return FileCheck(found, False, f"size {size} bytes, expected {entry.size_bytes}")
    digest = sha256_file(found)
    if digest == entry.sha256:
        return FileCheck(found, True, "ok")
    if entry.gzipped and _gunzip_sha256(found) == entry.upstream_sha256:
        return FileCheck(found, True, "content ok (gzip bytes differ)")
    return FileCheck(found, False, f"sha256 {digest}, expected {entry.sha256}")


def verify_dataset(name: str, root: Path | None = None) -> list[FileCheck]:
    """Check every file of data set ``name`` under ``root`` (default: the data root)."""
    ds = dataset(name)
    folder = (root or data_root()) / ds.folder
    return [check_file(f, folder / f.path) for f in ds.files]


class ResumingDownloader:
    """A pooch downloader that keeps a ``.part`` file and resumes it with a range request."""

    def __init__(self, partial: Path, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
        self.partial = partial
        self.timeout_s = timeout_s

    def _get(self, url: str, start: int) -> requests.Response:
        # identity: the bytes on the wire are the file's bytes (checksums, ranges)
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        return requests.get(url, headers=headers, stream=True, timeout=self.timeout_s)

    def __call__(self, url: str, output_file: Any, pooch_: Any, check_only: bool = False) -> Any:
        if check_only:
            with requests.head(url, timeout=self.timeout_s, allow_redirects=True) as resp:
                return resp.ok
        have = self.partial.stat().st_size if self.partial.exists() else 0
        resp = self._get(url, have)
        if have and resp.status_code == HTTP_RANGE_NOT_SATISFIABLE:  # stale partial
            resp.close()
            have, resp = 0, self._get(url, 0)
        with resp:
            resp.raise_for_status()
            mode = "ab" if have and resp.status_code == HTTP_PARTIAL_CONTENT else "wb"
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, mode) as out:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    out.write(chunk)
        os.replace(self.partial, output_file)
        return None


def _retrieve(url: str, sha256: str, target: Path, label: str) -> None:
    """Download ``url`` to ``target`` through pooch, checked against ``sha256``."""
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    for attempt in range(2):  # a resumed part that fails the check is retried once, whole
        resumed = partial.exists()
        try:
            pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=target.name,
                           path=target.parent, downloader=ResumingDownloader(partial))
            return
        except ValueError as exc:
            if "hash" not in str(exc).lower():  # e.g. a URL scheme pooch cannot fetch
                raise DataDownloadError(f"could not download {url} for {label}: {exc}") from exc
            if resumed and attempt == 0:
                continue
            raise DataChecksumError(
                f"refused {url} for {label}: its sha256 is not the registry's {sha256} "
                f"(a corrupt download or a changed upstream file); nothing was kept"
            ) from exc
        except requests.RequestException as exc:
            kept = f"; {partial} is kept and the next fetch resumes it" if partial.exists() else ""
            raise DataDownloadError(f"could not download {url} for {label}: {exc}{kept}") from exc


Source = Callable[[Dataset, DataFile, Path], None]


def mirror_source(base_url: str) -> Source:
    """Files from a mirror laid out as the data root (``{base}/{folder}/{path}``)."""

    def get(ds: Dataset, entry: DataFile, target: Path) -> None:
        url = f"{base_url.rstrip('/')}/{quote(ds.folder)}/{quote(entry.path)}"
        _retrieve(url, entry.sha256, target, f"{ds.name}/{entry.path}")

    return get


def upstream_source(url_template: str | None = None) -> Source:
    """Files from their upstream repository at the pinned commit, then transformed.

    ``url_template`` (with ``{path}``) replaces the registry's upstream URL, e.g. for a
    copy of the upstream repository served elsewhere.
    """

    def get(ds: Dataset, entry: DataFile, target: Path) -> None:
        url = (url_template or ds.url_template).format(path=quote(entry.upstream_path))
        label = f"{ds.name}/{entry.path} (upstream {entry.upstream_path})"
        if not entry.gzipped:  # a rename only: the bytes are upstream's
            _retrieve(url, entry.upstream_sha256, target, label)
            return
        staging = target.with_name(f".{target.name}{STAGING_SUFFIX}")
        _retrieve(url, entry.upstream_sha256, staging, label)
        write_with(target, lambda tmp: tmp.write_bytes(gzip_exact(staging.read_bytes())))
        staging.unlink()

    return get


def default_source() -> Source:
    """The mirror named by ``$GRIDRL_DATA_URL`` if set, else the upstream repositories."""
    base = os.environ.get(DATA_URL_ENV_VAR)
    return mirror_source(base) if base else upstream_source()


def _fetch_file(ds: Dataset, entry: DataFile, folder: Path, source: Source, offline: bool,
                report: FetchReport) -> None:
    target = folder / entry.path
    state = check_file(entry, target)
    if state.ok:
        report.cached.append(entry.path)
        return
    if offline:
        raise DataOfflineError(
            f"data set {ds.name!r}: {state.path}: {state.detail}; --offline forbids "
            f"downloading it: run `{fetch_command(ds.name)}`"
        )
    try:
        if state.detail != "missing":
            state.path.unlink()  # a corrupt copy: the registry's checksum says what is right
        source(ds, entry, target)
    except OSError as exc:  # e.g. a read-only GRIDRL_DATA_DIR
        raise DataDownloadError(f"data set {ds.name!r}: cannot write {target}: {exc}") from exc
    after = check_file(entry, target)
    if not after.ok:
        raise DataChecksumError(f"data set {ds.name!r}: {target} after download: {after.detail}")
    if state.detail == "missing":
        report.downloaded.append(entry.path)
    else:
        report.refetched[entry.path] = state.detail


def fetch_dataset(name: str, root: Path | None = None, *, offline: bool = False,
                  only: str | None = None, source: Source | None = None) -> FetchReport:
    """Bring data set ``name`` (its files matching the glob ``only``) into ``root``."""
    ds = dataset(name)
    folder = (root or data_root()) / ds.folder
    files = [f for f in ds.files if only is None or fnmatch(f.path, only)]
    if not files:
        raise DataNotFoundError(f"data set {name!r} has no file matching {only!r}")
    pooch.get_logger().setLevel(logging.WARNING)  # gridrl reports per file itself
    report = FetchReport(name=name, folder=folder)
    source = source or default_source()
    for entry in files:
        _fetch_file(ds, entry, folder, source, offline, report)
    return report
