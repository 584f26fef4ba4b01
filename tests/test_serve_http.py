"""HTTP decision service over a real uvicorn server on 127.0.0.1 (the `gridrl serve`
command): schemathesis against its own OpenAPI spec, plus explicit 401 / 413 / 422 cases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from export_helpers import random_policy_dir, two_site_layouts
from hypothesis import HealthCheck, given, settings

from gridrl.export.bundle import export_bundle
from gridrl.export.runtime import PolicyRuntime

TOKEN = "s3cret-token"
MAX_BODY = 200_000
MAX_BATCH = 500
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    pdir = random_policy_dir(root / "policy", two_site_layouts(), seed=5)
    export_bundle(pdir, root / "bundle")
    return root / "bundle"


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    argv = [
        sys.executable, "-m", "gridrl.cli", "serve", str(bundle), "--host", "127.0.0.1",
        "--port", str(port), "--max-body-bytes", str(MAX_BODY), "--max-batch", str(MAX_BATCH),
    ]  # fmt: skip
    env = {**os.environ, "GRIDRL_SERVE_TOKEN": TOKEN}  # the token is not on the command line
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start: " + log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # no request a client sent made the server log a traceback
    assert "Traceback" not in log.read_text(), log.read_text()


# GET operations take no parameters, so only POST has negative (invalid) cases.
OPERATIONS = [
    ("POST", "/v1/decide", "positive"),
    ("POST", "/v1/decide", "negative"),
    ("GET", "/v1/manifest", "positive"),
    ("GET", "/healthz", "positive"),
]


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_openapi_contract(server, method, path, mode):
    """Schemathesis cases from the service's own OpenAPI spec: no 5xx, responses match
    the spec (status, content type, schema), invalid data is rejected with a 4xx.

    (schemathesis' lazy pytest fixture does not run on this pytest, so its strategies
    are driven by hypothesis directly.)"""
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operation = schema[path][method]
    generation = getattr(schemathesis.GenerationMode, mode.upper())

    @given(case=operation.as_strategy(generation_mode=generation))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code < 500

    run()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_decisions_equal_the_runtime(server, bundle):
    rt = PolicyRuntime(bundle)
    obs = np.random.default_rng(1).normal(size=(32, rt.observation_dim)).astype(np.float32)
    r = httpx.post(f"{server}/v1/decide", json={"observation": obs[0].tolist()}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["batch_size"] == 1
    want = rt.decide(obs[0])
    assert [d["site"] for d in body["decisions"]] == ["dc_a", "dc_b"]
    for got, exp in zip(body["decisions"], want, strict=True):
        assert got["power_cap_fraction"] == pytest.approx(exp.power_cap_fraction, abs=1e-7)
        assert got["run_share"] == pytest.approx(exp.run_share, abs=1e-7)
    r = httpx.post(f"{server}/v1/decide", json={"observations": obs.tolist()}, headers=AUTH)
    assert r.status_code == 200, r.text
    batch = r.json()["batch"]
    exp = rt.decide(obs)
    np.testing.assert_allclose(batch["route_weight"], exp.route_weight, atol=1e-7)
    np.testing.assert_allclose(batch["migrate_share"], exp.migrate_share, atol=1e-7)
    assert batch["battery_kw"] is None
    health = httpx.get(f"{server}/healthz").json()  # no token needed
    assert health["sites"] == ["dc_a", "dc_b"] and health["observation_dim"] == rt.observation_dim
    manifest = httpx.get(f"{server}/v1/manifest", headers=AUTH).json()
    assert manifest["onnx"]["observation_dim"] == rt.observation_dim


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}]
)
def test_missing_or_wrong_token_is_401(server, headers):
    for method, path, kw in [
        ("POST", "/v1/decide", {"json": {"observation": [0.0] * 14}}),
        ("GET", "/v1/manifest", {}),
    ]:
        r = httpx.request(method, f"{server}{path}", headers=headers, **kw)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"observation": [1, 2', "json_invalid"),
        ('{"observation": [0.1, 0.2]}', "at least 14 items"),
        (json.dumps({"observation": [0.0] * 13 + ["x"]}), "valid number"),
        ('{"observation": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', "finite number"),
        ('{"observation": [1e39, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', "less than or equal"),
        (json.dumps({"observation": [0.0] * 14, "observations": [[0.0] * 14]}), "Extra inputs"),
        ("{}", "Field required"),
        (json.dumps({"observations": []}), "at least 1 item"),
        (
            json.dumps({"observations": [[0.0] * 14] * (MAX_BATCH + 1)}),
            f"at most {MAX_BATCH} items",
        ),
        (json.dumps({"observation": [0.0] * 14, "extra": 1}), "Extra inputs"),
        ("[1, 2, 3]", "Input should be an object"),
    ],
)
def test_malformed_input_is_422_with_a_message(server, content, needle):
    r = httpx.post(
        f"{server}/v1/decide", content=content, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_body_size_limit_is_413_declared_or_streamed(server):
    big = json.dumps({"observations": [[0.123456789] * 14] * 2000}).encode()
    assert len(big) > MAX_BODY
    r = httpx.post(
        f"{server}/v1/decide", content=big, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 413

    def chunks():
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    # no Content-Length: the limit applies while reading the stream
    with httpx.Client() as client:
        r = client.post(
            f"{server}/v1/decide",
            content=chunks(),
            headers={**AUTH, "content-type": "application/json"},
        )
    assert r.status_code == 413
    # the server is still healthy afterwards
    assert httpx.get(f"{server}/healthz").status_code == 200
