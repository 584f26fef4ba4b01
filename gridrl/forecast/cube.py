"""ForecastCube: the forecasts the environment observes.

``values[t, n, k, i, j]`` is the quantile ``quantiles[j]`` of signal ``signals[k]`` at
site ``sites[n]`` for target row ``t + horizons_h[i]``, issued at the *end* of hour ``t``
(with data up to and including row ``t``). Rows are aligned with the signals index.

Targets past the end of the data hold the last row: the entry for ``(t, h)`` is always a
forecast of row ``min(t + h, T - 1)``.

Modes (ablations share one interface):

``perfect``
    the truth of the target row, for every quantile (an oracle).
``persistence``
    the value at ``t`` for every horizon; the quantile spread is the empirical quantile
    of the persistence residual ``y[t+h] - y[t]`` over the whole data, per site, signal,
    horizon and hour of day of the target, centred on its median so that the P50 is the
    persistence value itself (in-sample: an ablation, not a forecaster).
``none``
    zeros everywhere: the environment observes zeros (no forecast information).
``noisy(sigma)``
    the truth plus Gaussian error of relative size ``sigma`` (seeded): multiplicative
    (standard deviation ``sigma * |y|``) for signals bounded below by 0, additive with
    standard deviation ``sigma * std(y)`` of the site's signal otherwise. Quantile
    ``q`` is the noisy median plus ``sigma * scale * Phi^-1(q)``: the bands are
    calibrated for that error.
``lightgbm``
    LightGBM quantile forecasts, cached on disk under a hash of data, config and
    periods: causal in the evaluation periods (validation, test) given by ``periods``,
    each from a model fitted only on data before its issue time, and cross-fitted among
    the other rows (:mod:`gridrl.forecast.causal`); all rows cross-fitted without
    ``periods`` (forecasts for training only). Each target is fitted on its own and
    also cached under a hash of the columns it reads (itself, its weather covariates),
    so a cube whose other targets changed reuses it; with a ``seed`` in the config
    (:class:`ForecastConfig`) it is reused across scenario seeds too.

Physical bounds and non-crossing quantiles hold in every mode (:mod:`.bounds`); in
``lightgbm`` mode the data-derived bounds of a row use data up to that row only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.cache import frame_hash, key_hash
from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.inputs import (
    SignalTable,
    check_horizons,
    check_quantiles,
    check_targets,
    signal_table,
)
from gridrl.forecast.solar import SiteLocation
from gridrl.io import default_cache_dir, write_json_atomic, write_with

CUBE_FORMAT_VERSION = 1
# Part of the cache key of ``lightgbm`` cubes: bump it whenever a change of the model,
# features or calibration code changes the forecasts, so stale cubes are not reused.
FORECAST_CODE_VERSION = 4
_NOISY = re.compile(r"^noisy\(\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\)$")
MODES = ("lightgbm", "perfect", "persistence", "none", "noisy(sigma)")


@dataclass(frozen=True, eq=False)
class ForecastCube:
    """Quantile forecasts for every issue time, site, signal and horizon.

    Attributes
    ----------
    values : numpy.ndarray
        float32 ``[T, N, K, H, Q]`` in each signal's own unit.
    index : pandas.DatetimeIndex
        issue times (the signals index, UTC).
    sites, signals : tuple of str
    horizons_h : tuple of int
        hours ahead.
    quantiles : tuple of float
        increasing; ``values`` is non-decreasing along the last axis.
    mode : str
    meta : dict
        provenance (data and config hashes, calibration coverage, ...).
    """

    values: np.ndarray
    index: pd.DatetimeIndex
    sites: tuple[str, ...]
    signals: tuple[str, ...]
    horizons_h: tuple[int, ...]
    quantiles: tuple[float, ...]
    mode: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expect = (len(self.index), len(self.sites), len(self.signals), len(self.horizons_h),
                  len(self.quantiles))
        if self.values.shape != expect:
            raise ForecastError(f"cube values have shape {self.values.shape}, expected {expect}")

    def at(self, t: int | np.ndarray) -> np.ndarray:
        """Forecasts issued at row ``t``: ``[N, K, H, Q]``; an int array of ``B`` rows gives
        ``[B, N, K, H, Q]`` (batched episodes). O(1) per row (numpy indexing)."""
        return self.values[t]

    def select(
        self,
        signals: Sequence[str] | None = None,
        horizons_h: Sequence[int] | None = None,
        quantiles: Sequence[float] | None = None,
    ) -> ForecastCube:
        """A sub-cube with the given signals, horizons and quantiles, in the given order.

        Raises
        ------
        ForecastError
            naming any signal, horizon or quantile the cube does not hold.
        """
        k = _positions("signal", self.signals, signals)
        h = _positions("horizon", self.horizons_h, horizons_h)
        q = _positions("quantile", self.quantiles, quantiles, approx=True)
        values = np.ascontiguousarray(self.values[:, :, k][:, :, :, h][..., q])
        return replace(
            self,
            values=values,
            signals=tuple(self.signals[i] for i in k),
            horizons_h=tuple(self.horizons_h[i] for i in h),
            quantiles=tuple(self.quantiles[i] for i in q),
        )

    def quantile_index(self, q: float) -> int:
        """Position of quantile ``q`` on the last axis."""
        return _positions("quantile", self.quantiles, [q], approx=True)[0]

    def to_frame(self, site: str, signal: str, horizon_h: int) -> pd.DataFrame:
        """One site/signal/horizon as a frame indexed by *target* time, one column per
        quantile (``q0.1``, ...), for plots and inspection."""
        n = _positions("site", self.sites, [site])[0]
        k = _positions("signal", self.signals, [signal])[0]
        h = _positions("horizon", self.horizons_h, [horizon_h])[0]
        target = self.index + pd.Timedelta(hours=horizon_h)
        return pd.DataFrame(self.values[:, n, k, h, :], index=target,
                            columns=[f"q{q:g}" for q in self.quantiles])

    def save(self, path: str | Path) -> Path:
        """Write the cube to ``path`` (``.npz``, metadata embedded) atomically, and a
        readable copy of the metadata beside it (``.json``)."""
        path = Path(path)
        meta = self._metadata()
        payload = json.dumps(meta, sort_keys=True, default=str)

        def _write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, values=self.values, index_ns=self.index.asi8,
                         metadata=np.array(payload))

        write_with(path, _write)
        write_json_atomic(path.with_suffix(".json"), meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ForecastCube:
        """Read a cube written by :meth:`save`.

        Raises
        ------
        ForecastError
            if the file is missing or not a cube.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                values = npz["values"]
                index_ns = npz["index_ns"]
                meta = json.loads(str(npz["metadata"]))
        except FileNotFoundError:
            raise ForecastError(f"{path}: forecast cube not found") from None
        except (KeyError, ValueError, OSError) as exc:
            raise ForecastError(f"{path}: not a forecast cube ({exc})") from None
        if meta.get("format_version") != CUBE_FORMAT_VERSION:
            raise ForecastError(
                f"{path}: cube format {meta.get('format_version')}, expected "
                f"{CUBE_FORMAT_VERSION}"
            )
        index = pd.DatetimeIndex(pd.to_datetime(index_ns, utc=True), name="time")
        return cls(
            values=values.astype(np.float32, copy=False),
            index=index,
            sites=tuple(meta["sites"]),
            signals=tuple(meta["signals"]),
            horizons_h=tuple(int(h) for h in meta["horizons_h"]),
            quantiles=tuple(float(q) for q in meta["quantiles"]),
            mode=str(meta["mode"]),
            meta=dict(meta.get("meta", {})),
        )

    def _metadata(self) -> dict[str, Any]:
        return {
            "format_version": CUBE_FORMAT_VERSION,
            "sites": list(self.sites),
            "signals": list(self.signals),
            "horizons_h": list(self.horizons_h),
            "quantiles": list(self.quantiles),
            "mode": self.mode,
            "start": str(self.index[0]) if len(self.index) else None,
            "end": str(self.index[-1]) if len(self.index) else None,
            "meta": self.meta,
        }


