"""Reference forecasts: persistence, seasonal naive, climatology, smart persistence (PV),
and a plain per-horizon LightGBM on lags and calendar.

Each returns point forecasts ``[R, N, H]`` of one signal ``y [T, N]`` for issue rows
``rows`` and horizons ``horizons_h``, with only data known at the issue time (the
climatology uses the training rows only). Targets past the data hold the last row, as in
the forecast cube.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gridrl.forecast.features import HOURS_PER_DAY, trailing_sums
from gridrl.forecast.plain import (
    PLAIN_LAGS_H,
    first_plain_row,
    plain_features,
    train_plain,
    utc_calendar,
)

BASELINES = ("persistence", "seasonal_naive", "climatology", "smart_persistence")


def _grid(rows: np.ndarray, horizons_h: Sequence[int], t_len: int):
    t = np.asarray(rows, dtype=np.int64)[:, None]
    h = np.asarray(horizons_h, dtype=np.int64)[None, :]
    h_eff = np.minimum(h, t_len - 1 - t)
    return t, h_eff


def persistence(y: np.ndarray, rows: np.ndarray, horizons_h: Sequence[int]) -> np.ndarray:
    """The value at the issue time for every horizon: ``[R, N, H]``."""
    t, h = _grid(rows, horizons_h, len(y))
    return np.broadcast_to(y[t[:, 0]][:, :, None], (len(t), y.shape[1], h.shape[1])).copy()


def seasonal_naive(y: np.ndarray, rows: np.ndarray, horizons_h: Sequence[int]) -> np.ndarray:
    """The value at the same hour on the latest day known: row ``t + h - 24 ceil(h/24)``."""
    t, h = _grid(rows, horizons_h, len(y))
    back = HOURS_PER_DAY * -(-h // HOURS_PER_DAY)
    src = t + h - back
    out = np.where((src >= 0)[..., None], y[np.maximum(src, 0)], np.nan)  # [R, H, N]
    out = np.where((h == 0)[..., None], y[t], out)
    return np.moveaxis(out, 2, 1)


def climatology(y: np.ndarray, hour_of_day: np.ndarray, rows: np.ndarray,
                horizons_h: Sequence[int], train_mask: np.ndarray) -> np.ndarray:
    """Mean by hour of day of the target over the training rows.

    ``hour_of_day`` is ``[T, N]`` (local hour of each row at each site).
    """
    hod = hour_of_day.astype(np.int64)
    n_sites = y.shape[1]
    table = np.full((HOURS_PER_DAY, n_sites), np.nan)
    yt = y[train_mask]
    ht = hod[train_mask]
    for n in range(n_sites):
        ok = np.isfinite(yt[:, n])
        sums = np.bincount(ht[ok, n], weights=yt[ok, n], minlength=HOURS_PER_DAY)
        cnt = np.bincount(ht[ok, n], minlength=HOURS_PER_DAY)
        with np.errstate(invalid="ignore", divide="ignore"):
            table[:, n] = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    t, h = _grid(rows, horizons_h, len(y))
    s = t + h  # [R, H]
    out = table[hod[s], np.arange(n_sites)[None, None, :]]  # [R, H, N]
    return np.moveaxis(out, 2, 1)


def smart_persistence(y: np.ndarray, clearsky_power: np.ndarray, rows: np.ndarray,
                      horizons_h: Sequence[int], window_h: int = 3,
                      min_clearsky_fraction: float = 0.02) -> np.ndarray:
    """PV smart persistence: the clear-sky index at the issue time times the clear-sky
    power of the target hour.

    The index is ``sum y / sum P_cs`` over the ``window_h`` hours up to ``t``; when the
    sun is (nearly) down in that window (``sum P_cs`` below ``min_clearsky_fraction`` of
    the peak times the window) the index of the last 24 hours is used instead.
    ``clearsky_power`` is ``[T, N]`` in the unit of ``y``.
    """
    ys = np.where(np.isfinite(y), y, 0.0)
    y_w, _, _ = trailing_sums(ys, window_h)
    cs_w, _, _ = trailing_sums(clearsky_power, window_h)
    y_d, _, _ = trailing_sums(ys, HOURS_PER_DAY)
    cs_d, _, _ = trailing_sums(clearsky_power, HOURS_PER_DAY)
    peak = np.nanmax(clearsky_power, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        k_w = y_w / cs_w
        k_d = np.where(cs_d > 0, y_d / cs_d, 0.0)
    k = np.where(cs_w > min_clearsky_fraction * peak * window_h, k_w, k_d)
    t, h = _grid(rows, horizons_h, len(y))
    s = t + h
    out = k[t[:, 0]][:, None, :] * clearsky_power[s]  # [R, H, N]
    out = np.where((h == 0)[..., None], y[t], out)
    return np.moveaxis(out, 2, 1)


def per_horizon_lightgbm(
    y: np.ndarray,
    index: pd.DatetimeIndex,
    rows: np.ndarray,
    horizons_h: Sequence[int],
    train_mask: np.ndarray,
    *,
    lags_h: Sequence[int] = PLAIN_LAGS_H,
    params: Mapping[str, Any] | None = None,
    num_threads: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """One LightGBM per horizon and site on lags and the target hour's UTC calendar
    (:mod:`gridrl.forecast.plain`, L1 objective unless ``params`` say otherwise).

    The textbook direct strategy: for horizon ``h`` a model maps the lags known at the
    issue time ``t`` (``y[t]``, ``y[t-1]``, ... ``y[t+1-l]``) and the hour of day and day of
    week of ``t + h`` to ``y[t + h]``, fitted on the pairs whose issue and target rows are
    both in ``train_mask``. Returns point forecasts ``[R, N, H]``; targets past the data
    hold the last row, as for the other baselines.
    """
    t_len, n_sites = y.shape
    first = first_plain_row(lags_h)
    hour, weekday = utc_calendar(index)
    issue = np.flatnonzero(np.asarray(train_mask))
    issue = issue[issue >= first]
    rows = np.asarray(rows, dtype=np.int64)
    t_grid, h_grid = _grid(rows, horizons_h, t_len)
    out = np.full((len(rows), n_sites, len(horizons_h)), np.nan)
    for n in range(n_sites):
        yn = np.where(np.isfinite(y[:, n]), y[:, n], np.nan)
        for j, h in enumerate(horizons_h):
            t_fit = issue[issue + h < t_len]
            t_fit = t_fit[train_mask[t_fit + h] & np.isfinite(yn[t_fit + h])]
            x = plain_features(yn, hour, weekday, t_fit, h, lags_h)
            booster = train_plain(x, yn[t_fit + h], params, num_threads=num_threads,
                                  seed=seed)
            h_row = h_grid[:, j]
            pred = np.where(rows >= first, 0.0, np.nan)
            ok = (h_row == h) & (rows >= first)
            if ok.any():
                pred[ok] = booster.predict(
                    plain_features(yn, hour, weekday, rows[ok], h, lags_h),
                    num_threads=num_threads)
            out[:, n, j] = np.where(h_row == h, pred, yn[rows + h_row])
    return out
