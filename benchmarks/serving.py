"""Serving performance of an exported policy bundle.

Prints:

* runtime ``decide()`` latency for one observation (p50 / p90 / p99 / max; goal p99 <= 1 ms)
  and batch throughput of the runtime alone;
* HTTP decisions/s over loopback against a real ``gridrl serve`` (uvicorn) process:
  one observation per request (goal >= 1,000/s) and batches (goal >= 50,000 decisions/s),
  batches both as JSON and as ``.npy`` bodies (no text parsing);
* ``/healthz`` latency while four clients keep maximal batches (JSON and ``.npy``, the
  largest the default 16 MiB body limit allows) in flight (goal p99 <= 100 ms), and the
  service's resident memory (with its parsing processes) before and after rejected
  bodies: 200 MB streamed past the limit, 10.7 MB of JSON strings.

The HTTP load comes from ``wrk`` (Debian package, installed by .ci/system-packages.sh)
with keep-alive connections; without wrk an aiohttp client is used (it competes with the
server for the same cores, so it reports less).

Without ``--bundle`` a bundle is made first: a PPO policy (SB3's default MLP) on the
geo3 scenario with VecNormalize statistics gathered on 2,000 environment steps, and the
observations sent are recorded from that environment.

    python benchmarks/serving.py [--bundle DIR] [--duration 10] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
GEO3 = REPO / "envs" / "geo3.yaml"
console = Console()

GOAL_P99_MS = 1.0
GOAL_SINGLE_PER_S = 1_000
GOAL_BATCH_PER_S = 50_000
GOAL_HEALTHZ_P99_MS = 100.0
JSON = "application/json"
NPY = "application/x-npy"
TOKEN = secrets.token_urlsafe(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_bundle(out: Path, stats_steps: int, n_obs: int) -> tuple[Path, np.ndarray]:
    """Export a geo3 PPO bundle into ``out``; return it and observations recorded from
    the environment."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from gridrl.env.gym_env import GridEnv
    from gridrl.export.bundle import export_bundle
    from gridrl.scenario import load_scenario

    torch.set_num_threads(1)
    sc = load_scenario(GEO3)
    env = GridEnv(GEO3, seed=0)
    venv = VecNormalize(DummyVecEnv([lambda: env]))
    venv.reset()
    recorded = []
    for _ in range(stats_steps):  # VecNormalize statistics from real observations
        obs, _, _, _ = venv.step(np.array([env.action_space.sample()]))
        recorded.append(venv.get_original_obs()[0])
    model = PPO("MlpPolicy", venv, seed=0, device="cpu")
    pdir = out / "policy"
    pdir.mkdir(parents=True)
    model.save(pdir / "model.zip")
    venv.save(str(pdir / "vecnormalize.pkl"))
    meta = {
        "algo": "PPO",
        "scenario_path": str(GEO3),
        "scenario_hash": sc.content_hash(),
        "forecast_mode": "perfect",
        "observation_layout": env.observation_layout.to_dict(),
        "action_layout": env.action_layout.to_dict(),
        "training": {"timesteps": 0, "seed": 0, "note": "benchmark policy (untrained weights)"},
    }
    (pdir / "meta.json").write_text(json.dumps(meta))
    export_bundle(pdir, out / "bundle")
    obs = np.asarray(recorded[-n_obs:], dtype=np.float32)
    return out / "bundle", obs


