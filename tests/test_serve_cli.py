"""`gridrl serve` start-up: no token, no service (unless --insecure-no-auth on loopback,
with a warning); limits that cannot work together are refused before listening."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest
from serve_helpers import DIM, REPO, Server, free_port, serve_argv, session_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return session_bundle(tmp_path_factory)


def _run(bundle, *extra: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRIDRL_SERVE_TOKEN"}
    if token is not None:
        env["GRIDRL_SERVE_TOKEN"] = token
    return subprocess.run(
        serve_argv(bundle, free_port(), *extra),
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("token", "extra", "needle"),
    [
        (None, [], "no token: set GRIDRL_SERVE_TOKEN"),
        ("", [], "no token: set GRIDRL_SERVE_TOKEN"),  # empty is no token
        ("   ", [], "no token: set GRIDRL_SERVE_TOKEN"),
        (None, ["--host", "0.0.0.0", "--insecure-no-auth"], "loopback host"),
        ("two words", [], "printable ASCII without spaces"),  # and not echoed
        ("t0ken", ["--max-batch", "500", "--max-body-bytes", "1000000"], "cannot hold max_batch"),
        ("t0ken", ["--max-body-bytes", "1000"], "cannot hold one observation"),
        ("t0ken", ["--queue", "-1"], "--queue"),
    ],
)
def test_refuses_to_start(bundle, token, extra, needle):
    out = _run(bundle, *extra, token=token)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert needle in text, text
    assert "Uvicorn running" not in text
    if token and token.strip():
        assert token not in out.stdout + out.stderr  # a secret is never echoed


def test_insecure_no_auth_serves_on_loopback_with_a_warning(bundle, tmp_path):
    srv = Server(bundle, tmp_path / "server.log", "--insecure-no-auth", token=None)
    try:
        r = httpx.post(f"{srv.url}/v1/decide", json={"observation": [0.0] * DIM})
        assert r.status_code == 200, r.text
        spec = httpx.get(f"{srv.url}/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
    finally:
        log = srv.stop()
    assert "WARNING:  serving WITHOUT authentication" in log, log


def test_explicit_limits_that_fit_are_served(bundle, tmp_path):
    srv = Server(bundle, tmp_path / "server.log", "--max-body-bytes", "3000000")
    try:
        health = srv.health()
        # the batch is derived from the body limit: JSON at 25 bytes per number
        assert health["max_body_bytes"] == 3_000_000
        assert health["max_batch"] == (3_000_000 - 64) // (DIM * 25 + 4)
    finally:
        srv.stop()
