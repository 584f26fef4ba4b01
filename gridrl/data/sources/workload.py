"""Workload signals: latency-sensitive inference demand and flexible work arrivals.

Seeded generator (``WorkloadConfig.source: generator``), per site with ``G`` GPUs, local
standard hour of day ``h`` (at mid-hour) and weekend flag::

    diurnal(h)   = (1 + cos(2 pi (h + 0.5 - h_peak) / 24)) / 2         in [0, 1]
    week(t)      = weekend_factor on Saturday/Sunday, else 1
    inference(t) = G * (trough + (peak - trough) * diurnal_inf(h)) * week(t) * m_I(t)
                                                                        [GPUs busy]

    shape(t)     = (1 + A_flex * cos(2 pi (h + 0.5 - h_flex) / 24)) * week(t)
    flexible(t)  = U * G * shape(t) / mean_t(shape) * m_F(t)            [GPU-h / h]

``trough``/``peak`` are ``inference_trough_fraction``/``inference_peak_fraction``,
``h_peak = inference_peak_hour_local``, ``A_flex = flexible_daily_amplitude_fraction``,
``h_flex = flexible_peak_hour_local``, ``U = flexible_utilisation_fraction``.
``m_I``, ``m_F`` are log-normal multiplicative noise with mean 1::

    m(t) = exp(x(t) - sigma^2 / 2),  x = AR(1) with std sigma = noise_fraction,
                                     lag-1 correlation noise_ar1

so demand is never negative (no clipping) and its expectation is the deterministic
shape. The flexible arrivals are normalised by the year's mean shape, so the expected
mean arrival is exactly ``U * G`` GPU-hours per hour: run at full speed (throughput
fraction 1) the flexible work keeps a share ``U`` of the site's GPUs busy on average.
Inference demand may exceed ``G`` in rare noisy peaks; that is unserved demand for the
environment to count, not something to cut here.

``source: alibaba`` takes both series from a GPU trace instead, through
``gridrl.data.loaders.alibaba_workload``, which returns a frame
indexed by the scenario's hourly UTC index with columns ``inference_gpus`` and
``flexible_gpu_h`` for the site; this module only dispatches to it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.sources.alibaba_calibrated import DATASET, TraceFit, fit_trace, generate_calibrated
from gridrl.data.sources.rng import ar1_noise, stream_rng
from gridrl.data.sources.weather import SiteWeather, local_standard_time
from gridrl.scenario import Periods, SiteConfig, WorkloadConfig

HOURS_PER_DAY = 24.0
SATURDAY = 5  # pandas dayofweek: Monday = 0


def lognormal_multiplier(
    rng: np.random.Generator, n_hours: int, sigma: float, phi: float
) -> np.ndarray:
    """``exp(x - sigma^2/2)`` with ``x`` AR(1) (std ``sigma``, correlation ``phi``); mean 1."""
    if sigma == 0:
        return np.ones(n_hours)
    return np.exp(ar1_noise(rng, n_hours, sigma, phi) - 0.5 * sigma**2)


def _local_calendar(weather: SiteWeather) -> tuple[np.ndarray, np.ndarray]:
    local = local_standard_time(weather.frame.index, weather.tz_offset_h)
    return local.hour.to_numpy() + 0.5, local.dayofweek.to_numpy() >= SATURDAY


def generate_workload(
    cfg: WorkloadConfig, gpus: int, weather: SiteWeather, seed: int, site: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inference demand and flexible arrivals of one site (module equations).

    Parameters
    ----------
    cfg : WorkloadConfig
        Shape, weekend factor, utilisation and noise parameters.
    gpus : int
        Accelerators at the site, ``G``.
    weather : SiteWeather
        Supplies the hourly UTC index and the local time zone.
    seed, site :
        Key the seeded noise streams.

    Returns
    -------
    inference_gpus : numpy.ndarray
        Mean GPUs busy with latency-sensitive work in each hour, ``[T]``, ``>= 0``.
    flexible_gpu_h : numpy.ndarray
        GPU-hours of flexible work (at full throughput) arriving in each hour, ``[T]``,
        ``>= 0``; expected mean ``flexible_utilisation_fraction * gpus``.
    """
    hour, weekend = _local_calendar(weather)
    n = hour.size
    week = np.where(weekend, cfg.weekend_factor, 1.0)
    diurnal = 0.5 * (
        1.0 + np.cos(2 * np.pi * (hour - cfg.inference_peak_hour_local) / HOURS_PER_DAY)
    )
    base_fraction = (
        cfg.inference_trough_fraction
        + (cfg.inference_peak_fraction - cfg.inference_trough_fraction) * diurnal
    )
    m_inf = lognormal_multiplier(
        stream_rng(seed, site, "inference"), n, cfg.noise_fraction, cfg.noise_ar1
    )
    inference = gpus * base_fraction * week * m_inf

    shape = (
        1.0
        + cfg.flexible_daily_amplitude_fraction
        * np.cos(2 * np.pi * (hour - cfg.flexible_peak_hour_local) / HOURS_PER_DAY)
    ) * week
    m_flex = lognormal_multiplier(
        stream_rng(seed, site, "flexible"), n, cfg.noise_fraction, cfg.noise_ar1
    )
    flexible = cfg.flexible_utilisation_fraction * gpus * shape / shape.mean() * m_flex
    return inference, flexible


