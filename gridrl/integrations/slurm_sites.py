"""SITES.yaml: how a Slurm cluster maps onto a policy's sites.

Each site of the bundle is one or more Slurm partitions. The file says which
partitions belong to which site, where the site's signals and forecasts come from (a
time-indexed CSV whose columns are the observation keys, and/or constants), which jobs
the policy may move (QOS lists), and how decisions are handed to Slurm. Every default
is a schema default documented here; errors name the file and the YAML key path.

Example::

    decision_interval_s: 3600     # one policy step; a deferred job waits this long
    defer_mode: start_time        # or "hold" (scontrol hold / release)
    resource: gpu                 # count work in GPUs (gres/gpu) or "cpu"
    sites:
      - name: dc_a                # must be a site of the bundle
        partitions: [gpu_a]       # first one receives migrated jobs
        gpus: 64
        signals: {file: signals/dc_a.csv, time_column: time, max_age_s: 7200}
        values: {battery_soc_fraction: 0.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gridrl.config import format_validation_errors, read_yaml_mapping
from gridrl.errors import GridrlError


class SitesConfigError(GridrlError, ValueError):
    """SITES.yaml is missing, not YAML, or invalid; the message names the key path."""


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
    max_age_s: Annotated[float, Field(gt=0)] = 7200.0


class SlurmSite(_Strict):
    """One site: its partitions, capacity and signal sources."""

    name: str
    partitions: Annotated[list[str], Field(min_length=1)]
    gpus: Annotated[int, Field(gt=0)]
    signals: SignalFile | None = None
    values: dict[str, float] = Field(default_factory=dict)


class SlurmCommands(_Strict):
    """Executables used (names on PATH or absolute paths)."""

    squeue: str = "squeue"
    scontrol: str = "scontrol"
    timeout_s: Annotated[float, Field(gt=0)] = 30.0


class SitesConfig(_Strict):
    """The whole SITES.yaml.

    Attributes
    ----------
    decision_interval_s
        Length of one decision step (s). A deferred job gets ``StartTime = now +
        decision_interval_s`` (``defer_mode: start_time``) or is held until a later
        decision releases it (``defer_mode: hold``). ``--interval`` defaults to it.
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
    comment_prefix
        Prefix of the ``key=value`` tokens the adapter keeps in a job's Comment
        (``gridrl.power_cap=0.800 gridrl.deferred=start_time``). Other comment text is kept.
    """

    decision_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    defer_mode: Literal["start_time", "hold"] = "start_time"
    resource: Literal["gpu", "cpu"] = "gpu"
    default_slack_h: Annotated[float, Field(ge=0)] = 24.0
    protect_deadlines: bool = True
    inflexible_qos: list[str] = Field(default_factory=list)
    comment_prefix: str = "gridrl."
    power_cap_digits: Annotated[int, Field(ge=1, le=6)] = 3
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


def load_sites(path: str | Path) -> SitesConfig:
    """Read and validate SITES.yaml; relative signal files resolve against its folder.

    Raises
    ------
    SitesConfigError
        naming the file and the YAML path of each bad key.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, SitesConfigError, "file")
    for site in raw.get("sites") or []:
        sig = site.get("signals") if isinstance(site, dict) else None
        if isinstance(sig, dict) and isinstance(sig.get("file"), str):
            f = Path(sig["file"])
            sig["file"] = str(f if f.is_absolute() else (path.parent / f).resolve())
    try:
        return SitesConfig.model_validate(raw)
    except ValidationError as exc:
        raise SitesConfigError(format_validation_errors(exc, str(path))) from None
