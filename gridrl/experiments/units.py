"""Units of a study: what runs (agent x seed x forecast mode), on which scenario, with
which policy. Shared by the runner, the report and the CLI.

A study's scenario is its scenario file, or the run folder's ``scenario.yaml`` when the
study overrides the periods (one file per run: the signals and forecasts of every unit
are built from it). With ``scenario_seeds`` each scenario seed has its own copy
(``scenario-seed<N>.yaml``, the scenario's ``seed`` set to N): the random events and
workload differ, the real signals do not, and each copy has its own forecasts.
An agent's ``battery_control`` is an in-memory copy of that
scenario (:func:`agent_scenario`); the inputs do not depend on it, only the env does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gridrl.experiments.schema import ReferenceAgentSpec, SB3AgentSpec, Study, mode_slug
from gridrl.io import write_text_atomic
from gridrl.scenario import Scenario, ScenarioError, load_scenario

RUN_SCENARIO_FILE = "scenario.yaml"


@dataclass(frozen=True)
class Unit:
    """One unit of work: an agent, a (training) seed, a forecast mode and, in a study
    with ``scenario_seeds``, the scenario seed (None: the scenario's own)."""

    agent: str
    seed: int
    forecast_mode: str
    scenario_seed: int | None = None

    @property
    def unit_id(self) -> str:
        """Folder name of the unit (and policy id of an SB3 unit)."""
        base = f"{self.agent}-seed{self.seed}-{mode_slug(self.forecast_mode)}"
        return base if self.scenario_seed is None else f"{base}-scen{self.scenario_seed}"


def plan_units(study: Study) -> list[Unit]:
    """Every unit of the study: agents in file order, then seeds, then scenario seeds,
    then forecast modes (the order workers take them: an agent's units of different
    scenario seeds start together, where units of the same one would wait on the
    demonstrations they share, :mod:`gridrl.agents.imitation`)."""
    base = study.forecast.mode
    ablated = set()
    modes: list[str] = [base]
    if study.ablation is not None:
        modes = list(dict.fromkeys([*study.ablation.forecast_modes]))
        ablated = set(study.ablation.agents or [a.name for a in study.agents])
    units = []
    for agent in study.agents:
        agent_modes = modes if agent.name in ablated else [base]
        for seed in agent.seeds or study.seeds:
            for scenario_seed in study.scenario_seeds or [None]:
                for mode in agent_modes:
                    units.append(Unit(agent.name, seed, mode, scenario_seed))
    return units


# --------------------------------------------------------------------------- scenarios


def run_scenario_path(study: Study, run_dir: Path, scenario_seed: int | None = None) -> Path:
    """The scenario file the units of ``scenario_seed`` read their signals and forecasts from.

    The study's scenario file itself; with the study's ``periods``, a copy in the run
    folder (``scenario.yaml``) with them; with a scenario seed, a copy
    ``scenario-seed<N>.yaml`` with that ``seed`` (and the periods). Copies have their
    relative file references made absolute so that they read the same data. Reading
    never writes: the runner calls :func:`write_run_scenario` once, before any unit runs.
    """
    if scenario_seed is not None:
        return Path(run_dir) / f"scenario-seed{scenario_seed}.yaml"
    if study.periods is None:
        return Path(study.scenario)
    return Path(run_dir) / RUN_SCENARIO_FILE


def write_run_scenario(study: Study, run_dir: Path) -> list[Path]:
    """Write the run's scenario copies (periods override, one per scenario seed;
    validated); returns the scenario file of each scenario seed, in study order."""
    seeds = study.scenario_seeds or [None]
    paths = [run_scenario_path(study, run_dir, s) for s in seeds]
    if study.periods is None and study.scenario_seeds is None:
        return paths
    src = Path(study.scenario)
    raw = yaml.safe_load(src.read_text())
    if study.periods is not None:
        raw["periods"] = study.periods.model_dump(mode="json")
    for seed, path in zip(seeds, paths, strict=True):
        write_scenario_yaml(raw if seed is None else {**raw, "seed": seed}, src.parent, path)
    return paths


def write_scenario_yaml(raw: dict[str, Any], base: Path, path: Path) -> Path:
    """Write a scenario mapping whose relative file references are read from ``base``,
    with those references made absolute, and check that it loads."""
    write_text_atomic(path, yaml.safe_dump(absolute_files(raw, base), sort_keys=False))
    load_scenario(path)  # the override must still make a valid scenario
    return path


def absolute_files(node: Any, base: Path) -> Any:
    """``node`` with every ``file`` / ``*_file`` value that exists under ``base`` made
    absolute (so a copy written elsewhere reads the same files)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and (k == "file" or k.endswith("_file")):
                p = Path(v)
                v = str((base / p).resolve()) if not p.is_absolute() and (base / p).exists() else v
            out[k] = absolute_files(v, base)
        return out
    if isinstance(node, list):
        return [absolute_files(v, base) for v in node]
    return node


def agent_scenario(study: Study, scenario: Scenario, agent: str) -> Scenario:
    """The scenario ``agent`` runs in: ``scenario`` with the agent's ``battery_control``.

    Raises
    ------
    ScenarioError
        when the override does not make a valid scenario (names the agent).
    """
    control = study.agent(agent).battery_control
    if control is None or control == scenario.env.battery_control:
        return scenario
    data = scenario.model_dump()
    data["env"] = {**data["env"], "battery_control": control}
    try:
        return Scenario.model_validate(data)
    except ValueError as exc:
        raise ScenarioError(
            f"agents[{agent}].battery_control={control!r} does not make a valid scenario: {exc}"
        ) from None


def overrides(study: Study) -> dict[str, dict[str, Any]]:
    """Per-agent scenario overrides (agent name -> ``{key path: value}``), for reports."""
    return {
        a.name: {"env.battery_control": a.battery_control}
        for a in study.agents
        if a.battery_control is not None
    }


# --------------------------------------------------------------------------- policies


def policy_for_agent(study: Study, agent: str, unit_dir: Path) -> Any:
    """The policy of an agent entry: the trained policy in ``unit_dir`` (SB3), or the
    reference controller with the entry's parameters."""
    spec = study.agent(agent)
    if isinstance(spec, SB3AgentSpec):
        from gridrl.agents.registry import load_policy  # torch: loaded where needed

        return load_policy(unit_dir)
    assert isinstance(spec, ReferenceAgentSpec)
    from gridrl.agents.registry import make_policy

    return make_policy(spec.reference, **spec.params)


# --------------------------------------------------------------------------- results

#: identity columns the runner prefixes to every unit's KPI rows, and their dtype kinds
ID_COLUMNS: dict[str, str] = {
    "policy": "string",
    "kind": "string",
    "algo": "string",
    "seed": "integer",
    "forecast_mode": "string",
    "unit_id": "string",
}
#: identity column of a unit run on one of the study's ``scenario_seeds``
SCENARIO_SEED = "scenario_seed"
#: columns of the evaluation harness every result holds besides the KPIs
EPISODE_COLUMNS: dict[str, str] = {"episode": "integer", "start": "datetime", "J": "numeric"}


def result_schema() -> dict[str, str]:
    """Column -> dtype kind every unit's result table must have."""
    from gridrl.env.kpis import KPIS

    return {**ID_COLUMNS, **EPISODE_COLUMNS, **{k.name: "numeric" for k in KPIS}}


def _kind_ok(series: Any, kind: str) -> bool:
    import pandas as pd

    checks = {
        "string": lambda s: pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s),
        "integer": pd.api.types.is_integer_dtype,
        "numeric": lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s),
        "datetime": pd.api.types.is_datetime64_any_dtype,
    }
    return bool(checks[kind](series))


