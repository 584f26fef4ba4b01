"""gridrl's forecaster against Nixtla's mlforecast on the same real data, split and horizons.

Data: ENTSO-E 2020 (data set ``entsoe_2020``; ``gridrl data fetch entsoe_2020``), FR and
GB hourly carbon intensity, national solar and wind generation (six series). Split: models
are fitted once on the rows before 2020-10-01; then, from every midnight of 1 October ..
30 December (91 origins), each method forecasts hours 1..24 using the observed history up
to the origin (no refit).

Methods (LightGBM everywhere, num_threads=2):

- gridrl: direct multi-horizon model, horizon as a feature, one model per signal over
  both countries (``--quantiles 0.5``: the P50 only, the same task as the point models;
  the run with P10/P50/P90 is timed as well);
- mlforecast recursive: one model per signal over both countries, lags 1,2,3,6,12,24,
  48,168, rolling means of lag 1 over 24 and 168 h, hour and day of week, per-series
  standard scaling, L1 objective (MAE-optimal), LightGBM defaults otherwise;
- mlforecast direct: the same features, ``max_horizon=24`` (one model per horizon).

Prints MAE per series and method, the mean MAE relative to gridrl's, and the fit+predict
seconds of each. Run: ``python benchmarks/forecast_vs_mlforecast.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see gridrl.forecast.model

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' ENTSO-E reader (project loaders)

from forecast_helpers import NATIONAL_CENTROIDS, entsoe_config, entsoe_signals  # noqa: E402

from gridrl.data.datasets import data_root, dataset_dir  # noqa: E402
from gridrl.forecast.inputs import signal_table  # noqa: E402
from gridrl.forecast.model import QuantileForecaster  # noqa: E402

CUTOFF = pd.Timestamp("2020-10-01", tz="UTC")
H = 24
N_ORIGINS = 91
SIGNALS = ("carbon_g_per_kwh", "solar_mw", "wind_mw")
THREADS = 2


def load() -> pd.DataFrame:
    dataset_dir("entsoe_2020")  # a missing data set names the command that fetches it
    frames = [entsoe_signals(data_root(), c).frame for c in ("fr", "gb")]
    return pd.concat(frames, axis=1)


def gridrl_run(frame: pd.DataFrame, quantiles: list[float]) -> tuple[dict, float]:
    table = signal_table(frame)
    cfg = entsoe_config().model_copy(update={"quantiles": quantiles, "max_horizon_h": H})
    t_len = len(table.index)
    cut = int(np.searchsorted(table.index, CUTOFF))
    origins = cut - 1 + H * np.arange(N_ORIGINS)  # issue rows: the hour before each midnight
    t0 = time.perf_counter()
    model = QuantileForecaster(cfg, NATIONAL_CENTROIDS, seed=0)
    model.fit(table, np.arange(t_len) < cut)
    pred = model.predict(table, origins, list(range(1, H + 1)))
    seconds = time.perf_counter() - t0
    q50 = cfg.quantiles.index(0.5)
    out = {}
    for n, site in enumerate(table.sites):
        for k, sig in enumerate(cfg.targets):
            y = table.column(sig)[:, n]
            truth = y[origins[:, None] + np.arange(1, H + 1)[None, :]]
            out[f"{site}_{sig}"] = float(np.mean(np.abs(pred[:, n, k, :, q50] - truth)))
    return out, seconds


def mlforecast_run(frame: pd.DataFrame, direct: bool) -> tuple[dict, float]:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import LocalStandardScaler

    out: dict[str, float] = {}
    seconds = 0.0
    for sig in SIGNALS:
        long = []
        for site in ("fr", "gb"):
            s = frame[(site, sig)]
            long.append(pd.DataFrame({"unique_id": f"{site}_{sig}",
                                      "ds": s.index.tz_convert(None), "y": s.to_numpy()}))
        df = pd.concat(long, ignore_index=True)
        last = CUTOFF.tz_convert(None) + pd.Timedelta(hours=H * N_ORIGINS - 1)
        df = df[df["ds"] <= last]
        model = lgb.LGBMRegressor(objective="l1", num_threads=THREADS, verbosity=-1)
        fcst = MLForecast(
            models={"lgbm": model}, freq="h",
            lags=[1, 2, 3, 6, 12, 24, 48, 168],
            lag_transforms={1: [RollingMean(window_size=24), RollingMean(window_size=168)]},
            date_features=["hour", "dayofweek"],
            target_transforms=[LocalStandardScaler()],
            num_threads=THREADS,
        )
        t0 = time.perf_counter()
        cv = fcst.cross_validation(df, n_windows=N_ORIGINS, h=H, step_size=H, refit=False,
                                   max_horizon=H if direct else None)
        seconds += time.perf_counter() - t0
        first_cut = cv["cutoff"].min()
        if first_cut != CUTOFF.tz_convert(None) - pd.Timedelta(hours=1):
            raise RuntimeError(f"mlforecast cut at {first_cut}, expected {CUTOFF}")
        for uid, g in cv.groupby("unique_id"):
            out[str(uid)] = float(np.mean(np.abs(g["lgbm"] - g["y"])))
    return out, seconds


def main() -> None:
    frame = load()
    print(f"ENTSO-E 2020 FR+GB, fit before {CUTOFF.date()}, {N_ORIGINS} daily origins, "
          f"horizons 1..{H} h, LightGBM num_threads={THREADS}, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    runs = {}
    runs["gridrl (P50)"] = gridrl_run(frame, [0.5])
    runs["gridrl (P10/P50/P90)"] = gridrl_run(frame, [0.1, 0.5, 0.9])
    runs["mlforecast recursive"] = mlforecast_run(frame, direct=False)
    runs["mlforecast direct"] = mlforecast_run(frame, direct=True)
    series = list(runs["gridrl (P50)"][0])
    table = pd.DataFrame({name: [r[0][s] for s in series] for name, r in runs.items()},
                         index=series)
    pd.set_option("display.width", 160)
    print("\nMAE by series (signal units):")
    print(table.round(2).to_string())
    ref = table["gridrl (P50)"]
    print("\nmethod                    mean MAE / gridrl P50   fit+predict s   x gridrl P50")
    base_s = runs["gridrl (P50)"][1]
    for name, (_, secs) in runs.items():
        rel = float((table[name] / ref).mean())
        print(f"{name:<25} {rel:>21.3f} {secs:>15.1f} {secs / base_s:>14.2f}")


if __name__ == "__main__":
    main()
