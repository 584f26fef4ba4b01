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
from gridrl.forecast.config import ForecastConfig, load_forecast_config
from gridrl.forecast.crossfit import weather_for
from gridrl.forecast.cube import ForecastCube, make_cube
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.features import target_hour_arrays
from gridrl.forecast.inputs import signal_table
from gridrl.forecast.model import QuantileForecaster
from gridrl.forecast.sites import site_locations
from gridrl.io import write_json_atomic


@dataclass(eq=False)
class ScenarioData:
    """A scenario with its signals and site locations."""

    scenario: Any
    signals: Any
    locations: dict[str, Any]
    path: Path


def load_inputs(scenario_path: str | Path) -> ScenarioData:
    """Load a scenario, build its signals (cached by :mod:`gridrl.data.build`) and read the
    site locations from its weather files."""
    from gridrl.data.build import build_signals
    from gridrl.scenario import load_scenario

    path = Path(scenario_path)
    sc = load_scenario(path)
    sig = build_signals(sc, base_dir=path.parent)
    return ScenarioData(sc, sig, site_locations(sc), path)


def _config(config: str | Path | ForecastConfig | None) -> ForecastConfig:
    if isinstance(config, ForecastConfig):
        return config
    return ForecastConfig() if config is None else load_forecast_config(config)


def fit_scenario(
    scenario_path: str | Path,
    config: str | Path | ForecastConfig | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit and save the forecaster of a scenario and build its cube (causal in the
    validation and test periods).

    Returns
    -------
    dict
        paths written and seconds spent (``fit_s``, ``cube_s``).
    """
    cfg = _config(config)
    data = load_inputs(scenario_path)
    table = signal_table(data.signals)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = np.zeros(len(table.index), dtype=bool)
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
                     locations=data.locations, periods=data.scenario.periods,
                     progress=progress)
    cube_s = time.perf_counter() - t1
    cube_path = cube.save(out / "cube.npz")
    info = {
        "scenario": data.scenario.name, "scenario_hash": data.scenario.content_hash(),
        "config": cfg.name, "seed": seed, "train_rows": int(train.sum()),
        "fit_s": round(fit_s, 2), "cube_s": round(cube_s, 2),
        "model": str(out / "model"), "cube": str(cube_path),
    }
    write_json_atomic(out / "fit.json", info)
    return info


def backtest_scenario(
    scenario_path: str | Path,
    config: str | Path | ForecastConfig | None,
    out_dir: str | Path | None = None,
    *,
    scheme: Literal["causal", "rolling", "crossfit"] = "causal",
    period: Literal["test", "validation", "all"] = "test",
    plots_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> BacktestResult:
    """Backtest a scenario's forecaster; save tables and plots when folders are given."""
    cfg = _config(config)
    data = load_inputs(scenario_path)
    periods = data.scenario.periods
    eval_rows = None
    if period != "all":
        blocks = getattr(periods, period, None)
        if not blocks:
            raise ForecastError(f"{data.path}: the scenario has no {period} period "
                                f"(periods.{period})")
        eval_rows = evaluation_rows(data.signals.index, blocks)
    result = backtest(data.signals, cfg, scheme=scheme, locations=data.locations,
                      eval_rows=eval_rows,
                      causal_rows=evaluation_mask(data.signals.index, periods),
                      seed=seed, progress=progress)
    result.meta.update(scenario=data.scenario.name, config=cfg.name, period=period)
    if out_dir is not None:
        result.save(out_dir)
    if plots_dir is not None:
        write_plots(result, plots_dir, title=f"{data.scenario.name}: {scheme} backtest, "
                    f"{period} period")
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
    FileNotFoundError
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
            booster = m.boosters[0.5] if 0.5 in m.boosters else next(iter(m.boosters.values()))
            gain = booster.feature_importance("gain")
            top = [booster.feature_name()[i] for i in np.argsort(gain)[::-1][:5]]
            rows.append({"signal": target, "reference": m.reference,
                         "quantiles": list(m.boosters), "trees": booster.num_trees(),
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
        raise FileNotFoundError(f"{d}: no forecaster, cube or backtest found")
    return out


__all__ = ["backtest_scenario", "describe", "fit_scenario", "load_inputs", "write_plots"]