def _positions(kind: str, have: Sequence[Any], want: Sequence[Any] | None, *,
               approx: bool = False) -> list[int]:
    if want is None:
        return list(range(len(have)))
    out = []
    for w in want:
        if approx:
            hits = [i for i, x in enumerate(have) if abs(float(x) - float(w)) < 1e-9]
        else:
            hits = [i for i, x in enumerate(have) if x == w]
        if not hits:
            raise ForecastError(f"{kind} {w!r} is not in the cube (have {list(have)})")
        out.append(hits[0])
    return out


def parse_mode(mode: str) -> tuple[str, float | None]:
    """Split a mode string into its name and parameter: ``"noisy(0.2)" -> ("noisy", 0.2)``.

    Raises
    ------
    ForecastError
        for an unknown mode.
    """
    mode = mode.strip()
    if mode in ("lightgbm", "perfect", "persistence", "none"):
        return mode, None
    m = _NOISY.match(mode)
    if m:
        return "noisy", float(m.group(1))
    raise ForecastError(f"unknown forecast mode {mode!r}; expected one of {', '.join(MODES)}")


def make_cube(
    signals: Any,
    mode: str,
    *,
    targets: Sequence[str],
    horizons_h: Sequence[int],
    quantiles: Sequence[float],
    config: ForecastConfig | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    locations: Mapping[str, SiteLocation] | None = None,
    weather: Any = None,
    periods: Any = None,
    progress: bool = False,
) -> ForecastCube:
    """Build the forecast cube of ``targets`` at every site of ``signals``.

    Parameters
    ----------
    signals
        a :class:`gridrl.data.signals.Signals` or its frame.
    mode
        ``lightgbm``, ``perfect``, ``persistence``, ``none`` or ``noisy(sigma)``.
    targets, horizons_h, quantiles
        signal names, hours ahead (increasing), quantile levels (increasing).
    config
        forecaster config (bounds for every mode; model, features, calibration and
        cross-fitting for ``lightgbm``); defaults to :class:`ForecastConfig` defaults.
    cache_dir
        where ``lightgbm`` cubes are cached (default :func:`default_cache_dir`, i.e.
        ``$GRIDRL_CACHE`` or ``~/.cache/gridrl``); other modes are cheap and not cached.
    seed
        seeds ``noisy`` errors and LightGBM.
    locations
        site -> :class:`SiteLocation`; needed for zero-at-night signals (PV) and solar
        features.
    weather
        weather forecasts for the ``lightgbm`` features
        (:class:`gridrl.forecast.weather.WeatherForecasts`), simulated from the signals
        per the config when omitted.
    periods
        the scenario's periods (:class:`gridrl.scenario.Periods`): ``lightgbm``
        forecasts of its ``validation`` and ``test`` rows are causal, the other rows
        cross-fitted; None cross-fits every row (a cube for training only: models see
        every hour but their own block).
    progress
        show a progress bar while fitting (``lightgbm``).

    Raises
    ------
    ForecastError
        unknown mode; a target missing, all NaN or (for the cheap modes) with NaN at a
        site; horizons beyond the data; bad quantiles; (``lightgbm``) an evaluation
        period starting before ``causal.min_train_h`` hours of data.
    """
    name, sigma = parse_mode(mode)
    cfg = config or ForecastConfig()
    table = signal_table(signals)
    targets = list(targets)
    check_targets(table, targets, allow_nan=name == "lightgbm")
    check_horizons(table, horizons_h)
    check_quantiles(quantiles)
    h = np.asarray(horizons_h, dtype=np.int64)
    q = np.asarray(quantiles, dtype=np.float64)
    common = {
        "index": table.index,
        "sites": table.sites,
        "signals": tuple(targets),
        "horizons_h": tuple(int(x) for x in h),
        "quantiles": tuple(float(x) for x in q),
    }
    data_hash = frame_hash(table.frame)
    meta: dict[str, Any] = {"data_hash": data_hash, "seed": seed}

    if name == "lightgbm":
        return _lightgbm_cube(table, common, meta, targets, h, q, cfg, cache_dir, seed,
                              locations, weather, periods, progress)

    values = _cheap_values(table, name, sigma, targets, h, q, cfg, seed, locations)
    bounds = physical_bounds(table.data, table.index, table.sites, table.signals, targets,
                             cfg.bounds, locations)
    bounds.apply(values, np.arange(len(table.index)), h)
    mode_label = f"noisy({sigma:g})" if name == "noisy" else name
    return ForecastCube(values=values, mode=mode_label, meta=meta, **common)


