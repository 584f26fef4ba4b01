"""Scenario-level forecasting tasks behind ``gridrl forecast fit|backtest|show``.

``fit``
    fits the forecaster on the scenario's training periods (issue and target rows both
    inside them), saves it (LightGBM text models + ``forecaster.json``), and builds the
    cube of every issue time (causal in the validation and test periods, cross-fitted
    elsewhere; cached, and copied to the output folder).
``backtest``
    evaluates out of sample (the cube's causal scheme, rolling origin, or cross-fitted
    over the whole year) on the test or validation periods or the whole year; writes the
    metric table (CSV + parquet), a summary and PNG plots.
``show``
    describes a folder written by either.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gridrl.forecast.backtest import BacktestResult, backtest, evaluation_rows
from gridrl.forecast.causal import evaluation_mask
from gridrl.forecast.config import ForecastConfig, derive_config, load_forecast_config
from gridrl.forecast.crossfit import weather_for
from gridrl.forecast.cube import ForecastCube, make_cube
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import target_hour_arrays
from gridrl.forecast.inputs import SignalTable, signal_table
from gridrl.forecast.model import QuantileForecaster
from gridrl.forecast.sites import site_locations
from gridrl.forecast.solar import SiteLocation
from gridrl.io import write_json_atomic


@dataclass(eq=False)
class ScenarioData:
    """Signals to forecast with their site locations: a scenario's, or one file's
    (``scenario`` None, ``path`` the file)."""

    scenario: Any
    signals: Any
    locations: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return self.scenario.name if self.scenario is not None else self.path.stem


def load_inputs(scenario_path: str | Path) -> ScenarioData:
    """Load a scenario, build its signals (cached by :mod:`gridrl.data.build`) and read the
    site locations (its ``location`` keys, else its weather files)."""
    from gridrl.data.build import build_signals
    from gridrl.scenario import load_scenario

    path = Path(scenario_path)
    sc = load_scenario(path)
    sig = build_signals(sc, base_dir=path.parent)
    return ScenarioData(sc, sig, site_locations(sc), path)


def file_inputs(
    source: Any, signal: str, *, latitude_deg: float | None = None,
    longitude_deg: float | None = None,
) -> ScenarioData:
    """One column (or a sum of columns) of a file as the only site, named after the file.

    ``source`` is a :class:`gridrl.scenario.SeriesSource`; empty cells stay missing
    (left out of fitting and scoring) unless it asks for ``fill`` or ``resample``. A
    location enables the sun features.
    """
    from gridrl.data.sources.series import load_series

    if (latitude_deg is None) != (longitude_deg is None):
        raise ForecastError("give both latitude and longitude, or neither")
    path = Path(source.file or source.dataset)
    frame, record = load_series(source, signal, site=path.stem, keep_missing=True)
    frame.attrs["provenance"] = [{"step": "load_series", **record}]
    locations = {}
    if latitude_deg is not None:
        locations[path.stem] = SiteLocation(latitude_deg, longitude_deg)
    return ScenarioData(None, frame, locations, path)


def constant_targets(table: SignalTable, targets: list[str]) -> dict[str, float]:
    """Targets whose observed values are one number at every site (nothing to forecast)."""
    out = {}
    for name in targets:
        if name not in table.signals:
            continue
        col = table.column(name)
        finite = col[np.isfinite(col)]
        if finite.size and np.all(finite == finite[0]):
            out[name] = float(finite[0])
    return out


def refuse_constant_targets(table: SignalTable, targets: list[str], where: str) -> None:
    """A target that never changes (all zero: a region without wind) is an error.

    Raises
    ------
    ForecastError
        naming the target, its value and where it comes from.
    """
    constant = constant_targets(table, targets)
    if constant:
        name, value = next(iter(constant.items()))
        raise ForecastError(
            f"{where}: target {name!r} is constant ({value:g}) at every site "
            f"({', '.join(table.sites)}): there is nothing to forecast; leave it out of "
            "the targets"
        )


def resolve_config(
    config: str | Path | ForecastConfig | None, data: ScenarioData
) -> tuple[ForecastConfig, list[str]]:
    """The forecaster config for ``data`` and the default targets it left out.

    Without a config, one is derived (``derive_config``) from the built-in targets that
    the signals have and that vary; a given config is used as it is, and a constant
    target in it is an error (``refuse_constant_targets``).
    """
    table = signal_table(data.signals)
    located = bool(data.locations)
    if config is None:
        defaults = ForecastConfig().targets
        have = [t for t in defaults if t in table.signals] or list(table.signals)
        constant = constant_targets(table, have)
        targets = [t for t in have if t not in constant]
        if not targets:
            refuse_constant_targets(table, have, str(data.path))
        cfg = derive_config(targets, table.signals, located=located)
        return cfg, sorted(set(have) - set(targets))  # present but constant
    cfg = config if isinstance(config, ForecastConfig) else load_forecast_config(config)
    refuse_constant_targets(table, list(cfg.targets), str(data.path))
    return cfg, []


def _inputs(source: str | Path | ScenarioData) -> ScenarioData:
    return source if isinstance(source, ScenarioData) else load_inputs(source)


def fit_scenario(
    scenario_path: str | Path | ScenarioData,
    config: str | Path | ForecastConfig | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit and save the forecaster of a scenario (or a file's ``ScenarioData``: every
    row is training data) and build its cube (causal in the validation and test periods).

    Returns
    -------
    dict
        paths written, seconds spent (``fit_s``, ``cube_s``), the targets and features.
    """
    data = _inputs(scenario_path)
    cfg, dropped = resolve_config(config, data)
    table = signal_table(data.signals)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = np.zeros(len(table.index), dtype=bool)
    if data.scenario is None:
        train[:] = True
    else:
        train[evaluation_rows(table.index, data.scenario.periods.train)] = True
    weather = weather_for(table, cfg, None, seed)
    t0 = time.perf_counter()
    model = QuantileForecaster(cfg, data.locations, weather, seed=seed)
    model.fit(table, train, hours=target_hour_arrays(table, data.locations))
    model.save(out / "model")
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    cube = make_cube(data.signals, "lightgbm", targets=cfg.targets, horizons_h=cfg.horizons_h,
                     quantiles=cfg.quantiles, config=cfg, cache_dir=cache_dir, seed=seed,
                     locations=data.locations,
                     periods=data.scenario.periods if data.scenario is not None else None,
                     progress=progress)
    cube_s = time.perf_counter() - t1
    cube_path = cube.save(out / "cube.npz")
    info = {
        "scenario": data.name,
        "scenario_hash": data.scenario.content_hash() if data.scenario is not None else None,
        "config": cfg.name, "seed": seed, "train_rows": int(train.sum()),
        "targets": list(cfg.targets), "targets_left_out": dropped,
        "solar_features": cfg.features.solar,
        "fit_s": round(fit_s, 2), "cube_s": round(cube_s, 2),
        "model": str(out / "model"), "cube": str(cube_path),
    }
    write_json_atomic(out / "fit.json", info)
    return info