def check_result(frame: Any, unit: Unit, rows: int | None) -> str | None:
    """Why a unit's result table is not what the unit must have written, or None.

    Checks the columns and their dtype kinds (:func:`result_schema`), the row count
    (``rows``: the study's evaluation episodes; None skips it) and that the identity
    columns name this unit.
    """
    schema = result_schema()
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    wrong = [f"{c} ({frame[c].dtype}, expected {k})" for c, k in schema.items()
             if not _kind_ok(frame[c], k)]
    if wrong:
        return f"wrong dtype: {', '.join(wrong)}"
    if rows is not None and len(frame) != rows:
        return f"{len(frame)} rows, expected {rows} (one per evaluation episode)"
    ids = {"unit_id": unit.unit_id, "seed": unit.seed, "policy": unit.agent,
           "forecast_mode": unit.forecast_mode}
    if unit.scenario_seed is not None:
        if SCENARIO_SEED not in frame.columns:
            return f"missing column {SCENARIO_SEED}"
        ids[SCENARIO_SEED] = unit.scenario_seed
    for col, want in ids.items():
        if not (frame[col] == want).all():
            return f"column {col} does not hold {want!r} on every row"
    return None


def result_check(
    study: Study, rows: Callable[[], int] | None = None
) -> Callable[[str, Any], str | None]:
    """The :class:`~gridrl.experiments.store.RunStore` check of a study's unit results
    (:func:`check_result`); ``rows`` gives the expected row count when called (it may
    build the signals: called once, at the first unit checked); without it, the
    study's ``evaluation.episodes`` when set; an agent's own ``episodes`` wins. Units
    outside the study's plan are not checked here."""
    units = {u.unit_id: u for u in plan_units(study)}
    if rows is None and study.evaluation.episodes is not None:
        rows = lambda: study.evaluation.episodes  # noqa: E731 - known without the data
    expected = functools.cache(rows) if rows is not None else None

    def check(unit_id: str, frame: Any) -> str | None:
        unit = units.get(unit_id)
        if unit is None:
            return None
        own = study.agent(unit.agent).episodes
        return check_result(frame, unit, own if own is not None
                            else None if expected is None else expected())

    return check


def evaluation_episodes(study: Study, scenario_path: Path) -> int:
    """Rows every unit's result has: the study's evaluation episodes (with
    ``episodes: null``, the fixed windows of the evaluation period)."""
    if study.evaluation.episodes is not None:
        return study.evaluation.episodes
    from gridrl.data.build import build_signals
    from gridrl.env.episodes import EpisodeWindows

    scenario = load_scenario(scenario_path)
    signals = build_signals(scenario, base_dir=Path(scenario_path).parent)
    return len(EpisodeWindows(signals.index, scenario, study.evaluation.period).fixed)


def unit_identity(study: Study, unit: Unit, kind: str, algo: str) -> dict[str, Any]:
    """The identity columns the runner prefixes to a unit's rows (test and validation)."""
    ids: dict[str, Any] = {"policy": unit.agent, "kind": kind, "algo": algo, "seed": unit.seed,
                           "forecast_mode": unit.forecast_mode, "unit_id": unit.unit_id}
    if unit.scenario_seed is not None:
        ids[SCENARIO_SEED] = unit.scenario_seed
    return ids
