"""HTTP decision service over a real uvicorn server on 127.0.0.1 (the `gridrl serve`
command): schemathesis against its own OpenAPI spec (JSON and `.npy` bodies), plus
explicit 401 / 413 / 422 cases."""

from __future__ import annotations

import json
import os
import re

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from serve_helpers import (
    AUTH,
    DIM,
    NPY,
    SITES,
    TOKEN,
    Server,
    npy_bytes,
    npy_header,
    session_bundle,
)

from gridrl.export.runtime import PolicyRuntime
from gridrl.integrations.serve_body import body_bytes_needed

MAX_BATCH = 500
MAX_BODY = body_bytes_needed(DIM, MAX_BATCH)  # what the service derives from MAX_BATCH


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return session_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    srv = Server(bundle, log, "--max-batch", str(MAX_BATCH))
    assert srv.health()["max_body_bytes"] == MAX_BODY
    try:
        yield srv.url
    finally:
        text = srv.stop()
    # no request a client sent made the server log a traceback
    assert "Traceback" not in text, text


@st.composite
def npy_bodies(draw) -> bytes:
    """`.npy` bodies for schemathesis: valid arrays of every accepted kind, headers that
    lie (huge shapes, wrong dtypes, truncated or trailing data), and junk."""
    kind = draw(st.sampled_from(["array", "header", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=512))
    if kind == "array":
        shape = draw(st.sampled_from([(DIM,), (1, DIM), (3, DIM), (2, 5), (0, DIM), (DIM, 2)]))
        dtype = draw(st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<f2", "<i4", "|b1", "<c8"]))
        values = np.random.default_rng(draw(st.integers(0, 9))).normal(size=shape)
        if values.size and draw(st.booleans()):
            values.flat[draw(st.integers(0, values.size - 1))] = np.nan
        with np.errstate(invalid="ignore"):  # NaN into an integer dtype
            arr = values.astype(dtype)
        return npy_bytes(np.asfortranarray(arr) if draw(st.booleans()) else arr)
    dim = st.sampled_from([0, 1, 3, DIM, MAX_BATCH, MAX_BATCH + 1, 10**8, 2**63, -1, 268])
    shape = tuple(draw(st.lists(dim, max_size=3)))
    descr = draw(st.sampled_from(["<f4", "<f8", "|O", "<U3", "V8", "zz", "[('a', '<f4')]"]))
    head = npy_header(descr, shape, draw(st.booleans()))
    if descr.startswith("["):  # a structured dtype: the descr is a list, not a string
        head = head.replace(b"'[", b"[").replace(b"]'", b"]")
    size = int(np.prod(shape or (1,), dtype=object)) * 8
    data = min(max(size + draw(st.integers(-8, 8)), 0), 4096)
    return head + bytes(data)


schemathesis.openapi.media_type(NPY, npy_bodies())


# GET operations take no parameters, so only POST has negative (invalid) cases. Each
# operation gets its share of GRIDRL_FUZZ_EXAMPLES (default 1,100: 1,101 cases in about
# 90 s); /healthz has a single case.
OPERATIONS = [
    ("POST", "/v1/decide", "positive", 0.45),
    ("POST", "/v1/decide", "negative", 0.45),
    ("GET", "/v1/manifest", "positive", 0.1),
    ("GET", "/healthz", "positive", 0.0),
]
FUZZ_EXAMPLES = int(os.environ.get("GRIDRL_FUZZ_EXAMPLES", "1100"))


@pytest.mark.parametrize(("method", "path", "mode", "share"), OPERATIONS)
def test_openapi_contract(server, method, path, mode, share):
    """Schemathesis cases from the service's own OpenAPI spec: no 5xx, responses match
    the spec (status, content type, schema), invalid JSON is rejected with a 4xx.

    (schemathesis' lazy pytest fixture does not run on this pytest, so its strategies
    are driven by hypothesis directly.)"""
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    # an oversized body (maxItems violated by a big batch) is rightly refused with 413
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    operation = schema[path][method]
    generation = getattr(schemathesis.GenerationMode, mode.upper())
    examples = max(1, round(FUZZ_EXAMPLES * share))
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=generation))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case):
        excluded = []
        if case.media_type == NPY:
            # OpenAPI can only say "binary" for .npy bodies: the bodies come from
            # npy_bodies() whatever the mode, valid or not, so only the server-error and
            # response checks apply
            excluded = [positive_data_acceptance, negative_data_rejection]
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded
        )
        statuses.append(response.status_code)
        assert response.status_code < 500

    run()
    print(f"{method} {path} {mode}: {len(statuses)} cases, statuses {sorted(set(statuses))}")
    # parameterless GETs run out of distinct cases early; the body-taking POST may not
    assert len(statuses) >= (examples if method == "POST" else 1)




