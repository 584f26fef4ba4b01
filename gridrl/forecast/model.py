"""Direct multi-horizon quantile LightGBM forecaster.

One LightGBM model per target signal and quantile serves every horizon ``1..H`` (the
horizon is a feature) and every site (the site is a categorical feature; values are
scaled per site). Each issue time contributes a few horizons drawn at random to the
training set, which keeps fitting fast without favouring any horizon. The shortest
horizons (``training.own_model_horizons_h``, 1 h by default) are the exception: every
issue time contributes them, and they are forecast by models of their own; pooled, 1 h
got 1/H of the rows and little of the loss (its changes are the smallest), and a plain
per-horizon LightGBM on a few lags forecast it better.

Which reference a model uses can be chosen per signal at every fit
(:class:`gridrl.forecast.config.SelectionConfig`, by default for the pooled and the
own-horizon models): a P50 model per candidate reference is fitted on the training data before its
last weeks and scored on them, and the best reference, or the equal-weight blend of
several references' quantiles, is refitted on all of it. Nothing outside the training
data is seen, and the scores are saved with the model. With ``selection.plain_candidate``
the plain per-horizon LightGBM (:mod:`gridrl.forecast.plain`, one model per site) is a
candidate of the own-horizon models too: where it forecast the last weeks best, the
forecaster's 1 h model is that model (or a blend with it). With
``selection.hold_candidate`` the value at the issue time (persistence) is a candidate of
both models. The median of each chosen reference of an own-horizon model is the mean of
``training.own_model_bags`` fits seeded differently (row and feature subsampling differ):
less variance in the point forecast, for a fit per bag of the median alone (the P10/P90
are one fit each and recalibrated anyway); selection scores one fit of each candidate.

Targets are expressed relative to a reference (:data:`gridrl.forecast.features.REFERENCES`):
PV as a clear-sky index (DESIGN §5) — the model predicts ``y / P_cs`` where ``P_cs`` is
the clear-sky irradiance on the array times a per-site scale (the ``clearsky_power_quantile``
of ``y / irradiance`` on the training data), trained with weight ``P_cs`` so that the
loss is the pinball loss in kW — and other signals as the change from the value at the
issue time (``last``) or as a level.

Output quantiles are sorted (no crossing) and the physical bounds of
:mod:`gridrl.forecast.bounds` are applied. Models are saved in LightGBM's native text
format with a metadata JSON beside them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

# LightGBM's OpenMP threads spin while they wait; on a shared 2-core machine spinning
# threads starve each other (training measured 4-8x slower). Passive waiting avoids it.
# Only effective if OpenMP was not started before this import; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402

from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.config import ForecastConfig, follows_sun
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import (
    FeatureBuilder,
    TargetHourArrays,
    check_history,
    required_history_h,
    target_hour_arrays,
)
from gridrl.forecast.inputs import SignalTable, check_targets
from gridrl.forecast.plain import (
    PLAIN,
    plain_features,
    quantile_params,
    train_plain,
    utc_calendar,
)
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts
from gridrl.io import write_json_atomic, write_text_atomic

# 3: each model a list of members (blends of references); 4: plain members (per site);
# 5: hold members (no boosters); 6: median bags of own-horizon members
MODEL_FORMAT_VERSION = 6
HOLD = "hold"  # the value at the issue time as a candidate (``selection.hold_candidate``)


def own_model_horizons(config: ForecastConfig) -> np.ndarray:
    """Horizons with models of their own, fitted on every issue time (sorted).

    None when they would be every horizon: the pooled model is then the same thing.

    Raises
    ------
    ForecastError
        a horizon beyond ``max_horizon_h``.
    """
    own = np.array(sorted(set(config.training.own_model_horizons_h)), dtype=np.int64)
    if own.size and own[-1] > config.max_horizon_h:
        raise ForecastError(f"training.own_model_horizons_h: {int(own[-1])} h is beyond "
                            f"max_horizon_h = {config.max_horizon_h}")
    return own if own.size < config.max_horizon_h else own[:0]


def own_reference(signal: str, config: ForecastConfig) -> str:
    """Reference of the own-horizon models of ``signal``: ``training.own_model_reference``
    where given (not for PV), the signal's reference otherwise."""
    reference = reference_of(signal, config)
    if reference == "clearsky":
        return reference
    return config.training.own_model_reference.get(signal, reference)


