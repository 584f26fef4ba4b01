"""Alibaba GPU cluster trace 2023 (``cluster-trace-gpu-v2023``, ``pods.csv``).

One row per pod: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos,
pod_phase, creation_time, deletion_time, scheduled_time`` with times in seconds from the
trace start.

GPU size. ``gpu_milli`` is the share of each requested GPU in thousandths. In the data
it is 0 exactly when ``num_gpu`` is 0 (CPU-only pods, 1088 of 8152), 50-1000 for
single-GPU pods (GPU sharing) and 1000 for every pod with 2, 4 or 8 GPUs. So
``gpu_equiv = num_gpu * gpu_milli / 1000`` is the pod's size in whole GPUs in all cases;
a pod with ``num_gpu > 0`` and ``gpu_milli == 0`` (or the reverse) is an error.

Classes. ``qos`` LS (latency-sensitive) and Guaranteed (Kubernetes reserved resources,
not preemptible; 7 pods) are ``inference``; BE (best effort) and Burstable are
``flexible`` (``QOS_CLASSES``; pass another mapping to change it). An unknown ``qos`` is
an error naming its row.

Times. A pod holds its GPUs from ``scheduled_time`` to ``deletion_time``. Nothing is
dropped; the special cases are flagged and counted in ``PodTrace.report()``:

- ``unscheduled``: no ``scheduled_time`` (``pod_phase`` Pending): never held a GPU, so
  its lifetime is NaN and its GPU-hours are 0;
- ``running_at_end``: ``deletion_time`` at (or after) the trace end, or missing: still
  running when the trace stops; its lifetime is censored at the trace end, so its
  GPU-hours are a lower bound;
- a missing ``creation_time`` or times out of order are errors naming the row.

The trace end defaults to the last time recorded in the file. Note that the trace holds
the pods alive in its last ~34 days (the first deletion is at day 115); the few earlier
pods are long-running services, so hourly demand before that is undercounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.loaders._common import read_csv, require_columns, row_error
from gridrl.data.signals import COLUMN_LEVELS, TIME_NAME, SignalError, Signals

__all__ = ["QOS_CLASSES", "PodTrace", "alibaba_workload", "load_alibaba_pods", "trace_cluster_gpus"]

QOS_CLASSES: dict[str, str] = {
    "LS": "inference",
    "Guaranteed": "inference",
    "BE": "flexible",
    "Burstable": "flexible",
}
WORKLOAD_CLASSES = ("inference", "flexible")
MILLI = 1000.0
SECONDS_PER_HOUR = 3600.0
_REQUIRED = (
    "name",
    "num_gpu",
    "gpu_milli",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)


def _numeric(df: pd.DataFrame, column: str, source: str) -> np.ndarray:
    raw = df[column]
    num = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() & raw.notna().to_numpy())
    if bad.size:
        raise row_error(source, column, bad, f"not a number: {raw.iloc[bad[0]]!r}")
    return num.to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class PodTrace:
    """The pod table of a GPU-cluster trace with derived sizes, lifetimes and flags.

    Attributes
    ----------
    jobs : pandas.DataFrame
        One row per pod, in file order (``row`` = 1-based data row of the file):
        ``name, qos, workload_class, pod_phase, num_gpu, gpu_milli, gpu_equiv,
        cpu_milli, memory_mib, creation_s, scheduled_s, deletion_s, wait_h,
        lifetime_h, gpu_h, unscheduled, running_at_end``.
    source : str
        The file read.
    trace_end_s : float
        End of the trace in seconds from its start.
    """

    jobs: pd.DataFrame
    source: str
    trace_end_s: float

    def gpu_hours(self) -> pd.Series:
        """Total GPU-hours by workload class (GPU h)."""
        return self.jobs.groupby("workload_class")["gpu_h"].sum()

    def report(self) -> dict[str, Any]:
        """Counts of every special case, so that nothing goes unmentioned."""
        j = self.jobs
        by_class = j.groupby("workload_class")
        return {
            "source": self.source,
            "pods": int(len(j)),
            "trace_end_s": float(self.trace_end_s),
            "pods_by_qos": {str(k): int(v) for k, v in j["qos"].value_counts().items()},
            "pods_by_class": {str(k): int(v) for k, v in by_class.size().items()},
            "gpu_h_by_class": {str(k): float(v) for k, v in self.gpu_hours().items()},
            "cpu_only_pods": int((j["gpu_equiv"] == 0).sum()),
            "unscheduled_pods": int(j["unscheduled"].sum()),
            "running_at_end_pods": int(j["running_at_end"].sum()),
            "missing_deletion_time": int(j["deletion_s"].isna().sum()),
            "censored_gpu_h": float(j.loc[j["running_at_end"], "gpu_h"].sum()),
        }

    def hourly(self, start: Any, *, site: str = "cluster") -> Signals:
        """Hourly workload signals from the trace.

        Parameters
        ----------
        start : timestamp
            Wall-clock time of trace second 0 (the trace gives none). Must carry a time
            zone (``"2023-07-01T00:00Z"``).
        site : str
            Site name of the columns.

        Returns
        -------
        Signals
            ``inference_gpus``: mean GPU-equivalents held by inference pods in each hour
            (their GPU-hours in the hour / 1 h); ``flexible_gpu_h``: GPU-hours of the
            flexible pods created in the hour (arrivals of deferrable work). Hours run
            from trace second 0 to the trace end, so the column sums equal the GPU-hour
            totals by class.
        """
        t0 = pd.Timestamp(start)
        if t0.tz is None:
            raise SignalError(self.source, f"trace start {start!r} has no time zone")
        j = self.jobs
        n_hours = int(np.ceil(self.trace_end_s / SECONDS_PER_HOUR))
        edges = np.arange(n_hours + 1) * SECONDS_PER_HOUR

        inf = j[(j["workload_class"] == "inference") & ~j["unscheduled"]]
        s = inf["scheduled_s"].to_numpy()
        e = np.minimum(inf["deletion_s"].fillna(self.trace_end_s).to_numpy(), self.trace_end_s)
        g = inf["gpu_equiv"].to_numpy()
        inference_gpus = np.diff(_busy_integral(s, e, g, edges)) / SECONDS_PER_HOUR

        flex = j[j["workload_class"] == "flexible"]
        hour_of = np.floor(flex["creation_s"].to_numpy() / SECONDS_PER_HOUR).astype(np.int64)
        flexible_gpu_h = np.bincount(hour_of, weights=flex["gpu_h"].to_numpy(), minlength=n_hours)[
            :n_hours
        ]

        index = pd.date_range(t0.tz_convert("UTC"), periods=n_hours, freq="h", name=TIME_NAME)
        cols = pd.MultiIndex.from_tuples(
            [(site, "inference_gpus"), (site, "flexible_gpu_h")], names=COLUMN_LEVELS
        )
        frame = pd.DataFrame(
            np.column_stack([inference_gpus, flexible_gpu_h]), index=index, columns=cols
        )
        frame.attrs["provenance"] = [
            {
                "step": "pod_trace_hourly",
                "source": self.source,
                "trace_start": str(t0),
                "trace_end_s": float(self.trace_end_s),
                "last_hour_covered_s": float(self.trace_end_s - edges[-2]),
                **{k: v for k, v in self.report().items() if k != "source"},
            }
        ]
        return Signals(frame, self.source).validate()


def _busy_integral(
    start: np.ndarray, end: np.ndarray, size: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """``F(t) = sum_i size_i * |[start_i, end_i) ∩ [0, t)|`` at each t (vectorised).

    ``F(t) = sum_{s_i<t} g_i (t - s_i) - sum_{e_i<t} g_i (t - e_i)`` with cumulative
    sums over the sorted starts and ends.
    """

    def part(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x)
        xs, gs = x[order], size[order]
        cg = np.concatenate([[0.0], np.cumsum(gs)])
        cgx = np.concatenate([[0.0], np.cumsum(gs * xs)])
        k = np.searchsorted(xs, t, side="left")
        return cg[k] * t - cgx[k]

    return part(start) - part(end)


def load_alibaba_pods(
    path: str | Path,
    *,
    qos_classes: Mapping[str, str] = QOS_CLASSES,
    trace_end_s: float | None = None,
) -> PodTrace:
    """Read ``pods.csv`` into a ``PodTrace`` (see the module notes for every rule).

    Parameters
    ----------
    path : path
        The pod table.
    qos_classes : mapping
        ``qos`` -> ``"inference"`` or ``"flexible"``.
    trace_end_s : float, optional
        End of the trace (s from its start); default the last time in the file.

    Raises
    ------
    SignalError
        Naming file, column and row: unknown qos, bad GPU sizes, missing creation time,
        times out of order, values that are not numbers.
    """
    path = Path(path)
    source = str(path)
    df = read_csv(path)
    require_columns(df, _REQUIRED, path)
    qos, num_gpu, gpu_milli = _checked_sizes(df, source, qos_classes)
    created, scheduled, deleted, end = _checked_times(df, source, trace_end_s)
    jobs = _pod_frame(df, qos, qos_classes, num_gpu, gpu_milli, (created, scheduled, deleted),
                      end)
    return PodTrace(jobs, source, end)


def _checked_sizes(df: pd.DataFrame, source: str, qos_classes: Mapping[str, str]
                   ) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """The qos column and GPU sizes, each checked (unknown qos, counts, milli-GPUs)."""
    bad_cls = [c for c in qos_classes.values() if c not in WORKLOAD_CLASSES]
    if bad_cls:
        raise SignalError(source, f"qos_classes maps to {bad_cls[0]!r}, not {WORKLOAD_CLASSES}")

    qos = df["qos"].astype("string")
    known = qos.isin(list(qos_classes)).to_numpy() & qos.notna().to_numpy()
    if not known.all():
        rows = np.flatnonzero(~known)
        raise row_error(
            source,
            "qos",
            rows,
            f"unknown qos {df['qos'].iloc[rows[0]]!r}; expected one of {list(qos_classes)}",
        )
    num_gpu = _numeric(df, "num_gpu", source)
    gpu_milli = _numeric(df, "gpu_milli", source)
    for col, v in (("num_gpu", num_gpu), ("gpu_milli", gpu_milli)):
        bad = np.flatnonzero(np.isnan(v) | (v < 0) | (v != np.round(v)))
        if bad.size:
            raise row_error(source, col, bad, f"{v[bad[0]]} is not a count >= 0")
    bad = np.flatnonzero(gpu_milli > MILLI)
    if bad.size:
        raise row_error(source, "gpu_milli", bad, f"{gpu_milli[bad[0]]:g} > {MILLI:g} per GPU")
    bad = np.flatnonzero((num_gpu == 0) != (gpu_milli == 0))
    if bad.size:
        r = bad[0]
        raise row_error(
            source,
            "gpu_milli",
            bad,
            f"num_gpu={num_gpu[r]:g} with gpu_milli={gpu_milli[r]:g}: both or neither must be 0",
        )

    return qos, num_gpu, gpu_milli


def _checked_times(df: pd.DataFrame, source: str, trace_end_s: float | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Creation, scheduling and deletion times (s), in order, and the trace's end."""
    created = _numeric(df, "creation_time", source)
    scheduled = _numeric(df, "scheduled_time", source)
    deleted = _numeric(df, "deletion_time", source)
    bad = np.flatnonzero(np.isnan(created))
    if bad.size:
        raise row_error(source, "creation_time", bad, "missing creation time")
    with np.errstate(invalid="ignore"):
        for col, later, earlier, what in (
            ("scheduled_time", scheduled, created, "scheduled before created"),
            ("deletion_time", deleted, scheduled, "deleted before scheduled"),
            ("deletion_time", deleted, created, "deleted before created"),
        ):
            bad = np.flatnonzero(later < earlier)
            if bad.size:
                r = bad[0]
                raise row_error(source, col, bad, f"{what}: {later[r]:g} < {earlier[r]:g} s")
    end = (
        float(np.nanmax(np.concatenate([created, scheduled, deleted])))
        if trace_end_s is None
        else float(trace_end_s)
    )
    bad = np.flatnonzero(created > end)
    if bad.size:
        raise row_error(source, "creation_time", bad, f"created after the trace end {end:g} s")

    return created, scheduled, deleted, end