def backtest_scenario(
    scenario_path: str | Path | ScenarioData,
    config: str | Path | ForecastConfig | None,
    out_dir: str | Path | None = None,
    *,
    scheme: Literal["causal", "rolling", "crossfit"] = "causal",
    period: Literal["test", "validation", "all"] = "test",
    plots_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> BacktestResult:
    """Backtest a scenario's (or a file's) forecaster; save tables and plots when folders
    are given. A file has no periods: every row is evaluated (the ``causal`` scheme needs
    a scenario's validation/test periods)."""
    data = _inputs(scenario_path)
    cfg, dropped = resolve_config(config, data)
    eval_rows = causal_rows = None
    if data.scenario is not None:
        periods = data.scenario.periods
        if period != "all":
            blocks = getattr(periods, period, None)
            if not blocks:
                raise ForecastError(f"{data.name}: the scenario has no {period} period "
                                    f"(periods.{period})")
            eval_rows = evaluation_rows(signal_table(data.signals).index, blocks)
        causal_rows = evaluation_mask(data.signals.index, periods)
    result = backtest(data.signals, cfg, scheme=scheme, locations=data.locations,
                      eval_rows=eval_rows, causal_rows=causal_rows, seed=seed,
                      progress=progress)
    result.meta.update(scenario=data.name, config=cfg.name, targets_left_out=dropped,
                       period=period if data.scenario is not None else "all",
                       solar_features=cfg.features.solar)
    if out_dir is not None:
        result.save(out_dir)
    if plots_dir is not None:
        write_plots(result, plots_dir, title=f"{data.name}: {scheme} backtest, "
                    f"{result.meta['period']} period")
    return result


def write_plots(result: BacktestResult, directory: str | Path, title: str = "") -> list[Path]:
    """Error against horizon (all signals) and a week's fan chart of every signal at the
    first site."""
    from gridrl.forecast.plots import plot_error_vs_horizon, plot_fan_week

    d = Path(directory)
    paths = [plot_error_vs_horizon(result.table, d / "error_vs_horizon.png", title)]
    horizons = tuple(h for h in (1, result.horizons_h[-1]) if h in result.horizons_h)
    for signal in result.targets:
        paths.append(plot_fan_week(result, signal, result.sites[0],
                                   d / f"fan_{result.sites[0]}_{signal}.png",
                                   horizons_h=horizons))
    return paths


def describe(directory: str | Path) -> dict[str, Any]:
    """What a ``fit`` or ``backtest`` folder holds: fit info, model summary, cube
    metadata and the backtest summary, as plain data (the CLI renders it).

    Raises
    ------
    ForecastError
        when the folder holds none of them.
    """
    d = Path(directory)
    out: dict[str, Any] = {}
    if (d / "fit.json").exists():
        out["fit"] = json.loads((d / "fit.json").read_text())
    model_dir = d / "model" if (d / "model" / "forecaster.json").exists() else d
    if (model_dir / "forecaster.json").exists():
        model = QuantileForecaster.load(model_dir)
        rows = []
        for target, m in model.models.items():
            boosters = m.pooled[0].boosters
            booster = boosters[0.5] if 0.5 in boosters else next(iter(boosters.values()))
            gain = booster.feature_importance("gain")
            top = [booster.feature_name()[i] for i in np.argsort(gain)[::-1][:5]]
            models = ", ".join(f"{k} {v}" for k, v in m.references().items())
            rows.append({"signal": target, "reference": m.reference, "models": models,
                         "quantiles": list(boosters), "trees": booster.num_trees(),
                         "top_features": ", ".join(top)})
        out["model"] = pd.DataFrame(rows)
        out["sites"] = list(model.sites)
    if (d / "cube.npz").exists():
        cube = ForecastCube.load(d / "cube.npz")
        out["cube"] = {"mode": cube.mode, "scheme": cube.meta.get("scheme"),
                       "shape": list(cube.values.shape),
                       "sites": list(cube.sites), "signals": list(cube.signals),
                       "horizons_h": list(cube.horizons_h), "quantiles": list(cube.quantiles),
                       "start": str(cube.index[0]), "end": str(cube.index[-1])}
    if (d / "summary.csv").exists():
        out["summary"] = pd.read_csv(d / "summary.csv")
        if (d / "backtest.json").exists():
            out["backtest"] = json.loads((d / "backtest.json").read_text())
    if not out:
        raise ForecastError(f"{d}: no forecaster, cube or backtest found")
    return out


__all__ = [
    "backtest_scenario", "constant_targets", "describe", "file_inputs", "fit_scenario",
    "load_inputs", "refuse_constant_targets", "resolve_config", "write_plots",
]