def reference_of(signal: str, config: ForecastConfig) -> str:
    """How ``signal`` is expressed for its model (``clearsky`` for PV signals)."""
    if signal in config.pv.signals:
        return "clearsky"
    return config.reference.get(signal, config.default_reference)


@dataclass(eq=False)
class Member:
    """One candidate of a model, fitted; a model averages its members' quantiles.

    Attributes
    ----------
    reference : str
        a reference (:data:`gridrl.forecast.features.REFERENCES`), ``plain`` (the
        plain per-horizon LightGBM, :mod:`gridrl.forecast.plain`) or ``hold`` (the value
        at the issue time).
    boosters : dict
        quantile -> booster of a reference (one for every site); empty for ``plain`` and
        ``hold``.
    site_boosters : list of dict
        ``plain``: per site, quantile -> booster; empty otherwise.
    median_bags : list of lgb.Booster
        further fits of the median seeded differently, averaged with ``boosters[0.5]``
        (``training.own_model_bags``); empty otherwise.
    """

    reference: str
    boosters: dict[float, lgb.Booster]
    site_boosters: list[dict[float, lgb.Booster]] = field(default_factory=list)
    median_bags: list[lgb.Booster] = field(default_factory=list)


@dataclass(eq=False)
class TargetModel:
    """The fitted models of one signal.

    Attributes
    ----------
    reference : str
        the signal's reference (:func:`reference_of`).
    scale : numpy.ndarray
        ``[N]`` per-site scale (mean absolute value on the training rows, signal unit).
    clearsky_scale : numpy.ndarray or None
        ``[N]`` signal units per W/m2 of clear-sky array irradiance (PV).
    constant : numpy.ndarray
        ``[N]`` the value of a site whose signal is constant on the training rows (it is
        forecast as that constant: a site without a wind turbine), NaN otherwise.
    pooled : list of Member
        the pooled model (fitted on every training row, used at the horizons without a
        model of their own).
    own : dict
        horizon -> members of the horizons with a model of their own
        (``training.own_model_horizons_h``).
    selection : dict
        ``pooled`` / ``h{h}`` -> validation MAE of every candidate reference and blend
        (``+``-joined) where the model was chosen (:class:`SelectionConfig`).
    """

    signal: str
    reference: str
    feature_names: list[str]
    scale: np.ndarray
    clearsky_scale: np.ndarray | None
    constant: np.ndarray
    pooled: list[Member] = field(default_factory=list)
    own: dict[int, list[Member]] = field(default_factory=dict)
    selection: dict[str, dict[str, float]] = field(default_factory=dict)

    def groups(self) -> list[tuple[int | None, list[Member]]]:
        """``(None, pooled)`` then ``(h, own)`` for every horizon with its own model."""
        return [(None, self.pooled), *sorted(self.own.items())]

    def references(self) -> dict[str, str]:
        """``pooled`` / ``h{h}`` -> the reference of the model (``+``-joined for blends)."""
        return {_tag(h): "+".join(m.reference for m in members)
                for h, members in self.groups()}


def _tag(h: int | None) -> str:
    return "pooled" if h is None else f"h{h}"


