"""Dynamic state of the simulation core: what changes from hour to hour.

Arrays carry a leading batch axis ``B`` (episodes) and a site axis ``N``; queues have a
bucket axis of length ``S + 1`` (index 0 = overdue, index ``1 + s`` = slack ``s`` hours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EnvState"]


@dataclass(frozen=True, eq=False)
class EnvState:
    """State at the start of an hour (float64).

    Attributes
    ----------
    queue_gpu_h : ndarray
        ``[B, N, S + 1]`` flexible work waiting at each site (GPU-h of uncapped work),
        by slack bucket: index 0 overdue, index ``1 + s`` may still wait ``s`` hours.
    transit_gpu_h : ndarray
        ``[B, N, S + 1]`` work migrated in the previous step, by *destination* site, in
        the buckets it will have on arrival (already aged if that step ended an hour).
    soc_kwh : ndarray
        ``[B, N]`` battery state of charge.
    cap : ndarray
        ``[B, N]`` mean power cap fraction applied in the previous hour (1 at reset).
    """

    queue_gpu_h: np.ndarray
    transit_gpu_h: np.ndarray
    soc_kwh: np.ndarray
    cap: np.ndarray

    @property
    def batch_size(self) -> int:
        """``B``."""
        return self.soc_kwh.shape[0]

    def select(self, rows: np.ndarray | slice | int) -> EnvState:
        """The state of some episodes (rows of the batch axis), as copies."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        return EnvState(
            self.queue_gpu_h[rows].copy(),
            self.transit_gpu_h[rows].copy(),
            self.soc_kwh[rows].copy(),
            self.cap[rows].copy(),
        )

    def assign(self, rows: np.ndarray, other: EnvState) -> None:
        """Overwrite the episodes ``rows`` in place with ``other`` (same number of rows)."""
        self.queue_gpu_h[rows] = other.queue_gpu_h
        self.transit_gpu_h[rows] = other.transit_gpu_h
        self.soc_kwh[rows] = other.soc_kwh
        self.cap[rows] = other.cap

    def work_gpu_h(self) -> np.ndarray:
        """``[B, N]`` flexible work held: queued (overdue included) plus in transit."""
        return self.queue_gpu_h.sum(-1) + self.transit_gpu_h.sum(-1)
