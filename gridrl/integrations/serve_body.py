"""Request bodies of the decision service: the JSON schema, ``.npy`` parsing checked
before any allocation, and the limits that tie the body size to the batch size.

Imports numpy, pydantic, the runtime and the standard library, not FastAPI: the
processes that parse large JSON bodies start from this module.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from numpy.lib import format as npy_format
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, create_model

from gridrl.errors import GridrlError
from gridrl.export.runtime import InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_ERRORS = 20  # a 422 lists this many problems, then a count
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Sizes a maximal batch must fit in. A JSON number is counted at 25 bytes: 17
# significant digits (every float64 round-trips), sign, decimal point, a two-digit
# exponent and the ", " separator, e.g. "-1.2345678901234567e-05, ".
JSON_BYTES_PER_NUMBER = 25
JSON_BYTES_PER_ROW = 4  # "[" + "]" + ", " around each observation
JSON_ENVELOPE_BYTES = 64  # '{"observations": [' ... ']}' and some whitespace
NPY_HEADER_BYTES = 128  # magic, version and header dict as np.save writes them
NPY_MAX_HEADER_BYTES = 10_000  # numpy's own limit on the header dict (safe to parse)
NPY_ITEMSIZES = (4, 8)  # float32 and float64, either byte order
MAX_MESSAGE_CHARS = 300  # numpy's messages can quote a whole crafted header
WORKER_NICE = 5  # parsing and deciding yield the CPU to the event loop (liveness first)
EXIT_POLL_S = 1.0  # how often a parsing process looks for its service without a pidfd
MAX_JSON_STRINGS = 8  # strings a large JSON body may hold (a valid one holds one key)


class ServeConfigError(GridrlError, ValueError):
    """The service's limits or access settings cannot work together."""


@dataclass(frozen=True)
class BodyLimits:
    """Largest body (bytes) and batch (observations) one request may carry."""

    max_body_bytes: int
    max_batch: int


def body_bytes_needed(dim: int, batch: int) -> int:
    """Bytes of the largest valid body of ``batch`` observations of ``dim`` numbers: JSON
    at JSON_BYTES_PER_NUMBER per number, or ``.npy`` float64, whichever is larger."""
    as_json = batch * (dim * JSON_BYTES_PER_NUMBER + JSON_BYTES_PER_ROW) + JSON_ENVELOPE_BYTES
    as_npy = NPY_HEADER_BYTES + batch * dim * np.dtype(np.float64).itemsize
    return max(as_json, as_npy)


