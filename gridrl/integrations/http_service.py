"""HTTP decision service: a policy bundle behind FastAPI (``gridrl serve BUNDLE``).

Endpoints
---------
``POST /v1/decide``
    ``{"observation": [D floats]}`` -> ``{"batch_size": 1, "decisions": [one per site]}``;
    ``{"observations": [[D floats], ...]}`` -> ``{"batch_size": B, "batch": {columns}}``
    where each decision field is a ``B x n_sites`` list.
    For large batches the body may instead be a NumPy ``.npy`` array (``Content-Type:
    application/x-npy``, float ``[B, D]`` or ``[D]``): no text parsing at all. With
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
gets 401; a body above ``max_body_bytes`` gets 413. Nothing a client sends causes a 5xx.
"""

# No "from __future__ import annotations": FastAPI must see the real types of the
# closures in create_app (the per-bundle request model).

import hmac
import io
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from gridrl import __version__
from gridrl.export.runtime import InputError, PolicyRuntime

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_ERRORS = 20  # a 422 lists this many problems, then a count (bodies may hold 1e5 values)
NPY = "application/x-npy"
DECISION_FIELDS = ("run_share", "power_cap_fraction", "route_weight", "migrate_share")
BINARY_SCHEMA = {"type": "string", "format": "binary"}


class ServeConfig(BaseModel):
    """Service limits and access.

    Attributes
    ----------
    token
        Bearer token required on ``/v1/*`` (None: no authentication).
    max_body_bytes
        Largest request body accepted (413 above).
    max_batch
        Most observations in one request (422 above).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_batch: int = Field(default=20_000, gt=0)


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


class ErrorItem(BaseModel):
    """One validation problem."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Error body (422 lists every problem; 401/413 a message)."""

    detail: list[ErrorItem] | str


def _request_model(dim: int, max_batch: int) -> Any:
    """The /v1/decide body schema for observations of length ``dim``: one observation or
    a batch (an OpenAPI ``anyOf`` of two closed objects, so exactly one key is given)."""
    # strict: JSON true/false are not numbers (ints still are)
    value = Annotated[
        float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False, strict=True)
    ]
    row = Annotated[list[value], Field(min_length=dim, max_length=dim)]
    closed = ConfigDict(extra="forbid")
    one = create_model(
        "DecideOne",
        __config__=closed,
        __doc__=f"One observation: {dim} numbers, the observation vector in manifest order.",
        observation=(row, ...),
    )
    batch = create_model(
        "DecideBatch",
        __config__=closed,
        __doc__=f"A batch of 1 to {max_batch} observations of {dim} numbers each.",
        observations=(Annotated[list[row], Field(min_length=1, max_length=max_batch)], ...),
    )
    return one | batch