class _TrainingSet:
    """One target's training pairs ``(t, n, h)`` with their features and labels for each
    reference, built once per reference.

    PV (``clearsky``) labels are clear-sky indices relative to the index reference,
    weighted by the clear-sky power; the other references' labels are changes from the
    reference value over the site scale, unweighted.
    """

    def __init__(self, forecaster: QuantileForecaster, table: SignalTable, target: str,
                 hours: TargetHourArrays, t_idx: np.ndarray, n_idx: np.ndarray,
                 h_idx: np.ndarray) -> None:
        cfg = forecaster.config
        self.signal = target
        self.sites = table.sites
        self.calendar = utc_calendar(table.index)  # the plain model's
        self.reference = reference_of(target, cfg)
        self._new = lambda ref: FeatureBuilder(table, target, cfg, ref, hours,
                                               forecaster.weather)
        builder = self._new(self.reference)
        self.y = y = builder.y
        s_idx = t_idx + h_idx
        y_target = y[s_idx, n_idx]
        ok = np.isfinite(y_target)
        train_rows = np.unique(np.concatenate([t_idx[ok], s_idx[ok]]))
        self.scale = scale = _site_scale(y[train_rows], target, table.sites)
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanmin(y[train_rows], axis=0), np.nanmax(y[train_rows], axis=0)
        self.constant = np.where(lo == hi, lo, np.nan)
        self.clearsky_scale = None
        weight = None
        if self.reference == "clearsky":
            cs = hours.clearsky_array_w_per_m2
            self.clearsky_scale = _clearsky_scale(y[train_rows], cs[train_rows], cfg, target,
                                                  table.sites)
            cs_power = cs[s_idx, n_idx] * self.clearsky_scale[n_idx]
            peak = np.nanmax(cs, axis=0)[n_idx] * self.clearsky_scale[n_idx]
            ok &= cs_power > cfg.pv.min_clearsky_fraction * peak
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.clip(y_target / cs_power, 0.0, cfg.pv.max_clearsky_index)
            z = z - builder.index_base(t_idx, n_idx, h_idx, self.clearsky_scale)
            weight = cs_power / scale[n_idx]
        else:
            z = (y_target - builder.base(t_idx, n_idx, h_idx)) / scale[n_idx]
            ok &= np.isfinite(z)
        if ok.sum() == 0:
            raise ForecastError(f"signal {target!r}: no training rows (all targets NaN or "
                                "outside the training period)")
        self.t, self.n, self.h = t_idx[ok], n_idx[ok], h_idx[ok]
        x = builder.build(self.t, self.n, self.h, scale, self.clearsky_scale)
        self.names = builder.names
        self._rows = {self.reference: (builder, x, z[ok].astype(np.float32),
                                       None if weight is None else weight[ok])}

    def rows(self, reference: str):
        """``(builder, x [P, F], labels [P], weights [P] or None)`` of every pair."""
        if reference not in self._rows:
            b = self._new(reference)
            t, n, h = self.t, self.n, self.h
            z = (self.y[t + h, n] - b.base(t, n, h)) / self.scale[n]
            x = b.build(t, n, h, self.scale, self.clearsky_scale)
            self._rows[reference] = (b, x, z.astype(np.float32), None)
        return self._rows[reference]


