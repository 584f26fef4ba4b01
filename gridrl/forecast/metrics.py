"""Forecast error metrics, per signal and horizon.

All functions skip pairs whose truth is NaN (targets past the data or missing values).

- MAE, RMSE in the signal's unit;
- nMAE: MAE divided by the capacity (installed power, feeder capacity) where one is
  given, NaN otherwise;
- skill vs seasonal naive: ``1 - MAE / MAE_seasonal_naive`` (positive is better);
- pinball loss: mean over the quantiles of ``max(q (y - f), (q - 1) (y - f))``;
- coverage of the outer quantile pair (P10-P90 for the default quantiles): the share of
  truths inside the band, leaving out pairs where the band is a single point equal to
  the truth (PV at night: trivially covered, and counting them would inflate coverage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _valid(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.isfinite(truth) & np.isfinite(pred)


def mae(pred: np.ndarray, truth: np.ndarray, axis: int | tuple[int, ...] | None = None
        ) -> np.ndarray:
    """Mean absolute error over ``axis`` (NaN truths skipped)."""
    ok = _valid(pred, truth)
    err = np.where(ok, np.abs(pred - truth), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return err.sum(axis=axis) / ok.sum(axis=axis)


def rmse(pred: np.ndarray, truth: np.ndarray, axis: int | tuple[int, ...] | None = None
         ) -> np.ndarray:
    """Root mean squared error over ``axis`` (NaN truths skipped)."""
    ok = _valid(pred, truth)
    err = np.where(ok, (pred - truth) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(err.sum(axis=axis) / ok.sum(axis=axis))


def pinball(qpred: np.ndarray, truth: np.ndarray, quantiles: Sequence[float],
            axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Mean pinball loss over the quantiles (last axis of ``qpred``) and ``axis``."""
    q = np.asarray(quantiles, dtype=np.float64)
    diff = truth[..., None] - qpred
    loss = np.maximum(q * diff, (q - 1.0) * diff).mean(axis=-1)
    ok = np.isfinite(loss)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, loss, 0.0).sum(axis=axis) / ok.sum(axis=axis)


def coverage(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray,
             axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Share of truths with ``lo <= y <= hi`` over ``axis`` (pairs with ``lo == hi == y``
    left out)."""
    ok = np.isfinite(truth) & np.isfinite(lo) & np.isfinite(hi)
    ok &= ~((lo == hi) & (hi == truth))
    inside = ok & (truth >= lo) & (truth <= hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inside.sum(axis=axis) / ok.sum(axis=axis)


def metric_table(
    signal: str,
    truth: np.ndarray,
    horizons_h: Sequence[int],
    points: Mapping[str, np.ndarray],
    quantile_forecasts: Mapping[str, np.ndarray] | None = None,
    quantiles: Sequence[float] = (),
    capacity: np.ndarray | None = None,
    reference: str = "seasonal_naive",
) -> pd.DataFrame:
    """One row per (model, horizon) for one signal.

    Parameters
    ----------
    truth
        ``[R, N, H]``.
    points
        model name -> point forecasts ``[R, N, H]`` (the P50 for quantile models); must
        contain ``reference`` for the skill column.
    quantile_forecasts
        model name -> ``[R, N, H, Q]`` for the pinball and coverage columns.
    capacity
        ``[N]`` capacity of each site (signal unit) for nMAE, or None.
    """
    rows = []
    ref_mae = mae(points[reference], truth, axis=(0, 1)) if reference in points else None
    cap = None if capacity is None else np.asarray(capacity, dtype=np.float64)
    q = list(quantiles)
    for name, pred in points.items():
        m = mae(pred, truth, axis=(0, 1))
        r = rmse(pred, truth, axis=(0, 1))
        if cap is not None:
            n_mae = mae(pred / cap[None, :, None], truth / cap[None, :, None], axis=(0, 1))
        else:
            n_mae = np.full(len(horizons_h), np.nan)
        qf = (quantile_forecasts or {}).get(name)
        pin = np.full(len(horizons_h), np.nan)
        cov = np.full(len(horizons_h), np.nan)
        if qf is not None:
            pin = pinball(qf, truth, q, axis=(0, 1))
            cov = coverage(qf[..., 0], qf[..., -1], truth, axis=(0, 1))
        for i, h in enumerate(horizons_h):
            rows.append({
                "signal": signal, "model": name, "horizon_h": int(h), "mae": m[i],
                "rmse": r[i], "nmae": n_mae[i],
                "skill_vs_seasonal_naive": np.nan if ref_mae is None else 1 - m[i] / ref_mae[i],
                "pinball": pin[i], "coverage_outer": cov[i],
            })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over horizons per (signal, model); skill recomputed from the mean MAEs."""
    g = table.groupby(["signal", "model"], sort=False)
    out = g[["mae", "rmse", "nmae", "pinball", "coverage_outer"]].mean().reset_index()
    ref = out[out["model"] == "seasonal_naive"].set_index("signal")["mae"]
    out["skill_vs_seasonal_naive"] = 1 - out["mae"] / out["signal"].map(ref)
    return out
