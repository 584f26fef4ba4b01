"""What each unit's result depends on (its key), so that resuming a changed study reruns
only the units the change touches.

A unit's key holds one hash per part of the study the unit reads:

- ``scenario``: the scenario the agent runs in (the run's copy for the unit's scenario
  seed, with the study's periods and the agent's overrides), by its validated values;
- ``forecast``: the forecast mode and, when the mode fits models, the forecaster
  config's values;
- ``agent``: the agent's entry (its ``seeds`` left out: the unit's seed is in its id) and,
  for an agent tuned on validation, its tuning key (:func:`tuning_keys`): what the tuning
  read fixes what it chooses;
- ``training``: the training settings, for SB3 agents;
- ``evaluation``: the evaluation settings and whether validation rows are written.

A tuned agent's tuning key hashes its entry, its grid, whether it is tuned per site, the
tuning's episodes and seed, the forecast and every scenario seed's scenario.

The code is not part of a key: each driver of a run records its commit (``run.json``,
the report's provenance), and a result that a code change moves is rerun by starting a
new run folder.
"""

from __future__ import annotations

from typing import Any

from gridrl.config import json_hash
from gridrl.experiments.schema import SB3AgentSpec, Study, mode_needs_forecaster
from gridrl.experiments.units import Unit, agent_scenario
from gridrl.scenario import Scenario

__all__ = ["changed_parts", "forecast_part", "tuning_keys", "unit_key", "unit_keys"]


def forecast_part(study: Study, mode: str) -> str:
    """Hash of the forecast a unit in ``mode`` reads: the mode, and the forecaster
    config's values (comments and layout do not count) when the mode fits models."""
    config = study.forecaster_config_hash() if mode_needs_forecaster(mode) else None
    return json_hash({"mode": mode, "config": config})


def _agent_entry(study: Study, name: str) -> dict[str, Any]:
    data = study.agent(name).key_values()
    data.pop("seeds", None)
    return data


def tuning_keys(study: Study, scenarios: list[Scenario]) -> dict[str, str]:
    """Tuning key of every agent in ``tuning.grid`` (module doc); ``scenarios`` are the
    agent-independent run scenarios, one per scenario seed, in the study's order."""
    tuning = study.tuning
    if tuning is None:
        return {}
    forecast = forecast_part(study, study.forecast.mode)
    return {
        name: json_hash({
            "agent": _agent_entry(study, name),
            "grid": grid,
            "per_site": name in tuning.per_site,
            "settings": tuning.model_dump(mode="json", include={"period", "episodes", "seed"}),
            "forecast": forecast,
            "scenarios": [agent_scenario(study, s, name).content_hash() for s in scenarios],
        })
        for name, grid in tuning.grid.items()
    }


def unit_key(study: Study, agent: str, mode: str, scenario: Scenario,
             tuning: dict[str, str]) -> dict[str, str]:
    """The key of a unit of ``agent`` in forecast ``mode`` on ``scenario`` (the agent's
    scenario, overrides applied); ``tuning``: :func:`tuning_keys` of the study."""
    spec = study.agent(agent)
    return {
        "scenario": scenario.content_hash(),
        "forecast": forecast_part(study, mode),
        "agent": json_hash({"entry": _agent_entry(study, agent), "tuning": tuning.get(agent)}),
        "training": json_hash(study.training.model_dump(mode="json")
                              if isinstance(spec, SB3AgentSpec) else None),
        "evaluation": json_hash({**study.evaluation.model_dump(mode="json"),
                                 "validation_rows": study.validation_rows()}),
    }


def changed_parts(old: dict[str, Any], new: dict[str, str]) -> list[str]:
    """Parts of ``new`` whose hash differs from (or is missing in) ``old``."""
    return [part for part, value in new.items() if old.get(part) != value]


def unit_keys(study: Study, units: list[Unit], scenarios: dict[int | None, Scenario],
              agent_scenarios: dict[tuple[str, int | None], Scenario],
              ) -> dict[str, dict[str, str]]:
    """Unit id -> key of every unit; ``scenarios``: the run scenario of each scenario seed,
    ``agent_scenarios``: ``(agent, scenario seed) ->`` the scenario the agent runs in."""
    tuning = tuning_keys(study, list(scenarios.values()))
    return {u.unit_id: unit_key(study, u.agent, u.forecast_mode,
                                agent_scenarios[u.agent, u.scenario_seed], tuning)
            for u in units}
