"""The simulation step: its length, hours to steps, and hourly inputs as step inputs.

One step lasts ``env.step_minutes`` (60, 30 or 15). The configuration keeps every
duration in hours (deadline slack, transit, notice, horizons, episode length) and the
core works in steps; this module is the one place that converts between them. Power
stays kW and energy is ``kW x step_h`` kWh in every equation (:mod:`gridrl.env.core`).

Hourly signals become step signals in :func:`expand_exo` (the method of each signal is
:data:`EXPANSION`, recorded in the expanded data's provenance):

- ``held``: prices, carbon, headroom, temperature, inference demand and PV and wind
  power keep the hour's value in each of its steps. The data sets hold hourly means
  (PV and wind as energy over the hour), so holding keeps every hour's energy exactly;
  a linear interpolation between hourly means would move energy between hours.
- ``split``: flexible arrivals (GPU-h per hour) are shared evenly by the hour's steps.
- ``countdown``: announced event windows (``dr_*``, ``outage_*``, hours until start and
  hours left) count down by ``step_h`` in each step of the hour, so the windows are
  resolved at the step and an event that is on at the start of the hour stays on in
  every step of it.

Forecast cubes stay hourly: a step sees the cube issued at the start of its hour
(:func:`expand_forecast`), the causal choice (nothing later was known then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gridrl.errors import GridrlError

__all__ = [
    "EXPANSION", "STEP_MINUTES", "ClockError", "HeldForecast", "expand_exo",
    "expand_forecast", "hour_ends", "hour_phase", "hours_to_steps", "step_hours",
    "steps_per_hour",
]

#: Step lengths the simulation supports (minutes); each divides an hour.
STEP_MINUTES = (60, 30, 15)
MINUTES_PER_HOUR = 60
NS_PER_MINUTE = 60_000_000_000

#: How each hourly signal becomes a step signal (see the module doc).
EXPANSION = {
    "pv_kw": "held", "wind_kw": "held", "headroom_kw": "held", "carbon_g_per_kwh": "held",
    "price_per_mwh": "held", "inference_gpus": "held", "flexible_gpu_h": "split",
    "temp_c": "held", "dr_starts_in_h": "countdown", "dr_remaining_h": "countdown",
    "dr_limit_kw": "held", "outage_starts_in_h": "countdown",
    "outage_remaining_h": "countdown",
}
# countdown pairs (hours until start, hours left): the two move together
_COUNTDOWNS = (("dr_starts_in_h", "dr_remaining_h"),
               ("outage_starts_in_h", "outage_remaining_h"))


class ClockError(GridrlError, ValueError):
    """A step length or duration that does not fit the simulation's steps."""


def steps_per_hour(step_minutes: int) -> int:
    """Steps in an hour (1, 2 or 4).

    Raises
    ------
    ClockError
        A step length outside :data:`STEP_MINUTES` (naming ``env.step_minutes``).
    """
    if step_minutes not in STEP_MINUTES:
        raise ClockError(f"env.step_minutes = {step_minutes!r}: expected one of "
                         f"{', '.join(map(str, STEP_MINUTES))}")
    return MINUTES_PER_HOUR // int(step_minutes)


def step_hours(step_minutes: int) -> float:
    """Length of a step in hours (``step_h``: 1, 0.5 or 0.25, exact in binary)."""
    return 1.0 / steps_per_hour(step_minutes)


def hours_to_steps(hours: float, step_minutes: int, what: str = "duration") -> int:
    """Whole steps in ``hours`` (hours from the config, steps for the core).

    Raises
    ------
    ClockError
        When ``hours`` is not a whole number of steps (``what`` names the key).
    """
    steps = hours * steps_per_hour(step_minutes)
    whole = round(steps)
    if abs(steps - whole) > 1e-9:
        raise ClockError(f"{what} = {hours} h is not a whole number of "
                         f"{step_minutes}-minute steps")
    return int(whole)


def hour_ends(steps: int, step_minutes: int) -> np.ndarray:
    """``[steps]`` float64: 1 where the step of that row is the last of its hour (queues
    age then), else 0: every step at 60 minutes. Row 0 starts an hour (the rows are an
    hourly expansion, :func:`expand_exo`), whatever the stamps' minute of the hour: a
    zone at UTC+5:30 has hours ending at :30 UTC."""
    k = steps_per_hour(step_minutes)
    return ((np.arange(steps) + 1) % k == 0).astype(np.float64)


def hour_phase(rows: np.ndarray | int, step_minutes: int) -> np.ndarray:
    """Steps of each row's hour before it (0 at the first step of an hour, always 0 at
    60 minutes), from the rows' positions (row 0 starts an hour, see :func:`hour_ends`)."""
    return np.asarray(rows, dtype=np.int64) % steps_per_hour(step_minutes)


def _step_index(index: pd.DatetimeIndex, k: int) -> pd.DatetimeIndex:
    offsets = np.arange(k) * (MINUTES_PER_HOUR // k) * NS_PER_MINUTE
    stamps = (index.asi8[:, None] + offsets[None]).ravel()
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True), name=index.name)


def expand_exo(index: pd.DatetimeIndex, exo: np.ndarray, signals: tuple[str, ...],
               step_minutes: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Hourly rows ``exo[T, N, K]`` (``signals`` order) as ``T k`` step rows and their
    UTC index (each step stamped with its start), by :data:`EXPANSION`."""
    k = steps_per_hour(step_minutes)
    if k == 1:
        return index, exo
    unknown = [s for s in signals if s not in EXPANSION]
    if unknown:
        raise ClockError(f"signals {unknown} have no expansion to sub-hourly steps; "
                         f"known: {sorted(EXPANSION)}")
    out = np.repeat(exo, k, axis=0)
    pos = {s: j for j, s in enumerate(signals)}
    out[..., pos["flexible_gpu_h"]] /= k
    step_h = 1.0 / k
    into = np.tile(np.arange(k) * step_h, len(index))[:, None]  # hours into the hour
    for start, left in _COUNTDOWNS:
        s_col, l_col = out[..., pos[start]], out[..., pos[left]]
        announced = l_col > 0.0
        upcoming = announced & (s_col > 0.0)
        until = s_col - into  # <= 0: the event started inside the hour
        out[..., pos[start]] = np.where(upcoming, np.maximum(until, 0.0), s_col)
        left_now = np.where(upcoming, l_col + np.minimum(until, 0.0), l_col - into)
        out[..., pos[left]] = np.where(announced, np.maximum(left_now, 0.0), l_col)
    return _step_index(index, k), out


@dataclass(frozen=True, eq=False)
class HeldForecast:
    """An hourly forecast cube seen from step rows: row ``t`` of the steps is the cube
    issued at the start of the step's hour (same attributes as the cube)."""

    values: np.ndarray
    index: pd.DatetimeIndex
    sites: list[str]
    signals: list[str]
    horizons_h: list[int]
    quantiles: list[float]
    provenance: dict
    mode: str | None = None


def expand_forecast(cube: Any, step_minutes: int) -> Any:
    """The hourly ``cube`` held over each hour's steps (the cube itself at 60 minutes)."""
    k = steps_per_hour(step_minutes)
    if k == 1 or cube is None:
        return cube
    return HeldForecast(
        values=np.repeat(cube.values, k, axis=0), index=_step_index(cube.index, k),
        sites=list(cube.sites), signals=list(cube.signals),
        horizons_h=list(cube.horizons_h), quantiles=list(cube.quantiles),
        provenance={"issued": "at the start of each step's hour (held over its "
                              f"{k} steps of {step_minutes} min)"},
        mode=getattr(cube, "mode", None))
