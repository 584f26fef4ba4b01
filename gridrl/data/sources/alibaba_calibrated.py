"""Workload generator calibrated to the Alibaba GPU trace (``source: alibaba_calibrated``).

Fit (:func:`fit_trace`), on the pods created in the last ``trace_window_days`` whole
days of ``cluster-trace-gpu-v2023`` (the days the trace covers fully), with trace second
0 taken as local midnight of weekday ``trace_start_weekday`` (the trace gives no wall
clock: this sets the phase of the profiles):

- flexible arrivals (QoS BE and Burstable pods that ask for a GPU): a Poisson process
  with rate ``lambda(d, h) = rate x hod(h) x dow(d)``; ``hod`` and ``dow`` are the
  hour-of-day and weekday shares of the window's arrivals (mean 1 each; separable, so
  each of the 24 + 7 factors rests on many pods);
- job size and duration: every arriving pod draws a (GPU-equivalents, lifetime) pair of
  the window's flexible pods, jointly (their correlation is kept); pods never scheduled
  keep a lifetime of 0 (as in the trace's hourly series), pods running at the trace's
  end their censored lifetime;
- QoS mix: inference (LS, Guaranteed) is the trace's mean GPU-equivalents held by
  inference pods, shaped by its own hour-of-day profile, with log-normal AR(1) noise
  whose sigma and lag-1 correlation are those of the trace's log residuals.

Generated series scale the traced cluster to the site (``site.gpus / cluster_gpus``),
like the replayed trace; the pods alive in the trace's window keep well under 1 % of
its GPUs busy, so ``trace_target_utilisation_fraction`` instead scales both classes
together (the QoS mix and every shape kept) to that mean busy share of the site.
``flexible_gpu_h(t)`` sums the GPU-hours of the pods arriving in hour ``t``.

Splits. Each hour is drawn from a random stream keyed by the scenario seed, the site
and the period the hour belongs to (``train``, ``validation``, ``test`` or ``other``),
so train, validation and test draw different copies of the process: no policy is
tested on the work it trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.sources.rng import ar1_noise, stream_rng
from gridrl.data.sources.weather import SiteWeather, local_standard_time

__all__ = ["DATASET", "SPLITS", "TraceFit", "fit_trace", "generate_calibrated", "split_labels"]

DATASET = "alibaba_gpu_2023"
SPLITS = ("train", "validation", "test")
OTHER = "other"  # hours outside every period
HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class TraceFit:
    """What the generator takes from the trace (per traced cluster; module docstring).

    Attributes
    ----------
    arrivals_per_h : float
        Mean flexible GPU-pod arrivals per hour.
    hod, dow : ndarray
        ``[24]`` and ``[7]`` arrival shape factors (mean 1).
    pod_gpus, pod_hours : ndarray
        GPU-equivalents and lifetime (h) of every flexible pod of the window.
    inference_gpus : float
        Mean GPU-equivalents held by inference pods.
    inference_hod : ndarray
        ``[24]`` shape of inference (mean 1).
    noise_sigma, noise_ar1 : float
        Log-residual std and lag-1 correlation of hourly inference.
    cluster_gpus : int
    qos_share : dict
        Share of the window's GPU pods by QoS.
    hourly : pandas.DataFrame
        The window's hourly trace series (``inference_gpus``, ``flexible_gpu_h``,
        ``arrivals``), indexed by trace hour (hour 0 starts at local midnight).
    """

    arrivals_per_h: float
    hod: np.ndarray
    dow: np.ndarray
    pod_gpus: np.ndarray
    pod_hours: np.ndarray
    inference_gpus: float
    inference_hod: np.ndarray
    noise_sigma: float
    noise_ar1: float
    cluster_gpus: int
    qos_share: dict[str, float] = field(default_factory=dict)
    hourly: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> dict[str, Any]:
        """The fit's numbers (for docs and provenance)."""
        gpu_h = self.pod_gpus * self.pod_hours
        return {
            "cluster_gpus": self.cluster_gpus,
            "flexible_arrivals_per_h": self.arrivals_per_h,
            "flexible_gpu_h_per_h": self.arrivals_per_h * float(gpu_h.mean()),
            "pod_gpus_quantiles_25_50_90": np.quantile(self.pod_gpus, [0.25, 0.5, 0.9]).tolist(),
            "pod_hours_quantiles_25_50_90": np.quantile(self.pod_hours, [0.25, 0.5, 0.9]).tolist(),
            "inference_gpus_mean": self.inference_gpus,
            "inference_noise_sigma": self.noise_sigma,
            "inference_noise_ar1": self.noise_ar1,
            "qos_share": self.qos_share,
        }


