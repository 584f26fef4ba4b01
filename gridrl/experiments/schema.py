"""Study configuration: one YAML file = one reproducible study.

A study names a scenario, a forecaster and its mode, the agents (stable-baselines3
algorithms with their hyperparameters, or reference controllers by name), the seeds,
the training budget, the evaluation protocol, the backend and the output folder. It is
validated completely (including the scenario file it names and every SB3
hyperparameter name) before any work starts; every error names the study file and the
YAML key path (``agents[0].hyperparameters.n_step``).

Relative paths in a study are resolved against the current directory first and then
against the directory of the study file; the resolved study stores absolute paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gridrl.agents.registry import REFERENCES, check_expert
from gridrl.agents.specs import (
    SB3_ALGOS,
    AgentBase,
    SB3AgentSpec,
    StrictSpec,
    TrainingSpec,
    VecNormalizeSpec,
    algo_class,
    check_name,
)
from gridrl.config import Count, format_validation_errors, json_hash, key_path, read_yaml_mapping
from gridrl.errors import GridrlError
from gridrl.forecast.config import ForecastConfigError, load_forecast_config
from gridrl.scenario import Periods, ScenarioError, load_scenario

# Re-exported: a study's SB3 entries are the agents layer's models.
__all__ = [
    "SB3_ALGOS",
    "AgentSpec",
    "ReferenceAgentSpec",
    "SB3AgentSpec",
    "Study",
    "StudyError",
    "TrainingSpec",
    "VecNormalizeSpec",
    "algo_class",
    "dump_study",
    "load_study",
    "mode_slug",
]

_MODE_RE = re.compile(r"^(lightgbm|perfect|persistence|none|noisy\((\d+(\.\d*)?|\.\d+)\))$")


class StudyError(GridrlError, ValueError):
    """A study file is missing, unreadable or invalid; the message names file and key path."""


def _check_mode(mode: str) -> str:
    if not _MODE_RE.match(mode):
        raise ValueError(
            "expected a forecast mode: lightgbm, perfect, persistence, none or noisy(SIGMA)"
        )
    return mode


def mode_slug(mode: str) -> str:
    """File-name-safe form of a forecast mode (``noisy(0.2)`` -> ``noisy0.2``)."""
    return re.sub(r"[()]", "", mode)


class ForecastSpec(StrictSpec):
    """Forecaster config file (``forecasts/*.yaml``) and the mode the env uses."""

    config: str | None = "forecasts/default.yaml"  # needed by mode lightgbm only
    mode: str = "lightgbm"

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _check_mode(v)


class ReferenceAgentSpec(AgentBase):
    """A reference controller by name (``run_now``, ``mpc``, ...) with its parameters."""

    reference: str
    params: dict[str, Any] = Field(default_factory=dict)
    # ``seeds``: deterministic references evaluated on seed-independent episodes
    # (evaluation episodes: null) give the same rows for every seed: ``[0]`` runs them once.

    @field_validator("reference")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in REFERENCES:
            raise ValueError(f"unknown reference controller; expected one of {sorted(REFERENCES)}")
        return v

    @model_validator(mode="after")
    def _known_params(self) -> ReferenceAgentSpec:
        model = REFERENCES[self.reference][1]
        try:
            model(**self.params)
        except ValidationError as exc:
            bad = "; ".join(f"{key_path(e['loc'], 'params')}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{self.reference}: {bad}") from None
        return self

    @property
    def kind(self) -> str:
        """``"reference"``."""
        return "reference"


def _agent_tag(data: Any) -> str | None:
    if isinstance(data, dict):
        if "algo" in data:
            return "sb3"
        if "reference" in data:
            return "reference"
        return None
    return "sb3" if isinstance(data, SB3AgentSpec) else "reference"


AgentSpec = Annotated[
    Annotated[SB3AgentSpec, Tag("sb3")] | Annotated[ReferenceAgentSpec, Tag("reference")],
    Discriminator(
        _agent_tag,
        custom_error_type="agent_kind",
        custom_error_message="expected an agent with either 'algo' (SB3) or 'reference'",
    ),
]


class EvaluationSpec(StrictSpec):
    """Evaluation protocol: which episodes of ``period`` every unit is evaluated on.

    ``episodes: null`` (the default) evaluates every fixed window of the period (for
    geo3's test period: its twelve test weeks); a number draws that many windows with
    ``seed``. The windows do not depend on the training seed: every policy and every
    training seed meets the same episodes, so comparisons (and gap closed) are paired
    and deterministic references need to run only once (``seeds: [0]`` on the agent).
    """

    episodes: Annotated[Count, Field(gt=0)] | None = None
    period: Literal["train", "validation", "test"] = "test"
    deterministic: bool = True
    seed: Count = 0  # draws the evaluation windows (and seeds stochastic policies)
    # also evaluate every unit on the validation period, reported beside the test
    # (always on with ``tuning``); its windows: every fixed one, or this many drawn
    # with ``seed`` (the same for every unit; tuning reads its own ``episodes``)
    validation: bool = False
    validation_episodes: Annotated[Count, Field(gt=0)] | None = None


class TuningSpec(StrictSpec):
    """Settings of reference agents chosen on the validation period before the test.

    ``grid`` maps an agent name to candidate values of its parameters (every
    combination is evaluated: mean ``J`` over the validation episodes, best kept);
    agents in ``per_site`` are then refined one site at a time (each site tries every
    combination while the others keep theirs), so a static policy gets its own cap and
    run share per site. The runner records the choice in ``tuning.json`` and every unit
    (and the report) uses it; the test period is evaluated once, with it.
    """

    period: Literal["validation"] = "validation"
    episodes: Annotated[Count, Field(gt=0)] | None = None  # default: every fixed window
    seed: Count = 0
    grid: dict[str, dict[str, list[Any]]]
    per_site: list[str] = Field(default_factory=list)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for agent, params in v.items():
            if not params:
                raise ValueError(f"{agent}: expected at least one parameter to tune")
            empty = [k for k, vals in params.items() if not vals]
            if empty:
                raise ValueError(f"{agent}: no candidate values for {empty}")
        return v


class BackendSpec(StrictSpec):
    """Where units run: ``local`` (process pool) or ``ray`` (``address``: ``auto`` or host:port)."""

    kind: Literal["local", "ray"] = "local"
    max_workers: Annotated[Count, Field(gt=0)] = 2
    address: str = "auto"


class AblationSpec(StrictSpec):
    """Forecast ablation: each listed agent is trained/evaluated once per mode."""

    forecast_modes: list[str]
    agents: list[str] | None = None  # default: every agent of the study

    @field_validator("forecast_modes")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one forecast mode")
        for m in v:
            _check_mode(m)
        if len(set(v)) != len(v):
            raise ValueError("forecast modes must be unique")
        return v


class ReportSpec(StrictSpec):
    """What the report shows. ``leaderboard_columns`` are the KPI columns of the main
    table (those present in the results); every KPI is in ``leaderboard.csv``."""

    leaderboard_columns: list[str] = [
        "J",
        "gap_closed",
        "carbon_kg",
        "cost",
        "energy_per_useful_gpu_h",
        "renewable_share",
        "mean_cap",
        "deadline_miss_gpu_h",
        "slo_violation_gpu_h",
        "overdraw_kwh",
        "work_lost_gpu_h",
    ]

    # per-term breakdown of the objective: these KPIs (those present), then every KPI
    # whose name contains one of breakdown_patterns (backup, demand response, ...)
    breakdown_columns: list[str] = [
        "carbon_kg",
        "cost",
        "gpu_rent_cost",
        "holding_cost",
        "battery_degradation_cost",
        "transfer_cost",
        "deadline_miss_gpu_h",
        "overdue_gpu_h",
        "slo_violation_gpu_h",
        "overdraw_kwh",
    ]
    breakdown_patterns: list[str] = ["backup", "dr_", "demand_response"]
    dispatch_week: bool = True  # dispatch plot of one test week for the best policy
    learning_curve_window: Annotated[Count, Field(gt=0)] = 20  # episodes in the rolling mean
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    # rliable's stratified bootstrap: replications and the seed of its resampling
    bootstrap_reps: Annotated[Count, Field(gt=0)] = 2000
    bootstrap_seed: Count = 0
    profile_points: Annotated[Count, Field(ge=2)] = 101  # thresholds of the profiles


class Study(StrictSpec):
    """A whole study file (see the module docstring and ``experiments/*.yaml``)."""

    name: str
    description: str = ""
    scenario: str
    forecast: ForecastSpec = ForecastSpec()
    periods: Periods | None = None  # overrides the scenario's train/test periods
    agents: list[AgentSpec]
    seeds: list[Count]
    # Scenario seeds (the scenario's ``seed``: its random events and workload draws):
    # every unit runs once per scenario seed, on its own signals and forecasts, and the
    # report's tasks are (scenario seed, week) pairs. None: the scenario's own seed.
    scenario_seeds: list[Count] | None = None
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    backend: BackendSpec = BackendSpec()
    output_dir: str | None = None  # default: runs/<name>
    ablation: AblationSpec | None = None
    report: ReportSpec = ReportSpec()
    tuning: TuningSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("seeds", "scenario_seeds", mode="before")
    @classmethod
    def _seed_count(cls, v: Any) -> Any:
        # ``seeds: 5`` is shorthand for seeds 0..4
        if isinstance(v, int) and not isinstance(v, bool):
            if v <= 0:
                raise ValueError("expected a positive seed count or a list of seeds")
            return list(range(v))
        return v

    @field_validator("seeds", "scenario_seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("expected at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be unique")
        return v

    @model_validator(mode="after")
    def _agents(self) -> Study:
        for i, a in enumerate(self.agents):
            if a.seeds is not None and (not a.seeds or len(set(a.seeds)) != len(a.seeds)):
                raise ValueError(f"agents[{i}].seeds: expected a non-empty list of unique seeds")
            if isinstance(a, SB3AgentSpec) and a.imitation is not None:
                try:
                    check_expert(a.imitation)
                except ValueError as exc:
                    raise ValueError(f"agents[{i}].imitation: {exc}") from None
        names = [a.name for a in self.agents]
        if not names:
            raise ValueError("expected at least one agent")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"agent names must be unique; repeated: {dup}")
        if self.tuning is not None:
            self._check_tuning()
        if self.ablation and self.ablation.agents:
            missing = sorted(set(self.ablation.agents) - set(names))
            if missing:
                raise ValueError(f"ablation.agents names unknown agents {missing}")
        return self

    def _check_tuning(self) -> None:
        """Tuned agents are reference agents and every candidate is valid."""
        import itertools

        tuning = self.tuning
        assert tuning is not None
        for name in [*tuning.grid, *tuning.per_site]:
            spec = next((a for a in self.agents if a.name == name), None)
            if not isinstance(spec, ReferenceAgentSpec):
                raise ValueError(f"tuning.grid.{name}: expected the name of a reference agent")
        for name, grid in tuning.grid.items():
            spec = self.agent(name)
            model = REFERENCES[spec.reference][1]
            for combo in itertools.product(*grid.values()):
                try:
                    model(**{**spec.params, **dict(zip(grid, combo, strict=True))})
                except ValidationError as exc:
                    bad = "; ".join(f"{key_path(e['loc'], '')}: {e['msg']}" for e in exc.errors())
                    raise ValueError(f"tuning.grid.{name}: candidate {combo}: {bad}") from None
        missing = sorted(set(tuning.per_site) - set(tuning.grid))
        if missing:
            raise ValueError(f"tuning.per_site names agents without a grid: {missing}")

    def validation_rows(self) -> bool:
        """Whether units are also evaluated on the validation period."""
        return self.evaluation.validation or self.tuning is not None

    def episode_draw(self, name: str, period: str = "test") -> dict[str, int | None]:
        """``evaluate`` keywords ``episodes`` and ``within`` of agent ``name`` on the test
        (``evaluation.period``) or the validation period: the study's draw, or with the
        agent's own count, that many of the study's windows (so its rows pair)."""
        a = self.agent(name)
        study = (self.evaluation.validation_episodes if period == "validation"
                 else self.evaluation.episodes)
        own = a.validation_episodes if period == "validation" else a.episodes
        return {"episodes": study, "within": None} if own is None else {
            "episodes": own, "within": study}

    def agent(self, name: str) -> SB3AgentSpec | ReferenceAgentSpec:
        """The agent called ``name``."""
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(name)

    def content_hash(self) -> str:
        """Hash of the resolved study as written (file references by path)."""
        return json_hash(self._hash_values(self.model_dump(mode="json")))

    def _hash_values(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (a dump of the study) with each agent as hashes see it
        (:meth:`AgentBase.key_values`: keys added later count only when set)."""
        return {**data, "agents": [a.key_values() for a in self.agents]}

    def run_hash(self) -> str:
        """Hash of what a run's results depend on; a resumed run must match the run it
        continues.

        Backend and output folder are left out; the scenario counts by its validated
        values (:meth:`Scenario.content_hash`) and the forecaster config, when a
        forecast mode reads it, by its YAML values: a run folder resumes from another
        checkout or machine, and not after a value in either changed (data files the
        scenario points to are not read here). Needs the files: a study from
        :func:`load_study` with ``check_files``.
        """
        if not Path(self.scenario).is_absolute():
            raise StudyError(
                f"scenario {self.scenario!r}: run_hash needs a study from "
                "load_study(..., check_files=True) (file paths resolved)"
            )
        data = self._hash_values(self.model_dump(mode="json", exclude={"backend", "output_dir"}))
        data["scenario"] = load_scenario(self.scenario).content_hash()
        data["forecast"]["config"] = (self.forecaster_config_hash() if self.reads_forecaster()
                                      else None)
        return json_hash(data)

    def forecaster_config_hash(self) -> str | None:
        """Hash of the forecaster config's values (comments and layout do not count);
        None without a config."""
        if self.forecast.config is None:
            return None
        return json_hash(read_yaml_mapping(Path(self.forecast.config), StudyError,
                                           "forecaster config", empty_ok=True))

    def path_run_hash(self) -> str:
        """The former :meth:`run_hash` (file references by path), which run folders made
        before it recorded; accepted on resume from the same paths, with no check of the
        files' values."""
        return self.model_copy(update={"backend": BackendSpec(), "output_dir": None}
                               ).content_hash()

    def reads_forecaster(self) -> bool:
        """Whether a forecast mode of the study (its own or an ablation's) fits models."""
        modes = [self.forecast.mode, *(self.ablation.forecast_modes if self.ablation else [])]
        return any(mode_needs_forecaster(m) for m in modes)


# Discriminator tags of the agent union (not YAML keys; left out of error paths).
_AGENT_TAGS = ("sb3", "reference")


def _resolve(value: str, study_dir: Path, key: str, source: Path) -> str:
    p = Path(value).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [Path.cwd() / p, study_dir / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    tried = ", ".join(str(c) for c in candidates)
    raise StudyError(f"{source}: {key}: file not found (tried {tried})")


def load_study(path: str | Path, *, check_files: bool = True) -> Study:
    """Read, validate and resolve a study YAML file.

    Parameters
    ----------
    path
        Study file (``experiments/*.yaml``).
    check_files
        Also resolve and validate the files the study names: the scenario (loaded and
        validated with :func:`gridrl.scenario.load_scenario`) and the forecaster config.

    Returns
    -------
    Study
        With absolute ``scenario`` and ``forecast.config`` paths when ``check_files``.

    Raises
    ------
    StudyError
        naming the study file and the YAML path of every bad key, or the file and key
        of a missing/invalid scenario or forecaster config.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, StudyError, "study file")
    try:
        study = Study.model_validate(raw)
    except ValidationError as exc:
        raise StudyError(format_validation_errors(exc, str(path), tags=_AGENT_TAGS)) from None
    if not check_files:
        return study
    study_dir = path.resolve().parent
    scenario_path = _resolve(study.scenario, study_dir, "scenario", path)
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        raise StudyError(f"{path}: scenario: invalid scenario file:\n{exc}") from None
    periods = study.periods or scenario.periods
    wants = study.validation_rows() or study.evaluation.period == "validation"
    if wants and not periods.validation:
        raise StudyError(
            f"{path}: tuning / evaluation.validation / evaluation.period need validation "
            f"blocks: the scenario {scenario_path} has no periods.validation (set it there "
            "or in the study's periods)"
        )
    forecast = study.forecast
    needs_forecaster = study.reads_forecaster()
    config_path: str | None = None
    if forecast.config is not None:
        try:
            config_path = _resolve(forecast.config, study_dir, "forecast.config", path)
        except StudyError:
            if needs_forecaster:
                raise
            config_path = None  # modes without a forecaster do not read it
    if config_path is not None:
        try:
            load_forecast_config(config_path)
        except ForecastConfigError as exc:
            raise StudyError(
                f"{path}: forecast.config: invalid forecaster config:\n{exc}"
            ) from None
    return study.model_copy(
        update={
            "scenario": scenario_path,
            "forecast": forecast.model_copy(update={"config": config_path}),
        }
    )


def mode_needs_forecaster(mode: str) -> bool:
    """Whether forecast ``mode`` fits models (and so reads the forecaster config)."""
    return mode == "lightgbm"


def dump_study(study: Study) -> str:
    """The study as YAML text (``config.resolved.yaml``)."""
    return yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False)
