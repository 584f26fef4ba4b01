"""Helpers for the decision service tests: one exported bundle per test session and real
`gridrl serve` processes (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from export_helpers import geo_env, random_policy_dir

from gridrl.env.kernel import EXO_SIGNALS

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NPY = "application/x-npy"
SITES = ["greensboro", "miami"]
# observation length of the first two geo3 sites: calendar + per site the signals,
# 6 targets x 6 horizons x 2, 4 queue groups + 4
DIM = 4 + 2 * (len(EXO_SIGNALS) + 72 + 8)


def session_bundle(tmp_path_factory) -> Path:
    """A bundle of a random PPO policy on two geo3 sites, exported once per session."""
    from gridrl.export.bundle import export_bundle

    root = tmp_path_factory.getbasetemp() / "serve_bundle"
    if not (root / "bundle").is_dir():
        pdir = random_policy_dir(root / "policy", geo_env(2), seed=5)
        export_bundle(pdir, root / "bundle")
    return root / "bundle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_argv(bundle: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gridrl.cli", "serve", str(bundle), "--host", "127.0.0.1",
        "--port", str(port), *extra,
    ]  # fmt: skip


class Server:
    """A `gridrl serve` subprocess; the token travels in the environment."""

    def __init__(self, bundle: Path, log: Path, *extra: str, token: str | None = TOKEN):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "GRIDRL_SERVE_TOKEN"}
        if token is not None:
            env["GRIDRL_SERVE_TOKEN"] = token
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                serve_argv(bundle, self.port, *extra),
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(self.log.read_text())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("server did not start: " + self.log.read_text())
            time.sleep(0.2)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz").json()

    def stop(self) -> str:
        """Stop the server; return its log."""
        self.proc.terminate()
        self.proc.wait(timeout=20)
        return self.log.read_text()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    """A version 1.0 ``.npy`` header announcing ``shape`` of ``descr`` (no data)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def post_in_loops(url: str, bodies: list[tuple[str, str]], seconds: float, out: str) -> None:
    """Post each ``(body file, content type)`` in its own thread, again and again for
    ``seconds``; write the ``[content type, status]`` pairs as JSON to ``out``.

    Run it in its own process: the clients' work then does not slow the measuring one.
    """
    import json
    import threading

    os.nice(10)  # the clients only keep requests in flight; the service gets the CPU first
    done: list[tuple[str, int]] = []
    end = time.monotonic() + seconds

    def loop(path: str, ctype: str) -> None:
        body = Path(path).read_bytes()
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < end:
                r = client.post(
                    f"{url}/v1/decide", content=body, headers={**AUTH, "content-type": ctype}
                )
                done.append((ctype, r.status_code))

    threads = [threading.Thread(target=loop, args=b) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(done))
