"""SITES.yaml: how a Slurm cluster maps onto a policy's sites.

Each site of the bundle is one or more Slurm partitions. The file says which
partitions belong to which site, where the site's signals and forecasts come from (a
time-indexed CSV whose columns are the observation keys, and/or constants), which jobs
the policy may move (QOS lists), and how decisions are handed to Slurm. Every default
is a schema default documented here; errors name the file and the YAML key path.

Example::

    decision_interval_s: 3600     # one policy step; a deferred job waits this long
    defer_mode: start_time        # or "hold" (scontrol uhold / release)
    state_dir: /var/lib/gridrl-slurm  # the adapter's own records (0700, its account only)
    resource: gpu                 # count work in GPUs (gres/gpu) or "cpu"
    sites:
      - name: dc_a                # must be a site of the bundle
        partitions: [gpu_a]       # first one receives migrated jobs
        gpus: 64
        signals: {file: signals/dc_a.csv, time_column: time, max_age_s: 7200}
        values: {battery_soc_fraction: 0.5}
        gpu_max_kw: 0.7           # demand response: per-GPU power at the meter
        events: {file: signals/dc_a_dr.csv}  # written by gridrl openadr-ven
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from gridrl.config import format_validation_errors, read_yaml_mapping
from gridrl.errors import GridrlError


class SitesConfigError(GridrlError, ValueError):
    """SITES.yaml is missing, not YAML, or invalid; the message names the key path."""


def _no_bool(value: Any) -> Any:
    # YAML's true/false would otherwise pass as 1/0
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


# A count: an integer, never a boolean, float or string.
Count = Annotated[int, Field(strict=True)]
# A quantity: int or float, never a boolean.
Number = Annotated[float, BeforeValidator(_no_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalFile(_Strict):
    """A CSV of site signals and forecasts: one row per time, one column per key.

    The row in force is the latest with ``time <= now``; it must be at most
    ``max_age_s`` old. Column names are observation keys of the bundle (see
    ``gridrl slurm --bundle B --list-inputs``). Times are ISO 8601; naive times are UTC.
    """

    file: str
    time_column: str = "time"
    max_age_s: Annotated[Number, Field(gt=0)] = 7200.0


class SlurmSite(_Strict):
    """One site: its partitions, capacity and signal sources.

    Demand response (``gridrl openadr-ven`` writes ``events``; see
    :mod:`gridrl.integrations.slurm_events`) estimates the site's power as
    ``gpus x gpu_max_kw x cap``: every GPU busy at its cap.

    Attributes
    ----------
    gpu_max_kw
        Power of one busy uncapped GPU where the utility meters the site (kW): the board's
        maximum (NVIDIA H100 SXM: 0.7 kW, A100 SXM: 0.4 kW, product briefs) plus its share
        of host and cooling when the limit is at the site meter. Required for events.
    cap_min_fraction
        Lowest power cap the GPUs accept, as a fraction of maximum board power
        (``nvidia-smi -q -d POWER``: H100 SXM 200 of 700 W = 0.29, A100 SXM 100 of 400 W
        = 0.25); below the policy's own range, which an event may need.
    events
        The demand-response event signal file the VEN writes.
    """

    name: str
    partitions: Annotated[list[str], Field(min_length=1)]
    gpus: Annotated[Count, Field(gt=0)]
    signals: SignalFile | None = None
    values: dict[str, Number] = Field(default_factory=dict)
    gpu_max_kw: Annotated[Number, Field(gt=0)] | None = None
    cap_min_fraction: Annotated[Number, Field(gt=0, le=1)] = 0.3
    events: SignalFile | None = None

    @model_validator(mode="after")
    def _event_power(self) -> SlurmSite:
        if self.events is not None and self.gpu_max_kw is None:
            raise ValueError(
                "events needs gpu_max_kw (kW of one busy uncapped GPU) to turn a power "
                "limit into a GPU power cap"
            )
        return self

    @property
    def full_power_kw(self) -> float | None:
        """Estimated power with every GPU busy and uncapped (kW), None without gpu_max_kw."""
        return None if self.gpu_max_kw is None else self.gpus * self.gpu_max_kw


class SlurmCommands(_Strict):
    """Executables used (names on PATH or absolute paths)."""

    squeue: str = "squeue"
    scontrol: str = "scontrol"
    timeout_s: Annotated[Number, Field(gt=0)] = 30.0


class SignalLimits(_Strict):
    """Plausibility checks of signal values (from the CSV or ``values``) at every tick.

    A value outside them makes the tick fall back to the safe default decision.

    Attributes
    ----------
    non_negative
        Keys that cannot be negative (their forecasts ``fc_<key>_h<H>_p50`` too;
        forecast spreads are never negative).
    max_scaled_abs
        Largest plausible ``|value - offset| / scale`` (the bundle's own scaling): far
        above what the policy was trained on means a unit or parsing error.
    """

    non_negative: list[str] = Field(
        default_factory=lambda: [
            "pv_kw", "wind_kw", "carbon_g_per_kwh", "inference_gpus", "flexible_gpu_h",
            "soc_kwh", "battery_soc_fraction",
        ]
    )  # fmt: skip
    max_scaled_abs: Annotated[Number, Field(gt=0)] = 1000.0


class SitesConfig(_Strict):
    """The whole SITES.yaml.

    Attributes
    ----------
    decision_interval_s
        Length of one decision step (s): the step the bundle's policy was trained with
        (its manifest's ``step_minutes`` x 60; the adapter refuses another). A deferred
        job gets ``StartTime = now +
        decision_interval_s`` (``defer_mode: start_time``) or a user hold until a later
        decision releases it (``defer_mode: hold``). ``--interval`` defaults to it. A
        decision on a job stands for one step: a later tick within it leaves the job be.
    decision_grace_fraction
        A tick later than ``(1 - decision_grace_fraction) x decision_interval_s`` after
        the last decision on a job decides again (absorbs the jitter of timers).
    resource
        What one unit of work counts: GPUs from the job's ``gres/gpu`` request, or CPUs.
    default_slack_h
        Slack given to a job submitted without ``--deadline``: its deadline is
        ``submit time + time limit + default_slack_h``.
    protect_deadlines
        Never defer or move a job whose slack is below one decision step.
    inflexible_qos
        QOS names of latency-sensitive jobs: never deferred or moved; counted as
        inference demand.
    state_dir
        Folder of the adapter's records (what it deferred, moved and capped) and lock;
        only the adapter's account may write it (created 0700). Required to change the
        cluster; relative to SITES.yaml's folder.
    health_file
        JSON the adapter rewrites after every tick: time of the last good tick, last
        error. Default: ``<state_dir>/health.json``.
    start_time_tolerance_s
        How far the begin time Slurm shows may be from the one the adapter set before
        the deferral counts as changed by someone else (and is no longer the adapter's).
    publish_cap
        ``admin_comment``: write ``<comment_prefix>power_cap=0.800`` into the job's
        AdminComment (only Slurm administrators can edit it) for a prolog to apply;
        ``none``: keep the cap in the state folder only.
    node_caps_file
        JSON the adapter rewrites after every tick for the node agents (``gridrl
        node-agent``): per node, each running job's cap and GPU indices. On storage
        every GPU node reads; relative to SITES.yaml's folder. Default: none.
    comment_prefix
        Prefix of the adapter's ``key=value`` tokens in AdminComment. Other text is kept
        byte for byte.
    signal_limits
        Plausibility checks of signal values.
    """

    decision_interval_s: Annotated[Number, Field(gt=0)] = 3600.0
    decision_grace_fraction: Annotated[Number, Field(ge=0, lt=1)] = 0.1
    defer_mode: Literal["start_time", "hold"] = "start_time"
    resource: Literal["gpu", "cpu"] = "gpu"
    default_slack_h: Annotated[Number, Field(ge=0)] = 24.0
    protect_deadlines: bool = True
    inflexible_qos: list[str] = Field(default_factory=list)
    state_dir: str | None = None
    health_file: str | None = None
    start_time_tolerance_s: Annotated[Number, Field(ge=0)] = 120.0
    publish_cap: Literal["admin_comment", "none"] = "admin_comment"
    node_caps_file: str | None = None
    comment_prefix: str = "gridrl."
    power_cap_digits: Annotated[Count, Field(ge=1, le=6)] = 3
    signal_limits: SignalLimits = SignalLimits()
    commands: SlurmCommands = SlurmCommands()
    sites: Annotated[list[SlurmSite], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> SitesConfig:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        parts = [p for s in self.sites for p in s.partitions]
        dup = sorted({p for p in parts if parts.count(p) > 1})
        if dup:
            raise ValueError(f"a partition belongs to one site only; repeated: {dup}")
        return self

    def site_of_partition(self) -> dict[str, str]:
        """``{partition: site name}``."""
        return {p: s.name for s in self.sites for p in s.partitions}

    @property
    def fresh_s(self) -> float:
        """How long a decision on a job stands (s)."""
        return self.decision_interval_s * (1.0 - self.decision_grace_fraction)

    def health_path(self) -> Path | None:
        """Where the health JSON goes (None without ``health_file`` and ``state_dir``)."""
        if self.health_file is not None:
            return Path(self.health_file)
        return None if self.state_dir is None else Path(self.state_dir) / "health.json"


def load_sites(path: str | Path) -> SitesConfig:
    """Read and validate SITES.yaml; relative signal files resolve against its folder.

    Raises
    ------
    SitesConfigError
        naming the file and the YAML path of each bad key.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, SitesConfigError, "file")
    for key in ("state_dir", "health_file", "node_caps_file"):
        if isinstance(raw.get(key), str):
            raw[key] = str(_resolve(path, raw[key]))
    for site in raw.get("sites") or []:
        for key in ("signals", "events"):
            sig = site.get(key) if isinstance(site, dict) else None
            if isinstance(sig, dict) and isinstance(sig.get("file"), str):
                sig["file"] = str(_resolve(path, sig["file"]))
    try:
        return SitesConfig.model_validate(raw)
    except ValidationError as exc:
        raise SitesConfigError(format_validation_errors(exc, str(path))) from None


def _resolve(sites_yaml: Path, name: str) -> Path:
    """A path of SITES.yaml: ``~`` expanded, relative ones against the file's folder."""
    f = Path(name).expanduser()
    return f if f.is_absolute() else (sites_yaml.parent / f).resolve()
