"""The decision service under load, against real `gridrl serve` processes on 127.0.0.1:
/healthz latency while large batches are decided, 503 when the queue is full, memory
after rejected bodies, and no parsing process outliving a killed service."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import AUTH, DIM, NPY, Server, npy_bytes, post_in_loops, session_bundle

HEALTHZ_P99_S = 0.1
LOAD_S = 10.0  # how long /healthz is sampled under load
SAMPLE_EVERY_S = 0.02
# A machine on which an idle thread wakes this late (p99) cannot be relied on for a
# 100 ms p99: a slower /healthz is then a skip (with its numbers), not a failure.
CANARY_LATE_P99_S = 0.03


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return session_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """A service with the default limits (16 MiB bodies, the batch that fits them)."""
    srv = Server(bundle, tmp_path_factory.mktemp("load") / "server.log")
    try:
        yield srv
    finally:
        text = srv.stop()
    assert "Traceback" not in text, text


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (MB)."""
    total_kb = 0
    for p in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
    return total_kb / 1024


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited, only its parent has not collected it


def _oversleep(until: float, late: list[float]) -> None:
    """How late this idle thread wakes from SAMPLE_EVERY_S sleeps (the machine's own
    scheduling delay, nothing to do with the service)."""
    while time.monotonic() < until:
        t0 = time.perf_counter()
        time.sleep(SAMPLE_EVERY_S)
        late.append(time.perf_counter() - t0 - SAMPLE_EVERY_S)


def test_healthz_answers_within_100_ms_while_large_batches_are_decided(server, tmp_path):
    batch = server.health()["max_batch"]
    obs = np.random.default_rng(0).normal(size=(batch, DIM))
    json_body = json.dumps({"observations": obs.astype(np.float32).tolist()}).encode()
    npy_body = npy_bytes(obs)  # float64
    assert len(json_body) > 12e6 and len(npy_body) > 4e6  # large, under the 16 MiB limit
    (tmp_path / "batch.json").write_bytes(json_body)
    (tmp_path / "batch.npy").write_bytes(npy_body)
    bodies = [(str(tmp_path / "batch.json"), "application/json")] * 2 + [
        (str(tmp_path / "batch.npy"), NPY)
    ] * 2
    # four clients keep large batches in flight from another process
    load = multiprocessing.get_context("spawn").Process(
        target=post_in_loops,
        args=(server.url, bodies, LOAD_S + 2, str(tmp_path / "done.json")),
    )
    load.start()
    latencies, late = [], []
    try:
        time.sleep(1.0)  # the large requests are in flight
        end = time.monotonic() + LOAD_S
        canary = threading.Thread(target=_oversleep, args=(end, late))
        canary.start()
        with httpx.Client(timeout=10) as probe:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                assert probe.get(f"{server.url}/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(SAMPLE_EVERY_S)
        canary.join()
    finally:
        load.join(timeout=180)
    done = json.loads((tmp_path / "done.json").read_text())
    ms = np.array(latencies) * 1e3
    counts = {f"{c} {s}": sum(1 for d in done if d == [c, s]) for c, s in set(map(tuple, done))}
    summary = (
        f"/healthz p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"max {ms.max():.1f} ms over {len(ms)} probes; large requests {counts}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"{summary}; an idle thread woke {np.percentile(late, 99) * 1e3:.1f} ms late (p99)")
    # the load was real: both kinds of large batch were decided meanwhile
    for ctype in ("application/json", NPY):
        assert counts.get(f"{ctype} 200", 0) >= 2, summary
    assert {s for _, s in done} <= {200, 503}, summary
    late_p99 = float(np.percentile(late, 99))
    if np.percentile(ms, 99) > HEALTHZ_P99_S * 1e3 and late_p99 > CANARY_LATE_P99_S:
        pytest.skip(
            f"machine too loaded to judge a 100 ms p99: an idle thread of this test woke "
            f"{late_p99 * 1e3:.0f} ms late (p99) meanwhile; {summary}"
        )
    assert np.percentile(ms, 99) <= HEALTHZ_P99_S * 1e3, summary


def test_a_full_queue_answers_503_with_retry_after(bundle, tmp_path):
    srv = Server(bundle, tmp_path / "server.log", "--threads", "1", "--queue", "0")
    try:
        # one request holds the only slot while its body is still arriving
        slow = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"observation": [0.0] * DIM}).encode()
        slow.sendall(
            b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: {AUTH['Authorization']}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.5)
        r = httpx.post(f"{srv.url}/v1/decide", content=body, headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # liveness is not queued
        slow.sendall(body[10:])
        answer = slow.recv(65_536).split(b"\r\n", 1)[0]
        assert answer == b"HTTP/1.1 200 OK", answer
        slow.close()
        r = httpx.post(f"{srv.url}/v1/decide", content=body, headers=AUTH)
        assert r.status_code == 200, r.text
    finally:
        log = srv.stop()
    assert "Traceback" not in log


def test_rejected_bodies_leave_memory_bounded(server):
    """A body over the limit is dropped as it streams in; invalid large JSON bodies
    (10.7 MB of strings, millions of numbers in short rows) are refused before parsing
    would build millions of values or errors."""
    pid = server.proc.pid
    url = f"{server.url}/v1/decide"
    # a maximal valid batch first: rejected bodies must cost no more than it
    obs = np.random.default_rng(1).normal(size=(server.health()["max_batch"], DIM))
    assert httpx.post(url, content=npy_bytes(obs), headers={**AUTH, "content-type": NPY}).is_success
    r = httpx.post(url, json={"observations": obs.tolist()}, headers=AUTH, timeout=60)
    assert r.is_success, r.text[:300]
    before = _rss_mb(pid)

    chunk = b"[" + b"0.5, " * 13_000 + b"0.5], "  # 64 KB
    def oversize():  # 200 MB, streamed without a Content-Length
        yield b'{"observations": ['
        for _ in range(200 * 16):
            yield chunk

    r = httpx.post(url, content=oversize(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413, r.text
    bad_row = b"[" + b", ".join([b'"x"'] * DIM) + b"]"
    bad = b'{"observations": [' + b", ".join([bad_row] * 13_000) + b"]}"
    assert len(bad) > 10e6
    r = httpx.post(
        url, content=bad, headers={**AUTH, "content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 422 and "JSON strings where numbers" in r.text, r.text[:500]
    # 2.5 million numbers in rows too short: refused before the parser builds them
    short = b'{"observations": [' + b", ".join([b"[0, 0, 0, 0, 0, 0, 0]"] * 350_000) + b"]}"
    r = httpx.post(
        url, content=short, headers={**AUTH, "content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 422 and "observations (JSON arrays)" in r.text, r.text[:500]
    after = _rss_mb(pid)
    print(f"RSS of the service and its processes: {before:.0f} MB before, {after:.0f} MB after")
    assert after - before < 64, (before, after)


def test_parsing_processes_exit_with_a_killed_service(bundle, tmp_path):
    srv = Server(bundle, tmp_path / "server.log")
    kids = _descendants(srv.proc.pid)
    assert kids, "the service started no JSON parsing process"
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "processes outlived the killed service"
