"""Direct multi-horizon quantile LightGBM forecaster.

One LightGBM model per target signal and quantile serves every horizon ``1..H`` (the
horizon is a feature) and every site (the site is a categorical feature; values are
scaled per site). Each issue time contributes a few horizons drawn at random to the
training set, which keeps fitting fast without favouring any horizon. The shortest
horizons (``training.own_model_horizons_h``, 1 h by default) are the exception: every
issue time contributes them, and they are forecast by models of their own; pooled, 1 h
got 1/H of the rows and little of the loss (its changes are the smallest), and a plain
per-horizon LightGBM on a few lags forecast it better.

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
from pathlib import Path
from typing import Any

import numpy as np

# LightGBM's OpenMP threads spin while they wait; on a shared 2-core machine spinning
# threads starve each other (training measured 4-8x slower). Passive waiting avoids it.
# Only effective if OpenMP was not started before this import; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402

from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import (
    FeatureBuilder,
    TargetHourArrays,
    check_history,
    required_history_h,
    target_hour_arrays,
)
from gridrl.forecast.inputs import SignalTable, check_targets
from gridrl.forecast.solar import SiteLocation
from gridrl.forecast.weather import WeatherForecasts
from gridrl.io import write_json_atomic, write_text_atomic

MODEL_FORMAT_VERSION = 2  # 2: models grouped as pooled and per own horizon


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
class TargetModel:
    """The fitted models of one signal.

    Attributes
    ----------
    scale : numpy.ndarray
        ``[N]`` per-site scale (mean absolute value on the training rows, signal unit).
    clearsky_scale : numpy.ndarray or None
        ``[N]`` signal units per W/m2 of clear-sky array irradiance (PV).
    constant : numpy.ndarray
        ``[N]`` the value of a site whose signal is constant on the training rows (it is
        forecast as that constant: a site without a wind turbine), NaN otherwise.
    boosters : dict
        quantile -> LightGBM booster of the pooled model (fitted on every training row,
        used at the horizons without a model of their own).
    horizon_boosters : dict
        horizon -> quantile -> booster of the horizons with a model of their own
        (``training.own_model_horizons_h``).
    horizon_reference : str
        the reference of those models (:func:`own_reference`).
    """

    signal: str
    reference: str
    feature_names: list[str]
    scale: np.ndarray
    clearsky_scale: np.ndarray | None
    constant: np.ndarray
    boosters: dict[float, lgb.Booster] = field(default_factory=dict)
    horizon_boosters: dict[int, dict[float, lgb.Booster]] = field(default_factory=dict)
    horizon_reference: str = "last"

    def booster_groups(self) -> list[tuple[int | None, dict[float, lgb.Booster]]]:
        """``(None, pooled)`` then ``(h, own)`` for every horizon with its own models."""
        return [(None, self.boosters), *sorted(self.horizon_boosters.items())]


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
        cfg = self.config
        reference = reference_of(target, cfg)
        builder = FeatureBuilder(table, target, cfg, reference, hours, self.weather)
        y = builder.y
        s_idx = t_idx + h_idx
        y_target = y[s_idx, n_idx]
        ok = np.isfinite(y_target)
        train_rows = np.unique(np.concatenate([t_idx[ok], s_idx[ok]]))
        scale = _site_scale(y[train_rows], target, table.sites)
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanmin(y[train_rows], axis=0), np.nanmax(y[train_rows], axis=0)
        constant = np.where(lo == hi, lo, np.nan)
        cs_scale = None
        weight = None
        if reference == "clearsky":
            cs = hours.clearsky_array_w_per_m2
            cs_scale = _clearsky_scale(y[train_rows], cs[train_rows], cfg, target, table.sites)
            cs_power = cs[s_idx, n_idx] * cs_scale[n_idx]
            peak = np.nanmax(cs, axis=0)[n_idx] * cs_scale[n_idx]
            ok &= cs_power > cfg.pv.min_clearsky_fraction * peak
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.clip(y_target / cs_power, 0.0, cfg.pv.max_clearsky_index)
            z = z - builder.index_base(t_idx, n_idx, h_idx, cs_scale)
            weight = cs_power / scale[n_idx]
        else:
            z = (y_target - builder.base(t_idx, n_idx, h_idx)) / scale[n_idx]
            ok &= np.isfinite(z)
        if ok.sum() == 0:
            raise ForecastError(f"signal {target!r}: no training rows (all targets NaN or "
                                "outside the training period)")
        x = builder.build(t_idx[ok], n_idx[ok], h_idx[ok], scale, cs_scale)
        z, h_ok = z[ok].astype(np.float32), h_idx[ok]
        w = None if weight is None else weight[ok]
        model = TargetModel(target, reference, builder.names, scale, cs_scale, constant)
        # The pooled model keeps the own horizons' rows: the horizons next to them gain.
        model.boosters = self._train(builder, x, z, w, seed)
        model.horizon_reference = own_reference(target, cfg)
        same = model.horizon_reference == reference
        own_b = builder if same else FeatureBuilder(table, target, cfg, model.horizon_reference,
                                                    hours, self.weather)
        t_ok, n_ok = t_idx[ok], n_idx[ok]
        for h in own_model_horizons(cfg).tolist():
            sel = h_ok == h
            if same:
                xs, zs, ws = x[sel], z[sel], None if w is None else w[sel]
            else:  # non-PV: labels relative to the own reference, no weights
                ts, ns, hs = t_ok[sel], n_ok[sel], h_ok[sel]
                zs = ((y[ts + hs, ns] - own_b.base(ts, ns, hs)) / scale[ns]).astype(np.float32)
                xs, ws = own_b.build(ts, ns, hs, scale, cs_scale), None
            model.horizon_boosters[h] = self._train(own_b, xs, zs, ws, seed)
        return model

    def _train(self, builder: FeatureBuilder, x: np.ndarray, z: np.ndarray,
               weight: np.ndarray | None, seed: int) -> dict[float, lgb.Booster]:
        """One booster per quantile on rows ``x`` with labels ``z``."""
        cfg = self.config
        lg = cfg.lightgbm
        ds_params = {"max_bin": lg.max_bin, "verbose": -1, "min_data_in_leaf": lg.min_data_in_leaf,
                     "num_threads": lg.num_threads}
        dataset = lgb.Dataset(
            x, label=z, weight=weight, feature_name=builder.names,
            categorical_feature=builder.categorical, params=ds_params, free_raw_data=True,
        ).construct()
        boosters = {}
        for q in cfg.quantiles:
            params = {
                "objective": "quantile", "alpha": float(q), "learning_rate": lg.learning_rate,
                "num_leaves": lg.num_leaves, "min_data_in_leaf": lg.min_data_in_leaf,
                "feature_fraction": lg.feature_fraction, "bagging_fraction": lg.bagging_fraction,
                "bagging_freq": lg.bagging_freq, "lambda_l2": lg.lambda_l2,
                "num_threads": lg.num_threads, "seed": seed, "verbose": -1,
                "max_bin": lg.max_bin,
            }
            boosters[float(q)] = lgb.train(params, dataset, num_boost_round=lg.n_estimators)
        return boosters

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
            for h_own, group in m.booster_groups():
                sel = ~np.isin(h_model, list(m.horizon_boosters)) if h_own is None else (
                    h_model == h_own)
                ref = m.reference if h_own is None else m.horizon_reference
                if sel.any():
                    vals[sel] = self._predict_rows(table, m, ref, group, hours, t_model[sel],
                                                   n[sel], h_model[sel], (t + h_eff)[sel])
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

    def _predict_rows(self, table: SignalTable, m: TargetModel, reference: str,
                      group: dict[float, lgb.Booster], hours: TargetHourArrays, t: np.ndarray,
                      n: np.ndarray, h: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Quantiles ``[R, Q]`` of rows ``(t, n, h)`` (target rows ``s``) from ``group``."""
        cfg = self.config
        b = FeatureBuilder(table, m.signal, cfg, reference, hours, self.weather)
        x = b.build(t, n, h, m.scale, m.clearsky_scale)
        out = np.empty((len(t), len(cfg.quantiles)))
        for j, q in enumerate(cfg.quantiles):
            z = group[float(q)].predict(x, num_threads=cfg.lightgbm.num_threads)
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
            files: dict[str, dict[str, str]] = {}
            for h, group in m.booster_groups():
                tag = "pooled" if h is None else f"h{h}"
                files[tag] = {}
                for q, booster in group.items():
                    name = f"{target}_q{q:g}.txt" if h is None else f"{target}_{tag}_q{q:g}.txt"
                    write_text_atomic(d / name, booster.model_to_string())
                    files[tag][f"{q:g}"] = name
            meta["targets"][target] = {
                "reference": m.reference,
                "horizon_reference": m.horizon_reference,
                "feature_names": m.feature_names,
                "scale": m.scale.tolist(),
                "clearsky_scale": None if m.clearsky_scale is None else m.clearsky_scale.tolist(),
                "constant": [None if not np.isfinite(c) else float(c) for c in m.constant],
                "models": files,
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
                                f"expected {MODEL_FORMAT_VERSION}")
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
            m.horizon_reference = tm["horizon_reference"]
            for tag, group in tm["models"].items():
                boosters = {float(q): lgb.Booster(model_file=str(d / name))
                            for q, name in group.items()}
                if tag == "pooled":
                    m.boosters = boosters
                else:
                    m.horizon_boosters[int(tag.removeprefix("h"))] = boosters
            self.models[target] = m
        return self


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
