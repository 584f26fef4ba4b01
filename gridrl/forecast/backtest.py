"""Out-of-sample evaluation of the LightGBM forecaster against the baselines.

Three schemes, all out of sample for every forecast evaluated:

``rolling`` (rolling origin)
    origins every ``backtest.refit_every_h`` hours after ``backtest.initial_train_h``;
    at each origin the model is fitted on pairs whose issue and target rows lie before
    it, and forecasts the issue rows up to the next origin.
``causal``
    what a scenario's cube holds (:mod:`gridrl.forecast.causal`): the evaluation rows
    (validation, test) forecast by monthly refits on the data before them, the other
    rows cross-fitted among themselves.
``crossfit``
    every row cross-fitted (:mod:`gridrl.forecast.crossfit`): each block forecast by a
    model trained on the other blocks, later months included (not causal: kept to
    measure what causality costs).

The quantile bands are recalibrated by the causal rolling CQR in all three. Metrics
(:mod:`gridrl.forecast.metrics`) are computed per signal and horizon on the evaluated
issue rows (optionally restricted, e.g. to a scenario's test periods), for LightGBM and
for the baselines (persistence, seasonal naive, climatology, smart persistence for PV).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gridrl.forecast import baselines as bl
from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.calibration import rolling_cqr, target_truth
from gridrl.forecast.causal import forecast_values, origin_mask, refit_plan
from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.crossfit import (
    _progress,
    crossfit_mask,
    crossfit_values,
    fold_blocks,
    lookback_gap_h,
    weather_for,
)
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import target_hour_arrays
from gridrl.forecast.inputs import SignalTable, check_targets, signal_table
from gridrl.forecast.metrics import metric_table, summarise
from gridrl.forecast.model import QuantileForecaster, reference_of
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts
from gridrl.io import write_json_atomic, write_with


@dataclass(eq=False)
class BacktestResult:
    """Forecasts, truth and metrics of a backtest.

    Attributes
    ----------
    rows : numpy.ndarray
        evaluated issue rows ``[R]``.
    forecasts : numpy.ndarray
        LightGBM quantiles ``[R, N, K, H, Q]`` (calibrated, bounded).
    truth : numpy.ndarray
        ``[R, N, K, H]`` (NaN where the target is past the data).
    baselines : dict
        baseline name -> ``[R, N, K, H]``.
    table : pandas.DataFrame
        metrics per (signal, model, horizon).
    """

    scheme: str
    index: pd.DatetimeIndex
    sites: tuple[str, ...]
    targets: tuple[str, ...]
    horizons_h: tuple[int, ...]
    quantiles: tuple[float, ...]
    rows: np.ndarray
    forecasts: np.ndarray
    truth: np.ndarray
    baselines: dict[str, np.ndarray]
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        """Metrics averaged over horizons per (signal, model)."""
        return summarise(self.table)

    def day_ahead(self, model: str, reference: str, horizons_h: Sequence[int]) -> pd.Series:
        """Skill ``1 - MAE_model / MAE_reference`` over ``horizons_h``, per signal."""
        t = self.table[self.table["horizon_h"].isin(list(horizons_h))]
        m = t[t["model"] == model].groupby("signal")["mae"].mean()
        r = t[t["model"] == reference].groupby("signal")["mae"].mean()
        return (1 - m / r).dropna()

    def save(self, directory: str | Path) -> Path:
        """Write ``metrics.csv``, ``metrics.parquet``, ``summary.csv``, ``forecasts.npz``
        and ``backtest.json`` into ``directory`` (atomically, file by file)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_with(d / "metrics.csv", lambda p: self.table.to_csv(p, index=False))
        write_with(d / "metrics.parquet", lambda p: self.table.to_parquet(p, index=False))
        write_with(d / "summary.csv", lambda p: self.summary.to_csv(p, index=False))

        def _npz(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, rows=self.rows, forecasts=self.forecasts, truth=self.truth,
                         index_ns=self.index.asi8,
                         **{f"baseline_{k}": v for k, v in self.baselines.items()})

        write_with(d / "forecasts.npz", _npz)
        write_json_atomic(d / "backtest.json", {
            "scheme": self.scheme, "sites": list(self.sites), "targets": list(self.targets),
            "horizons_h": list(self.horizons_h), "quantiles": list(self.quantiles),
            "meta": self.meta,
        })
        return d


