"""HTTP decision service: a policy bundle behind FastAPI (``gridrl serve BUNDLE``).

Endpoints
---------
``POST /v1/decide``
    ``{"observation": [D floats]}`` -> ``{"batch_size": 1, "decisions": [one per site]}``;
    ``{"observations": [[D floats], ...]}`` -> ``{"batch_size": B, "batch": {columns}}``
    where each decision field is a ``B x n_sites`` list.
    For large batches the body may instead be a NumPy ``.npy`` array (``Content-Type:
    application/x-npy``, float32 or float64 ``[B, D]`` or ``[D]``): no text parsing, and
    its header is checked against the limits and the body length before anything is
    allocated. With
    ``Accept: application/x-npy`` the answer is an ``.npy`` float64 array
    ``[B, n_sites, fields]``; headers ``X-Gridrl-Sites`` and ``X-Gridrl-Fields`` name its
    axes.
``GET /v1/manifest``
    The bundle's manifest (layouts, units, semantics, versions).
``GET /healthz``
    Liveness and what is loaded (no token needed, for load balancers).
``GET /openapi.json``, ``/docs``
    The OpenAPI spec (request schemas carry the bundle's observation length).

Bad input gets 422 with a message naming the field; a missing or wrong bearer token
gets 401; a body above ``max_body_bytes`` gets 413 (read as a stream and dropped at the
limit); when ``threads + queue`` requests are already in progress, 503 with
``Retry-After``. Nothing a client sends causes another 5xx.

Parsing and inference run off the event loop: ``.npy`` bodies, small JSON bodies and
the policy in a thread pool (onnxruntime and numpy release the GIL), JSON bodies above
``inline_json_bytes`` in separate processes (pydantic's parser holds the GIL), so
``/healthz`` answers while large batches are decided. Request bodies in memory are at
most ``(threads + queue) x max_body_bytes``.
"""

# No "from __future__ import annotations": FastAPI must see the real types of the
# closures in create_app.

import asyncio
import hmac
import io
import logging
import multiprocessing
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from starlette.requests import ClientDisconnect

from gridrl import __version__
from gridrl.config import format_validation_errors
from gridrl.export.runtime import InputError, PolicyRuntime
from gridrl.integrations import serve_body
from gridrl.integrations.serve_body import BodyLimits, ServeConfigError, resolve_limits

NPY = "application/x-npy"
DECISION_FIELDS = ("run_share", "power_cap_fraction", "route_weight", "migrate_share")
BINARY_SCHEMA = {"type": "string", "format": "binary"}
RETRY_AFTER_S = 1
# GIL switch interval of a service process (Python's default is 5 ms): the worker threads
# run Python between their GIL-free numpy and onnxruntime calls, and the event loop
# thread waits up to one interval for the GIL at every step of a /healthz answer
# (measured under maximal batches on a loaded 2-core machine: p99 90 ms at 0.5 ms against
# 400 ms at 5 ms)
SWITCH_INTERVAL_S = 0.0005
LOG = logging.getLogger("uvicorn.error")  # uvicorn configures it: warnings show beside its own


class ServeConfig(BaseModel):
    """Service access, limits and workers.

    Attributes
    ----------
    token
        Bearer token required on ``/v1/*``; empty counts as none. Without one the service
        starts only with ``insecure_no_auth`` (and :func:`serve` only on a loopback host).
    insecure_no_auth
        Serve without authentication (local testing).
    max_body_bytes, max_batch
        Largest request body (413 above) and most observations per request (422 above).
        A maximal batch always fits the body limit: a missing one is derived from the
        other (body default 16 MiB), two that do not fit are refused
        (:func:`gridrl.integrations.serve_body.resolve_limits`).
    threads
        Requests parsed and decided at once.
    queue
        Requests admitted beyond ``threads`` (reading their body or waiting); more get 503.
    json_processes
        Processes parsing JSON bodies larger than ``inline_json_bytes``.
    """

    # the token must not be echoed in an error message
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: str | None = None
    insecure_no_auth: bool = Field(default=False, strict=True)
    max_body_bytes: int | None = Field(default=None, gt=0, strict=True)
    max_batch: int | None = Field(default=None, gt=0, strict=True)
    threads: int = Field(default=2, ge=1, strict=True)
    queue: int = Field(default=8, ge=0, strict=True)
    json_processes: int = Field(default=1, ge=1, strict=True)
    inline_json_bytes: int = Field(default=256 * 1024, ge=0, strict=True)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty GRIDRL_SERVE_TOKEN must not mean "open"
        if not all("!" <= ch <= "~" for ch in value):
            raise ValueError("must be printable ASCII without spaces (it is sent in a header)")
        return value


