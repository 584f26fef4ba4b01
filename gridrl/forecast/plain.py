"""The plain per-horizon LightGBM: for one horizon ``h`` and one site, a LightGBM with its
default settings maps the values of the signal known at the issue time ``t`` (lags 1, 2,
3, 24, 48, 168: ``y[t]``, ``y[t-1]``, ... ``y[t-167]``) and the hour of day and day of
week (UTC) of the target hour ``t + h`` to the value ``y[t + h]``.

The textbook direct strategy, written once here: it is the reference the forecaster is
measured against (:func:`gridrl.forecast.baselines.per_horizon_lightgbm`, L1 objective)
and, with ``selection.plain_candidate``, a candidate of the forecaster's own-horizon
models (:class:`gridrl.forecast.model.QuantileForecaster`, a quantile objective per
quantile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gridrl.forecast.features import DAYS_PER_WEEK, HOURS_PER_DAY

if TYPE_CHECKING:
    import lightgbm as lgb

PLAIN = "plain"  # the plain model's name among the candidates of a forecaster's model
PLAIN_LAGS_H = (1, 2, 3, 24, 48, 168)
# LightGBM's defaults with the L1 objective: its point forecast is a median, like the
# P50 it is compared with.
PLAIN_LIGHTGBM_PARAMS = {"objective": "l1", "verbose": -1}
_NS_PER_HOUR = 3_600_000_000_000
_THURSDAY = 3  # 1970-01-01, day 0 of the hour count, was a Thursday (Monday = 0)


def first_plain_row(lags_h: Sequence[int] = PLAIN_LAGS_H) -> int:
    """The first issue row every lag reaches (lag ``l`` of issue row ``t`` is row
    ``t + 1 - l``)."""
    return max(lags_h) - 1


def utc_calendar(index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day and day of week (Monday = 0), UTC, of every row: float ``[T]`` each."""
    hours = index.asi8 // _NS_PER_HOUR
    hour = np.mod(hours, HOURS_PER_DAY).astype(np.float64)
    weekday = np.mod(hours // HOURS_PER_DAY + _THURSDAY, DAYS_PER_WEEK).astype(np.float64)
    return hour, weekday


def plain_features(y: np.ndarray, hour: np.ndarray, weekday: np.ndarray, t: np.ndarray,
                   h: int | np.ndarray, lags_h: Sequence[int] = PLAIN_LAGS_H) -> np.ndarray:
    """Features ``[R, len(lags_h) + 2]`` (float32) of issue rows ``t`` and horizons ``h``
    (one or one per row) of one site's series ``y [T]``: the lags ``y[t + 1 - l]`` (NaN
    before the first row) and the target hour's :func:`utc_calendar`."""
    t = np.asarray(t, dtype=np.int64)
    src = t[:, None] + 1 - np.asarray(lags_h, dtype=np.int64)[None, :]
    lags = np.where(src >= 0, y[np.maximum(src, 0)], np.nan)
    s = t + h
    return np.column_stack([lags, hour[s], weekday[s]]).astype(np.float32)


def quantile_params(q: float) -> dict[str, Any]:
    """Objective of the plain model of quantile ``q`` (the forecaster's members)."""
    return {"objective": "quantile", "alpha": float(q)}


def train_plain(x: np.ndarray, label: np.ndarray, params: Mapping[str, Any] | None = None,
                *, num_threads: int = 1, seed: int = 0) -> lgb.Booster:
    """A plain model fitted on features ``x`` (:func:`plain_features`) and labels
    ``label``: :data:`PLAIN_LIGHTGBM_PARAMS` updated with ``params``."""
    # Imported here: gridrl.forecast.model sets OpenMP's wait policy before the first
    # import of LightGBM.
    import lightgbm as lgb

    par = {**PLAIN_LIGHTGBM_PARAMS, **(params or {}), "num_threads": num_threads,
           "seed": seed}
    return lgb.train(par, lgb.Dataset(x, label=label))