def trace_fit(cfg: WorkloadConfig, base_dir: Path | None = None) -> TraceFit:
    """The calibration of ``cfg`` (its trace files, window and start weekday), cached."""
    if cfg.trace_file is None:
        from gridrl.data.datasets import dataset_dir

        pods = dataset_dir(DATASET) / "pods.csv"
    else:
        pods = Path(cfg.trace_file).expanduser()
        pods = base_dir / pods if base_dir is not None and not pods.is_absolute() else pods
    nodes = pods.with_name("gpu_nodes.csv")
    if cfg.trace_nodes_file:
        nodes = Path(cfg.trace_nodes_file).expanduser()
        nodes = base_dir / nodes if base_dir is not None and not nodes.is_absolute() else nodes
    return _fit_cached(str(pods.resolve()), str(nodes.resolve()), cfg.trace_window_days,
                       cfg.trace_start_weekday)


@functools.lru_cache(maxsize=4)
def _fit_cached(pods: str, nodes: str, window_days: int, start_weekday: int) -> TraceFit:
    return fit_trace(Path(pods), Path(nodes), window_days, start_weekday)


def workload_signals(
    site: SiteConfig, weather: SiteWeather, seed: int, base_dir: Path | None = None,
    periods: Periods | None = None,
) -> pd.DataFrame:
    """``inference_gpus`` and ``flexible_gpu_h`` of one site on the weather's index.

    Dispatches on ``site.workload.source``: ``generator`` (this module), ``alibaba``
    (``gridrl.data.loaders.alibaba_workload``: the real trace, tiled and scaled to
    the site's GPUs) or ``alibaba_calibrated`` (a generator fitted to that trace,
    :mod:`gridrl.data.sources.alibaba_calibrated`; each of ``periods``' splits draws
    its own copy).
    """
    index = weather.frame.index
    cfg = site.workload
    if cfg.source == "generator":
        inf, flex = generate_workload(cfg, site.gpus, weather, seed, site.name)
        return pd.DataFrame({"inference_gpus": inf, "flexible_gpu_h": flex}, index=index)
    if cfg.source == "alibaba_calibrated":
        fit = trace_fit(cfg, base_dir)
        frame = generate_calibrated(fit, site.gpus, weather, seed, site.name, periods,
                                    cfg.trace_target_utilisation_fraction)
        return frame.loc[:, ["inference_gpus", "flexible_gpu_h"]]
    from gridrl.data.loaders import alibaba_workload

    frame = alibaba_workload(site, index, base_dir=base_dir)
    return frame.loc[:, ["inference_gpus", "flexible_gpu_h"]]