def _pod_frame(df: pd.DataFrame, qos: pd.Series, qos_classes: Mapping[str, str],
               num_gpu: np.ndarray, gpu_milli: np.ndarray,
               times: tuple[np.ndarray, np.ndarray, np.ndarray], end: float) -> pd.DataFrame:
    """One row per pod with its class, size, times, lifetime and GPU-hours."""
    created, scheduled, deleted = times
    unscheduled = np.isnan(scheduled)
    running_at_end = np.isnan(deleted) | (deleted >= end)
    held_until = np.minimum(np.where(np.isnan(deleted), end, deleted), end)
    lifetime_h = np.where(unscheduled, np.nan, (held_until - scheduled) / SECONDS_PER_HOUR)
    gpu_equiv = num_gpu * gpu_milli / MILLI
    # An unscheduled pod never held a GPU: 0 GPU-hours (flagged, not dropped).
    gpu_h = np.where(unscheduled, 0.0, gpu_equiv * lifetime_h)

    return pd.DataFrame(
        {
            "row": np.arange(1, len(df) + 1),
            "name": df["name"].astype("string"),
            "qos": qos,
            "workload_class": qos.map(dict(qos_classes)).astype("string"),
            "pod_phase": df["pod_phase"].astype("string"),
            "num_gpu": num_gpu.astype(np.int64),
            "gpu_milli": gpu_milli.astype(np.int64),
            "gpu_equiv": gpu_equiv,
            "cpu_milli": df["cpu_milli"] if "cpu_milli" in df else np.nan,
            "memory_mib": df["memory_mib"] if "memory_mib" in df else np.nan,
            "creation_s": created,
            "scheduled_s": scheduled,
            "deletion_s": deleted,
            "wait_h": (scheduled - created) / SECONDS_PER_HOUR,
            "lifetime_h": lifetime_h,
            "gpu_h": gpu_h,
            "unscheduled": unscheduled,
            "running_at_end": running_at_end,
        }
    )


