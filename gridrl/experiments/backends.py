"""Where units run: a local process pool or a Ray cluster, behind one generator.

Both backends take a module-level function and a list of picklable payloads and yield
``(index, result, error)`` as units finish, in completion order. The same study file
runs unchanged on both: only ``backend.kind`` (or ``--backend``) differs.

Ray: ``address: auto`` joins the cluster of ``ray start`` on this machine (or the one
``RAY_ADDRESS`` names), ``host:port`` joins a given one, ``local`` starts a private
single-machine instance. Units write into the run folder, so on a multi-machine
cluster the run folder must be on a filesystem every node sees.

Local workers end with their driver, however it ends (even ``kill -9``): a worker left
behind would go on with the queued units while a resumed run starts them again. Each
worker's initializer (:func:`die_with_parent`) asks Linux for ``SIGKILL`` when its
parent dies (``prctl(PR_SET_PDEATHSIG)``: immediate, even while the worker is inside
numba or torch code that holds the GIL) and starts a watchdog thread that compares
``os.getppid()`` with the driver's pid every second (portable: macOS has no
``prctl``). A process group alone would not do: killing the driver's pid does not
signal its group. Ray workers belong to the Ray cluster, which ends a dead driver's
tasks itself.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from gridrl.errors import GridrlError

UnitResult = tuple[int, Any, str | None]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_CHECK_S = 1.0  # watchdog period: a worker outlives its driver by at most this


class BackendError(GridrlError, RuntimeError):
    """A backend cannot start (no Ray cluster at the address, Ray not installed)."""


def _guarded(fn: Callable[[Any], Any], payload: Any) -> tuple[Any, str | None]:
    # Errors travel back as text: a unit's failure must not stop the other units, and a
    # traceback string pickles everywhere (some exception types do not).
    try:
        return fn(payload), None
    except Exception:  # noqa: BLE001 - reported per unit, the run goes on
        return None, traceback.format_exc()


def die_with_parent(parent_pid: int, check_every_s: float = PARENT_CHECK_S) -> None:
    """Worker initializer: end this process when ``parent_pid`` (the driver) ends.

    Linux delivers ``SIGKILL`` on the parent's death (``PR_SET_PDEATHSIG``; note that
    it fires when the *thread* that started the worker ends: the pool is started by
    the thread that iterates :func:`run_local`, which lives until the last result).
    Everywhere, a daemon thread checks ``os.getppid()`` every ``check_every_s``: a
    worker re-parented to init (or a subreaper) sees another parent pid and exits.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # the watchdog covers failure
    if os.getppid() != parent_pid:  # the driver died before the line above took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid, check_every_s), daemon=True,
        name="gridrl-parent-watch",
    ).start()


def _watch_parent(parent_pid: int, check_every_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(check_every_s)
    os._exit(1)  # nothing to save: units write atomically, an unfinished unit reruns


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
    pool = ProcessPoolExecutor(
        max_workers=max_workers, mp_context=ctx,
        initializer=die_with_parent, initargs=(os.getpid(),),
    )
    try:
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
    except BaseException:
        # stopped (Ctrl-C, SIGTERM, an error in the caller): running units end now.
        # Ctrl-C reaches the workers through the terminal, SIGTERM only the driver.
        _terminate_workers(pool)
        raise
    finally:
        # queued units do not start
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's worker processes (and no other process of the caller's)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


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
