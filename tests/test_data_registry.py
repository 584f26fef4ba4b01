"""The data-set registry and `gridrl data`, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridrl.cli import app
from gridrl.data.datasets import (
    DATA_DIR_ENV_VAR,
    DataNotFoundError,
    dataset,
    dataset_dir,
    dataset_file,
    registry,
)
from gridrl.data.fetch import (
    DATA_URL_ENV_VAR,
    DataChecksumError,
    fetch_dataset,
    mirror_source,
    upstream_source,
    verify_dataset,
)

runner = CliRunner()


@dataclass
class Served:
    """A real HTTP server over a folder; it records every request it answered."""

    url: str
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range, status


class RangeHandler(SimpleHTTPRequestHandler):
    """``http.server`` plus single open-ended ranges (``bytes=N-``), as HTTP mirrors do."""

    log: list = []
    ranges = True  # False: answer every request whole, as servers without range support do
    cut_bytes = 0  # > 0: the first whole-file answer drops the connection after these bytes

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def send_head(self):
        ask = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if self.cut_bytes and not ask and path.is_file() and not self.log:
            return self._cut(path)
        if not ask or not self.ranges or not path.is_file():
            head = super().send_head()
            self.log.append((self.path, ask, 200 if head else 404))
            return head
        start = int(ask.removeprefix("bytes=").removesuffix("-"))
        data = path.read_bytes()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.log.append((self.path, ask, 206))
        fh = open(path, "rb")  # do_GET copies then closes it
        fh.seek(start)
        return fh

    def _cut(self, path: Path) -> io.BytesIO:
        """Announce the whole file, send its first ``cut_bytes``, then close."""
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.log.append((self.path, None, 200))
        self.close_connection = True
        return io.BytesIO(data[: self.cut_bytes])


@pytest.fixture
def serve() -> Iterator:
    """``serve(folder)`` starts a server on 127.0.0.1 over ``folder``; all stop at the end."""
    servers = []

    def start(folder: Path, ranges: bool = True, cut_bytes: int = 0) -> Served:
        log: list = []
        attrs = {"log": log, "ranges": ranges, "cut_bytes": cut_bytes}
        handler = type("Handler", (RangeHandler,), attrs)
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        served = Served(f"http://127.0.0.1:{server.server_address[1]}")
        served.requests = log
        return served

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh user cache folder and no GRIDRL_DATA_DIR: the default data root of a user."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_DIR_ENV_VAR, raising=False)
    return tmp_path / "cache" / "gridrl" / "data"


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_pins_every_file_with_upstream_checksums() -> None:
    sets = registry()
    assert set(sets) == {"entsoe_2020", "eia930_2022", "multiregion_2021_2024",
                         "alibaba_gpu_2023", "cpu_hourly", "citylearn_2022"}
    for ds in sets.values():
        assert len(ds.commit) == 40 and ds.licence and ds.attribution and ds.uses
        for f in ds.files:
            assert len(f.sha256) == 64 and len(f.upstream_sha256) == 64 and f.size_bytes > 0
            if not f.gzipped:  # renamed or untouched: the same bytes as upstream
                assert (f.sha256, f.size_bytes) == (f.upstream_sha256, f.upstream_size_bytes)
    multi = sets["multiregion_2021_2024"]
    assert sum(f.gzipped for f in multi.files) == 96
    assert multi.commit.startswith("293fbd1")


def test_verify_passes_on_the_reference_copies(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "verify"], env={DATA_DIR_ENV_VAR: str(shared_data)})
    assert result.exit_code == 0, result.output
    assert "multiregion_2021_2024: 97/97 files ok" in _text(result)
    assert "citylearn_2022: 21/21 files ok" in _text(result)


def test_offline_fetch_of_all_confirms_the_reference_copies(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "fetch", "all", "--offline", "--data-dir",
                                 str(shared_data)])
    assert result.exit_code == 0, result.output
    for name, ds in registry().items():
        assert f"{name}: 0 downloaded, 0 re-fetched, {len(ds.files)} already there" \
            in _text(result)


def test_fetch_download_cache_hit_corrupt_refetch_offline(
    shared_data: Path, serve, user_cache: Path
) -> None:
    server = serve(shared_data)
    env = {DATA_URL_ENV_VAR: server.url}
    first = runner.invoke(app, ["data", "fetch", "cpu_hourly"], env=env)
    assert first.exit_code == 0, first.output
    assert "2 downloaded" in _text(first) and len(server.requests) == 2
    folder = user_cache / "traces" / "cpu_hourly"
    for f in dataset("cpu_hourly").files:
        assert _sha256(folder / f.path) == f.sha256

    again = runner.invoke(app, ["data", "fetch", "cpu_hourly"], env=env)
    assert again.exit_code == 0 and "2 already there and verified" in _text(again)
    assert len(server.requests) == 2  # a cache hit asks nothing of the server

    victim = folder / "google_2011_1.csv"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01  # one flipped bit, same size
    victim.write_bytes(bytes(data))
    repaired = runner.invoke(app, ["data", "fetch", "cpu_hourly"], env=env)
    assert repaired.exit_code == 0, repaired.output
    assert "google_2011_1.csv: was sha256" in _text(repaired)
    assert "1 re-fetched" in _text(repaired)
    assert len(server.requests) == 3
    assert _sha256(victim) == dataset("cpu_hourly").file("google_2011_1.csv").sha256

    victim.unlink()
    offline = runner.invoke(app, ["data", "fetch", "cpu_hourly", "--offline"], env=env)
    assert offline.exit_code == 2
    assert "`gridrl data fetch cpu_hourly`" in _text(offline)
    assert len(server.requests) == 3 and not victim.exists()

    path = runner.invoke(app, ["data", "path", "cpu_hourly"], env=env)
    assert path.output.strip() == str(folder)


def test_a_corrupt_download_is_refused(shared_data: Path, serve, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror" / "traces" / "cpu_hourly"
    mirror.mkdir(parents=True)
    for name in ("alibaba_2017_1.csv", "google_2011_1.csv"):
        shutil.copy(shared_data / "traces" / "cpu_hourly" / name, mirror / name)
    with open(mirror / "google_2011_1.csv", "ab") as fh:
        fh.write(b"9999,0.5\n")  # a mirror serving a changed file
    server = serve(tmp_path / "mirror")
    root = tmp_path / "root"
    result = runner.invoke(app, ["data", "fetch", "cpu_hourly", "--data-dir", str(root)],
                           env={DATA_URL_ENV_VAR: server.url})
    assert result.exit_code == 2
    text = _text(result)
    assert "refused" in text and "google_2011_1.csv" in text and "nothing was kept" in text
    kept = sorted(p.name for p in (root / "traces" / "cpu_hourly").iterdir())
    assert kept == ["alibaba_2017_1.csv"]  # no corrupt file, no partial left behind


def test_an_interrupted_download_resumes_with_a_range_request(
    shared_data: Path, serve, tmp_path: Path
) -> None:
    server = serve(shared_data)
    root = tmp_path / "root"
    entry = dataset("entsoe_2020").file("gb_production.csv")
    source = shared_data / "grid" / "entsoe_2020" / entry.path
    part = root / "grid" / "entsoe_2020" / f"{entry.path}.part"
    part.parent.mkdir(parents=True)
    half = entry.size_bytes // 2
    part.write_bytes(source.read_bytes()[:half])
    report = fetch_dataset("entsoe_2020", root, only=entry.path,
                           source=mirror_source(server.url))
    assert report.downloaded == [entry.path] and not part.exists()
    assert server.requests == [(f"/grid/entsoe_2020/{entry.path}", f"bytes={half}-", 206)]
    assert _sha256(part.with_suffix("")) == entry.sha256


def test_a_dropped_connection_keeps_the_part_and_the_next_fetch_resumes(
    shared_data: Path, serve, tmp_path: Path
) -> None:
    entry = dataset("entsoe_2020").file("fr_production.csv")
    cut = 300_000
    server = serve(shared_data, cut_bytes=cut)
    env = {DATA_URL_ENV_VAR: server.url}
    args = ["data", "fetch", "entsoe_2020", "--only", entry.path, "--data-dir", str(tmp_path)]
    broken = runner.invoke(app, args, env=env)
    assert broken.exit_code == 2
    part = tmp_path / "grid" / "entsoe_2020" / f"{entry.path}.part"
    kept = part.stat().st_size  # what arrived in whole chunks before the drop
    assert "next fetch resumes it" in _text(broken) and 0 < kept <= cut
    assert not part.with_suffix("").exists()
    resumed = runner.invoke(app, args, env=env)
    assert resumed.exit_code == 0, resumed.output
    assert server.requests[-1] == (f"/grid/entsoe_2020/{entry.path}", f"bytes={kept}-", 206)
    assert _sha256(part.with_suffix("")) == entry.sha256 and not part.exists()


def test_a_server_without_ranges_restarts_the_download(
    shared_data: Path, serve, tmp_path: Path
) -> None:
    server = serve(shared_data, ranges=False)
    entry = dataset("cpu_hourly").file("google_2011_1.csv")
    part = tmp_path / "traces" / "cpu_hourly" / f"{entry.path}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of an older download")
    fetch_dataset("cpu_hourly", tmp_path, only=entry.path, source=mirror_source(server.url))
    assert [status for _, _, status in server.requests] == [200]
    assert _sha256(part.with_suffix("")) == entry.sha256 and not part.exists()


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_registry_upstream_ids_match_the_reference_copies(shared_data: Path) -> None:
    """Each reference copy, undone from its transform, is the upstream blob the registry
    names (its git blob id, sha256 and size), and ``rename`` is recorded exactly where
    the names differ."""
    for ds in registry().values():
        for f in ds.files:
            raw = (shared_data / ds.folder / f.path).read_bytes()
            upstream = gzip.decompress(raw) if f.gzipped else raw
            assert _git_blob(upstream) == f.upstream_git_blob, f.path
            assert hashlib.sha256(upstream).hexdigest() == f.upstream_sha256, f.path
            assert len(upstream) == f.upstream_size_bytes, f.path
            renamed = Path(f.upstream_path).name != f.path.rsplit("/", 1)[-1].removesuffix(".gz")
            assert ("rename" in f.transform) == renamed, f.path


def test_upstream_fetch_renames_and_gzips_to_the_reference_bytes(
    shared_data: Path, serve, tmp_path: Path
) -> None:
    """Upstream files, served as raw.githubusercontent.com lays them out (owner/repo/commit/
    path) from 127.0.0.1, become byte-identical reference copies."""
    raw_host = "https://raw.githubusercontent.com"
    upstream = tmp_path / "upstream"
    wanted = {"multiregion_2021_2024": "*/SG_2023.*", "eia930_2022": "CISO.csv"}
    for name, glob in wanted.items():
        ds = dataset(name)
        repo = ds.repository.removeprefix("https://github.com/")
        assert ds.url_template == f"{raw_host}/{repo}/{ds.commit}/{{path}}"
        for f in ds.files:
            if Path(f.path).match(glob):
                raw = (dataset_dir(name) / f.path).read_bytes()
                target = upstream / ds.url_template.removeprefix(raw_host + "/").format(
                    path=f.upstream_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(gzip.decompress(raw) if f.gzipped else raw)
    server = serve(upstream)
    root = tmp_path / "root"
    for name, glob in wanted.items():
        src = upstream_source(dataset(name).url_template.replace(raw_host, server.url))
        report = fetch_dataset(name, root, only=glob, source=src)
        assert len(report.downloaded) == (3 if name.startswith("multi") else 1)
        for rel in report.downloaded:
            ref = dataset_dir(name) / rel
            assert _sha256(root / dataset(name).folder / rel) == _sha256(ref)
    paths = [p for p, _, _ in server.requests]
    ciso = "/HewlettPackard/dc-rl/a92b4755aca560e34a98d14028dda629eb968482/data/CarbonIntensity/"
    assert f"{ciso}CA_NG_%26_avgCI.csv" in paths  # renamed upstream file, '&' quoted
    assert not list(root.rglob("*.upstream")) and not list(root.rglob("*.part"))


def test_checksum_failure_from_upstream_is_refused(shared_data: Path, serve, tmp_path) -> None:
    upstream = tmp_path / "upstream"
    entry = dataset("cpu_hourly").file("alibaba_2017_1.csv")
    (upstream / entry.upstream_path).parent.mkdir(parents=True)
    (upstream / entry.upstream_path).write_text("index,cpu_load\n0,0.5\n")
    server = serve(upstream)
    with pytest.raises(DataChecksumError, match="refused .*alibaba_2017_1.csv"):
        fetch_dataset("cpu_hourly", tmp_path / "root", only=entry.path,
                      source=upstream_source(f"{server.url}/{{path}}"))


def test_both_forms_are_read_and_checked(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """A decompressed copy of a gzip file is found by loaders and verified by content."""
    ds = dataset("multiregion_2021_2024")
    entry = ds.file("price/SG_2022.csv.gz")
    folder = tmp_path / ds.folder / "price"
    folder.mkdir(parents=True)
    (folder / "SG_2022.csv").write_bytes(gzip.decompress((shared_data / ds.folder /
                                                           entry.path).read_bytes()))
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(tmp_path))
    assert dataset_file(ds.name, entry.path) == folder / "SG_2022.csv"
    checks = {c.path.name: c for c in verify_dataset(ds.name)}
    assert checks["SG_2022.csv"].ok and "instead of SG_2022.csv.gz" in checks["SG_2022.csv"].detail
    assert checks["SG_2021.csv.gz"].detail == "missing"
    with pytest.raises(DataNotFoundError, match="gridrl data fetch multiregion_2021_2024"):
        dataset_file(ds.name, "price/SG_2021.csv.gz")


def test_unknown_and_missing_data_sets_name_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(tmp_path))
    with pytest.raises(DataNotFoundError, match="known: alibaba_gpu_2023"):
        dataset_dir("entsoe_2021")
    with pytest.raises(DataNotFoundError, match="`gridrl data fetch entsoe_2020`"):
        dataset_dir("entsoe_2020")
    result = runner.invoke(app, ["data", "verify", "eia930_2022"])
    assert result.exit_code == 1 and "repair: gridrl data fetch eia930_2022" in _text(result)


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_data_blocks() -> tuple[list[str], str]:
    """The shell lines and the Python block of the README's Data section."""
    section = README.read_text().split("\n## Data\n", 1)[1].split("\n## ", 1)[0]
    bash = section.split("```bash\n", 1)[1].split("```", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in bash.splitlines()]
    return [line for line in lines if line], python


