"""Where units run: a local process pool or a Ray cluster, behind one generator.

Both backends take a module-level function and a list of picklable payloads and yield
``(index, result, error)`` as units finish, in completion order. The same study file
runs unchanged on both: only ``backend.kind`` (or ``--backend``) differs.

Ray: ``address: auto`` joins the cluster of ``ray start`` on this machine (or the one
``RAY_ADDRESS`` names), ``host:port`` joins a given one, ``local`` starts a private
single-machine instance. Units write into the run folder, so on a multi-machine
cluster the run folder must be on a filesystem every node sees.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from gridrl.errors import GridrlError

UnitResult = tuple[int, Any, str | None]


class BackendError(GridrlError, RuntimeError):
    """A backend cannot start (no Ray cluster at the address, Ray not installed)."""


def _guarded(fn: Callable[[Any], Any], payload: Any) -> tuple[Any, str | None]:
    # Errors travel back as text: a unit's failure must not stop the other units, and a
    # traceback string pickles everywhere (some exception types do not).
    try:
        return fn(payload), None
    except Exception:  # noqa: BLE001 - reported per unit, the run goes on
        return None, traceback.format_exc()


def run_local(
    fn: Callable[[Any], Any],
    payloads: list[Any],
    *,
    max_workers: int,
    poll: Callable[[], None] | None = None,
    poll_every_s: float = 1.0,
) -> Iterator[UnitResult]:
    """Run ``fn(payload)`` for every payload in a process pool.

    Parameters
    ----------
    fn
        A module-level (importable) function.
    payloads
        Picklable arguments, one per unit.
    max_workers
        Worker processes (each unit runs in one).
    poll
        Called about every ``poll_every_s`` seconds while units run (progress display).

    Yields
    ------
    (index, result, error)
        ``error`` is a traceback string when the unit raised, else None.
    """
    if not payloads:
        return
    # spawn, not fork: torch and BLAS thread pools do not survive a fork safely
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max_workers, mp_context=ctx) as pool:
        futures: dict[Future, int] = {
            pool.submit(_guarded, fn, p): i for i, p in enumerate(payloads)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=poll_every_s, return_when=FIRST_COMPLETED)
            if poll is not None:
                poll()
            for fut in done:
                result, error = fut.result()
                yield futures[fut], result, error


def run_ray(
    fn: Callable[[Any], Any],
    payloads: list[Any],
    *,
    address: str,
    num_cpus_per_unit: float = 1.0,
    poll: Callable[[], None] | None = None,
    poll_every_s: float = 1.0,
) -> Iterator[UnitResult]:
    """Run ``fn(payload)`` for every payload as Ray tasks (one remote call per unit).

    Parameters
    ----------
    address
        ``auto``, ``host:port`` or ``local`` (see the module docstring). When Ray is
        already initialised in this process, that connection is used as it is.
    num_cpus_per_unit
        CPUs Ray reserves per unit: it bounds how many units run at once.

    Raises
    ------
    BackendError
        when Ray is not installed or no cluster answers at ``address``.
    """
    if not payloads:
        return
    try:
        import ray
    except ImportError as exc:
        raise BackendError("backend ray needs the ray extra: pip install 'gridrl[ray]'") from exc
    started_here = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise BackendError(
                f"no Ray cluster at address {address!r} ({exc}); start one with "
                "`ray start --head` or set backend.address"
            ) from exc
        started_here = True
    try:
        remote = ray.remote(num_cpus=num_cpus_per_unit, max_retries=0)(_guarded)
        refs = {remote.remote(fn, p): i for i, p in enumerate(payloads)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=poll_every_s)
            if poll is not None:
                poll()
            for ref in done:
                try:
                    result, error = ray.get(ref)
                except Exception:  # noqa: BLE001 - a lost worker fails its unit only
                    result, error = None, traceback.format_exc()
                yield refs[ref], result, error
    finally:
        if started_here:
            ray.shutdown()


def run_units(
    fn: Callable[[Any], Any],
    payloads: list[Any],
    *,
    kind: str,
    max_workers: int,
    address: str = "auto",
    poll: Callable[[], None] | None = None,
) -> Iterator[UnitResult]:
    """Dispatch to :func:`run_local` or :func:`run_ray` by ``kind`` (``local`` | ``ray``)."""
    if kind == "local":
        return run_local(fn, payloads, max_workers=max_workers, poll=poll)
    if kind == "ray":
        return run_ray(fn, payloads, address=address, poll=poll)
    raise BackendError(f"unknown backend {kind!r}; expected local or ray")