def runtime_latency(bundle: Path, obs: np.ndarray, n: int, batch: int) -> dict[str, float]:
    """Single-observation decide() latency percentiles (ms) and batch decisions/s."""
    from gridrl.export.runtime import PolicyRuntime

    rt = PolicyRuntime(bundle)
    for i in range(200):  # warm-up: first runs allocate
        rt.decide(obs[i % len(obs)])
    times = np.empty(n)
    cpu = np.empty(n)
    for i in range(n):
        o = obs[i % len(obs)]
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        rt.decide(o)
        times[i] = time.perf_counter_ns() - t0
        cpu[i] = time.process_time_ns() - c0
    ms = times / 1e6
    rows = np.resize(obs, (batch, obs.shape[1]))
    rt.decide(rows)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        rt.decide(rows)
    per_s = reps * batch / (time.perf_counter() - t0)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        # CPU time of the call: what the call costs without the waits of a shared machine
        "cpu_p99_ms": float(np.percentile(cpu / 1e6, 99)),
        "batch_per_s": per_s,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``gridrl serve BUNDLE`` in a child process (uvicorn, one worker)."""

    def __init__(self, bundle: Path, workers: int, *limits: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable, "-m", "gridrl.cli", "serve", str(bundle),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers), *limits,
        ]  # fmt: skip
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "GRIDRL_SERVE_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )
        import httpx

        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("server exited: " + self.log.read().decode())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def _check(url: str, body: bytes, batch_size: int, content_type: str) -> None:
    import httpx

    r = httpx.post(
        f"{url}/v1/decide", content=body, headers={**AUTH, "content-type": content_type}
    )
    if r.status_code != 200 or r.json()["batch_size"] != batch_size:
        raise RuntimeError(f"unexpected answer {r.status_code}: {r.text[:200]}")


def wrk_load(
    url: str, body: bytes, duration_s: int, connections: int, content_type: str
) -> dict[str, float]:
    """Requests/s and latency percentiles from wrk (POST the same body)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        (Path(tmp) / "body.json").write_bytes(body)
        script.write_text(
            'wrk.method = "POST"\n'
            f'wrk.headers["Content-Type"] = "{content_type}"\n'
            f'wrk.headers["Authorization"] = "{AUTH["Authorization"]}"\n'
            f'local f = io.open("{Path(tmp) / "body.json"}", "rb")\n'
            "wrk.body = f:read('*a')\nf:close()\n"
        )
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script),
             f"{url}/v1/decide"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"requests_per_s": rps, "p50_ms": pct("50"), "p99_ms": pct("99")}