def backtest(
    signals: Any,
    config: ForecastConfig,
    *,
    scheme: Literal["rolling", "causal", "crossfit"] = "rolling",
    locations: Mapping[str, SiteLocation] | None = None,
    weather: WeatherForecasts | None = None,
    eval_rows: np.ndarray | None = None,
    causal_rows: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BacktestResult:
    """Evaluate LightGBM and the baselines out of sample.

    Parameters
    ----------
    signals
        :class:`~gridrl.data.signals.Signals` or its frame.
    config
        targets, horizons ``1..max_horizon_h``, quantiles, model and backtest settings.
    scheme
        ``rolling`` (rolling origin), ``causal`` or ``crossfit``.
    eval_rows
        issue rows to evaluate (e.g. a scenario's test periods); all forecast rows if
        None.
    causal_rows
        bool ``[T]``: the rows the ``causal`` scheme forecasts causally (a scenario's
        validation and test periods: :func:`gridrl.forecast.causal.evaluation_mask`).

    Raises
    ------
    ForecastError
        bad targets, history too short, or no rows left to evaluate.
    """
    table = signal_table(signals)
    targets = list(config.targets)
    check_targets(table, targets, allow_nan=True)
    horizons = list(config.horizons_h)
    t_len = len(table.index)
    weather = weather_for(table, config, weather, seed)
    hours = target_hour_arrays(table, locations)
    y = table.data[:, :, [table.signals.index(s) for s in targets]]
    kw = {"targets": targets, "horizons_h": horizons, "quantiles": config.quantiles,
          "config": config, "seed": seed, "locations": locations, "weather": weather,
          "progress": progress}
    if scheme == "crossfit":
        values, meta = crossfit_values(table, **kw)
        meta["scheme"] = "crossfit"
        groups = _crossfit_groups(t_len, config, None)
    elif scheme == "causal":
        if causal_rows is None or not np.any(causal_rows):
            raise ForecastError("the causal backtest needs the evaluation periods "
                                "(causal_rows: validation/test rows)")
        causal_rows = np.asarray(causal_rows, dtype=bool)
        # the other rows are cross-fitted only if some of them are to be evaluated
        rest = eval_rows is None or not np.isin(eval_rows, np.flatnonzero(causal_rows)).all()
        values, meta = forecast_values(table, eval_mask=causal_rows, crossfit_rest=rest, **kw)
        groups = _causal_groups(table, config, causal_rows)
    elif scheme == "rolling":
        values, meta, groups = _rolling(table, config, horizons, locations, weather, hours,
                                        seed, progress)
    else:
        raise ForecastError(f"unknown backtest scheme {scheme!r}; expected rolling, causal "
                            "or crossfit")
    predicted = np.isfinite(values).all(axis=(1, 2, 3, 4))
    rows = np.flatnonzero(predicted)
    if eval_rows is not None:
        rows = np.intersect1d(rows, np.asarray(eval_rows, dtype=np.int64))
    if rows.size == 0:
        raise ForecastError("no issue rows to evaluate (the evaluation rows hold no forecasts)")
    b = physical_bounds(table.data, table.index, table.sites, table.signals, targets,
                        config.bounds, locations, running=True)
    forecasts = values[rows]
    b.apply(forecasts, rows, horizons)
    truth = target_truth(y, rows, horizons)
    base = _baselines(table, config, targets, rows, horizons, hours, groups)
    frames = []
    for k, name in enumerate(targets):
        points = {"lightgbm": forecasts[:, :, k, :, config.quantiles.index(0.5)]}
        for bname, arr in base.items():
            if np.isfinite(arr[:, :, k]).any():
                points[bname] = arr[:, :, k]
        frames.append(metric_table(
            name, truth[:, :, k], horizons, points, {"lightgbm": forecasts[:, :, k]},
            config.quantiles, capacity=_capacity(table, name, config),
        ))
    meta.update(eval_rows=int(rows.size), first=str(table.index[rows[0]]),
                last=str(table.index[rows[-1]]))
    return BacktestResult(
        scheme=scheme, index=table.index, sites=table.sites, targets=tuple(targets),
        horizons_h=tuple(horizons), quantiles=tuple(config.quantiles), rows=rows,
        forecasts=forecasts, truth=truth, baselines=base, table=pd.concat(frames),
        meta=meta,
    )


def _rolling(table, config, horizons, locations, weather, hours, seed, progress):
    t_len = len(table.index)
    bt = config.backtest
    if bt.initial_train_h >= t_len:
        raise ForecastError(f"backtest.initial_train_h = {bt.initial_train_h} h leaves no "
                            f"rows to test in {t_len} hourly rows")
    origins = list(range(bt.initial_train_h, t_len, bt.refit_every_h))
    shape = (t_len, len(table.sites), len(config.targets), len(horizons), len(config.quantiles))
    values = np.full(shape, np.nan, dtype=np.float32)
    groups, chosen = [], []
    with _progress(progress) as p:
        task = None if p is None else p.add_task(
            "rolling-origin backtest", total=len(origins) * len(config.targets))
        for j, origin in enumerate(origins):
            block = np.arange(origin, min(origin + bt.refit_every_h, t_len))
            mask = np.arange(t_len) < origin
            model = QuantileForecaster(config, locations, weather, seed=seed + j)
            model.fit(table, mask, hours=hours,
                      progress=None if p is None else (lambda: p.advance(task)))
            values[block] = model.predict(table, block, horizons, hours=hours, bounds=False)
            groups.append((block, mask))
            chosen.append({t: m.references() for t, m in model.models.items()})
    y = table.data[:, :, [table.signals.index(s) for s in config.targets]]
    calibrated, _ = rolling_cqr(values, y, horizons, config.quantiles, config.calibration)
    meta = {"scheme": "rolling", "origins": [str(table.index[o]) for o in origins],
            "refit_every_h": bt.refit_every_h, "calibration": config.calibration.method,
            "models": chosen}  # per origin: signal -> reference of each model
    return calibrated, meta, groups


def _crossfit_groups(t_len: int, config: ForecastConfig, rows: np.ndarray | None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(block, rows its models train on) of the cross-fitted rows (bool ``[T]``, all if
    None)."""
    return [(blk, crossfit_mask(t_len, blk, config.crossfit.gap_h, rows,
                                lookback_gap_h(config)))
            for blk in fold_blocks(t_len, config.crossfit.folds, rows)]


def _causal_groups(table: SignalTable, config: ForecastConfig, causal_rows: np.ndarray
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The groups of the ``causal`` scheme: each origin's evaluation rows with the rows
    before it, and the cross-fitted blocks of the other rows."""
    t_len = len(table.index)
    plan = refit_plan(table.index, causal_rows, config)
    groups = [(blk[causal_rows[blk]], origin_mask(t_len, o, config.causal))
              for o, end in zip(plan.origins, plan.ends, strict=True)
              for blk in [np.arange(o, end)]]
    return groups + _crossfit_groups(t_len, config, ~causal_rows)


def _baselines(table: SignalTable, config: ForecastConfig, targets: list[str], rows: np.ndarray,
               horizons: list[int], hours, groups: list[tuple[np.ndarray, np.ndarray]]
               ) -> dict[str, np.ndarray]:
    """Baselines ``[R, N, K, H]``. The climatology (and PV clear-sky scale) of a row
    comes from the rows the LightGBM model of that row trained on (``groups``: issue
    rows, bool training rows)."""
    n_sites = len(table.sites)
    out = {name: np.full((len(rows), n_sites, len(targets), len(horizons)), np.nan)
           for name in ("persistence", "seasonal_naive", "climatology", "smart_persistence")}
    for k, name in enumerate(targets):
        yk = table.column(name)
        out["persistence"][:, :, k] = bl.persistence(yk, rows, horizons)
        out["seasonal_naive"][:, :, k] = bl.seasonal_naive(yk, rows, horizons)
        is_pv = reference_of(name, config) == "clearsky"
        for blk, train in groups:
            sel = np.isin(rows, blk)
            if not sel.any():
                continue
            out["climatology"][sel, :, k] = bl.climatology(yk, hours.hour, rows[sel], horizons,
                                                          train)
            if is_pv:
                scale = _pv_scale(table, config, name, train, hours)
                cs_power = hours.clearsky_array_w_per_m2 * scale[None, :]
                out["smart_persistence"][sel, :, k] = bl.smart_persistence(
                    yk, cs_power, rows[sel], horizons, config.pv.smart_persistence_window_h,
                    config.pv.min_clearsky_fraction)
    return out


def _pv_scale(table, config, name, train, hours) -> np.ndarray:
    from gridrl.forecast.model import _clearsky_scale

    y = table.column(name)
    return _clearsky_scale(y[train], hours.clearsky_array_w_per_m2[train], config, name,
                           table.sites)


def _capacity(table: SignalTable, name: str, config: ForecastConfig) -> np.ndarray | None:
    """Per-site capacity of ``name`` for nMAE (``metrics_capacity`` in the config)."""
    rule = config.metrics_capacity.get(name)
    if rule is None:
        return None
    col = table.column(name if rule == "max" else rule)
    cap = np.nanmax(col, axis=0)
    return np.where(cap > 0, cap, np.nan)


def evaluation_rows(index: pd.DatetimeIndex, periods: Sequence[Any]) -> np.ndarray:
    """Issue rows inside a scenario's periods (``Period.hours``)."""
    rows = [p.hours(index) for p in periods]
    return np.unique(np.concatenate(rows)) if rows else np.array([], dtype=np.int64)