def test_readme_data_examples_work_after_fetch(
    shared_data: Path, serve, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user with an empty cache runs the README's Data examples, served from 127.0.0.1."""
    server = serve(shared_data)
    monkeypatch.setenv(DATA_URL_ENV_VAR, server.url)
    shell, python = _readme_data_blocks()
    n_files = len(dataset("entsoe_2020").files)
    for line in shell:
        args = shlex.split(line)
        if args[0] == "gridrl":
            result = runner.invoke(app, args[1:])
            assert result.exit_code == 0, f"{line}: {result.output}"
        else:  # the benchmark, as a user runs it, on the fetched copy
            assert args[:2] == ["python", "benchmarks/temporal_shifting.py"]
            done = subprocess.run(
                [sys.executable, *args[1:], "--plot", str(user_cache.parent / "p.png")],
                cwd=README.parent, capture_output=True, text=True, timeout=600,
                env={**os.environ, "PYTHONPATH": str(README.parent)},
            )
            assert done.returncode == 0, done.stderr[-2000:]
            assert "lp_bound - direct| saving difference" in done.stdout
        assert len(server.requests) == n_files  # the first fetch only; later lines hit the cache
    scope: dict = {}
    exec(compile(python, "README.md (Data)", "exec"), scope)
    carbon = scope["carbon"].frame
    assert carbon.index.year.value_counts().idxmax() == 2020 and carbon.notna().all().all()


def test_replay_names_the_fetch_command_without_its_trace(user_cache: Path, tmp_path) -> None:
    result = runner.invoke(app, ["replay", str(tmp_path / "bundle")])
    assert result.exit_code == 2
    assert "`gridrl data fetch alibaba_gpu_2023`" in _text(result)