def serve_config(**options: Any) -> ServeConfig:
    """A :class:`ServeConfig` from command-line options; a bad one is a ServeConfigError
    naming the option (never echoing the token)."""
    try:
        return ServeConfig(**options)
    except ValidationError as exc:  # values left out: one of them may be the token
        raise ServeConfigError(
            format_validation_errors(exc, "serve options", show_input=False)
        ) from None


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    import ipaddress

    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_access(config: ServeConfig, host: str | None = None) -> None:
    """Refuse a service without a token, unless ``insecure_no_auth`` (and then only on a
    loopback ``host``, when given).

    Raises
    ------
    ServeConfigError
        saying how to give a token.
    """
    if config.token is not None:
        return
    if not config.insecure_no_auth:
        raise ServeConfigError(
            "no token: set GRIDRL_SERVE_TOKEN (or --token) to a secret clients send as "
            "'Authorization: Bearer TOKEN'; --insecure-no-auth serves without one, on a "
            "loopback host only"
        )
    if host is not None and not is_loopback(host):
        raise ServeConfigError(
            f"--insecure-no-auth serves only on a loopback host (127.0.0.1, ::1, "
            f"localhost), not on {host!r}: give a token to listen there"
        )


class SiteDecisionOut(BaseModel):
    """One site's decision (units in the field names' meaning; see the manifest)."""

    site: str
    run_share: float = Field(description="share (0-1) of queued flexible work started now")
    power_cap_fraction: float = Field(description="GPU power cap, fraction of max board power")
    route_weight: float = Field(description="softmax weight as a migration destination")
    migrate_share: float = Field(description="share of queued flexible work sent away")
    battery_kw: float | None = Field(description="battery setpoint kW (+ charge), or null")


class BatchDecisionsOut(BaseModel):
    """Decisions of B observations; every field is B rows of n_sites values (site order)."""

    sites: list[str]
    run_share: list[list[float]]
    power_cap_fraction: list[list[float]]
    route_weight: list[list[float]]
    migrate_share: list[list[float]]
    battery_kw: list[list[float]] | None


class DecideResponse(BaseModel):
    """``decisions`` for one observation, ``batch`` for a batch."""

    batch_size: int
    decisions: list[SiteDecisionOut] | None = None
    batch: BatchDecisionsOut | None = None


class Health(BaseModel):
    """What the service has loaded."""

    status: str
    gridrl_version: str
    algo: str
    scenario_hash: str | None
    sites: list[str]
    observation_dim: int
    action_dim: int
    max_body_bytes: int = Field(description="largest request body accepted (413 above)")
    max_batch: int = Field(description="most observations in one request (422 above)")


class ErrorItem(BaseModel):
    """One validation problem."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Error body (422 lists every problem; 401/413/503 a message)."""

    detail: list[ErrorItem] | str


