"""Causal forecasts of the evaluation periods, and the LightGBM forecasts of every row.

An evaluation is only honest if every forecast the controller saw could have been made
at its issue time. Rows of the evaluation periods (a scenario's ``validation`` and
``test`` blocks) are therefore forecast *causally*: at each refit origin ``o`` (the first
evaluation hour of each quarter, month or week that holds one: ``causal.refit``; with
``causal.refit_growth`` only those where the data have grown by that fraction since the
last origin) a model is fitted
on pairs ``(t, h)`` whose issue row and target row both lie before ``o`` (all of them,
or the latest ``causal.rolling_window_h`` hours: ``causal.origin``) and forecasts every
issue row from ``o`` up to the next origin. A forecast issued at ``t >= o`` therefore
comes from a model that saw nothing at or after ``o``, from features that end at ``t``,
recalibrated by the rolling CQR on scores of such forecasts whose target was observed by
``t``, with the CQR width floor and the physical bounds taken from data up to ``t``.

The rolling CQR needs past scores: when the data allow, one more origin
``calibration.window_h + max_horizon_h`` hours before the first evaluation hour warms it
up, so that the first evaluation hours are calibrated as well as the later ones.

All other rows (the training periods, and rows no period claims) are cross-fitted among
themselves (:mod:`gridrl.forecast.crossfit`): no model fits its own block or any
evaluation hour. Without evaluation rows every row is cross-fitted.

Simulated weather forecasts (:func:`gridrl.forecast.weather.simulate_weather`) are the
observed weather of the target hour plus an error: they stand in for a forecast product
issued at the time and are the one input built from later observations. With real
forecast products (``weather=``) nothing after the issue time is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gridrl.forecast.calibration import calibrate_rows
from gridrl.forecast.config import CausalConfig, ForecastConfig
from gridrl.forecast.crossfit import _progress, crossfit_values, resolve_config, weather_for
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import TargetHourArrays, target_hour_arrays
from gridrl.forecast.inputs import SignalTable
from gridrl.forecast.model import QuantileForecaster
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts

# Scenario period lists forecast causally (``validation`` exists only in some scenarios).
EVALUATION_PERIODS = ("validation", "test")
_PANDAS_FREQ = {"quarterly": "Q", "monthly": "M", "weekly": "W"}


def evaluation_mask(index: pd.DatetimeIndex, periods: Any) -> np.ndarray:
    """Bool ``[T]``: rows inside the ``validation`` (when ``periods`` has it) and ``test``
    blocks of ``periods`` (a :class:`gridrl.scenario.Periods`); all False for None."""
    mask = np.zeros(len(index), dtype=bool)
    for name in EVALUATION_PERIODS if periods is not None else ():
        for block in getattr(periods, name, None) or []:
            mask[block.hours(index)] = True
    return mask


def row_runs(mask: np.ndarray) -> list[list[int]]:
    """``[first, last]`` row of every run of True in ``mask`` (cache keys, metadata)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [[int(a), int(b) - 1] for a, b in zip(starts, stops, strict=True)]


@dataclass(frozen=True)
class RefitPlan:
    """Refit origins (rows, increasing); the model of ``origins[j]`` forecasts issue rows
    ``origins[j] .. ends[j] - 1``. ``warmup``: the first origin lies before the first
    evaluation hour, to warm up the calibration (its model also serves the first
    evaluation hours when ``causal.refit_growth`` skips the next origin)."""

    origins: tuple[int, ...]
    ends: tuple[int, ...]
    warmup: bool


def refit_plan(index: pd.DatetimeIndex, eval_mask: np.ndarray,
               config: ForecastConfig) -> RefitPlan:
    """The origins of the causal models of ``eval_mask`` (bool ``[T]``, some True).

    Raises
    ------
    ForecastError
        when the first evaluation hour has fewer than ``causal.min_train_h`` hours of
        data before it.
    """
    c = config.causal
    rows = np.flatnonzero(eval_mask)
    if rows.size == 0:
        raise ForecastError("causal forecasts need evaluation rows (validation/test periods)")
    period = index[rows].tz_convert(None).to_period(_PANDAS_FREQ[c.refit])
    first_of_period = np.concatenate([[True], period[1:] != period[:-1]])
    origins = [int(r) for r in rows[first_of_period]]
    if origins[0] < c.min_train_h:
        raise ForecastError(
            f"the first evaluation hour ({index[origins[0]]}) has {origins[0]} hours of "
            f"data before it; causal forecasts need causal.min_train_h = {c.min_train_h} "
            "(start the validation/test periods later or lower causal.min_train_h)"
        )
    warm = origins[0] - config.calibration.window_h - config.max_horizon_h
    warmup = config.calibration.method != "none" and warm >= c.min_train_h
    if warmup:
        origins.insert(0, warm)
    origins = grown_origins(origins, c.refit_growth)
    ends = origins[1:] + [int(rows[-1]) + 1]
    return RefitPlan(tuple(origins), tuple(ends), warmup)


def grown_origins(origins: list[int], growth: float | None) -> list[int]:
    """The candidate ``origins`` (rows, increasing) at which the data have grown by at
    least ``growth`` times the hours before the last kept origin (the first is always
    kept; all of them if ``growth`` is None): a model then serves for a time in
    proportion to the history it was fitted on."""
    if growth is None:
        return list(origins)
    kept = [origins[0]]
    for o in origins[1:]:
        if o - kept[-1] >= growth * kept[-1]:
            kept.append(o)
    return kept


