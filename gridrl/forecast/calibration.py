"""Rolling conformalised quantile regression (CQR) of the quantile bands.

LightGBM quantiles fitted on one season under-cover in another (DESIGN §5), so each
symmetric pair ``(q, 1 - q)`` is recalibrated on a rolling window of the latest scores
whose truth is already known at the issue time (Romano et al., 2019, with a sliding
window instead of a fixed calibration set). See
:class:`gridrl.forecast.config.CalibrationConfig` for the exact rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gridrl.forecast.config import CalibrationConfig
from gridrl.forecast.inputs import SignalTable
from gridrl.forecast.metrics import coverage


def quantile_pairs(quantiles: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` with ``q_i + q_j = 1`` and ``q_i < 0.5``."""
    q = np.asarray(quantiles)
    out = []
    for i, qi in enumerate(q):
        if qi < 0.5:
            hits = np.flatnonzero(np.isclose(q, 1.0 - qi))
            if hits.size:
                out.append((i, int(hits[0])))
    return out


def target_truth(y: np.ndarray, rows: np.ndarray, horizons_h: Sequence[int]) -> np.ndarray:
    """``[R, N, K, H]`` truth of row ``t + h`` (NaN where it is past the data)."""
    t_len = y.shape[0]
    tgt = np.asarray(rows)[:, None] + np.asarray(horizons_h)[None, :]  # [R, H]
    ok = tgt < t_len
    truth = y[np.minimum(tgt, t_len - 1)]  # [R, H, N, K]
    truth = np.where(ok[:, :, None, None], truth, np.nan)
    return np.moveaxis(truth, 1, 3)


def running_mean_abs(y: np.ndarray) -> np.ndarray:
    """``[T, N, K]`` mean of ``|y|`` over rows ``0..t`` (NaN skipped; NaN before the first
    finite value): what is known of a signal's size at issue row ``t``."""
    finite = np.isfinite(y)
    total = np.cumsum(np.where(finite, np.abs(y), 0.0), axis=0)
    count = np.cumsum(finite, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def rolling_cqr(
    values: np.ndarray,
    y: np.ndarray,
    horizons_h: Sequence[int],
    quantiles: Sequence[float],
    config: CalibrationConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Recalibrate the quantile bands of forecasts issued at every row.

    Parameters
    ----------
    values
        ``[T, N, K, H, Q]`` forecasts issued at rows ``0..T-1`` (NaN where none was made;
        those rows contribute no scores and are returned unchanged).
    y
        ``[T, N, K]`` truth of the target signals.

    Returns
    -------
    (numpy.ndarray, dict)
        calibrated copy of ``values`` (quantiles not yet sorted or bounded: apply the
        physical bounds afterwards) and ``{"correction": [T, K, H, pairs] float32}``.
    """
    out = values.copy()
    t_len, n_sites, k_len, h_len, _ = values.shape
    pairs = quantile_pairs(quantiles)
    corr_all = np.zeros((t_len, k_len, h_len, len(pairs)), dtype=np.float32)
    if config.method == "none" or not pairs:
        return out, {"correction": corr_all}
    rows = np.arange(t_len)
    truth = target_truth(y, rows, horizons_h)  # [T, N, K, H]
    floor = config.width_floor_fraction * running_mean_abs(y)  # [T, N, K]
    floor = np.where(np.isfinite(floor) & (floor > 0), floor, 1.0)[..., None]
    q = np.asarray(quantiles)
    win = config.window_h * n_sites
    for p, (i, j) in enumerate(pairs):
        level = float(q[j] - q[i])
        lo = values[..., i].astype(np.float64)
        hi = values[..., j].astype(np.float64)
        width = np.maximum(hi - lo, floor)
        score = np.maximum(lo - truth, truth - hi) / width  # [T, N, K, H]
        trivial = (hi == lo) & (truth == lo)  # zero band exactly right (PV at night)
        score = np.where(trivial, np.nan, score)
        for k in range(k_len):
            for m, h in enumerate(horizons_h):
                flat = pd.Series(score[:, :, k, m].ravel())  # time-major, sites inner
                rq = flat.rolling(win, min_periods=config.min_scores).quantile(level)
                rq = rq.to_numpy().reshape(t_len, n_sites)[:, -1]  # window ending at row
                c = np.full(t_len, np.nan)
                c[h:] = rq[: t_len - h]  # scores of issue rows <= t - h are known at t
                c = np.where(np.isfinite(c), c, 0.0)
                corr_all[:, k, m, p] = c
                w = width[:, :, k, m]
                out[:, :, k, m, i] = lo[:, :, k, m] - c[:, None] * w
                out[:, :, k, m, j] = hi[:, :, k, m] + c[:, None] * w
    return out, {"correction": corr_all}


def calibrate_rows(
    values: np.ndarray,
    table: SignalTable,
    targets: Sequence[str],
    horizons_h: Sequence[int],
    quantiles: Sequence[float],
    config: CalibrationConfig,
    rows: np.ndarray,
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """:func:`rolling_cqr` of ``values`` ``[T, N, K, H, Q]`` (NaN where no forecast was
    made) and the outer-band coverage of ``rows`` (int), raw and calibrated, per target."""
    y = table.data[:, :, [table.signals.index(s) for s in targets]]
    calibrated, _ = rolling_cqr(values, y, horizons_h, quantiles, config)
    truth = target_truth(y, rows, horizons_h)
    cover = {}
    for k, name in enumerate(targets):
        raw = coverage(values[rows, :, k, :, 0], values[rows, :, k, :, -1], truth[:, :, k])
        cal = coverage(calibrated[rows, :, k, :, 0], calibrated[rows, :, k, :, -1],
                       truth[:, :, k])
        cover[name] = {"raw": round(float(raw), 4), "calibrated": round(float(cal), 4)}
    return calibrated.astype(np.float32, copy=False), cover
