"""Build a policy observation from Slurm's queue, the clock and the site signal sources.

Every observation field of the bundle gets its raw value (in the field's unit) from
the first source that knows its key:

1. the clock (calendar features: hour of day and weekday as sin/cos, :mod:`gridrl.calendar`);
2. Slurm and the adapter's records (per site: queued flexible work by slack group,
   overdue work, work the adapter moved there within the last step, arrivals of the
   last step, inference demand, the power cap in force);
3. the site's constant ``values`` in SITES.yaml;
4. the site's signal CSV (the latest row at or before now);
5. the site's demand-response event signal CSV (``events``, written by the OpenADR VEN).

Which source answers a field follows from its manifest metadata (``kind``, ``signal``,
slack range), never from its name. The runtime then scales the raw values with the
manifest (``(value - offset) / scale``). A key no source knows is an error that lists
every missing key. Signal values are checked at every tick (finite, within
``signal_limits``; the CSV readable, with unique times): a bad value is an
:class:`ObservationError` naming the file, row and column, and the adapter falls back to
its safe default for that tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gridrl.calendar import calendar_at
from gridrl.errors import GridrlError
from gridrl.export.manifest import ObservationField
from gridrl.integrations.slurm_plan import ManagedJob
from gridrl.integrations.slurm_queue import SlurmJob
from gridrl.integrations.slurm_sites import SignalFile, SitesConfig, SlurmSite
from gridrl.integrations.slurm_state import JobRecord, job_key

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_MINUTE = 60.0
MINUTES_PER_HOUR = 60


class ObservationError(GridrlError, ValueError):
    """A signal source is missing, stale or lacks a key the bundle observes."""


# Field kinds Slurm answers (queued work by slack, overdue work, work in transit, cap).
SLURM_KINDS = frozenset({"queue_slack", "overdue", "transit", "cap"})
# Signals of the step Slurm answers: flexible arrivals (GPU-h submitted in the last
# decision interval) and inference demand.
SLURM_SIGNALS = frozenset({"flexible_gpu_h", "inference_gpus"})


def source_of(field: ObservationField) -> str:
    """Where the adapter takes a field from: ``clock``, ``slurm`` or ``SITES.yaml``."""
    if field.kind == "calendar":
        return "clock"
    if _from_slurm(field):
        return "slurm"
    return "SITES.yaml"


def _from_slurm(field: ObservationField) -> bool:
    return field.kind in SLURM_KINDS or (field.kind == "signal" and field.signal in SLURM_SIGNALS)


def queue_features(
    site: SlurmSite,
    managed: Sequence[ManagedJob],
    jobs: Sequence[SlurmJob],
    fields: Sequence[ObservationField],
    cfg: SitesConfig,
    now_s: float,
    records: Mapping[str, JobRecord] | None = None,
) -> dict[str, float]:
    """Slurm-derived raw values ``{key: value}`` of one site's ``fields`` that Slurm answers.

    Work is units x time limit in hours (GPU-h, or CPU-h with ``resource: cpu``), by
    field kind: ``queue_slack`` (queued work with slack in the field's range),
    ``overdue``, ``transit`` (work the adapter moved here within the last step), ``cap``
    (mean cap the adapter decided for running jobs, from its ``records``), and the
    signals ``flexible_gpu_h`` (arrivals in the last decision step) and
    ``inference_gpus`` (inflexible QOS jobs running or pending). Jobs in transit are not
    in the new site's queue yet.
    """
    records = records or {}
    here = [m for m in managed if m.site == site.name]
    mine = [m for m in here if not m.in_transit]
    transit_work = float(sum(m.work for m in here if m.in_transit))
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
    ran = [records.get(job_key(j.job_id, j.submit_time)) for j in running]
    caps = [r.power_cap_fraction for r in ran if r is not None and r.power_cap_fraction is not None]
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
    for f in fields:
        if f.kind == "queue_slack":
            lo = f.slack_h_min
            hi = math.inf if f.slack_h_max is None else f.slack_h_max
            out[f.key] = float(work[(slack >= lo) & (slack < hi)].sum()) if work.size else 0.0
        elif f.kind == "overdue":
            out[f.key] = float(work[slack < 0].sum()) if work.size else 0.0
        elif f.kind == "transit":
            out[f.key] = transit_work
        elif f.kind == "cap":
            # the cap in force: mean over running jobs that carry one, else uncapped
            out[f.key] = float(np.mean(caps)) if caps else 1.0
        elif f.kind == "signal" and f.signal == "flexible_gpu_h":
            # arrivals of the last step: work of jobs submitted within it
            out[f.key] = float(sum(j.units(cfg.resource) * j.time_limit_s / SECONDS_PER_HOUR
                                   for j in recent))
        elif f.kind == "signal" and f.signal == "inference_gpus":
            out[f.key] = float(sum(j.units(cfg.resource) for j in inference))
    return out


def _read_csv(path: Path):  # -> pandas.DataFrame
    """The CSV as a frame; ObservationError naming the file when it cannot be parsed."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ObservationError(f"{path}: the signal file is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ObservationError(f"{path}: not a readable CSV: {exc}") from None
    except OSError as exc:
        raise ObservationError(f"{path}: cannot read the signal file: {exc}") from None
    if df.empty:
        raise ObservationError(f"{path}: the signal file has a header but no rows")
    return df


def _times(df, path: Path, column: str):  # -> pandas.Series of UTC timestamps
    """The time column, every cell a time and no time twice."""
    import pandas as pd

    if column not in df.columns:
        raise ObservationError(f"{path}: no time column {column!r}")
    try:
        times = pd.to_datetime(df[column], utc=True)
    except (ValueError, TypeError) as exc:
        raise ObservationError(f"{path}: column {column!r}: not times: {exc}") from None
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        raise ObservationError(f"{path}: column {column!r}: no time in rows {(bad + 2).tolist()}")
    dup = np.flatnonzero(times.duplicated(keep=False).to_numpy())
    if dup.size:
        raise ObservationError(
            f"{path}: column {column!r}: the same time in several rows {(dup + 2).tolist()}; "
            "one row per time is expected"
        )
    return times


def read_signal_row(
    source: SignalFile,
    now_s: float,
    keys: Sequence[str] | None = None,
    check: Callable[[str, float], str | None] | None = None,
) -> dict[str, float]:
    """The latest row of a signal CSV at or before ``now_s`` as ``{column: value}``
    (only the columns in ``keys`` when given). ``check(column, value)`` returns what is
    wrong with a value, or None.

    Raises
    ------
    ObservationError
        naming the file (and row and column) when it is missing, empty or not a CSV, its
        times are missing, unparsable or repeated, it has no row at or before now, the
        row is older than ``max_age_s``, or a value is not a finite number or fails
        ``check``.
    """
    import pandas as pd

    path = Path(source.file)
    if not path.is_file():
        raise ObservationError(f"{path}: signal file not found")
    df = _read_csv(path)
    times = _times(df, path, source.time_column)
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
        problem = None
        if pd.isna(value) or not math.isfinite(float(value)):
            got = repr(cell) if isinstance(cell, str) else "nothing" if pd.isna(cell) else cell
            problem = f"expected a finite number, got {got}"
        elif check is not None:
            problem = check(col, float(value))
        if problem:
            raise ObservationError(f"{path}: row {row + 2}, column {col!r}: {problem}")
        out[col] = float(value)
    return out


def value_problem(
    key: str, value: float, field: ObservationField | None, cfg: SitesConfig
) -> str | None:
    """What is physically wrong with a signal ``value`` of ``key``, or None."""
    if not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    limits = cfg.signal_limits
    base = field.signal if field is not None and field.signal else key
    spread = field is not None and field.statistic == "spread"
    if value < 0 and (base in limits.non_negative or spread):
        return f"{value:g} is negative; {key} cannot be"
    if field is not None and abs(value - field.offset) / abs(field.scale) > limits.max_scaled_abs:
        return (
            f"{value:g} is implausibly large: more than signal_limits.max_scaled_abs = "
            f"{limits.max_scaled_abs:g} times the bundle's scale {field.scale:g} {field.unit}"
        )
    return None


def raw_observation(
    fields: Sequence[ObservationField],
    cfg: SitesConfig,
    managed: Sequence[ManagedJob],
    jobs: Sequence[SlurmJob],
    now_s: float,
    records: Mapping[str, JobRecord] | None = None,
) -> dict[str, float]:
    """``{field name: raw value}`` for every observation field.

    Raises
    ------
    ObservationError
        listing every (site, key) no source provides, or naming the first signal value
        that is not plausible (see :func:`value_problem`) and where it comes from.
    """
    sites = {s.name: s for s in cfg.sites}
    # the calendar of the step (the decision interval, at most an hour) holding now
    step_min = min(max(int(cfg.decision_interval_s // SECONDS_PER_MINUTE), 1), MINUTES_PER_HOUR)
    cal = calendar_at(now_s, step_min)
    per_site: dict[str, dict[str, float]] = {}
    for i, (name, site) in enumerate(sites.items()):
        site_fields = [f for f in fields if f.site == name]
        by_key = {f.key: f for f in site_fields}
        keys = list(by_key)
        values = queue_features(site, managed, jobs, site_fields, cfg, now_s, records)
        for k, v in site.values.items():
            if k in values:
                continue
            problem = value_problem(k, v, by_key.get(k), cfg)
            if problem:
                raise ObservationError(f"SITES.yaml: sites[{i}].values.{k}: {problem}")
            values[k] = v
        # then the signal file; the demand-response keys (dr_*) from the VEN's event signal
        for source in (site.signals, site.events):
            wanted = [k for k in keys if k not in values]
            if source is not None and wanted:
                values.update(read_signal_row(
                    source, now_s, wanted,
                    lambda k, v, f=by_key: value_problem(k, v, f.get(k), cfg),
                ))  # fmt: skip
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
