"""Time to fit every geo3 forecaster and build the cross-fitted forecast cube.

geo3: 3 sites, a year hourly (8760 rows); forecasts/default.yaml: 6 signals (pv_kw,
wind_kw, headroom_kw, carbon_g_per_kwh, price_per_mwh, inference_gpus) x 3 quantiles,
horizons 1..24, LightGBM num_threads=2. Two timed steps, no cache:

1. fit: one model per signal and quantile on the scenario's training periods (what
   ``gridrl forecast fit`` saves);
2. cube: the cross-fitted cube of every issue time at all 24 horizons (4 folds, each a
   full set of models, then the rolling recalibration and the bounds).

Also times the cube at the environment's observation horizons (1, 2, 4, 8, 12, 24).
The target is fit + cube <= 60 s on 2 cores. The machine's load average is printed:
other work on the same cores slows every wall-clock number, so the CPU seconds of this
process are printed too (on 2 otherwise idle cores, wall time is about CPU time / 2
where LightGBM runs its 2 threads, and CPU time elsewhere).
Run: ``python benchmarks/forecast_speed.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see gridrl.forecast.model

import numpy as np  # noqa: E402

from gridrl.forecast import load_forecast_config, make_cube  # noqa: E402
from gridrl.forecast.backtest import evaluation_rows  # noqa: E402
from gridrl.forecast.crossfit import weather_for  # noqa: E402
from gridrl.forecast.features import target_hour_arrays  # noqa: E402
from gridrl.forecast.inputs import signal_table  # noqa: E402
from gridrl.forecast.model import QuantileForecaster  # noqa: E402
from gridrl.forecast.pipeline import load_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    data = load_inputs(REPO / "envs" / "geo3.yaml")
    cfg = load_forecast_config(REPO / "forecasts" / "default.yaml")
    table = signal_table(data.signals)
    print(f"geo3: {len(table.sites)} sites x {len(table.index)} h, {len(cfg.targets)} signals "
          f"x {len(cfg.quantiles)} quantiles, H={cfg.max_horizon_h}, "
          f"{cfg.crossfit.folds} folds, LightGBM num_threads={cfg.lightgbm.num_threads}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    train = np.zeros(len(table.index), dtype=bool)
    train[evaluation_rows(table.index, data.scenario.periods.train)] = True
    with tempfile.TemporaryDirectory() as cache:
        c0 = time.process_time()
        t0 = time.perf_counter()
        weather = weather_for(table, cfg, None, seed=0)
        model = QuantileForecaster(cfg, data.locations, weather, seed=0)
        model.fit(table, train, hours=target_hour_arrays(table, data.locations))
        fit_s = time.perf_counter() - t0
        fit_cpu = time.process_time() - c0
        c1 = time.process_time()
        t1 = time.perf_counter()
        cube = make_cube(data.signals, "lightgbm", targets=cfg.targets,
                         horizons_h=cfg.horizons_h, quantiles=cfg.quantiles, config=cfg,
                         cache_dir=cache, locations=data.locations)
        cube_s = time.perf_counter() - t1
        cube_cpu = time.process_time() - c1
        t2 = time.perf_counter()
        env_h = data.scenario.env.forecast_horizons_h
        make_cube(data.signals, "lightgbm", targets=cfg.targets, horizons_h=env_h,
                  quantiles=cfg.quantiles, config=cfg, cache_dir=Path(cache) / "env",
                  locations=data.locations)
        env_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        make_cube(data.signals, "lightgbm", targets=cfg.targets, horizons_h=cfg.horizons_h,
                  quantiles=cfg.quantiles, config=cfg, cache_dir=cache,
                  locations=data.locations)
        hit_s = time.perf_counter() - t3
    n_models = len(cfg.targets) * len(cfg.quantiles)
    print(f"fit ({n_models} models, training periods): {fit_s:6.1f} s wall, "
          f"{fit_cpu:6.1f} s CPU")
    print(f"cross-fitted cube {cube.values.shape} ({cfg.crossfit.folds * n_models} models): "
          f"{cube_s:6.1f} s wall, {cube_cpu:6.1f} s CPU")
    print(f"fit + cube (target <= 60 s): {fit_s + cube_s:6.1f} s wall, "
          f"{fit_cpu + cube_cpu:6.1f} s CPU")
    print(f"cube at the env's horizons {tuple(env_h)}:    {env_s:6.1f} s")
    print(f"cube again from the cache:                    {hit_s:6.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