def trace_cluster_gpus(nodes_path: str | Path) -> int:
    """Number of GPUs in the traced cluster (sum of ``gpu`` over ``gpu_nodes.csv``)."""
    nodes_path = Path(nodes_path)
    df = read_csv(nodes_path)
    require_columns(df, ("gpu",), nodes_path)
    gpus = _numeric(df, "gpu", str(nodes_path))
    if np.any(gpus < 0):
        raise row_error(str(nodes_path), "gpu", np.flatnonzero(gpus < 0), "negative GPU count")
    return int(gpus.sum())


def alibaba_workload(
    site: Any, index: pd.DatetimeIndex, base_dir: Path | None = None
) -> pd.DataFrame:
    """A site's ``inference_gpus`` and ``flexible_gpu_h`` from the Alibaba GPU trace.

    The trace is about four months long but holds only the pods alive in its last ~34
    days (module notes), so the hourly series of its last ``trace_window_days`` whole days
    is taken and repeated over ``index`` (day 0 of the window falls on ``index[0]``). The
    traced cluster is scaled to the site: every value times ``site.gpus /
    cluster_gpus`` (the GPU count of ``gpu_nodes.csv``), which keeps the trace's
    utilisation.

    Parameters
    ----------
    site : gridrl.scenario.SiteConfig
        ``site.workload`` gives ``trace_file``, ``trace_nodes_file`` and
        ``trace_window_days``; paths are relative to ``base_dir``.
    index : pandas.DatetimeIndex
        Hourly UTC index of the scenario.
    base_dir : pathlib.Path, optional
        Folder of the scenario file.

    Raises
    ------
    SignalError
        When the trace is shorter than the window (naming the file).
    """
    cfg = site.workload

    def resolve(name: str) -> Path:
        path = Path(name).expanduser()
        return base_dir / path if not path.is_absolute() and base_dir is not None else path

    pods_path = resolve(cfg.trace_file)
    nodes_path = (
        resolve(cfg.trace_nodes_file)
        if cfg.trace_nodes_file
        else pods_path.with_name("gpu_nodes.csv")
    )
    trace = load_alibaba_pods(pods_path)
    hourly = trace.hourly(pd.Timestamp("1970-01-01", tz="UTC"), site=site.name).frame[site.name]
    whole_hours = int(trace.trace_end_s // SECONDS_PER_HOUR)
    window_h = cfg.trace_window_days * 24
    if window_h > whole_hours:
        raise SignalError(
            str(pods_path),
            f"trace_window_days={cfg.trace_window_days} needs {window_h} h, "
            f"the trace has {whole_hours} whole hours",
        )
    window = hourly.iloc[whole_hours - window_h : whole_hours].to_numpy()
    scale = site.gpus / trace_cluster_gpus(nodes_path)
    tiled = np.resize(window, (len(index), window.shape[1])) * scale
    frame = pd.DataFrame(tiled, index=index, columns=list(hourly.columns))
    frame.attrs["provenance"] = [
        {
            "step": "alibaba_workload",
            "source": str(pods_path),
            "window_hours": window_h,
            "scale_site_over_cluster_gpus": scale,
        }
    ]
    return frame
