"""Cross-fitted LightGBM forecasts for every issue time (the ``lightgbm`` cube mode).

The rows are cut into ``crossfit.folds`` contiguous blocks. Block ``b`` is forecast by a
model trained on pairs ``(t, h)`` whose issue row and target row both lie outside block
``b`` widened by ``crossfit.gap_h`` on each side, so no forecast comes from a model that
saw its period; the training episodes of an agent then see realistic forecast errors.
The quantile bands are then recalibrated with the causal rolling CQR of
:mod:`gridrl.forecast.calibration`, and the physical bounds applied by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from gridrl.forecast.calibration import rolling_cqr, target_truth
from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.features import target_hour_arrays
from gridrl.forecast.inputs import SignalTable
from gridrl.forecast.metrics import coverage
from gridrl.forecast.model import QuantileForecaster
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts, simulate_weather


def fold_blocks(t_len: int, folds: int) -> list[np.ndarray]:
    """Contiguous blocks of rows ``0..t_len-1`` of (nearly) equal length."""
    return [b for b in np.array_split(np.arange(t_len), folds) if b.size]


def crossfit_mask(t_len: int, block: np.ndarray, gap_h: int) -> np.ndarray:
    """Rows a model forecasting ``block`` may train on (issue and target rows alike):
    every row outside the block widened by ``gap_h`` on each side."""
    mask = np.ones(t_len, dtype=bool)
    mask[max(int(block[0]) - gap_h, 0): int(block[-1]) + gap_h + 1] = False
    return mask


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
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cross-fitted, calibrated quantile forecasts ``[T, N, K, H, Q]`` (float32, bounds
    not yet applied) and a metadata dict (folds, raw and calibrated coverage)."""
    cfg = resolve_config(config, targets, list(horizons_h), list(quantiles))
    weather = weather_for(table, cfg, weather, seed)
    t_len = len(table.index)
    hours = target_hour_arrays(table, locations)
    blocks = fold_blocks(t_len, cfg.crossfit.folds)
    values = np.empty((t_len, len(table.sites), len(targets), len(horizons_h), len(quantiles)),
                      dtype=np.float32)
    bar = _progress(progress)
    with bar as p:
        task = None if p is None else p.add_task("cross-fitting forecasts",
                                                  total=len(blocks) * len(targets))
        for b, block in enumerate(blocks):
            mask = crossfit_mask(t_len, block, cfg.crossfit.gap_h)
            model = QuantileForecaster(cfg, locations, weather, seed=seed + 1000 * b)
            model.fit(table, mask, hours=hours,
                      progress=None if p is None else (lambda: p.advance(task)))
            values[block] = model.predict(table, block, horizons_h, hours=hours, bounds=False)
    y = table.data[:, :, [table.signals.index(s) for s in targets]]
    calibrated, info = rolling_cqr(values, y, horizons_h, quantiles, cfg.calibration)
    truth = target_truth(y, np.arange(t_len), horizons_h)
    cover = {}
    for k, name in enumerate(targets):
        raw = coverage(values[:, :, k, :, 0], values[:, :, k, :, -1], truth[:, :, k])
        cal = coverage(calibrated[:, :, k, :, 0], calibrated[:, :, k, :, -1], truth[:, :, k])
        cover[name] = {"raw": round(float(raw), 4), "calibrated": round(float(cal), 4)}
    meta = {
        "coverage_outer": cover,
        "folds": [[int(b[0]), int(b[-1])] for b in blocks],
        "gap_h": cfg.crossfit.gap_h,
        "calibration": cfg.calibration.method,
        "weather_covariates": [] if weather is None else list(weather.names),
    }
    return calibrated.astype(np.float32), meta


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeElapsedColumn())