def resolve_limits(dim: int, max_body_bytes: int | None, max_batch: int | None) -> BodyLimits:
    """Consistent limits for observations of ``dim`` numbers: a batch of ``max_batch``
    fits in ``max_body_bytes`` (JSON or ``.npy`` float64).

    A missing value is derived from the other (the body limit defaults to
    DEFAULT_MAX_BODY_BYTES); two given values that do not fit raise ServeConfigError.
    """
    if max_batch is not None:
        need = body_bytes_needed(dim, max_batch)
        if max_body_bytes is None:
            return BodyLimits(need, max_batch)
        if max_body_bytes < need:
            raise ServeConfigError(
                f"max_body_bytes = {max_body_bytes:,} cannot hold max_batch = {max_batch:,} "
                f"observations of {dim} numbers: that needs {need:,} bytes (JSON at "
                f"{JSON_BYTES_PER_NUMBER} bytes per number); raise max_body_bytes, lower "
                "max_batch, or give only one of them"
            )
        return BodyLimits(max_body_bytes, max_batch)
    body = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    per_row = dim * JSON_BYTES_PER_NUMBER + JSON_BYTES_PER_ROW
    batch = max((body - JSON_ENVELOPE_BYTES) // per_row, 0)
    while batch > 0 and body_bytes_needed(dim, batch) > body:
        batch -= 1
    if batch < 1:
        raise ServeConfigError(
            f"max_body_bytes = {body:,} cannot hold one observation of {dim} numbers: that "
            f"needs {body_bytes_needed(dim, 1):,} bytes (JSON at {JSON_BYTES_PER_NUMBER} "
            "bytes per number)"
        )
    return BodyLimits(body, batch)


def request_model(dim: int, max_batch: int) -> Any:
    """The /v1/decide JSON body for observations of length ``dim``: one observation or a
    batch (an OpenAPI ``anyOf`` of two closed objects, so exactly one key is given).

    Lists fail fast: a body of a million bad numbers gives one error per list, not a
    million error objects (memory and time bounded by the body, not by its mistakes).
    """
    # strict: JSON true/false are not numbers (ints still are)
    value = Annotated[
        float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False, strict=True)
    ]
    row = Annotated[list[value], Field(min_length=dim, max_length=dim, fail_fast=True)]
    closed = ConfigDict(extra="forbid")
    one = create_model(
        "DecideOne",
        __config__=closed,
        __doc__=f"One observation: {dim} numbers, the observation vector in manifest order.",
        observation=(row, ...),
    )
    rows = Annotated[list[row], Field(min_length=1, max_length=max_batch, fail_fast=True)]
    batch = create_model(
        "DecideBatch",
        __config__=closed,
        __doc__=f"A batch of 1 to {max_batch} observations of {dim} numbers each.",
        observations=(rows, ...),
    )
    return one | batch


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI-style 422 items (without echoing the input), at most MAX_ERRORS of them."""
    items = [
        {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]
    if exc.error_count() > MAX_ERRORS:
        more = exc.error_count() - MAX_ERRORS
        items.append({"loc": ["body"], "msg": f"... {more} more errors", "type": "too_many"})
    return items


def parse_json(adapter: TypeAdapter, raw: bytes | bytearray) -> np.ndarray:
    """A JSON body as float32 ``[D]`` (one observation) or ``[B, D]`` (a batch).

    Parsed and validated in one pass by pydantic's JSON parser: any bytes (not JSON, not
    UTF-8) get an InputError that says what is wrong.
    """
    try:
        body = adapter.validate_json(raw)
    except ValidationError as exc:
        raise InputError(validation_errors(exc)) from None
    if hasattr(body, "observation"):
        return np.asarray(body.observation, dtype=np.float32)
    return np.asarray(body.observations, dtype=np.float32)


def _npy_error(msg: str) -> InputError:
    return InputError([{"loc": ["body"], "msg": msg, "type": "npy_error"}])


def _npy_header(raw: bytes | bytearray) -> tuple[tuple[Any, ...], bool, np.dtype, int]:
    """Shape, fortran order, dtype and header length of an ``.npy`` body; reads only
    the header (a literal dict numpy parses without evaluating code)."""
    head = io.BytesIO(bytes(raw[: NPY_MAX_HEADER_BYTES + 16]))
    try:
        version = npy_format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(head)
        else:
            raise ValueError(f"format version {version} (1.0 and 2.0 are read)")
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise _npy_error(f"not a NumPy .npy array: {str(exc)[:MAX_MESSAGE_CHARS]}") from None
    return shape, fortran, dtype, head.tell()


def read_npy(raw: bytes | bytearray, dim: int, max_batch: int) -> np.ndarray:
    """An ``.npy`` body as a float array ``[D]`` or ``[B, D]`` (never unpickles).

    The header's dtype, shape and announced data size are checked against ``dim``,
    ``max_batch`` and the body length before any array is made: a small body that claims
    a huge array allocates nothing.

    Raises
    ------
    InputError
        naming what is wrong (not an ``.npy`` array, dtype, shape, batch size, truncated
        data or bytes after the data).
    """
    shape, fortran, dtype, header_len = _npy_header(raw)
    if dtype.kind != "f" or dtype.itemsize not in NPY_ITEMSIZES or dtype.fields is not None:
        raise _npy_error(f"expected float32 or float64 values, got dtype {dtype.str!r}")
    if len(shape) not in (1, 2) or shape[-1] != dim or (len(shape) == 2 and shape[0] < 1):
        raise _npy_error(f"expected shape ({dim},) or (B, {dim}) with B >= 1, got {shape}")
    if len(shape) == 2 and shape[0] > max_batch:
        raise _npy_error(f"at most {max_batch} observations per request, got {shape[0]}")
    count = math.prod(shape)
    announced = count * dtype.itemsize
    held = len(raw) - header_len
    if held < announced:
        raise _npy_error(
            f"truncated: the header announces {announced} bytes of data for shape {shape}, "
            f"the body holds {held}"
        )
    if held > announced:
        raise _npy_error(
            f"{held - announced} bytes after the array data (the header announces "
            f"{announced} bytes for shape {shape})"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len)
    return np.ascontiguousarray(arr.reshape(shape, order="F" if fortran else "C"))


# ---------------------------------------------------------------- JSON parsing processes

_worker_adapter: TypeAdapter | None = None
_worker_limits = (0, 0)  # observation length, max batch


def init_json_worker(dim: int, max_batch: int, service_pid: int) -> None:
    """Initializer of a JSON-parsing process: exit with the service, build the schema."""
    global _worker_adapter, _worker_limits
    _exit_with(service_pid)
    lower_priority()
    _worker_adapter = TypeAdapter(request_model(dim, max_batch))
    _worker_limits = (dim, max_batch)


def parse_json_in_worker(raw: bytes | bytearray) -> tuple[bool, Any]:
    """``(True, array)`` or ``(False, 422 error items)`` (errors travel as data: an
    exception with custom arguments does not survive pickling)."""
    assert _worker_adapter is not None, "init_json_worker did not run"
    dim, max_batch = _worker_limits
    try:
        _count_json_items(raw, dim, max_batch)
        return True, parse_json(_worker_adapter, raw)
    except InputError as exc:
        return False, exc.errors


def _count_json_items(raw: bytes | bytearray, dim: int, max_batch: int) -> None:
    """Refuse, unparsed, a body with more strings, arrays or numbers than any valid one.

    Parsing builds a tree of every JSON value (tens of bytes each, whatever it is): past
    these counts a body could cost many times what the largest valid batch costs.
    """

    def refuse(msg: str) -> InputError:
        return InputError([{"loc": ["body"], "msg": msg, "type": "too_long"}])

    strings = raw.count(b'"') // 2
    if strings > MAX_JSON_STRINGS:
        raise refuse(
            f"{strings} JSON strings where numbers are expected (only the key "
            "'observation' or 'observations' is a string)"
        )
    if raw.count(b"[") > max_batch + 1:
        raise refuse(f"more than {max_batch} observations (JSON arrays) in one request")
    if raw.count(b",") >= max_batch * dim + strings:
        raise refuse(f"more than {max_batch} x {dim} numbers in one request")


def lower_priority() -> None:
    """Lower the calling thread's scheduling priority by WORKER_NICE (Linux: per thread;
    elsewhere the whole process, or nothing)."""
    import os
    import threading

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE)
    except (AttributeError, OSError):  # no setpriority, or not allowed: keep the priority
        pass


def ping() -> bool:
    """A no-op task: starting the processes before the first request needs them."""
    return True


def _exit_with(pid: int) -> None:
    """Exit this process as soon as process ``pid`` (the service) ends, even by SIGKILL.

    A pool worker waits on its task queue forever, and it holds the forkserver's
    liveness pipe, so nothing else would end it. Waits on a pidfd (no pid reuse race);
    polls where there is none.
    """
    import os
    import select
    import threading
    import time

    def wait_pidfd(fd: int) -> None:
        select.select([fd], [], [])

    def poll() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(EXIT_POLL_S)

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3), or already gone
        wait, args = poll, ()
    else:
        wait, args = wait_pidfd, (fd,)

    def watch() -> None:
        wait(*args)
        os._exit(0)

    threading.Thread(target=watch, name="gridrl-exit-with-service", daemon=True).start()
