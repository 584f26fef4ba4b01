"""Bundle manifest: what a policy bundle contains and what its numbers mean.

A bundle is a folder with ``policy.onnx``, ``manifest.json`` and ``checksums.sha256``.
The manifest carries everything a scheduler needs to call the policy without the
training code: the observation layout (names, units, how raw values are scaled), the
action layout (which site and component each output drives and how [-1, 1] maps to a
physical decision), the decision semantics in words, versions, the scenario hash and the
training metadata.

Each observation field carries structured metadata (``kind``, ``site``, the observed
``signal``, forecast ``horizon_h`` and ``statistic``, the slack range of a queue group,
``unit``) so a scheduler adapter maps it to its own data without reading names.
Manifests written before the metadata existed (and layouts that give only names and
keys) get it derived once, when the field is validated, from the key vocabulary of
:mod:`gridrl.env.layout`; a key outside that vocabulary is refused with its name.

This module imports only the standard library, pydantic and :mod:`gridrl.calendar`, so
the torch-free runtime can use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridrl.calendar import CALENDAR_FIELDS
from gridrl.io import sha256_file

BUNDLE_FORMAT = "gridrl-policy-bundle/1"
ONNX_FILE = "policy.onnx"
MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "checksums.sha256"

ActionComponent = Literal["run", "cap", "route", "migrate", "battery"]
# calendar: clock feature (no site); signal: the hour's value of ``signal``; forecast:
# a forecast of ``signal``; queue_slack: flexible work queued with slack in
# [slack_h_min, slack_h_max); overdue, transit: flexible work past its deadline / moving
# to the site; soc: battery state of charge; cap: mean GPU power cap in force.
ObservationKind = Literal[
    "calendar", "signal", "forecast", "queue_slack", "overdue", "transit", "soc", "cap"
]
ForecastStatistic = Literal["p50", "spread"]
# The env's state keys (gridrl.env.layout) and their kinds.
_STATE_KINDS = {"overdue_gpu_h": "overdue", "transit_gpu_h": "transit", "soc_kwh": "soc",
                "cap": "cap"}
_FORECAST_KEY = re.compile(r"^fc_(?P<signal>.+)_h(?P<horizon>\d+)_(?P<stat>p50|spread)$")
_SLACK_KEY = re.compile(r"^queue_slack_(?P<lo>\d+)_(?P<hi>\d+)h$")
_SLACK_PLUS_KEY = re.compile(r"^queue_slack_(?P<lo>\d+)h_plus$")

# What each action component means once mapped to its physical range; copied into every
# manifest so a bundle documents itself.
COMPONENT_SEMANTICS: dict[str, str] = {
    "migrate": (
        "migrate_share in [0, max_migration_fraction]: applied first; this share of the "
        "site's queued flexible work (the same share of every slack group) is sent to the "
        "other sites and arrives there one step later."
    ),
    "route": (
        "route_weight: softmax over sites of the route logits. Work migrating away from "
        "site i goes to each site j != i in proportion route_weight[j] / (1 - route_weight[i])."
    ),
    "run": (
        "run_share in [0, 1]: applied after migration; this share of the work still "
        "queued at the site is started now, earliest deadline first; the rest waits "
        "(deferred) until the next decision."
    ),
    "cap": (
        "power_cap_fraction in [cap_min, 1]: GPU power cap as a fraction of maximum "
        "board power for the site's work this step (throttle)."
    ),
    "battery": ("battery_kw: battery setpoint in kW, positive charges, negative discharges."),
}
# The battery component under ``battery_control: residual`` (replaces "battery").
BATTERY_RESIDUAL_SEMANTICS = (
    "battery_kw: power in kW added to the site's battery rule, positive charges. The rule "
    "wants rule_kw = max(gen - F, 0) - max(F - gen - threshold * headroom, 0) (gen: local "
    "PV and wind, F: facility power, headroom: grid headroom, all kW this step; threshold: "
    "battery_rule_threshold_fraction); the battery is asked for clip(rule_kw, -P, P) + "
    "battery_kw (P: the battery's power rating), within its power and state of charge, "
    "charging from the grid only within headroom. battery_kw = 0 is the rule."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def field_metadata(key: str, site: str | None) -> dict[str, Any]:
    """The structured metadata of an observation key of :mod:`gridrl.env.layout`
    (for layouts and manifests that carry names and keys only).

    Raises
    ------
    ValueError
        naming the key when it is not in the env's key vocabulary.
    """
    if site is None:
        if key not in CALENDAR_FIELDS:
            raise ValueError(f"key {key!r} without a site: expected one of {CALENDAR_FIELDS}")
        return {"kind": "calendar"}
    if key in CALENDAR_FIELDS:
        raise ValueError(f"calendar key {key!r} belongs to no site (got site {site!r})")
    if key in _STATE_KINDS:
        return {"kind": _STATE_KINDS[key]}
    if m := _FORECAST_KEY.match(key):
        return {"kind": "forecast", "signal": m["signal"], "horizon_h": int(m["horizon"]),
                "statistic": m["stat"]}
    if m := _SLACK_KEY.match(key):
        return {"kind": "queue_slack", "slack_h_min": float(m["lo"]),
                "slack_h_max": float(m["hi"])}
    if m := _SLACK_PLUS_KEY.match(key):
        return {"kind": "queue_slack", "slack_h_min": float(m["lo"]), "slack_h_max": None}
    return {"kind": "signal", "signal": key}


class ObservationField(_Model):
    """One entry of the observation vector.

    ``observation = (value - offset) / scale`` where ``value`` is the raw quantity in
    ``unit``. ``site`` is None for features shared by all sites (calendar features).
    ``key`` is the quantity's name without the site (``carbon_g_per_kwh``). The
    metadata (module doc) says what the quantity is; when ``kind`` is absent it is
    derived from ``key`` (:func:`field_metadata`).
    """

    name: str
    key: str
    site: str | None = None
    unit: str = "1"
    offset: float = 0.0
    scale: float = 1.0
    description: str = ""
    kind: ObservationKind
    signal: str | None = None  # signal and forecast fields: the observed signal
    horizon_h: int | None = None  # forecast: hours ahead of the hour observed
    statistic: ForecastStatistic | None = None  # forecast: median or spread
    slack_h_min: float | None = None  # queue_slack: slack_h_min <= slack ...
    slack_h_max: float | None = None  # ... < slack_h_max (None: no upper bound)

    @model_validator(mode="before")
    @classmethod
    def _derive_metadata(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data and isinstance(data.get("key"), str):
            try:
                return {**data, **field_metadata(data["key"], data.get("site"))}
            except ValueError as exc:
                raise ValueError(f"observation field {data.get('name')!r}: {exc}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ObservationField:
        if self.scale == 0.0:
            raise ValueError(f"observation field {self.name!r}: scale must not be 0")
        needs = {
            "forecast": ("signal", "horizon_h", "statistic"),
            "signal": ("signal",),
            "queue_slack": ("slack_h_min",),
        }.get(self.kind, ())
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"observation field {self.name!r}: kind {self.kind!r} needs "
                             f"{missing}")
        if (self.site is None) != (self.kind == "calendar"):
            raise ValueError(f"observation field {self.name!r}: calendar fields and only "
                             "they have no site")
        return self


class ActionField(_Model):
    """One entry of the action vector, in [``low``, ``high``] (the policy's Box).

    The physical value is the affine map of [low, high] onto
    [``physical_low``, ``physical_high``]; for ``route`` that value is a score that a
    softmax across sites turns into routing weights.
    """

    name: str
    site: str
    component: ActionComponent
    low: float = -1.0
    high: float = 1.0
    physical_low: float
    physical_high: float
    unit: str = "1"

    @model_validator(mode="after")
    def _ranges(self) -> ActionField:
        if not self.high > self.low:
            raise ValueError(f"action field {self.name!r}: expected high > low")
        return self


class ObservationLayout(_Model):
    """The observation vector, in order."""

    fields: list[ObservationField]

    @model_validator(mode="after")
    def _unique(self) -> ObservationLayout:
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"observation field names must be unique; repeated: {dup}")
        return self

    @property
    def dim(self) -> int:
        """Length of the observation vector."""
        return len(self.fields)


class ActionLayout(_Model):
    """The action vector, in order, and the sites it controls (in decision order)."""

    sites: list[str]
    fields: list[ActionField]
    battery_control: Literal["rule", "setpoint", "residual"] = "rule"
    battery_rule_threshold_fraction: float = 0.0

    @model_validator(mode="after")
    def _complete(self) -> ActionLayout:
        seen: set[tuple[str, str]] = set()
        for f in self.fields:
            if f.site not in self.sites:
                raise ValueError(f"action field {f.name!r}: unknown site {f.site!r}")
            if (f.site, f.component) in seen:
                raise ValueError(f"action field {f.name!r}: {f.component} repeated for {f.site}")
            seen.add((f.site, f.component))
        for site in self.sites:
            for comp in get_args(ActionComponent)[:4]:  # every component but the battery
                if (site, comp) not in seen:
                    raise ValueError(f"action layout: site {site!r} has no {comp!r} component")
        if self.has_battery != (self.battery_control != "rule"):
            raise ValueError(f"action layout: battery_control {self.battery_control!r} "
                             f"{'without' if self.has_battery else 'needs'} battery components")
        return self

    @property
    def dim(self) -> int:
        """Length of the action vector."""
        return len(self.fields)

    @property
    def has_battery(self) -> bool:
        """True when the policy sets battery power (otherwise a rule dispatches it)."""
        return any(f.component == "battery" for f in self.fields)

    @property
    def components(self) -> tuple[str, ...]:
        """Decision components present, in decision order (battery last when present)."""
        present = {f.component for f in self.fields}
        return tuple(c for c in get_args(ActionComponent) if c in present)

    def decision_map(self) -> dict[str, list]:
        """How the policy's action becomes decisions, as plain lists (graph constants):

        ``physical = physical_low + (action - low) * slope`` for every action entry, then
        ``gather`` picks entries component by component and site by site (``sites``
        order), giving ``[components, sites]``; ``route`` then goes through a softmax
        over sites.
        """
        pos = {(f.site, f.component): i for i, f in enumerate(self.fields)}
        return {
            "low": [f.low for f in self.fields],
            "physical_low": [f.physical_low for f in self.fields],
            "slope": [(f.physical_high - f.physical_low) / (f.high - f.low) for f in self.fields],
            "gather": [pos[(s, c)] for c in self.components for s in self.sites],
        }


class OnnxInfo(_Model):
    """How to call ``policy.onnx``."""

    file: str = ONNX_FILE
    opset: int
    input_name: str
    output_name: str
    decision_output_name: str  # [components, B, sites] float64, components in order
    decision_components: list[str]
    observation_dim: int
    action_dim: int
    dtype: Literal["float32"] = "float32"
    normalisation: str  # what was folded in front of the network, in words
    action_postprocess: Literal["clip", "tanh_unscale", "unscale"]


class ScenarioRef(_Model):
    """The scenario the policy was trained on."""

    path: str | None = None
    hash: str | None = None


class Manifest(_Model):
    """``manifest.json``."""

    format: Literal["gridrl-policy-bundle/1"] = BUNDLE_FORMAT
    gridrl_version: str
    created_utc: str
    algo: str
    scenario: ScenarioRef
    # the env's step (env.step_minutes): the policy decides once a step, so a scheduler
    # calls it every step_minutes (manifests without it were hourly)
    step_minutes: Literal[60, 30, 15] = 60
    forecast_mode: str | None = None
    observation: ObservationLayout
    action: ActionLayout
    onnx: OnnxInfo
    decision_semantics: dict[str, str]
    training: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dims(self) -> Manifest:
        if self.onnx.observation_dim != self.observation.dim:
            raise ValueError(
                f"onnx.observation_dim {self.onnx.observation_dim} != "
                f"{self.observation.dim} observation fields"
            )
        if self.onnx.action_dim != self.action.dim:
            raise ValueError(
                f"onnx.action_dim {self.onnx.action_dim} != {self.action.dim} action fields"
            )
        return self



def checksum_text(
    bundle_dir: str | Path, files: tuple[str, ...] = (ONNX_FILE, MANIFEST_FILE)
) -> str:
    """The ``checksums.sha256`` content for ``files`` (``sha256sum -c`` format)."""
    bundle_dir = Path(bundle_dir)
    return "".join(f"{sha256_file(bundle_dir / name)}  {name}\n" for name in files)


def parse_checksums(text: str, source: str = CHECKSUM_FILE) -> dict[str, str]:
    """Parse ``sha256sum`` lines into ``{file name: hex digest}``.

    Raises
    ------
    ValueError
        naming the line that is not ``<64 hex digits>  <name>``.
    """
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{source}: line {lineno}: expected '<sha256 hex>  <file>'")
        out[name.strip()] = digest
    return out
