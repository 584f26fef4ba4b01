"""GPU power limits behind one small interface: the real NVML one and an in-memory one.

:class:`GpuPower` is all the node agent needs: list the GPUs, read a GPU's allowed range
and default limit, read and set its power limit. Limits are milliwatts, NVML's own unit,
so nothing is rounded twice. :class:`PynvmlPower` talks to the driver through
``nvidia-ml-py`` (module ``pynvml``, the ``node`` extra); setting a limit needs root.
:class:`MemoryGpuPower` keeps the limits in memory (for the agent's tests and for trying
the agent on a machine without GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gridrl.errors import GridrlError

# Board limits of the in-memory GPUs: an A100 SXM4 80 GB (min 100 W, max = default 400 W).
MEMORY_GPU_MIN_MW = 100_000
MEMORY_GPU_MAX_MW = 400_000


class NvmlError(GridrlError, RuntimeError):
    """NVML is missing or refused a call; the message names the GPU and the call."""


@dataclass(frozen=True)
class PowerLimits:
    """A GPU's settable power limit range and its default limit (mW)."""

    min_mw: int
    max_mw: int
    default_mw: int

    def clamp(self, limit_mw: int) -> int:
        """``limit_mw`` moved into the allowed range."""
        return min(max(int(limit_mw), self.min_mw), self.max_mw)


class GpuPower(Protocol):
    """Read and set the power limits of a node's GPUs (indices as NVML numbers them)."""

    def gpu_indices(self) -> list[int]: ...

    def limits(self, index: int) -> PowerLimits: ...

    def power_limit_mw(self, index: int) -> int: ...

    def set_power_limit_mw(self, index: int, limit_mw: int) -> None: ...


def _pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise NvmlError(
            "nvidia-ml-py is not installed: pip install 'gridrl[node]' (module pynvml)"
        ) from None
    return pynvml


class PynvmlPower:
    """:class:`GpuPower` through NVML. ``close()`` (or ``with``) shuts NVML down.

    Raises
    ------
    NvmlError
        when the library or the driver is missing (``nvmlInit`` fails).
    """

    def __init__(self) -> None:
        self._nv = _pynvml()
        try:
            self._nv.nvmlInit()
        except self._nv.NVMLError as exc:
            raise NvmlError(f"NVML cannot start (no NVIDIA driver or GPU?): {exc}") from None

    def __enter__(self) -> PynvmlPower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._nv.nvmlShutdown()

    def _call(self, what: str, index: int | None, fn: Any, *args: Any) -> Any:
        try:
            handle = () if index is None else (self._nv.nvmlDeviceGetHandleByIndex(index),)
            return fn(*handle, *args)
        except self._nv.NVMLError as exc:
            where = "" if index is None else f"GPU {index}: "
            raise NvmlError(f"{where}{what} failed: {exc}") from None

    def gpu_indices(self) -> list[int]:
        return list(range(self._call("nvmlDeviceGetCount", None, self._nv.nvmlDeviceGetCount)))

    def limits(self, index: int) -> PowerLimits:
        nv = self._nv
        lo, hi = self._call(
            "nvmlDeviceGetPowerManagementLimitConstraints",
            index,
            nv.nvmlDeviceGetPowerManagementLimitConstraints,
        )
        default = self._call(
            "nvmlDeviceGetPowerManagementDefaultLimit",
            index,
            nv.nvmlDeviceGetPowerManagementDefaultLimit,
        )
        return PowerLimits(int(lo), int(hi), int(default))

    def power_limit_mw(self, index: int) -> int:
        fn = self._nv.nvmlDeviceGetPowerManagementLimit
        return int(self._call("nvmlDeviceGetPowerManagementLimit", index, fn))

    def set_power_limit_mw(self, index: int, limit_mw: int) -> None:
        fn = self._nv.nvmlDeviceSetPowerManagementLimit
        self._call("nvmlDeviceSetPowerManagementLimit", index, fn, int(limit_mw))


@dataclass
class MemoryGpuPower:
    """:class:`GpuPower` in memory: ``count`` GPUs with the same limits, at their default.

    ``sets`` lists every ``(index, limit_mw)`` written, in order."""

    count: int
    board: PowerLimits = PowerLimits(MEMORY_GPU_MIN_MW, MEMORY_GPU_MAX_MW, MEMORY_GPU_MAX_MW)
    limits_mw: dict[int, int] = field(default_factory=dict)
    sets: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.count):
            self.limits_mw.setdefault(i, self.board.default_mw)

    def _check(self, index: int) -> None:
        if index not in self.limits_mw:
            raise NvmlError(f"GPU {index}: no such GPU (this node has {self.count})")

    def gpu_indices(self) -> list[int]:
        return sorted(self.limits_mw)

    def limits(self, index: int) -> PowerLimits:
        self._check(index)
        return self.board

    def power_limit_mw(self, index: int) -> int:
        self._check(index)
        return self.limits_mw[index]

    def set_power_limit_mw(self, index: int, limit_mw: int) -> None:
        self._check(index)
        if not self.board.min_mw <= limit_mw <= self.board.max_mw:
            # NVML answers NVML_ERROR_INVALID_ARGUMENT outside the constraints
            raise NvmlError(
                f"GPU {index}: limit {limit_mw} mW outside [{self.board.min_mw}, "
                f"{self.board.max_mw}] mW"
            )
        self.limits_mw[index] = int(limit_mw)
        self.sets.append((index, int(limit_mw)))