def _lightgbm_cube(table: SignalTable, common: dict[str, Any], meta: dict[str, Any],
                   targets: list[str], h: np.ndarray, q: np.ndarray, cfg: ForecastConfig,
                   cache_dir: str | Path | None, seed: int,
                   locations: Mapping[str, SiteLocation] | None, weather: Any, periods: Any,
                   progress: bool) -> ForecastCube:
    from gridrl.forecast.causal import evaluation_mask, row_runs

    seed = seed if cfg.seed is None else cfg.seed
    eval_mask = evaluation_mask(table.index, periods)
    loc_json = {s: vars(v) for s, v in (locations or {}).items()}
    config_values = cfg.key_values()
    key = key_hash(FORECAST_CODE_VERSION, meta["data_hash"], targets,
                   list(common["horizons_h"]), list(common["quantiles"]),
                   config_values, seed, loc_json,
                   None if weather is None else weather.content_hash(), row_runs(eval_mask))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = root / "forecast" / f"cube-{key}.npz"
    if cached.exists():
        cube = ForecastCube.load(cached)
        return replace(cube, index=table.index)
    values, fit_meta = _target_values(table, targets, h, q, cfg, root, seed, locations,
                                      weather, eval_mask, progress)
    meta = {**meta, **fit_meta, "seed": seed,
            "config_hash": key_hash(config_values), "cache_key": key}
    bounds = physical_bounds(table.data, table.index, table.sites, table.signals, targets,
                             cfg.bounds, locations, running=True)
    bounds.apply(values, np.arange(len(table.index)), h)
    cube = ForecastCube(values=values, mode="lightgbm", meta=meta, **common)
    cube.save(cached)
    return cube