class QuantileForecaster:
    """Quantile LightGBM forecasts of several signals at every site.

    Parameters
    ----------
    config
        the forecaster config (targets, horizons, quantiles, features, LightGBM).
    locations
        site -> location (solar features, clear-sky PV, night bound).
    weather
        weather forecasts for the covariates listed in ``config.weather_for``.
    seed
        seeds the horizon sampling and LightGBM.
    """

    def __init__(
        self,
        config: ForecastConfig,
        locations: Mapping[str, SiteLocation] | None = None,
        weather: WeatherForecasts | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.locations = dict(locations or {})
        self.weather = weather
        self.seed = seed
        self.models: dict[str, TargetModel] = {}
        self.sites: tuple[str, ...] = ()

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        table: SignalTable,
        train_mask: np.ndarray | None = None,
        *,
        hours: TargetHourArrays | None = None,
        progress: Any = None,
    ) -> QuantileForecaster:
        """Fit every (target, quantile) model on pairs ``(t, h)`` whose issue row and
        target row are both allowed by ``train_mask`` (bool ``[T]``; all rows if None).

        Raises
        ------
        ForecastError
            a target missing or all NaN at a site, history too short for the lags, or
            no training rows left.
        """
        cfg = self.config
        check_targets(table, cfg.targets, allow_nan=True)
        check_history(table, cfg.targets, cfg, cfg.max_horizon_h)
        t_len = len(table.index)
        mask = np.ones(t_len, dtype=bool) if train_mask is None else np.asarray(train_mask)
        hours = hours or target_hour_arrays(table, self.locations)
        self.sites = table.sites
        t_idx, n_idx, h_idx = self._training_pairs(t_len, len(table.sites), mask)
        for k, target in enumerate(cfg.targets):
            self.models[target] = self._fit_target(
                table, target, hours, t_idx, n_idx, h_idx, seed=self.seed + k
            )
            if progress is not None:
                progress()
        return self

    def _training_pairs(self, t_len: int, n_sites: int, mask: np.ndarray):
        cfg = self.config
        first = max(cfg.training.min_history_h, required_history_h(cfg))
        issue = np.flatnonzero(mask[: t_len - 1])
        issue = issue[issue >= first]
        fixed = own_model_horizons(cfg)
        per = min(cfg.training.horizons_per_issue, cfg.max_horizon_h - len(fixed))
        rng = np.random.default_rng(self.seed)
        keys = rng.random((issue.size * n_sites, cfg.max_horizon_h))
        keys[:, fixed - 1] = np.inf  # every issue time trains them (below), not at random
        h = np.argsort(keys, axis=1)[:, :per] + 1  # distinct horizons per (issue, site)
        h = np.concatenate([h, np.broadcast_to(fixed, (len(h), len(fixed)))], axis=1)
        per += len(fixed)
        t = np.repeat(np.repeat(issue, n_sites), per)
        n = np.repeat(np.tile(np.arange(n_sites), issue.size), per)
        h = h.ravel()
        ok = t + h < t_len
        ok[ok] = mask[(t + h)[ok]]
        return t[ok], n[ok], h[ok]

    def _fit_target(self, table, target, hours, t_idx, n_idx, h_idx, seed) -> TargetModel:
        data = _TrainingSet(self, table, target, hours, t_idx, n_idx, h_idx)
        model = TargetModel(target, data.reference, data.names, data.scale,
                            data.clearsky_scale, data.constant)
        own = own_model_horizons(self.config).tolist()
        # The pooled model keeps the own horizons' rows: the horizons next to them gain.
        everything = np.ones(len(data.t), dtype=bool)
        model.pooled = self._fit_model(data, model, None, everything, ~np.isin(data.h, own),
                                       seed)
        for h in own:
            rows = data.h == h
            model.own[h] = self._fit_model(data, model, h, rows, rows, seed)
        return model

    def _fit_model(self, data: _TrainingSet, model: TargetModel, h: int | None,
                   rows: np.ndarray, scored: np.ndarray, seed: int) -> list[Member]:
        """The members of the pooled (``h`` None) or an own-horizon model, fitted on the
        pairs ``rows``; where it is chosen, scored on the pairs ``scored`` among them."""
        cfg = self.config
        default = data.reference if h is None else own_reference(data.signal, cfg)
        chosen = [default]
        if data.reference != "clearsky" and ("pooled" if h is None else "own") in (
                cfg.selection.models):
            sun = follows_sun(data.signal)
            extra = [HOLD] if cfg.selection.hold_candidate and not sun else []
            if h is not None and cfg.selection.plain_candidate and not sun:
                extra.append(PLAIN)
            chosen, scores = self._select(data, rows, scored & rows, default, extra, seed)
            if scores:
                model.selection[_tag(h)] = scores
        # own-horizon models: further median fits, a seed per (target, bag) pair
        bags = [] if h is None else [seed + i * len(cfg.targets)
                                     for i in range(1, cfg.training.own_model_bags)]
        return [self._fit_member(data, ref, rows, seed, bag_seeds=bags) for ref in chosen]

    def _fit_member(self, data: _TrainingSet, reference: str, rows: np.ndarray, seed: int,
                    quantiles: Sequence[float] | None = None,
                    bag_seeds: Sequence[int] = ()) -> Member:
        """Candidate ``reference`` (or ``plain``) fitted on the pairs ``rows``, one booster
        per quantile (default: the config's), and a further median fit per ``bag_seeds``
        seed (none for ``plain`` and ``hold``: they draw no subsamples)."""
        if reference == PLAIN:
            return self._fit_plain(data, rows, seed, quantiles)
        if reference == HOLD:
            return Member(HOLD, {})
        b, x, z, w = data.rows(reference)
        boosters, bags = self._train(b, x[rows], z[rows], None if w is None else w[rows], seed,
                                     quantiles, bag_seeds)
        return Member(reference, boosters, median_bags=bags)

    def _fit_plain(self, data: _TrainingSet, rows: np.ndarray, seed: int,
                   quantiles: Sequence[float] | None = None) -> Member:
        """The plain member: per site, a plain model per quantile fitted on the pairs
        ``rows`` of that site (labels in the signal's unit)."""
        cfg = self.config
        sites = []
        for n, site in enumerate(data.sites):
            at = rows & (data.n == n)
            if not at.any():
                raise ForecastError(f"signal {data.signal!r} at site {site!r}: no training "
                                    "rows for the plain model")
            t, h = data.t[at], data.h[at]
            x = plain_features(data.y[:, n], *data.calendar, t, h)
            sites.append({float(q): train_plain(x, data.y[t + h, n], quantile_params(q),
                                                num_threads=cfg.lightgbm.num_threads,
                                                seed=seed)
                          for q in (cfg.quantiles if quantiles is None else quantiles)})
        return Member(PLAIN, {}, sites)

    def _select(self, data: _TrainingSet, rows: np.ndarray, scored: np.ndarray,
                default: str, extra: Sequence[str], seed: int
                ) -> tuple[list[str], dict[str, float]]:
        """References of the model with the lowest validation MAE (:class:`SelectionConfig`;
        ``extra`` candidates besides: ``hold``, and ``plain`` when every site has pairs to
        fit it on) and the MAE of every candidate; ``[default]`` and no scores when there
        is too little data."""
        sel = self.config.selection
        refs = sel.sun_references if follows_sun(data.signal) else sel.references
        refs = list(dict.fromkeys([default, *refs]))
        issue = np.unique(data.t[rows])
        if issue.size < sel.window_h + sel.min_train_h:
            return [default], {}
        start = issue[-sel.window_h]  # first issue row of the validation window
        fit = rows & (data.t + data.h < start)
        val = scored & (data.t >= start)
        if HOLD in extra:
            refs.append(HOLD)
        if PLAIN in extra and all((fit & (data.n == n)).any() for n in range(len(data.sites))):
            refs.append(PLAIN)
        if len(refs) < 2 or not val.any():
            return [default], {}
        t, n, h = data.t[val], data.n[val], data.h[val]
        truth = data.y[t + h, n]
        point = {ref: self._validation_p50(data, self._fit_member(data, ref, fit, seed, [0.5]),
                                           val)
                 for ref in refs}
        sizes = range(1, len(refs) + 1) if sel.blend else [1]
        candidates = [c for k in sizes for c in combinations(refs, k)]
        scores = {"+".join(c): float(np.mean(np.abs(np.mean([point[r] for r in c], axis=0)
                                                    - truth))) for c in candidates}
        best = min(candidates, key=lambda c: scores["+".join(c)])  # ties: fewest members
        return list(best), scores

    def _validation_p50(self, data: _TrainingSet, member: Member, val: np.ndarray
                        ) -> np.ndarray:
        """P50 of a candidate fitted for the median only, on the pairs ``val`` (signal
        unit)."""
        t, n, h = data.t[val], data.n[val], data.h[val]
        threads = self.config.lightgbm.num_threads
        if member.reference == PLAIN:
            return _plain_quantiles(member, data.y, data.calendar, t, n, h, [0.5],
                                    threads)[:, 0]
        if member.reference == HOLD:
            return data.y[t, n]
        b, x, _, _ = data.rows(member.reference)
        z = member.boosters[0.5].predict(x[val], num_threads=threads)
        return b.base(t, n, h) + z * data.scale[n]

    def _train(self, builder: FeatureBuilder, x: np.ndarray, z: np.ndarray,
               weight: np.ndarray | None, seed: int,
               quantiles: Sequence[float] | None = None, bag_seeds: Sequence[int] = ()
               ) -> tuple[dict[float, lgb.Booster], list[lgb.Booster]]:
        """One booster per quantile (default: the config's) on rows ``x``, labels ``z``,
        and, if the median is one of them, a further median booster per ``bag_seeds`` seed
        (the dataset is binned once for all of them)."""
        cfg = self.config
        lg = cfg.lightgbm
        ds_params = {"max_bin": lg.max_bin, "verbose": -1, "min_data_in_leaf": lg.min_data_in_leaf,
                     "num_threads": lg.num_threads}
        dataset = lgb.Dataset(
            x, label=z, weight=weight, feature_name=builder.names,
            categorical_feature=builder.categorical, params=ds_params, free_raw_data=True,
        ).construct()

        def fit(q: float, s: int) -> lgb.Booster:
            params = {
                "objective": "quantile", "alpha": float(q), "learning_rate": lg.learning_rate,
                "num_leaves": lg.num_leaves, "min_data_in_leaf": lg.min_data_in_leaf,
                "feature_fraction": lg.feature_fraction, "bagging_fraction": lg.bagging_fraction,
                "bagging_freq": lg.bagging_freq, "lambda_l2": lg.lambda_l2,
                "num_threads": lg.num_threads, "seed": s, "verbose": -1,
                "max_bin": lg.max_bin,
            }
            return lgb.train(params, dataset, num_boost_round=lg.n_estimators)

        boosters = {float(q): fit(q, seed) for q in (cfg.quantiles if quantiles is None
                                                      else quantiles)}
        bags = [fit(0.5, s) for s in bag_seeds] if 0.5 in boosters else []
        return boosters, bags

    # ------------------------------------------------------------------ predict

    def predict(
        self,
        table: SignalTable,
        issue_rows: Sequence[int] | np.ndarray,
        horizons_h: Sequence[int],
        *,
        hours: TargetHourArrays | None = None,
        bounds: bool = True,
    ) -> np.ndarray:
        """Quantile forecasts ``[R, N, K, H, Q]`` (float32) issued at ``issue_rows``.

        Targets past the end of the data hold the last row (horizon shortened to
        ``T - 1 - t``; at ``t = T - 1`` the forecast is the observed last value).
        Quantiles are sorted and the physical bounds applied (unless ``bounds=False``).
        """
        cfg = self.config
        if not self.models:
            raise ForecastError("the forecaster is not fitted")
        if tuple(table.sites) != tuple(self.sites):
            raise ForecastError(f"sites {table.sites} differ from the fitted ones {self.sites}")
        rows = np.asarray(issue_rows, dtype=np.int64)
        hz = np.asarray(horizons_h, dtype=np.int64)
        if hz.max() > cfg.max_horizon_h:
            raise ForecastError(f"horizon {int(hz.max())} h is beyond the fitted maximum "
                                f"{cfg.max_horizon_h} h")
        hours = hours or target_hour_arrays(table, self.locations)
        t_len, n_sites = len(table.index), len(table.sites)
        r, hh = len(rows), len(hz)
        out = np.empty((r, n_sites, len(cfg.targets), hh, len(cfg.quantiles)), dtype=np.float32)
        # rows ordered (issue, site, horizon) so that a reshape gives [R, N, H]
        t = np.repeat(rows, n_sites * hh)
        n = np.tile(np.repeat(np.arange(n_sites), hh), r)
        h = np.tile(hz, r * n_sites)
        h_eff = np.minimum(h, t_len - 1 - t)
        known = h_eff <= 0
        h_model = np.maximum(h_eff, 1)
        t_model = np.where(known, t - 1, t)  # any valid row; replaced by the observation
        for k, target in enumerate(cfg.targets):
            m = self.models[target]
            vals = np.empty((len(t), len(cfg.quantiles)))
            for h_own, members in m.groups():
                sel = ~np.isin(h_model, list(m.own)) if h_own is None else h_model == h_own
                if sel.any():
                    vals[sel] = np.mean([self._predict_rows(
                        table, m, mem, hours, t_model[sel], n[sel], h_model[sel],
                        (t + h_eff)[sel]) for mem in members], axis=0)
            y = table.column(target)
            for j in range(len(cfg.quantiles)):
                val = np.where(np.isfinite(m.constant[n]), m.constant[n], vals[:, j])
                val = np.where(known, y[t, n], val)
                out[:, :, k, :, j] = val.reshape(r, n_sites, hh)
        if bounds:
            b = physical_bounds(table.data, table.index, table.sites, table.signals, cfg.targets,
                                cfg.bounds, self.locations)
            b.apply(out, rows, hz)
        return out

    def _predict_rows(self, table: SignalTable, m: TargetModel, member: Member,
                      hours: TargetHourArrays, t: np.ndarray, n: np.ndarray, h: np.ndarray,
                      s: np.ndarray) -> np.ndarray:
        """Quantiles ``[R, Q]`` of rows ``(t, n, h)`` (target rows ``s``) from ``member``."""
        cfg = self.config
        if member.reference == PLAIN:
            return _plain_quantiles(member, table.column(m.signal), utc_calendar(table.index),
                                    t, n, h, cfg.quantiles, cfg.lightgbm.num_threads)
        if member.reference == HOLD:
            return np.repeat(table.column(m.signal)[t, n][:, None], len(cfg.quantiles), axis=1)
        reference, group = member.reference, member.boosters
        b = FeatureBuilder(table, m.signal, cfg, reference, hours, self.weather)
        x = b.build(t, n, h, m.scale, m.clearsky_scale)
        out = np.empty((len(t), len(cfg.quantiles)))
        for j, q in enumerate(cfg.quantiles):
            boosters = [group[float(q)], *(member.median_bags if q == 0.5 else [])]
            z = np.mean([booster.predict(x, num_threads=cfg.lightgbm.num_threads)
                         for booster in boosters], axis=0)
            if reference == "clearsky":
                cs = hours.clearsky_array_w_per_m2[s, n] * m.clearsky_scale[n]
                kbase = b.index_base(t, n, h, m.clearsky_scale)
                out[:, j] = np.clip(kbase + z, 0.0, cfg.pv.max_clearsky_index) * cs
            else:
                out[:, j] = b.base(t, n, h) + z * m.scale[n]
        return out

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> Path:
        """Write every booster (LightGBM text format) and ``forecaster.json`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "format_version": MODEL_FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "sites": list(self.sites),
            "seed": self.seed,
            "locations": {s: vars(v) for s, v in self.locations.items()},
            "targets": {},
        }
        for target, m in self.models.items():
            files: dict[str, list[dict[str, Any]]] = {}
            for h, members in m.groups():
                files[_tag(h)] = [_write_member(d, f"{target}_{_tag(h)}_{mem.reference}", mem)
                                  for mem in members]
            meta["targets"][target] = {
                "reference": m.reference,
                "feature_names": m.feature_names,
                "scale": m.scale.tolist(),
                "clearsky_scale": None if m.clearsky_scale is None else m.clearsky_scale.tolist(),
                "constant": [None if not np.isfinite(c) else float(c) for c in m.constant],
                "models": files,
                "selection": m.selection,
            }
        write_json_atomic(d / "forecaster.json", meta)
        return d

    @classmethod
    def load(cls, directory: str | Path, weather: WeatherForecasts | None = None
             ) -> QuantileForecaster:
        """Read a forecaster written by :meth:`save`.

        Raises
        ------
        ForecastError
            missing or incompatible files.
        """
        d = Path(directory)
        try:
            meta = json.loads((d / "forecaster.json").read_text())
        except FileNotFoundError:
            raise ForecastError(f"{d}: no forecaster.json (not a saved forecaster)") from None
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise ForecastError(f"{d}: forecaster format {meta.get('format_version')}, "
                                f"expected {MODEL_FORMAT_VERSION} (fit it again)")
        config = ForecastConfig.model_validate(meta["config"])
        locations = {s: SiteLocation(**v) for s, v in meta["locations"].items()}
        self = cls(config, locations, weather, seed=int(meta["seed"]))
        self.sites = tuple(meta["sites"])
        for target, tm in meta["targets"].items():
            cs = tm["clearsky_scale"]
            const = np.array([np.nan if c is None else c for c in tm["constant"]], dtype=float)
            m = TargetModel(target, tm["reference"], list(tm["feature_names"]),
                            np.asarray(tm["scale"]), None if cs is None else np.asarray(cs),
                            const)
            m.selection = tm["selection"]
            for tag, members in tm["models"].items():
                group = [_read_member(d, mem) for mem in members]
                if tag == "pooled":
                    m.pooled = group
                else:
                    m.own[int(tag.removeprefix("h"))] = group
            self.models[target] = m
        return self


def _plain_quantiles(member: Member, y: np.ndarray, calendar: tuple[np.ndarray, np.ndarray],
                     t: np.ndarray, n: np.ndarray, h: np.ndarray, quantiles: Sequence[float],
                     num_threads: int) -> np.ndarray:
    """Quantiles ``[R, Q]`` of rows ``(t, n, h)`` from a plain member (``y [T, N]``: the
    signal), each site's rows from its own models."""
    out = np.empty((len(t), len(quantiles)))
    for site, boosters in enumerate(member.site_boosters):
        at = n == site
        if at.any():
            x = plain_features(y[:, site], *calendar, t[at], h[at])
            for j, q in enumerate(quantiles):
                out[at, j] = boosters[float(q)].predict(x, num_threads=num_threads)
    return out