def test_decisions_equal_the_runtime(server, bundle):
    rt = PolicyRuntime(bundle)
    obs = np.random.default_rng(1).normal(size=(32, rt.observation_dim)).astype(np.float32)
    r = httpx.post(f"{server}/v1/decide", json={"observation": obs[0].tolist()}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["batch_size"] == 1
    want = rt.decide(obs[0])
    assert [d["site"] for d in body["decisions"]] == SITES
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
    assert health["sites"] == SITES and health["observation_dim"] == rt.observation_dim
    manifest = httpx.get(f"{server}/v1/manifest", headers=AUTH).json()
    assert manifest["onnx"]["observation_dim"] == rt.observation_dim


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}]
)
def test_missing_or_wrong_token_is_401(server, headers):
    for method, path, kw in [
        ("POST", "/v1/decide", {"json": {"observation": [0.0] * DIM}}),
        ("GET", "/v1/manifest", {}),
    ]:
        r = httpx.request(method, f"{server}{path}", headers=headers, **kw)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"observation": [1, 2', "json_invalid"),
        ('{"observation": [0.1, 0.2]}', f"at least {DIM} items"),
        (json.dumps({"observation": [0.0] * (DIM - 1) + ["x"]}), "valid number"),
        ('{"observation": [NaN' + ", 0" * (DIM - 1) + "]}", "finite number"),
        ('{"observation": [1e39' + ", 0" * (DIM - 1) + "]}", "less than or equal"),
        (json.dumps({"observation": [0.0] * DIM, "observations": [[0.0] * DIM]}), "Extra inputs"),
        ("{}", "Field required"),
        (json.dumps({"observations": []}), "at least 1 item"),
        (
            json.dumps({"observations": [[0.0] * DIM] * (MAX_BATCH + 1)}),
            f"more than {MAX_BATCH} observations",  # large: counted before parsing
        ),
        (json.dumps({"observation": [0.0] * DIM, "extra": 1}), "Extra inputs"),
        ("[1, 2, 3]", "Input should be an object"),
        ('{"observation": [true' + ", 0" * (DIM - 1) + "]}", "valid number"),
    ],
)
def test_malformed_input_is_422_with_a_message(server, content, needle):
    r = httpx.post(
        f"{server}/v1/decide", content=content, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_body_size_limit_is_413_declared_or_streamed(server):
    big = json.dumps({"observations": [[0.123456789] * DIM] * 2 * MAX_BATCH}).encode()
    assert len(big) > MAX_BODY
    r = httpx.post(
        f"{server}/v1/decide", content=big, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 413
    assert f"max_body_bytes = {MAX_BODY}" in r.json()["detail"]

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


def test_a_maximal_batch_fits_the_body_limit(server):
    """max_batch observations, every number at full float64 precision, fit the derived
    body limit as JSON and as .npy float64."""
    full = np.full((MAX_BATCH, DIM), -1.2345678901234567e-05)
    body = json.dumps({"observations": full.tolist()}).encode()
    assert len(body) <= MAX_BODY
    headers = {**AUTH, "content-type": "application/json"}
    r = httpx.post(f"{server}/v1/decide", content=body, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["batch_size"] == MAX_BATCH, r.text[:300]
    r = httpx.post(
        f"{server}/v1/decide", content=npy_bytes(full), headers={**AUTH, "content-type": NPY}
    )
    assert r.status_code == 200 and r.json()["batch_size"] == MAX_BATCH, r.text[:300]


def test_npy_bodies_and_answers(server, bundle):
    import io

    rt = PolicyRuntime(bundle)
    obs = np.random.default_rng(2).normal(size=(64, DIM)).astype(np.float32)
    headers = {**AUTH, "content-type": NPY}
    r = httpx.post(f"{server}/v1/decide", content=npy_bytes(obs), headers=headers)
    assert r.status_code == 200, r.text
    exp = rt.decide(obs)
    np.testing.assert_allclose(
        r.json()["batch"]["power_cap_fraction"], exp.power_cap_fraction, atol=1e-7
    )
    r = httpx.post(
        f"{server}/v1/decide", content=npy_bytes(obs), headers={**headers, "accept": NPY}
    )
    assert r.status_code == 200 and r.headers["content-type"] == NPY
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.shape == (64, 2, 4)
    assert r.headers["x-gridrl-sites"] == ",".join(SITES)
    fields = r.headers["x-gridrl-fields"].split(",")
    np.testing.assert_allclose(got[..., fields.index("route_weight")], exp.route_weight, atol=1e-7)
    # column-major (fortran_order) and big-endian float64 arrays hold the same rows
    other = np.asfortranarray(obs.astype(">f8"))
    r = httpx.post(f"{server}/v1/decide", content=npy_bytes(other), headers=headers)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["batch"]["route_weight"], exp.route_weight, atol=1e-7)
    # a single observation as a 1-D array answers with one decision per site
    one = npy_bytes(obs[0].astype(np.float64))
    r = httpx.post(f"{server}/v1/decide", content=one, headers=headers)
    assert r.status_code == 200 and r.json()["batch_size"] == 1 and len(r.json()["decisions"]) == 2


GOOD = npy_bytes(np.zeros((3, DIM), dtype=np.float32))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not an npy file", "not a NumPy .npy array"),
        (np.zeros((3, DIM), dtype=np.int64), "expected float32 or float64 values, got dtype '<i8'"),
        (np.zeros((3, DIM), dtype=np.float16), "got dtype '<f2'"),
        (np.zeros((3, 5), dtype=np.float32), rf"expected shape \({DIM},\) or \(B, {DIM}\)"),
        (np.zeros((0, DIM), dtype=np.float32), "B >= 1"),
        (np.zeros((MAX_BATCH + 1, DIM), dtype=np.float32), f"at most {MAX_BATCH}"),
        (np.full((2, DIM), np.nan, dtype=np.float32), "is not a finite float32"),
        (np.array([{"a": 1}], dtype=object), "got dtype '|O'"),  # pickles are refused
        # a 64 KB body whose header claims 10**8 x 268 float32 (107 GB): refused from the
        # header alone, nothing allocated
        (npy_header("<f4", (10**8, 268)) + bytes(65_536), r"got \(100000000, 268\)"),
        (npy_header("<f4", (10**8, DIM)) + bytes(65_536), f"at most {MAX_BATCH} observations"),
        (npy_header("<f8", (400, DIM)) + bytes(65_536),
         f"truncated: the header announces {400 * DIM * 8}"),
        (GOOD + b"\x00\x01", "2 bytes after the array data"),
        (GOOD[:-1], "truncated"),
        (npy_header("<f4", (-1, DIM)), "B >= 1"),
        (GOOD[:40], "not a NumPy .npy array"),
    ],
)
def test_bad_npy_bodies_are_422(server, content, needle):
    if isinstance(content, np.ndarray):
        import io

        buf = io.BytesIO()
        np.save(buf, content, allow_pickle=True)
        content = buf.getvalue()
    r = httpx.post(f"{server}/v1/decide", content=content, headers={**AUTH, "content-type": NPY})
    assert r.status_code == 422, r.text
    assert re.search(needle, r.text), r.text


def test_several_worker_processes(bundle, tmp_path):
    srv = Server(bundle, tmp_path / "workers.log", "--workers", "2")
    try:
        obs = [0.5] * DIM
        answers = [
            httpx.post(f"{srv.url}/v1/decide", json={"observation": obs}, headers=AUTH)
            for _ in range(6)
        ]
        assert {r.status_code for r in answers} == {200}
        assert len({r.text for r in answers}) == 1  # every worker serves the same bundle
        assert httpx.post(f"{srv.url}/v1/decide", json={"observation": obs}).status_code == 401
    finally:
        log = srv.stop()
    assert "Traceback" not in log