def _target_values(table: SignalTable, targets: list[str], h: np.ndarray, q: np.ndarray,
                   cfg: ForecastConfig, root: Path, seed: int,
                   locations: Mapping[str, SiteLocation] | None, weather: Any,
                   eval_mask: np.ndarray, progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """The forecasts of every target (bounds not yet applied), each fitted on its own and
    cached under a hash of the columns it reads: a target whose data did not change
    (real carbon or prices under another scenario seed, with a fixed ``seed`` in the
    config) is read back instead of refitted."""
    from gridrl.forecast.causal import forecast_values, row_runs
    from gridrl.forecast.crossfit import resolve_config, weather_for
    from gridrl.forecast.features import target_hour_arrays

    full = resolve_config(cfg, targets, list(h), list(q))
    weather = weather_for(table, full, weather, seed)
    hours = None
    values = np.empty((len(table.index), len(table.sites), len(targets), len(h), len(q)),
                      dtype=np.float32)
    meta: dict[str, Any] = {}
    for k, target in enumerate(targets):
        own = resolve_config(cfg, [target], list(h), list(q))  # not the other targets
        key = _target_key(table, target, own, h, q, seed, locations, weather,
                          row_runs(eval_mask))
        path = root / "forecast" / f"target-{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as npz:
                values[:, :, k] = npz["values"]
                part = json.loads(str(npz["metadata"]))
        else:
            hours = hours if hours is not None else target_hour_arrays(table, locations)
            vals, part = forecast_values(
                table, targets=[target], horizons_h=h, quantiles=q, config=cfg,
                eval_mask=eval_mask, seed=seed, locations=locations, weather=weather,
                hours=hours, progress=progress)
            values[:, :, k] = vals[:, :, 0]
            _save_target(path, vals[:, :, 0], part)
        _merge_meta(meta, part)
    return values, meta


def _target_key(table: SignalTable, target: str, cfg: ForecastConfig, h: np.ndarray,
                q: np.ndarray, seed: int, locations: Mapping[str, SiteLocation] | None,
                weather: Any, runs: list[list[int]]) -> str:
    """Cache key of one target's forecasts: everything they are computed from (its
    column, the observed and forecast weather of its covariates, the site locations,
    the config, seed and evaluation rows)."""
    covariates = sorted(cfg.weather_for.get(target, []))
    frame = table.frame
    read = frame.loc[:, frame.columns.get_level_values(1).isin([target, *covariates])]
    wx = None if weather is None else weather.content_hash(covariates)
    return key_hash(FORECAST_CODE_VERSION, target, frame_hash(read), list(table.sites),
                    [int(x) for x in h], [float(x) for x in q], cfg.key_values(),
                    seed, {s: vars(v) for s, v in (locations or {}).items()}, wx, runs)


def _save_target(path: Path, values: np.ndarray, meta: dict[str, Any]) -> None:
    payload = json.dumps(meta, sort_keys=True, default=str)

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, values=values, metadata=np.array(payload))

    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, _write)