def aiohttp_load(
    url: str, body: bytes, duration_s: int, connections: int, content_type: str
) -> dict[str, float]:
    """Fallback load generator: ``connections`` keep-alive aiohttp clients."""
    import aiohttp

    async def run() -> tuple[int, list[float]]:
        done = 0
        lat: list[float] = []
        stop = time.monotonic() + duration_s

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal done
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                async with session.post(
                    f"{url}/v1/decide", data=body, headers={**AUTH, "content-type": content_type}
                ) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")
                lat.append((time.perf_counter() - t0) * 1e3)
                done += 1

        conn = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=conn) as session:
            await asyncio.gather(*(worker(session) for _ in range(connections)))
        return done, lat

    t0 = time.monotonic()
    n, lat = asyncio.run(run())
    return {
        "requests_per_s": n / (time.monotonic() - t0),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def _keep_posting(
    url: str, auth: dict[str, str], bodies: list[tuple[bytes, str]], seconds: float, out
) -> None:
    """Child process: one thread per body, posting it again and again for ``seconds``;
    puts the count of each (content type, status) on ``out``. Niced: the clients only
    keep requests in flight, the service gets the CPU first."""
    import threading

    import httpx

    os.nice(10)
    counts: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop(body: bytes, ctype: str) -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < end:
                r = client.post(
                    f"{url}/v1/decide", content=body, headers={**auth, "content-type": ctype}
                )
                with lock:
                    key = f"{ctype} {r.status_code}"
                    counts[key] = counts.get(key, 0) + 1

    threads = [threading.Thread(target=loop, args=b) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(counts)


def _rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its descendants, from /proc (Linux)."""
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total_kb += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
        for task in Path(f"/proc/{p}/task").glob("*"):
            todo += [int(k) for k in (task / "children").read_text().split()]
    return total_kb / 1024


def healthz_under_load(bundle: Path, seconds: float) -> dict[str, float]:
    """/healthz latency (ms) while four clients post maximal batches to a service with
    the default limits, then its RSS (MB) before and after two rejected bodies."""
    import multiprocessing

    import httpx

    server = Server(bundle, 1)
    try:
        health = httpx.get(f"{server.url}/healthz").json()
        obs = np.random.default_rng(0).normal(size=(health["max_batch"], health["observation_dim"]))
        buf = io.BytesIO()
        np.save(buf, obs)
        json_body = json.dumps({"observations": obs.astype(np.float32).tolist()}).encode()
        bodies = [(json_body, JSON)] * 2 + [(buf.getvalue(), NPY)] * 2
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        load = ctx.Process(
            target=_keep_posting, args=(server.url, AUTH, bodies, seconds + 2, out)
        )
        load.start()
        time.sleep(1.0)  # the large requests are in flight
        lat = []
        with httpx.Client(timeout=10) as probe:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                probe.get(f"{server.url}/healthz").raise_for_status()
                lat.append((time.perf_counter() - t0) * 1e3)
                time.sleep(0.02)
        counts = out.get(timeout=300)
        load.join()
        before = _rss_mb(server.proc.pid)
        rejected = _post_rejected_bodies(server.url, health["observation_dim"])
        after = _rss_mb(server.proc.pid)
    finally:
        server.stop()
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(np.max(lat)),
        "probes": len(lat),
        "batch": health["max_batch"],
        "decided": sum(n for k, n in counts.items() if k.endswith(" 200")),
        "busy": sum(n for k, n in counts.items() if k.endswith(" 503")),
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rejected": rejected,
    }


def _post_rejected_bodies(url: str, dim: int) -> str:
    """Post 200 MB streamed past the body limit and 10.7 MB of JSON strings; return
    the statuses."""
    import httpx

    chunk = b"[" + b"0.5, " * 13_000 + b"0.5], "  # 64 KB

    def oversize():
        yield b'{"observations": ['
        for _ in range(200 * 16):
            yield chunk

    headers = {**AUTH, "content-type": JSON}
    big = httpx.post(f"{url}/v1/decide", content=oversize(), headers=headers, timeout=120)
    row = b"[" + b", ".join([b'"x"'] * dim) + b"]"
    strings = b'{"observations": [' + b", ".join([row] * (10_700_000 // len(row))) + b"]}"
    bad = httpx.post(f"{url}/v1/decide", content=strings, headers=headers, timeout=120)
    return f"{big.status_code}, {bad.status_code}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", type=Path, help="bundle to serve (default: make a geo3 PPO bundle)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per HTTP load run")
    ap.add_argument("--batch", type=int, default=1000, help="observations per batch request")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    ap.add_argument("--calls", type=int, default=20_000, help="runtime decide() calls timed")
    ap.add_argument("--client", choices=["auto", "wrk", "aiohttp"], default="auto")
    ap.add_argument("--workers", type=int, default=1, help="server processes (gridrl serve)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is None:
            with console.status("making a geo3 PPO bundle"):
                bundle, obs = make_bundle(Path(tmp), stats_steps=2000, n_obs=args.batch)
        else:
            from gridrl.export.runtime import PolicyRuntime

            bundle = args.bundle
            dim = PolicyRuntime(bundle).observation_dim
            obs = np.random.default_rng(0).normal(size=(args.batch, dim)).astype(np.float32)
        from gridrl.export.runtime import load_manifest

        manifest = load_manifest(bundle)
        console.print(
            "wall-clock numbers include waiting for the CPU when other work shares the "
            "machine (see its load average)"
        )
        console.print(
            f"bundle: {manifest.algo}, {len(manifest.action.sites)} sites, "
            f"{manifest.onnx.observation_dim} observations -> {manifest.onnx.action_dim} actions; "
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        with console.status("timing runtime decide()"):
            rt = runtime_latency(bundle, obs, args.calls, args.batch)

        client = args.client
        if client == "auto":
            client = "wrk" if shutil.which("wrk") else "aiohttp"
        load = wrk_load if client == "wrk" else aiohttp_load
        single_body = json.dumps({"observation": obs[0].tolist()}).encode()
        batch_body = json.dumps({"observations": obs[: args.batch].tolist()}).encode()
        buf = io.BytesIO()
        np.save(buf, obs[: args.batch])
        npy_body = buf.getvalue()
        runs = [
            ("single", single_body, JSON, 1, args.connections),
            ("batch JSON", batch_body, JSON, args.batch, 2),
            ("batch .npy", npy_body, NPY, args.batch, 2),
        ]
        http: dict[str, dict[str, float]] = {}
        server = Server(bundle, args.workers, "--max-batch", str(max(args.batch, 1)))
        try:
            for name, body, ctype, size, conns in runs:
                _check(server.url, body, size, ctype)
                with console.status(f"HTTP {name}, {args.duration} s ({client})"):
                    http[name] = load(server.url, body, args.duration, conns, ctype)
                http[name]["decisions_per_s"] = http[name]["requests_per_s"] * size
                http[name]["connections"] = conns
        finally:
            server.stop()
        with console.status(f"/healthz under maximal batches, {args.duration} s"):
            hz = healthz_under_load(bundle, args.duration)

    table = Table(title="gridrl serving benchmark")
    for col in ("measure", "value", "goal", "met"):
        table.add_column(col)

    def met(ok: bool) -> str:
        return "yes" if ok else "NO"

    table.add_row("runtime decide() p50", f"{rt['p50_ms'] * 1e3:.0f} us", "", "")
    table.add_row("runtime decide() p90", f"{rt['p90_ms'] * 1e3:.0f} us", "", "")
    table.add_row(
        "runtime decide() p99", f"{rt['p99_ms'] * 1e3:.0f} us", f"<= {GOAL_P99_MS:g} ms",
        met(rt["p99_ms"] <= GOAL_P99_MS),
    )  # fmt: skip
    table.add_row("runtime decide() max", f"{rt['max_ms'] * 1e3:.0f} us", "", "")
    table.add_row(
        "runtime decide() p99, CPU time", f"{rt['cpu_p99_ms'] * 1e3:.0f} us",
        "(not preempted)", "",
    )  # fmt: skip
    table.add_row(f"runtime batch of {args.batch}", f"{rt['batch_per_s']:,.0f} decisions/s", "", "")
    goals = {
        "single": GOAL_SINGLE_PER_S,
        "batch JSON": GOAL_BATCH_PER_S,
        "batch .npy": GOAL_BATCH_PER_S,
    }
    for name, res in http.items():
        size = "" if name == "single" else f" of {args.batch}"
        table.add_row(
            f"HTTP {name}{size} ({res['connections']:.0f} conn, {args.workers} worker, {client})",
            f"{res['decisions_per_s']:,.0f} decisions/s",
            f">= {goals[name]:,}/s", met(res["decisions_per_s"] >= goals[name]),
        )  # fmt: skip
        table.add_row(
            f"HTTP {name} latency p50 / p99",
            f"{res['p50_ms']:.2f} / {res['p99_ms']:.2f} ms",
            "",
            "",
        )
    table.add_row(
        f"/healthz p50 / p99 under 4 clients posting batches of {hz['batch']}",
        f"{hz['p50_ms']:.1f} / {hz['p99_ms']:.1f} ms (max {hz['max_ms']:.0f}, "
        f"{hz['probes']:.0f} probes)",
        f"p99 <= {GOAL_HEALTHZ_P99_MS:g} ms", met(hz["p99_ms"] <= GOAL_HEALTHZ_P99_MS),
    )  # fmt: skip
    table.add_row(
        "  large batches meanwhile: decided / busy (503)",
        f"{hz['decided']:.0f} / {hz['busy']:.0f}", "", "",
    )  # fmt: skip
    table.add_row(
        f"RSS around rejected bodies (statuses {hz['rejected']})",
        f"{hz['rss_before_mb']:.0f} -> {hz['rss_after_mb']:.0f} MB", "bounded", "",
    )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
