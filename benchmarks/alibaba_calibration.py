"""How well the calibrated workload generator reproduces the Alibaba GPU trace.

Fits :mod:`gridrl.data.sources.alibaba_calibrated` to ``alibaba_gpu_2023`` (the last
``--window-days`` whole days), generates ``--years`` years for a site the size of the
traced cluster, and prints trace against generated: arrivals per hour, flexible GPU-h
per hour, inference GPUs, the inference share of busy GPU time, pod size and duration
quantiles, inference lag-1 correlation and the hour-of-day profile's correlation. The
comparison figure goes to ``--plot``, the fit's numbers to ``--json``.

Usage: ``python benchmarks/alibaba_calibration.py [--plot PATH.png] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.datasets import dataset_dir
from gridrl.data.sources.alibaba_calibrated import (
    DATASET,
    calibration_plot,
    fit_trace,
    generate_calibrated,
)
from gridrl.data.sources.site_weather import SiteWeather
from gridrl.io import write_text_atomic

HOURS_PER_YEAR = 8760


def _utc_site(hours: int) -> SiteWeather:
    index = pd.date_range("2021-01-04", periods=hours, freq="h", tz="UTC", name="time")
    return SiteWeather(frame=pd.DataFrame(index=index), latitude_deg=0.0, longitude_deg=0.0,
                       altitude_m=0.0, tz_offset_h=0.0, station="utc", source="none")


def comparison(fit, gen: pd.DataFrame) -> pd.DataFrame:
    """Trace vs generated statistics, one row each."""
    trace = fit.hourly
    rng = np.random.default_rng(0)
    pick = rng.integers(0, fit.pod_gpus.size, int(gen["arrivals"].sum()))

    def share(f: pd.DataFrame) -> float:
        inf, flex = f["inference_gpus"].mean(), f["flexible_gpu_h"].mean()
        return float(inf / (inf + flex))

    def lag1(v: pd.Series) -> float:
        return float(np.corrcoef(v.to_numpy()[:-1], v.to_numpy()[1:])[0, 1])

    hod_t = trace["arrivals"].groupby(trace.index % 24).mean()
    hod_g = gen["arrivals"].groupby(gen.index.hour).mean()
    rows = {
        "flexible pod arrivals per h": (trace["arrivals"].mean(), gen["arrivals"].mean()),
        "flexible GPU-h per h": (trace["flexible_gpu_h"].mean(), gen["flexible_gpu_h"].mean()),
        "inference GPUs (mean)": (trace["inference_gpus"].mean(), gen["inference_gpus"].mean()),
        "inference share of busy GPU time": (share(trace), share(gen)),
        "inference lag-1 correlation": (lag1(trace["inference_gpus"]),
                                        lag1(gen["inference_gpus"])),
        "pod GPUs median": (np.median(fit.pod_gpus), np.median(fit.pod_gpus[pick])),
        "pod hours median": (np.median(fit.pod_hours), np.median(fit.pod_hours[pick])),
        "pod hours p90": (np.quantile(fit.pod_hours, 0.9), np.quantile(fit.pod_hours[pick], 0.9)),
        "hour-of-day arrival profile corr.": (1.0, float(np.corrcoef(hod_t, hod_g)[0, 1])),
    }
    return pd.DataFrame(rows, index=["trace", "generated"]).T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window-days", type=int, default=28)
    ap.add_argument("--years", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path, default=Path("alibaba_calibration.png"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    folder = dataset_dir(DATASET)
    fit = fit_trace(folder / "pods.csv", folder / "gpu_nodes.csv", args.window_days, 0)
    weather = _utc_site(args.years * HOURS_PER_YEAR)
    gen = generate_calibrated(fit, fit.cluster_gpus, weather, args.seed, "cluster")
    table = comparison(fit, gen)
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    calibration_plot(fit, gen, gen.index.hour.to_numpy(), args.plot)
    print(f"figure: {args.plot}")
    if args.json is not None:
        numbers = {"fit": fit.summary(), "comparison": table.to_dict(orient="index")}
        write_text_atomic(args.json, json.dumps(numbers, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