def origin_mask(t_len: int, origin: int, causal: CausalConfig) -> np.ndarray:
    """Rows the model of ``origin`` trains on (issue and target rows alike): those
    before the origin, or the latest ``rolling_window_h`` of them (``rolling``)."""
    rows = np.arange(t_len)
    start = 0 if causal.origin == "expanding" else max(origin - causal.rolling_window_h, 0)
    return (rows >= start) & (rows < origin)


def refit_config(config: ForecastConfig) -> ForecastConfig:
    """The config of the causal refits (``causal.n_estimators`` trees when set)."""
    trees = config.causal.n_estimators
    if trees is None:
        return config
    return config.model_copy(update={
        "lightgbm": config.lightgbm.model_copy(update={"n_estimators": trees})})


def causal_values(
    table: SignalTable,
    *,
    targets: Sequence[str],
    horizons_h: Sequence[int] | np.ndarray,
    quantiles: Sequence[float] | np.ndarray,
    config: ForecastConfig,
    eval_mask: np.ndarray,
    seed: int = 0,
    locations: Mapping[str, SiteLocation] | None = None,
    weather: WeatherForecasts | None = None,
    hours: TargetHourArrays | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Causal, calibrated quantile forecasts ``[T, N, K, H, Q]`` (float32, bounds not
    yet applied) of the issue rows from the first origin to the last evaluation row, NaN
    elsewhere, and metadata (origins, the models chosen at each, coverage of the evaluation
    rows)."""
    cfg = refit_config(resolve_config(config, targets, list(horizons_h), list(quantiles)))
    weather = weather_for(table, cfg, weather, seed)
    hours = hours or target_hour_arrays(table, locations)
    plan = refit_plan(table.index, eval_mask, cfg)
    t_len = len(table.index)
    values = np.full((t_len, len(table.sites), len(targets), len(horizons_h), len(quantiles)),
                     np.nan, dtype=np.float32)
    chosen: dict[str, list[dict[str, str]]] = {target: [] for target in targets}
    with _progress(progress) as p:
        task = None if p is None else p.add_task("causal refits",
                                                  total=len(plan.origins) * len(targets))
        for j, (origin, end) in enumerate(zip(plan.origins, plan.ends, strict=True)):
            model = QuantileForecaster(cfg, locations, weather, seed=seed + j)
            model.fit(table, origin_mask(t_len, origin, cfg.causal), hours=hours,
                      progress=None if p is None else (lambda: p.advance(task)))
            block = np.arange(origin, end)
            values[block] = model.predict(table, block, horizons_h, hours=hours, bounds=False)
            for target, m in model.models.items():
                chosen[target].append(m.references())
    calibrated, cover = calibrate_rows(values, table, targets, horizons_h, quantiles,
                                       cfg.calibration, np.flatnonzero(eval_mask))
    meta = {
        "coverage_outer": cover,
        "origins": [str(table.index[o]) for o in plan.origins],
        "warmup_origin": plan.warmup,
        "refit": cfg.causal.refit,
        "refit_growth": cfg.causal.refit_growth,
        "origin": cfg.causal.origin,
        "n_estimators": cfg.lightgbm.n_estimators,
        "models": chosen,  # signal -> per origin, the reference(s) of each model
    }
    return calibrated, meta


def forecast_values(
    table: SignalTable,
    *,
    targets: Sequence[str],
    horizons_h: Sequence[int] | np.ndarray,
    quantiles: Sequence[float] | np.ndarray,
    config: ForecastConfig,
    eval_mask: np.ndarray | None = None,
    seed: int = 0,
    locations: Mapping[str, SiteLocation] | None = None,
    weather: WeatherForecasts | None = None,
    hours: TargetHourArrays | None = None,
    progress: bool = False,
    crossfit_rest: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """LightGBM forecasts ``[T, N, K, H, Q]`` of every row (float32, calibrated, bounds
    not yet applied): causal on ``eval_mask`` (bool ``[T]``), cross-fitted elsewhere
    (NaN there if not ``crossfit_rest``: a backtest of the evaluation rows alone);
    every row cross-fitted when ``eval_mask`` is None or all False."""
    cfg = resolve_config(config, targets, list(horizons_h), list(quantiles))
    kw = {"targets": targets, "horizons_h": horizons_h, "quantiles": quantiles,
          "config": cfg, "seed": seed, "locations": locations,
          "weather": weather_for(table, cfg, weather, seed),
          "hours": hours or target_hour_arrays(table, locations), "progress": progress}
    if eval_mask is None or not eval_mask.any():
        values, meta = crossfit_values(table, **kw)
        return values, {**meta, "scheme": "crossfit"}
    eval_mask = np.asarray(eval_mask, dtype=bool)
    causal, causal_meta = causal_values(table, eval_mask=eval_mask, **kw)
    if crossfit_rest:
        # refit_plan guarantees rows before the first evaluation hour: some to cross-fit.
        values, meta = crossfit_values(table, rows=~eval_mask, **kw)
    else:
        values, meta = np.full_like(causal, np.nan), {}
    values[eval_mask] = causal[eval_mask]
    meta.update(scheme="causal", evaluation_rows=row_runs(eval_mask),
                coverage_outer_evaluation=causal_meta.pop("coverage_outer"),
                causal=causal_meta)
    return values, meta