def _merge_meta(meta: dict[str, Any], part: dict[str, Any]) -> None:
    """Fold one target's fit metadata into the cube's: per-target dicts are joined,
    lists (weather covariates) united, the rest is the same for every target."""
    for name, value in part.items():
        if isinstance(value, dict) and isinstance(meta.get(name), dict):
            _merge_meta(meta[name], value)
        elif name == "weather_covariates" and name in meta:
            meta[name] = sorted({*meta[name], *value})
        else:
            meta[name] = value


def target_rows(t_len: int, horizons_h: np.ndarray) -> np.ndarray:
    """``[T, H]`` target rows ``min(t + h, T - 1)`` (targets past the data hold the last row)."""
    return np.minimum(np.arange(t_len)[:, None] + horizons_h[None, :], t_len - 1)


def _cheap_values(
    table: SignalTable,
    name: str,
    sigma: float | None,
    targets: list[str],
    h: np.ndarray,
    q: np.ndarray,
    cfg: ForecastConfig,
    seed: int,
    locations: Mapping[str, SiteLocation] | None,
) -> np.ndarray:
    t_len, n_sites = table.data.shape[:2]
    k_idx = [table.signals.index(s) for s in targets]
    y = table.data[:, :, k_idx]  # [T, N, K]
    shape = (t_len, n_sites, len(targets), len(h), len(q))
    if name == "none":
        return np.zeros(shape, dtype=np.float32)
    tgt = target_rows(t_len, h)  # [T, H]
    if name == "perfect":
        truth = np.moveaxis(y[tgt], 1, 3)  # [T, N, K, H]
        return np.repeat(truth[..., None], len(q), axis=-1).astype(np.float32)
    if name == "persistence":
        return _persistence(table, y, h, q, tgt)
    # noisy(sigma)
    truth = np.moveaxis(y[tgt], 1, 3)  # [T, N, K, H]
    bounds = physical_bounds(table.data, table.index, table.sites, table.signals, targets,
                             cfg.bounds, locations)
    multiplicative = bounds.lower == 0.0  # [N, K]
    signal_std = np.nanstd(y, axis=0)  # [N, K]
    scale = np.where(multiplicative[None, :, :, None], np.abs(truth),
                     signal_std[None, :, :, None])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(truth.shape)
    median = truth + sigma * scale * z
    spread = sigma * scale[..., None] * norm.ppf(q)[None, None, None, None, :]
    return (median[..., None] + spread).astype(np.float32)


def _persistence(table: SignalTable, y: np.ndarray, h: np.ndarray, q: np.ndarray,
                 tgt: np.ndarray) -> np.ndarray:
    t_len, n_sites, k_len = y.shape
    hod = table.index.hour.to_numpy()
    out = np.empty((t_len, n_sites, k_len, len(h), len(q)), dtype=np.float32)
    levels = np.concatenate([q, [0.5]])
    for i, hh in enumerate(h):
        valid = np.arange(t_len) + hh <= t_len - 1  # residuals only where the target exists
        resid = y[tgt[:, i]] - y  # [T, N, K]
        target_hod = hod[tgt[:, i]]
        offsets = np.zeros((24, len(q), n_sites, k_len))
        for hour in range(24):
            sel = valid & (target_hod == hour)
            if sel.any():
                qs = np.quantile(resid[sel], levels, axis=0)  # [Q+1, N, K]
                offsets[hour] = qs[:-1] - qs[-1]
        band = offsets[target_hod]  # [T, Q, N, K]
        out[:, :, :, i, :] = (y[:, None] + band).transpose(0, 2, 3, 1)
    return out