def _read_npy(raw: bytes, dim: int, max_batch: int) -> np.ndarray:
    """An ``.npy`` body as a float array ``[B, dim]`` or ``[dim]`` (never unpickles).

    Raises
    ------
    InputError
        when it is not an ``.npy`` array, not floating point, or of the wrong shape.
    """

    def fail(msg: str) -> InputError:
        return InputError([{"loc": ["body"], "msg": msg, "type": "npy_error"}])

    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise fail(f"not a NumPy .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        raise fail(f"expected a float array, got dtype {getattr(arr, 'dtype', type(arr))}")
    if arr.ndim not in (1, 2) or arr.shape[-1] != dim or (arr.ndim == 2 and arr.shape[0] == 0):
        raise fail(f"expected shape ({dim},) or (B, {dim}) with B >= 1, got {arr.shape}")
    if arr.ndim == 2 and arr.shape[0] > max_batch:
        raise fail(f"at most {max_batch} observations per request, got {arr.shape[0]}")
    return arr


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI-style 422 items (without echoing the input), at most MAX_ERRORS of them."""
    items = [
        {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]
    if exc.error_count() > MAX_ERRORS:
        items.append(
            {
                "loc": ["body"],
                "msg": f"... {exc.error_count() - MAX_ERRORS} more errors",
                "type": "too_many",
            }
        )
    return items


def create_app(runtime: PolicyRuntime, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime`` with ``config``'s limits and token."""
    config = config or ServeConfig()
    manifest = runtime.manifest
    request_model = _request_model(runtime.observation_dim, config.max_batch)
    token = config.token.encode() if config.token else None
    # The token is checked inline, not as a FastAPI dependency: dependency resolution
    # costs more than the policy itself on small requests. The OpenAPI spec still
    # declares the scheme (see openapi() below).
    security = [{"bearer": []}] if token is not None else []

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

    app = FastAPI(
        title="gridrl decision service",
        max_body_size=config.max_body_bytes,  # 413 above it, declared or streamed
        version=__version__,
        description=(
            f"Policy {manifest.algo} for sites {', '.join(runtime.sites)} "
            f"(scenario {manifest.scenario.hash}). Decision semantics: "
            + " ".join(f"[{k}] {v}" for k, v in manifest.decision_semantics.items())
        ),
    )
    errors: dict[int | str, dict[str, Any]] = {
        413: {
            "model": ErrorOut,
            # FastAPI's body limit answers a declared oversize in plain text, a streamed
            # one in JSON
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "request body too large",
        },
        422: {"model": ErrorOut, "description": "invalid observation"},
    }
    if token is not None:
        errors[401] = {"model": ErrorOut, "description": "missing or wrong bearer token"}

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.errors})

    @app.get("/healthz", response_model=Health, responses={413: errors[413]})
    async def healthz() -> Health:
        """Liveness and what is loaded."""
        return Health(
            status="ok",
            gridrl_version=__version__,
            algo=manifest.algo,
            scenario_hash=manifest.scenario.hash,
            sites=list(runtime.sites),
            observation_dim=runtime.observation_dim,
            action_dim=runtime.action_dim,
        )

    @app.get("/v1/manifest", responses=errors, openapi_extra={"security": security})
    async def get_manifest(request: Request) -> dict[str, Any]:
        """The bundle's manifest.json."""
        authorize(request)
        return manifest.model_dump(mode="json")

    body_adapter = TypeAdapter(request_model)
    body_schema = body_adapter.json_schema(ref_template="#/components/schemas/{model}")
    fields = DECISION_FIELDS + (("battery_kw",) if manifest.action.has_battery else ())
    npy_headers = {"X-Gridrl-Sites": ",".join(runtime.sites), "X-Gridrl-Fields": ",".join(fields)}
    decide_responses = {
        **errors,
        200: {"content": {NPY: {"schema": BINARY_SCHEMA}}, "description": "decisions"},
    }

    @app.post(
        "/v1/decide",
        response_model=DecideResponse,
        response_model_exclude_none=True,
        responses=decide_responses,
        openapi_extra={
            "security": security,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"anyOf": body_schema["anyOf"]}},
                    NPY: {"schema": BINARY_SCHEMA},
                },
            },
        },
    )
    async def decide(request: Request) -> Response:
        """Per-site decisions for one observation or a batch (JSON or .npy in and out)."""
        authorize(request)
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == NPY:
            obs = _read_npy(raw, runtime.observation_dim, config.max_batch)
            single = obs.ndim == 1
        else:
            # Parsed and validated in one pass by pydantic's JSON parser: faster than
            # json.loads + validation, and any bytes (not JSON, not UTF-8) get a 422
            # that says what is wrong.
            try:
                body = body_adapter.validate_json(raw)
            except ValidationError as exc:
                return JSONResponse(status_code=422, content={"detail": _errors(exc)})
            single = hasattr(body, "observation")
            obs = [body.observation] if single else body.observations
        batch = runtime.decide_batch(obs)
        if NPY in request.headers.get("accept", ""):
            cols = [getattr(batch, f) for f in fields]
            buf = io.BytesIO()
            np.save(buf, np.stack(cols, axis=-1).astype(np.float64), allow_pickle=False)
            return Response(buf.getvalue(), media_type=NPY, headers=npy_headers)
        if single:
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

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = base_openapi()
            components = spec.setdefault("components", {})
            components.setdefault("schemas", {}).update(body_schema.get("$defs", {}))
            if token is not None:
                components["securitySchemes"] = {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "the token given to `gridrl serve --token`",
                    }
                }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_ENV_BUNDLE = "GRIDRL_SERVE_BUNDLE"
_ENV_CONFIG = "GRIDRL_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """App factory for worker processes: bundle folder and config from the environment
    (set by :func:`serve` before uvicorn starts its workers)."""
    import json
    import os

    config = ServeConfig.model_validate(json.loads(os.environ[_ENV_CONFIG]))
    return create_app(PolicyRuntime(os.environ[_ENV_BUNDLE]), config)


def serve(
    runtime: PolicyRuntime,
    *,
    host: str,
    port: int,
    config: ServeConfig | None = None,
    access_log: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Run the service with uvicorn until interrupted.

    ``workers > 1`` starts that many processes (each loads the bundle) sharing the port.
    """
    import os

    import uvicorn

    config = config or ServeConfig()
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
