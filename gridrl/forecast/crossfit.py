"""Cross-fitted LightGBM forecasts of the training rows (the ``lightgbm`` cube mode).

The cross-fitted rows (all rows, or those outside the evaluation periods: see
:mod:`gridrl.forecast.causal`) are cut into ``crossfit.folds`` contiguous blocks. Block
``b`` is forecast by a model trained on pairs ``(t, h)`` whose issue row and target row
are both cross-fitted rows outside block ``b`` widened by ``crossfit.gap_h`` before it
and by the larger of ``gap_h`` and the features' lookback after it, so no forecast comes
from a model that saw its period, not even through the lags of a later issue row (nor
any evaluation hour as a target); the training episodes of an agent then see realistic
forecast errors. The quantile bands are then recalibrated with the causal rolling CQR of
:mod:`gridrl.forecast.calibration` on the cross-fitted rows' own forecasts, and the
physical bounds applied by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from gridrl.forecast.calibration import calibrate_rows
from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.features import TargetHourArrays, required_history_h, target_hour_arrays
from gridrl.forecast.inputs import SignalTable
from gridrl.forecast.model import QuantileForecaster
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts, simulate_weather


def fold_blocks(t_len: int, folds: int, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Consecutive blocks of (nearly) equal size of the rows where ``rows`` (bool ``[T]``)
    is True, in time order (of rows ``0..t_len-1`` if None)."""
    pool = np.arange(t_len) if rows is None else np.flatnonzero(rows)
    return [b for b in np.array_split(pool, folds) if b.size]


def crossfit_mask(t_len: int, block: np.ndarray, gap_h: int,
                  rows: np.ndarray | None = None, after_h: int | None = None) -> np.ndarray:
    """Rows a model forecasting ``block`` may train on (issue and target rows alike):
    every row outside the block widened by ``gap_h`` before it and ``after_h`` (default
    ``gap_h``) after it, among ``rows`` (bool ``[T]``; all rows if None)."""
    mask = np.ones(t_len, dtype=bool) if rows is None else np.asarray(rows, dtype=bool).copy()
    after = gap_h if after_h is None else after_h
    mask[max(int(block[0]) - gap_h, 0): int(block[-1]) + after + 1] = False
    return mask


def lookback_gap_h(config: ForecastConfig) -> int:
    """Hours removed after a cross-fitting block: the gap, or the features' lookback
    when longer (a later issue row's lags must not reach into the block)."""
    return max(config.crossfit.gap_h, required_history_h(config))


def resolve_config(config: ForecastConfig, targets: Sequence[str], horizons_h: Sequence[int],
                   quantiles: Sequence[float]) -> ForecastConfig:
    """The config with the cube's targets, quantiles and maximum horizon."""
    return config.model_copy(update={
        "targets": list(targets),
        "quantiles": [float(q) for q in quantiles],
        "max_horizon_h": int(max(horizons_h)),
    })


def weather_for(table: SignalTable, config: ForecastConfig, weather: WeatherForecasts | None,
                seed: int) -> WeatherForecasts | None:
    """Given weather forecasts, else forecasts simulated per the config for the
    covariates the targets use (None if none)."""
    if weather is not None:
        return weather
    used = {c for t in config.targets for c in config.weather_for.get(t, [])}
    covariates = [w for w in config.weather if w.signal in used]
    return simulate_weather(table, covariates, seed=seed) if covariates else None


def crossfit_values(
    table: SignalTable,
    *,
    targets: Sequence[str],
    horizons_h: Sequence[int] | np.ndarray,
    quantiles: Sequence[float] | np.ndarray,
    config: ForecastConfig,
    seed: int = 0,
    locations: Mapping[str, SiteLocation] | None = None,
    weather: WeatherForecasts | None = None,
    rows: np.ndarray | None = None,
    hours: TargetHourArrays | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cross-fitted, calibrated quantile forecasts ``[T, N, K, H, Q]`` (float32, bounds
    not yet applied) of the rows where ``rows`` (bool ``[T]``) is True, NaN elsewhere
    (all rows if None), and a metadata dict (folds, raw and calibrated coverage)."""
    cfg = resolve_config(config, targets, list(horizons_h), list(quantiles))
    weather = weather_for(table, cfg, weather, seed)
    t_len = len(table.index)
    hours = hours or target_hour_arrays(table, locations)
    blocks = fold_blocks(t_len, cfg.crossfit.folds, rows)
    values = np.full((t_len, len(table.sites), len(targets), len(horizons_h), len(quantiles)),
                     np.nan, dtype=np.float32)
    with _progress(progress) as p:
        task = None if p is None else p.add_task("cross-fitting forecasts",
                                                  total=len(blocks) * len(targets))
        for b, block in enumerate(blocks):
            mask = crossfit_mask(t_len, block, cfg.crossfit.gap_h, rows, lookback_gap_h(cfg))
            model = QuantileForecaster(cfg, locations, weather, seed=seed + 1000 * b)
            model.fit(table, mask, hours=hours,
                      progress=None if p is None else (lambda: p.advance(task)))
            values[block] = model.predict(table, block, horizons_h, hours=hours, bounds=False)
    calibrated, cover = calibrate_rows(values, table, targets, horizons_h, quantiles,
                                       cfg.calibration, np.concatenate(blocks))
    meta = {
        "coverage_outer": cover,
        "folds": [[int(b[0]), int(b[-1])] for b in blocks],
        "gap_h": cfg.crossfit.gap_h,
        "gap_after_h": lookback_gap_h(cfg),
        "calibration": cfg.calibration.method,
        "weather_covariates": [] if weather is None else list(weather.names),
    }
    return calibrated, meta


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeElapsedColumn())
