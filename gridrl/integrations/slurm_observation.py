"""Build a policy observation from Slurm's queue, the clock and the site signal sources.

Every observation field of the bundle gets its raw value (in the field's unit) from
the first source that knows its key:

1. the clock (calendar features: hour of day and weekday as sin/cos);
2. Slurm (per site: queued flexible work by slack group, overdue work, arrivals of
   the last step, inference demand, the power cap in force);
3. the site's constant ``values`` in SITES.yaml;
4. the site's signal CSV (the latest row at or before now).

The runtime then scales the raw values with the manifest (``(value - offset) / scale``).
A key no source knows is an error that lists every missing key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gridrl.errors import GridrlError
from gridrl.export.manifest import ObservationField
from gridrl.integrations.slurm_plan import CAP_KEY, ManagedJob, comment_tokens
from gridrl.integrations.slurm_queue import SlurmJob
from gridrl.integrations.slurm_sites import SignalFile, SitesConfig, SlurmSite

HOURS_PER_DAY = 24.0
DAYS_PER_WEEK = 7.0
# queue_slack_{lo}_{hi}h: queued work with lo <= slack < hi hours; queue_slack_{lo}h_plus:
# slack >= lo (the environment's coarse slack groups, gridrl.env.layout)
_BUCKET_RE = re.compile(r"^queue_slack_(\d+)_(\d+)h$")
_LAST_BUCKET_RE = re.compile(r"^queue_slack_(\d+)h_plus$")


class ObservationError(GridrlError, ValueError):
    """A signal source is missing, stale or lacks a key the bundle observes."""


SLURM_KEYS = ("overdue_gpu_h", "transit_gpu_h", "flexible_gpu_h", "inference_gpus", "cap")


def source_of(field: ObservationField) -> str:
    """Where the adapter takes a field from: ``clock``, ``slurm`` or ``SITES.yaml``."""
    if field.site is None:
        return "clock"
    if field.key in SLURM_KEYS or _BUCKET_RE.match(field.key) or _LAST_BUCKET_RE.match(field.key):
        return "slurm"
    return "SITES.yaml"


def calendar_features(now_s: float) -> dict[str, float]:
    """Hour-of-day and weekday of the current UTC hour on the unit circle, as the
    environment computes them (whole hours, whole days)."""
    t = datetime.fromtimestamp(now_s, tz=timezone.utc)
    ang_h = 2 * math.pi * t.hour / HOURS_PER_DAY
    ang_d = 2 * math.pi * t.weekday() / DAYS_PER_WEEK
    return {
        "hour_sin": math.sin(ang_h),
        "hour_cos": math.cos(ang_h),
        "weekday_sin": math.sin(ang_d),
        "weekday_cos": math.cos(ang_d),
    }


def queue_features(
    site: SlurmSite,
    managed: Sequence[ManagedJob],
    jobs: Sequence[SlurmJob],
    keys: Sequence[str],
    cfg: SitesConfig,
    now_s: float,
) -> dict[str, float]:
    """Slurm-derived raw values of one site for the requested ``keys`` it can answer.

    Work is units x time limit in hours (GPU-h, or CPU-h with ``resource: cpu``);
    keys follow :mod:`gridrl.env.layout`: ``queue_slack_{lo}_{hi}h``,
    ``queue_slack_{lo}h_plus``, ``overdue_gpu_h``, ``transit_gpu_h``, ``flexible_gpu_h``
    (arrivals in the last decision step), ``inference_gpus`` (inflexible QOS jobs
    running or pending), ``cap`` (mean cap of running jobs).
    """
    mine = [m for m in managed if m.site == site.name]
    slack = np.array([m.slack_h for m in mine])
    work = np.array([m.work for m in mine])
    parts = set(site.partitions)
    running = [j for j in jobs if j.partition in parts and j.state == "RUNNING"]
    inference = [
        j
        for j in jobs
        if j.partition in parts
        and j.qos in cfg.inflexible_qos
        and j.state in ("RUNNING", "PENDING")
    ]
    caps = [
        float(comment_tokens(j.comment, cfg.comment_prefix)[0][CAP_KEY])
        for j in running
        if CAP_KEY in comment_tokens(j.comment, cfg.comment_prefix)[0]
    ]
    recent = [
        j
        for j in jobs
        if j.partition in parts
        and j.qos not in cfg.inflexible_qos
        and j.state in ("RUNNING", "PENDING")
        and j.submit_time > now_s - cfg.decision_interval_s
        and math.isfinite(j.time_limit_s)
    ]
    out: dict[str, float] = {}
    for key in keys:
        m = _BUCKET_RE.match(key) or _LAST_BUCKET_RE.match(key)
        if m:
            lo = float(m.group(1))
            hi = float(m.group(2)) if m.re is _BUCKET_RE else math.inf
            out[key] = float(work[(slack >= lo) & (slack < hi)].sum()) if work.size else 0.0
        elif key == "overdue_gpu_h":
            out[key] = float(work[slack < 0].sum()) if work.size else 0.0
        elif key == "transit_gpu_h":
            # a moved job joins its new partition's queue at once (and waits one step)
            out[key] = 0.0
        elif key == "flexible_gpu_h":
            # arrivals of the last step: work of jobs submitted within it
            out[key] = float(sum(j.units(cfg.resource) * j.time_limit_s / 3600.0 for j in recent))
        elif key == "inference_gpus":
            out[key] = float(sum(j.units(cfg.resource) for j in inference))
        elif key == "cap":
            # the cap in force: mean over running jobs that carry one, else uncapped
            out[key] = float(np.mean(caps)) if caps else 1.0
    return out


def read_signal_row(
    source: SignalFile, now_s: float, keys: Sequence[str] | None = None
) -> dict[str, float]:
    """The latest row of a signal CSV at or before ``now_s`` as ``{column: value}``
    (only the columns in ``keys`` when given).

    Raises
    ------
    ObservationError
        naming the file when it is missing, has no time column, has no row at or before
        now, the row is older than ``max_age_s``, or a value is not a number.
    """
    import pandas as pd

    path = Path(source.file)
    if not path.is_file():
        raise ObservationError(f"{path}: signal file not found")
    df = pd.read_csv(path)
    if source.time_column not in df.columns:
        raise ObservationError(f"{path}: no time column {source.time_column!r}")
    try:
        times = pd.to_datetime(df[source.time_column], utc=True)
    except (ValueError, TypeError) as exc:
        raise ObservationError(f"{path}: column {source.time_column!r}: not times: {exc}") from None
    now = pd.Timestamp(now_s, unit="s", tz="UTC")
    idx = np.flatnonzero((times <= now).to_numpy())
    if idx.size == 0:
        raise ObservationError(f"{path}: no row at or before {now.isoformat()}")
    row = int(idx[np.argmax(times.to_numpy()[idx])])
    age_s = (now - times.iloc[row]).total_seconds()
    if age_s > source.max_age_s:
        raise ObservationError(
            f"{path}: latest row ({times.iloc[row].isoformat()}, row {row + 2}) is "
            f"{age_s:.0f} s old, more than max_age_s = {source.max_age_s:g}"
        )
    out: dict[str, float] = {}
    wanted = [c for c in df.columns if c != source.time_column and (keys is None or c in keys)]
    for col in wanted:
        cell = df[col].iloc[row]
        value = pd.to_numeric(cell, errors="coerce")
        if pd.isna(value):
            raise ObservationError(
                f"{path}: row {row + 2}, column {col!r}: expected a number, got {cell!r}"
            )
        out[col] = float(value)
    return out


def raw_observation(
    fields: Sequence[ObservationField],
    cfg: SitesConfig,
    managed: Sequence[ManagedJob],
    jobs: Sequence[SlurmJob],
    now_s: float,
) -> dict[str, float]:
    """``{field name: raw value}`` for every observation field.

    Raises
    ------
    ObservationError
        listing every (site, key) no source provides.
    """
    sites = {s.name: s for s in cfg.sites}
    cal = calendar_features(now_s)
    per_site: dict[str, dict[str, float]] = {}
    for name, site in sites.items():
        keys = [f.key for f in fields if f.site == name]
        values = queue_features(site, managed, jobs, keys, cfg, now_s)
        values.update({k: v for k, v in site.values.items() if k not in values})
        if site.signals is not None and any(k not in values for k in keys):
            row = read_signal_row(site.signals, now_s, [k for k in keys if k not in values])
            values.update({k: v for k, v in row.items() if k not in values})
        per_site[name] = values
    out: dict[str, float] = {}
    missing: list[str] = []
    for f in fields:
        if f.site is None:
            source = cal
        elif f.site in per_site:
            source = per_site[f.site]
        else:
            missing.append(f"{f.name} (site {f.site!r} is not in SITES.yaml)")
            continue
        if f.key in source:
            out[f.name] = source[f.key]
        else:
            missing.append(f"{f.name} (key {f.key!r})")
    if missing:
        raise ObservationError(
            "no source for observation fields: "
            + ", ".join(missing)
            + " - add them to the site's values or signals file in SITES.yaml"
        )
    return out