class _Workers:
    """Where requests are parsed and decided: off the event loop, admission bounded.

    ``in_flight`` counts admitted requests from before their body is read until they are
    answered; only the event loop touches it (no lock).
    """

    def __init__(self, config: ServeConfig, limits: BodyLimits, dim: int) -> None:
        self.capacity = config.threads + config.queue
        self.in_flight = 0
        self.threads = ThreadPoolExecutor(
            config.threads,
            thread_name_prefix="gridrl-decide",
            initializer=serve_body.lower_priority,
        )
        self._n_processes = config.json_processes
        self._initargs = (dim, limits.max_batch, os.getpid())
        self._processes: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._processes is None:
                # forkserver: no fork of a process with threads; children start from a
                # small server process with the body module already imported
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context(
                    "forkserver" if "forkserver" in methods else "spawn"
                )
                if "forkserver" in methods:
                    ctx.set_forkserver_preload(["gridrl.integrations.serve_body"])
                self._processes = ProcessPoolExecutor(
                    self._n_processes,
                    mp_context=ctx,
                    initializer=serve_body.init_json_worker,
                    initargs=self._initargs,
                )
            return self._processes

    def start(self) -> None:
        """Start the parsing processes now, not on the first large request."""
        pool = self._pool()
        for future in [pool.submit(serve_body.ping) for _ in range(self._n_processes)]:
            future.result()

    def parse_json(self, raw: bytearray) -> np.ndarray:
        """A large JSON body parsed in a process (blocks the calling worker thread only)."""
        pool = self._pool()
        try:
            ok, value = pool.submit(serve_body.parse_json_in_worker, raw).result()
        except BrokenProcessPool:
            with self._lock:  # the next request starts fresh processes
                if self._processes is pool:
                    self._processes = None
            raise HTTPException(
                status_code=503,
                detail="a JSON parsing process died; retry",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        if not ok:
            raise InputError(value)
        return value

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            if self._processes is not None:
                self._processes.shutdown(wait=False, cancel_futures=True)
                self._processes = None


class _Decider:
    """One request body in, its answer out (runs in a worker thread)."""

    def __init__(
        self, runtime: PolicyRuntime, limits: BodyLimits, workers: _Workers, inline_bytes: int
    ) -> None:
        self.runtime = runtime
        self.limits = limits
        self.workers = workers
        self.inline_bytes = inline_bytes
        model = serve_body.request_model(runtime.observation_dim, limits.max_batch)
        self.adapter = TypeAdapter(model)
        battery = ("battery_kw",) if runtime.manifest.action.has_battery else ()
        self.fields = DECISION_FIELDS + battery
        self.npy_headers = {
            "X-Gridrl-Sites": ",".join(runtime.sites),
            "X-Gridrl-Fields": ",".join(self.fields),
        }

    def observations(self, raw: bytearray, content_type: str) -> np.ndarray:
        if content_type == NPY:
            return serve_body.read_npy(raw, self.runtime.observation_dim, self.limits.max_batch)
        if len(raw) > self.inline_bytes:
            return self.workers.parse_json(raw)
        return serve_body.parse_json(self.adapter, raw)

    def answer(self, raw: bytearray, content_type: str, accept: str) -> Response:
        try:
            obs = self.observations(raw, content_type)
            batch = self.runtime.decide_batch(obs)
        except InputError as exc:
            return JSONResponse(status_code=422, content={"detail": exc.errors})
        if NPY in accept:
            cols = [getattr(batch, f) for f in self.fields]
            buf = io.BytesIO()
            np.save(buf, np.stack(cols, axis=-1).astype(np.float64), allow_pickle=False)
            return Response(buf.getvalue(), media_type=NPY, headers=self.npy_headers)
        if obs.ndim == 1:
            payload: dict[str, Any] = {
                "batch_size": 1,
                "decisions": [d.to_dict() for d in batch.site_decisions(0)],
            }
        else:
            cols = {f: getattr(batch, f) for f in DECISION_FIELDS}
            cols["battery_kw"] = batch.battery_kw
            payload = {"batch_size": len(batch), "batch": {"sites": list(batch.sites), **cols}}
        # orjson writes numpy arrays directly (no per-float Python objects)
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )


async def _read_body(request: Request, limit: int) -> bytearray:
    """The body, read as a stream and dropped as soon as it passes ``limit`` bytes (a
    rejected body never sits in memory whole)."""
    too_large = HTTPException(
        status_code=413, detail=f"request body above max_body_bytes = {limit} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise HTTPException(status_code=400, detail="client disconnected") from None
    return body


def _error_responses(authenticated: bool) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses of the /v1 operations."""
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorOut, "description": "request body too large"},
        422: {"model": ErrorOut, "description": "invalid observation"},
        503: {
            "model": ErrorOut,
            "description": "busy (threads + queue requests in progress): retry after "
            "the Retry-After header's seconds",
        },
    }
    if authenticated:
        errors[401] = {"model": ErrorOut, "description": "missing or wrong bearer token"}
    return errors


def _authorizer(token: bytes | None) -> Callable[[Request], None]:
    """A check of the bearer token (401 without it); a no-op without a token.

    Called inline, not as a FastAPI dependency: dependency resolution costs more than
    the policy itself on small requests. The OpenAPI spec still declares the scheme.
    """

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.encode(), token):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorize


def _lifespan(workers: _Workers, authenticated: bool) -> Callable[[FastAPI], Any]:
    """Start the parsing processes before serving, stop them after; warn when open."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not authenticated:
            LOG.warning(
                "serving WITHOUT authentication (--insecure-no-auth): every local "
                "account that reaches this port gets decisions"
            )
        await asyncio.get_running_loop().run_in_executor(None, workers.start)
        try:
            yield
        finally:
            workers.close()

    return lifespan


def create_app(runtime: PolicyRuntime, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``runtime`` with ``config``'s access, limits and workers.

    Raises
    ------
    ServeConfigError
        without a token (unless ``insecure_no_auth``), or with limits that do not fit.
    """
    check_access(config)
    manifest = runtime.manifest
    limits = resolve_limits(runtime.observation_dim, config.max_body_bytes, config.max_batch)
    workers = _Workers(config, limits, runtime.observation_dim)
    decider = _Decider(runtime, limits, workers, config.inline_json_bytes)
    token = config.token.encode() if config.token else None
    authorize = _authorizer(token)
    security = [{"bearer": []}] if token is not None else []
    app = FastAPI(
        title="gridrl decision service",
        version=__version__,
        lifespan=_lifespan(workers, authenticated=token is not None),
        description=(
            f"Policy {manifest.algo} for sites {', '.join(runtime.sites)} "
            f"(scenario {manifest.scenario.hash}). Decision semantics: "
            + " ".join(f"[{k}] {v}" for k, v in manifest.decision_semantics.items())
        ),
    )
    errors = _error_responses(token is not None)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.errors})

    health = Health(
        status="ok",
        gridrl_version=__version__,
        algo=manifest.algo,
        scenario_hash=manifest.scenario.hash,
        sites=list(runtime.sites),
        observation_dim=runtime.observation_dim,
        action_dim=runtime.action_dim,
        max_body_bytes=limits.max_body_bytes,
        max_batch=limits.max_batch,
    )

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness, what is loaded, and the request limits."""
        return health

    manifest_json = orjson.dumps(manifest.model_dump(mode="json"))

    @app.get(
        "/v1/manifest",
        response_model=dict[str, Any],
        responses=errors,
        openapi_extra={"security": security},
    )
    async def get_manifest(request: Request) -> Response:
        """The bundle's manifest.json."""
        authorize(request)
        return Response(manifest_json, media_type="application/json")

    body_schema = decider.adapter.json_schema(ref_template="#/components/schemas/{model}")
    _add_decide(app, decider, workers, authorize, security, errors, body_schema)
    _openapi(app, body_schema, authenticated=token is not None)
    return app


def _add_decide(
    app: FastAPI,
    decider: _Decider,
    workers: _Workers,
    authorize: Callable[[Request], None],
    security: list[dict[str, list[str]]],
    errors: dict[int | str, dict[str, Any]],
    body_schema: dict[str, Any],
) -> None:
    """POST /v1/decide: admitted, read as a stream, then decided in a worker thread."""
    responses = {
        **errors,
        200: {"content": {NPY: {"schema": BINARY_SCHEMA}}, "description": "decisions"},
    }
    request_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"anyOf": body_schema["anyOf"]}},
            NPY: {"schema": BINARY_SCHEMA},
        },
    }
    limit = decider.limits.max_body_bytes

    @app.post(
        "/v1/decide",
        response_model=DecideResponse,
        response_model_exclude_none=True,
        responses=responses,
        openapi_extra={"security": security, "requestBody": request_body},
    )
    async def decide(request: Request) -> Response:
        """Per-site decisions for one observation or a batch (JSON or .npy in and out)."""
        authorize(request)
        if workers.in_flight >= workers.capacity:
            return JSONResponse(
                status_code=503,
                content={
                    "detail": f"busy: {workers.in_flight} requests in progress; retry "
                    f"after {RETRY_AFTER_S} s"
                },
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        workers.in_flight += 1
        try:
            raw = await _read_body(request, limit)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            accept = request.headers.get("accept", "")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                workers.threads, decider.answer, raw, content_type, accept
            )
        finally:
            workers.in_flight -= 1


def _openapi(app: FastAPI, body_schema: dict[str, Any], authenticated: bool) -> None:
    """Add the request body's schemas and the bearer scheme to the generated spec."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = base_openapi()
            components = spec.setdefault("components", {})
            components.setdefault("schemas", {}).update(body_schema.get("$defs", {}))
            if authenticated:
                components["securitySchemes"] = {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "the token given to `gridrl serve` (GRIDRL_SERVE_TOKEN)",
                    }
                }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ENV_BUNDLE = "GRIDRL_SERVE_BUNDLE"
_ENV_CONFIG = "GRIDRL_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """App factory for worker processes: bundle folder and config from the environment
    (set by :func:`serve` before uvicorn starts its workers)."""
    import json
    import os

    config = ServeConfig.model_validate(json.loads(os.environ[_ENV_CONFIG]))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(PolicyRuntime(os.environ[_ENV_BUNDLE]), config)


def serve(
    runtime: PolicyRuntime,
    *,
    host: str,
    port: int,
    config: ServeConfig,
    access_log: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Run the service with uvicorn until interrupted.

    ``workers > 1`` starts that many processes (each loads the bundle) sharing the port.

    Raises
    ------
    ServeConfigError
        before listening: no token (without ``insecure_no_auth``, or with it on a host
        that is not loopback), or limits that do not fit.
    """
    import os

    import uvicorn

    check_access(config, host)
    resolve_limits(runtime.observation_dim, config.max_body_bytes, config.max_batch)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if workers > 1:
        # Workers import the app themselves; the token travels in the environment (not
        # on a command line).
        os.environ[_ENV_BUNDLE] = str(runtime.bundle_dir.resolve())
        os.environ[_ENV_CONFIG] = config.model_dump_json()
        uvicorn.run(
            "gridrl.integrations.http_service:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level=log_level,
        )
        return
    uvicorn.run(
        create_app(runtime, config),
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
    )