def _write_member(directory: Path, stem: str, member: Member) -> dict[str, Any]:
    """Write a member's boosters (``{stem}_q{q}.txt``; plain: ``{stem}_site{n}_q{q}.txt``)
    and return its entry of ``forecaster.json``."""
    def write(boosters: dict[float, lgb.Booster], prefix: str) -> dict[str, str]:
        return {f"{q:g}": _write_booster(directory, f"{prefix}_q{q:g}.txt", b)
                for q, b in boosters.items()}

    if member.reference == HOLD:
        return {"reference": HOLD}
    if member.reference == PLAIN:
        return {"reference": member.reference,
                "sites": [write(b, f"{stem}_site{n}") for n, b in enumerate(member.site_boosters)]}
    entry = {"reference": member.reference, "quantiles": write(member.boosters, stem)}
    if member.median_bags:
        entry["median_bags"] = [_write_booster(directory, f"{stem}_bag{i}_q0.5.txt", b)
                                for i, b in enumerate(member.median_bags, start=1)]
    return entry


def _read_member(directory: Path, entry: Mapping[str, Any]) -> Member:
    """The member of a ``forecaster.json`` entry written by :func:`_write_member`."""
    def read(files: Mapping[str, str]) -> dict[float, lgb.Booster]:
        return {float(q): lgb.Booster(model_file=str(directory / name))
                for q, name in files.items()}

    if entry["reference"] == HOLD:
        return Member(HOLD, {})
    if entry["reference"] == PLAIN:
        return Member(PLAIN, {}, [read(files) for files in entry["sites"]])
    bags = [lgb.Booster(model_file=str(directory / name))
            for name in entry.get("median_bags", [])]
    return Member(entry["reference"], read(entry["quantiles"]), median_bags=bags)


