"""What the environment reads: exogenous signal arrays and a forecast cube, validated.

The core never touches files. ``EnvData`` holds the exogenous arrays of every site, one
row a step (``exo[T, N, K]`` in ``core.EXO_SIGNALS`` order, float64; hourly rows become
step rows in :func:`gridrl.env.clock.expand_exo`) and an optional forecast cube
(:class:`gridrl.forecast.cube.ForecastCube`, or any object with the same ``values``,
``index``, ``sites``, ``signals``, ``horizons_h`` and ``quantiles``). Build it from arrays,
from a :class:`~gridrl.data.signals.Signals` table, or from a scenario with
:func:`load_env_data` (builds the signals and the cube).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.env.clock import (
    EXPANSION,
    MINUTES_PER_HOUR,
    NS_PER_MINUTE,
    STEP_MINUTES,
    expand_exo,
    expand_forecast,
)
from gridrl.env.kernel import EXO_SIGNALS
from gridrl.errors import GridrlError
from gridrl.scenario import Scenario

__all__ = ["EnvData", "EnvDataError", "load_env_data", "make_forecast"]

# Exogenous signals that cannot be negative (price can; temperature can).
_NONNEG = {"pv_kw", "wind_kw", "headroom_kw", "carbon_g_per_kwh", "inference_gpus",
           "flexible_gpu_h", "dr_starts_in_h", "dr_remaining_h", "dr_limit_kw",
           "outage_starts_in_h", "outage_remaining_h"}


class EnvDataError(GridrlError, ValueError):
    """Exogenous arrays or forecasts the environment cannot use (names site, signal, hour)."""


@dataclass(frozen=True, eq=False)
class EnvData:
    """Validated inputs of an environment.

    Attributes
    ----------
    index : pandas.DatetimeIndex
        UTC timestamps of the rows (the start of each step), length ``T``, spaced by one
        of :data:`gridrl.env.clock.STEP_MINUTES`. Row 0 starts an hour: hours (deadlines,
        queue ageing) are counted from it, whatever the minute of the stamps.
    exo : ndarray
        ``[T, N, len(EXO_SIGNALS)]`` float64.
    site_names : tuple of str
    forecast : ForecastCube or None
        Issued at each row (``values[t]`` forecasts rows ``t + h``); rows aligned with
        ``index``. None: observations carry no forecast fields.
    provenance : list of dict
        What was done to the signals (the step expansion's methods among them).
    """

    index: pd.DatetimeIndex
    exo: np.ndarray
    site_names: tuple[str, ...]
    forecast: Any = None
    provenance: list = field(default_factory=list)

    @classmethod
    def from_arrays(cls, index: pd.DatetimeIndex, exo: np.ndarray, site_names: list[str] |
                    tuple[str, ...], forecast: Any = None,
                    provenance: list | None = None) -> EnvData:
        """Validate and wrap arrays.

        Raises
        ------
        EnvDataError
            Wrong shape, rows not spaced by one step length or non-UTC index, non-finite
            or negative values
            (naming the site, signal, row and time), or a forecast cube that does not
            match (rows, sites, NaN).
        """
        exo = np.ascontiguousarray(exo, dtype=np.float64)
        site_names = tuple(site_names)
        if not isinstance(index, pd.DatetimeIndex) or index.tz is None or str(index.tz) != "UTC":
            raise EnvDataError("index: expected a UTC pandas.DatetimeIndex")
        expect = (len(index), len(site_names), len(EXO_SIGNALS))
        if exo.shape != expect:
            raise EnvDataError(
                f"exo has shape {exo.shape}, expected {expect} = (hours, sites, "
                f"signals {EXO_SIGNALS})"
            )
        if len(index) > 1:
            gaps = np.unique(np.diff(index.asi8))
            if len(gaps) != 1 or gaps[0] not in [m * NS_PER_MINUTE for m in STEP_MINUTES]:
                raise EnvDataError(
                    "index: expected consecutive steps of one length among "
                    f"{', '.join(map(str, STEP_MINUTES))} minutes")
        for k, name in enumerate(EXO_SIGNALS):
            col = exo[..., k]
            bad = ~np.isfinite(col)
            what = "not finite"
            if not bad.any() and name in _NONNEG:
                bad = col < 0
                what = "negative"
            if bad.any():
                t, n = np.argwhere(bad)[0]
                raise EnvDataError(
                    f"site {site_names[n]!r}, signal {name!r}, row {t} ({index[t]}): "
                    f"{what} value {col[t, n]!r} ({int(bad.sum())} such values)"
                )
        data = cls(index, exo, site_names, forecast, list(provenance or []))
        if forecast is not None:
            data._check_forecast()
        return data

    @classmethod
    def from_signals(cls, signals: Any, site_names: list[str] | tuple[str, ...],
                     forecast: Any = None) -> EnvData:
        """From a :class:`~gridrl.data.signals.Signals` table holding ``EXO_SIGNALS`` for
        every site (raises its ``SignalError`` naming a missing column)."""
        exo = signals.array(list(EXO_SIGNALS), list(site_names))
        return cls.from_arrays(signals.index, exo, site_names, forecast,
                               list(getattr(signals, "provenance", []) or []))

    def _check_forecast(self) -> None:
        fc = self.forecast
        if len(fc.index) != len(self.index) or not fc.index.equals(self.index):
            raise EnvDataError(
                f"forecast cube rows ({len(fc.index)}, {fc.index[0]}..{fc.index[-1]}) do not "
                f"match the signals ({len(self.index)}, {self.index[0]}..{self.index[-1]})"
            )
        missing = [s for s in self.site_names if s not in fc.sites]
        if missing:
            raise EnvDataError(f"forecast cube has no site(s) {missing}; it has {fc.sites}")
        if not np.isfinite(fc.values).all():
            pos = np.argwhere(~np.isfinite(fc.values))[0]
            raise EnvDataError(
                f"forecast cube holds non-finite values, first at row {pos[0]} "
                f"({self.index[pos[0]]}), site {fc.sites[pos[1]]!r}, signal "
                f"{fc.signals[pos[2]]!r}, horizon {fc.horizons_h[pos[3]]} h"
            )

    @property
    def steps(self) -> int:
        """Number of rows ``T`` (steps)."""
        return len(self.index)

    @property
    def step_minutes(self) -> int:
        """Minutes between rows (60 for a single row)."""
        if len(self.index) < 2:
            return MINUTES_PER_HOUR
        return int((self.index.asi8[1] - self.index.asi8[0]) // NS_PER_MINUTE)

    @property
    def hours(self) -> float:
        """Hours the rows cover (steps x step hours)."""
        return self.steps * self.step_minutes / MINUTES_PER_HOUR

    def at_step(self, step_minutes: int) -> EnvData:
        """These hourly rows as rows of ``step_minutes`` (:func:`gridrl.env.clock.expand_exo`;
        the forecast cube is held over each hour's steps), the methods recorded in
        ``provenance``; itself at 60 minutes.

        Raises
        ------
        EnvDataError
            When the rows are not hourly.
        """
        if step_minutes == self.step_minutes:
            return self
        if self.step_minutes != MINUTES_PER_HOUR:
            raise EnvDataError(f"signals at {self.step_minutes}-minute rows: only hourly rows "
                               f"expand to {step_minutes}-minute steps")
        index, exo = expand_exo(self.index, self.exo, EXO_SIGNALS, step_minutes)
        record = {"step": f"hourly rows expanded to {step_minutes}-minute steps",
                  "methods": {name: EXPANSION[name] for name in EXO_SIGNALS},
                  "forecast": "hourly cube held: each step sees the cube issued at the "
                              "start of its hour"}
        return EnvData.from_arrays(index, exo, self.site_names,
                                   expand_forecast(self.forecast, step_minutes),
                                   [*self.provenance, record])

    def forecast_block(self, targets: list[str], horizons_h: list[int],
                       quantiles: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """P50 and spread (highest minus lowest quantile) ``[T, N, K, H]`` float32 each,
        in ``site_names`` order.

        Raises
        ------
        EnvDataError
            A target, horizon or quantile (0.5 included) the cube does not hold.
        """
        fc = self.forecast
        pos_site = [fc.sites.index(s) for s in self.site_names]
        try:
            k = [fc.signals.index(s) for s in targets]
        except ValueError:
            raise EnvDataError(
                f"forecast cube lacks a target of env.forecast_targets {targets}; it holds "
                f"{fc.signals}"
            ) from None
        try:
            h = [fc.horizons_h.index(x) for x in horizons_h]
        except ValueError:
            raise EnvDataError(
                f"forecast cube lacks a horizon of env.forecast_horizons_h {horizons_h}; it "
                f"holds {fc.horizons_h}"
            ) from None
        qs = np.asarray(fc.quantiles, dtype=float)
        pos_q = [int(np.argmin(np.abs(qs - q))) for q in quantiles]
        if any(abs(qs[i] - q) > 1e-9 for i, q in zip(pos_q, quantiles, strict=True)):
            raise EnvDataError(
                f"forecast cube quantiles {fc.quantiles} lack one of env.forecast_quantiles "
                f"{quantiles}"
            )
        v = fc.values[:, pos_site][:, :, k][:, :, :, h]  # [T, N, K, H, Q]
        p50 = v[..., pos_q[quantiles.index(0.5)]]
        spread = v[..., pos_q[-1]] - v[..., pos_q[0]]
        return np.ascontiguousarray(p50, np.float32), np.ascontiguousarray(spread, np.float32)


def load_env_data(
    scenario: Scenario,
    forecast_mode: str | None,
    *,
    base_dir: str | Path | None = None,
    forecast_config: Any = None,
    cache: bool = True,
    seed: int = 0,
) -> EnvData:
    """Build a scenario's signals (:func:`gridrl.data.build.build_signals`) and forecast
    cube (:func:`gridrl.forecast.cube.make_cube`, targets, horizons and quantiles from
    ``scenario.env``) and wrap them.

    Parameters
    ----------
    scenario : Scenario
    forecast_mode : str or None
        ``perfect``, ``persistence``, ``none``, ``noisy(sigma)`` or ``lightgbm``; None
        builds no cube (observations without forecast fields).
    base_dir : path, optional
        Folder relative CSV paths in the scenario are read from.
    forecast_config : ForecastConfig, optional
        Forecaster config (``lightgbm`` mode).
    cache : bool
        Use the on-disk cache of built signals (LightGBM cubes are always cached).
    seed : int
        Seeds ``noisy`` and ``lightgbm`` forecasts.
    """
    from gridrl.data.build import build_signals

    sites = [s.name for s in scenario.expanded_sites()]
    signals = build_signals(scenario, base_dir=base_dir, cache=cache)
    cube = None
    if forecast_mode is not None:
        cube = make_forecast(scenario, signals, forecast_mode, forecast_config=forecast_config,
                             seed=seed)
    data = EnvData.from_signals(signals, sites, cube)
    return data.at_step(scenario.env.step_minutes)


def make_forecast(scenario: Scenario, signals: Any, forecast_mode: str, *,
                  forecast_config: Any = None, seed: int = 0) -> Any:
    """The forecast cube of ``scenario.env.forecast_targets`` at its horizons and quantiles
    (:func:`gridrl.forecast.cube.make_cube`); site locations come from the weather files
    when the targets include PV (for its night bound and solar features)."""
    from gridrl.forecast.cube import make_cube

    env = scenario.env
    locations = None
    if "pv_kw" in env.forecast_targets:
        from gridrl.forecast.errors import ForecastError
        from gridrl.forecast.sites import site_locations

        try:
            locations = site_locations(scenario)
        except ForecastError:
            if forecast_mode.startswith("lightgbm"):
                raise
            locations = None  # cheap modes need no solar geometry
    return make_cube(
        signals, forecast_mode, targets=env.forecast_targets,
        horizons_h=env.forecast_horizons_h, quantiles=env.forecast_quantiles,
        config=forecast_config, seed=seed, locations=locations,
        periods=scenario.periods,  # causal in validation/test: fitted on earlier hours only
    )