def _shape(values: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per key ``0..n-1``, normalised to mean 1."""
    sums = np.bincount(keys, weights=values, minlength=n)
    counts = np.bincount(keys, minlength=n)
    per = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
    return per / per.mean()


def fit_trace(pods: Path, nodes: Path, window_days: int, start_weekday: int) -> TraceFit:
    """Fit the generator to the trace's last ``window_days`` whole days."""
    from gridrl.data.loaders import load_alibaba_pods, trace_cluster_gpus

    trace = load_alibaba_pods(pods)
    whole_h = int(trace.trace_end_s // SECONDS_PER_HOUR)
    first_h = whole_h - window_days * HOURS_PER_DAY
    hourly = trace.hourly(pd.Timestamp("1970-01-01", tz="UTC")).frame["cluster"]
    window = hourly.iloc[first_h:whole_h].reset_index(drop=True)
    jobs = trace.jobs
    created_h = np.floor(jobs["creation_s"].to_numpy() / SECONDS_PER_HOUR).astype(np.int64)
    in_window = (created_h >= first_h) & (created_h < whole_h)
    gpu = jobs["gpu_equiv"].to_numpy() > 0
    flex = in_window & gpu & (jobs["workload_class"] == "flexible").to_numpy()
    hour_of_trace = created_h[flex]
    counts = np.bincount(hour_of_trace - first_h, minlength=len(window))
    trace_hours = np.arange(first_h, whole_h)
    hod = _shape(counts.astype(float), trace_hours % HOURS_PER_DAY, HOURS_PER_DAY)
    dow = _shape(counts.astype(float), (trace_hours // HOURS_PER_DAY + start_weekday)
                 % DAYS_PER_WEEK, DAYS_PER_WEEK)
    inf = window["inference_gpus"].to_numpy()
    inf_hod = _shape(inf, trace_hours % HOURS_PER_DAY, HOURS_PER_DAY)
    resid = np.log(inf / (inf.mean() * inf_hod[trace_hours % HOURS_PER_DAY]))
    qos = jobs.loc[in_window & gpu, "qos"].value_counts(normalize=True)
    return TraceFit(
        arrivals_per_h=float(counts.mean()), hod=hod, dow=dow,
        pod_gpus=jobs["gpu_equiv"].to_numpy()[flex],
        pod_hours=np.nan_to_num(jobs["lifetime_h"].to_numpy()[flex], nan=0.0),
        inference_gpus=float(inf.mean()), inference_hod=inf_hod,
        noise_sigma=float(resid.std()), noise_ar1=float(np.corrcoef(resid[:-1], resid[1:])[0, 1]),
        cluster_gpus=trace_cluster_gpus(nodes),
        qos_share={str(k): float(v) for k, v in qos.items()},
        hourly=window.assign(arrivals=counts).set_axis(pd.Index(trace_hours, name="trace_hour")),
    )  # fmt: skip


def split_labels(index: pd.DatetimeIndex, periods: Any | None) -> np.ndarray:
    """``[T]`` the period each hour belongs to (``other`` outside every block)."""
    labels = np.full(len(index), OTHER, dtype=object)
    if periods is None:
        return labels
    for split in SPLITS:
        for block in getattr(periods, split):
            labels[block.hours(index)] = split
    return labels


def _draw(fit: TraceFit, rng: np.random.Generator, lam: np.ndarray, shape_inf: np.ndarray,
          scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One copy of the process over every hour: inference, flexible GPU-h, arrivals."""
    counts = rng.poisson(lam * scale)
    pick = rng.integers(0, fit.pod_gpus.size, int(counts.sum()))
    hours = np.repeat(np.arange(lam.size), counts)
    flex = np.bincount(hours, weights=fit.pod_gpus[pick] * fit.pod_hours[pick],
                       minlength=lam.size)
    noise = np.exp(ar1_noise(rng, lam.size, fit.noise_sigma, fit.noise_ar1)
                   - 0.5 * fit.noise_sigma**2)
    inference = fit.inference_gpus * scale * shape_inf * noise
    return inference, flex, counts


def generate_calibrated(fit: TraceFit, gpus: int, weather: SiteWeather, seed: int, site: str,
                        periods: Any | None = None, utilisation: float | None = None,
                        ) -> pd.DataFrame:
    """``inference_gpus``, ``flexible_gpu_h`` and ``arrivals`` of one site (module doc).

    Each split's hours come from the split's own stream (:func:`split_labels`);
    ``utilisation`` is the mean busy GPU share to scale to (None: the trace's).
    """
    index = weather.frame.index
    local = local_standard_time(index, weather.tz_offset_h)
    hour, day = local.hour.to_numpy(), local.dayofweek.to_numpy()
    lam = fit.arrivals_per_h * fit.hod[hour] * fit.dow[day]
    shape_inf = fit.inference_hod[hour]
    scale = gpus / fit.cluster_gpus
    if utilisation is not None:
        busy = fit.inference_gpus + fit.summary()["flexible_gpu_h_per_h"]
        scale = utilisation * gpus / busy
    labels = split_labels(index, periods)
    out = np.zeros((len(index), 3))
    for split in (*SPLITS, OTHER):
        rows = labels == split
        if rows.any():
            rng = stream_rng(seed, site, f"alibaba_calibrated:{split}")
            out[rows] = np.column_stack(_draw(fit, rng, lam, shape_inf, scale))[rows]
    return pd.DataFrame(out, index=index, columns=["inference_gpus", "flexible_gpu_h", "arrivals"])


def calibration_plot(fit: TraceFit, generated: pd.DataFrame, hour_local: np.ndarray,
                     path: str | Path) -> Path:
    """Trace against generated: arrivals by hour of day, pod GPU-h, hourly inference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gridrl.io import atomic_path

    scale = fit.cluster_gpus
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    trace_h = fit.hourly.index.to_numpy() % HOURS_PER_DAY
    for label, arr, hrs in (("trace", fit.hourly["arrivals"].to_numpy(), trace_h),
                            ("generated", generated["arrivals"].to_numpy(), hour_local)):
        per = np.bincount(hrs, weights=arr, minlength=24) / np.bincount(hrs, minlength=24)
        ax[0].plot(np.arange(24), per, marker="o", label=label)
    ax[0].set(xlabel="hour of day", ylabel="flexible GPU pods arriving per hour")
    for label, v in (("trace", fit.hourly["flexible_gpu_h"]), ("generated",
                                                                 generated["flexible_gpu_h"])):
        ax[1].hist(np.log10(np.asarray(v, float) + 1e-3), bins=40, density=True, alpha=0.5,
                   label=label)
    ax[1].set(xlabel="log10 flexible GPU-h arriving per hour", ylabel="density")
    for label, v in (("trace", fit.hourly["inference_gpus"]), ("generated",
                                                                generated["inference_gpus"])):
        ax[2].hist(np.asarray(v, float) / scale, bins=40, density=True, alpha=0.5, label=label)
    ax[2].set(xlabel="inference GPUs busy / cluster GPUs", ylabel="density")
    for a in ax:
        a.legend()
    fig.suptitle("Alibaba GPU trace 2023 vs the calibrated generator (per traced cluster)")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