def _write_booster(directory: Path, name: str, booster: lgb.Booster) -> str:
    write_text_atomic(directory / name, booster.model_to_string())
    return name


def _site_scale(y: np.ndarray, target: str, sites: Sequence[str]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        scale = np.nanmean(np.abs(y), axis=0)
    for n, site in enumerate(sites):
        if not np.isfinite(scale[n]):
            raise ForecastError(f"signal {target!r} at site {site!r}: no finite training values")
    # A signal that is identically zero on the training rows gets unit scale.
    return np.where(scale > 0, scale, 1.0)


def _clearsky_scale(y: np.ndarray, cs: np.ndarray, cfg: ForecastConfig, target: str,
                    sites: Sequence[str]) -> np.ndarray:
    out = np.empty(y.shape[1])
    for n, site in enumerate(sites):
        day = cs[:, n] > cfg.pv.min_clearsky_fraction * np.nanmax(cs[:, n])
        ratio = y[day, n] / cs[day, n]
        ratio = ratio[np.isfinite(ratio)]
        if ratio.size == 0:
            raise ForecastError(f"signal {target!r} at site {site!r}: no daylight training rows")
        out[n] = np.quantile(ratio, cfg.pv.clearsky_power_quantile)
        if out[n] <= 0:
            raise ForecastError(f"signal {target!r} at site {site!r}: zero output in daylight")
    return out
