"""Settings chosen on the validation period, recorded, then used for the test.

With a study's ``tuning`` key the runner evaluates every candidate setting of each
listed reference agent on the validation episodes (through the same harness as the
test, with the study's forecast mode; with ``scenario_seeds``, on the validation
episodes of every scenario seed), keeps the one with the highest mean ``J``,
writes every score and the choice to ``RUN_DIR/tuning.json`` and runs the units with
the chosen parameters. Only validation rows are read: the test period's signals cannot
move the choice (a test checks this by perturbing them).

A resumed run reads ``tuning.json`` instead of tuning again, so the test units of one
run always share one choice; an agent is tuned again only when what its tuning reads
changed (its tuning key, :mod:`gridrl.experiments.keys`), and then its units rerun too.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridrl.errors import GridrlError
from gridrl.experiments.schema import ReferenceAgentSpec, Study
from gridrl.io import write_text_atomic

__all__ = [
    "TUNING_FILE", "VALIDATION_FILE", "TuningError", "TuningResult", "candidates",
    "load_tuning", "tune_agent", "tune_study", "tuned_study",
]

TUNING_FILE = "tuning.json"
VALIDATION_FILE = "validation.parquet"  # a unit's rows on the validation period
OBJECTIVE = "J"


class TuningError(GridrlError, ValueError):
    """A tuning record that does not belong to the study, or a tuning that cannot run."""


@dataclass(frozen=True)
class TuningResult:
    """The chosen parameters of one agent and the score of every candidate tried."""

    agent: str
    chosen: dict[str, Any]
    score: float
    trials: list[dict[str, Any]]


def candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in grid order."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _score(reference: str, params: dict[str, Any], setups: list[Any], episodes: int | None,
           seed: int) -> float:
    """Mean ``J`` over the validation episodes of every setup (scenario seed)."""
    from gridrl.agents.evaluate import evaluate
    from gridrl.agents.registry import make_policy

    tables = [evaluate(make_policy(reference, **params), setup, period="validation",
                       episodes=episodes, seed=seed) for setup in setups]
    return float(np.concatenate([t[OBJECTIVE].to_numpy() for t in tables]).mean())


def _per_site_form(params: dict[str, Any], n_sites: int) -> dict[str, Any]:
    """``params`` with every value as a per-site list (one setting, one form)."""
    return {k: list(v) if isinstance(v, list | tuple) else [v] * n_sites
            for k, v in params.items()}


def tune_agent(spec: ReferenceAgentSpec, grid: dict[str, list[Any]], setup: Any, *,
               episodes: int | None = None, seed: int = 0, per_site: bool = False,
               ) -> TuningResult:
    """Grid search of ``spec``'s parameters on the validation windows of ``setup``.

    Parameters
    ----------
    setup
        An :class:`gridrl.agents.evaluate.EvalSetup` built for ``period="validation"``,
        or a list of them (one per scenario seed: the score is the mean over all).
    per_site
        Then refine site by site: each site tries every combination while the other
        sites keep theirs (values become per-site lists).
    """
    setups = list(setup) if isinstance(setup, list | tuple) else [setup]
    n_sites = setups[0].params.n_sites
    trials: list[dict[str, Any]] = []
    seen: dict[str, float] = {}  # a setting met again (per site: the old best) costs nothing

    def trial(params: dict[str, Any]) -> float:
        key = json.dumps(_per_site_form(params, n_sites), sort_keys=True)
        if key not in seen:
            seen[key] = _score(spec.reference, {**spec.params, **params}, setups, episodes, seed)
            trials.append({"params": params, OBJECTIVE: seen[key]})
        return seen[key]

    scored = [(trial(c), c) for c in candidates(grid)]
    best_j, best = max(scored, key=lambda t: t[0])  # first of equals: grid order
    if per_site:
        n = n_sites
        best = {k: [v] * n for k, v in best.items()}
        for site in range(n):
            for combo in candidates(grid):
                params = {k: [*best[k][:site], combo[k], *best[k][site + 1:]] for k in grid}
                if params == best:
                    continue
                j = trial(params)
                if j > best_j:
                    best_j, best = j, params
    return TuningResult(spec.name, dict(best), best_j, trials)


def tune_study(study: Study, scenario_path: Path | list[Path], run_dir: Path) -> dict[str, Any]:
    """Tune the study's ``tuning.grid`` agents once per run (module docstring).

    ``scenario_path``: the run's scenario file, or one per scenario seed.
    Returns the record written to ``tuning.json``. An agent recorded there with its
    current tuning key (:func:`gridrl.experiments.keys.tuning_keys`) keeps its choice;
    others are tuned again, and the former record is kept beside it
    (``tuning.<UTC time>.json``).

    Raises
    ------
    TuningError
        a record without keys (written before they were recorded) of another study.
    """
    from gridrl.experiments.keys import tuning_keys
    from gridrl.scenario import load_scenario

    tuning = study.tuning
    if tuning is None:
        return {}
    paths = scenario_path if isinstance(scenario_path, list) else [scenario_path]
    scenarios = [load_scenario(p) for p in paths]
    keys = tuning_keys(study, scenarios)
    path = Path(run_dir) / TUNING_FILE
    raw = load_tuning(path.parent)
    old = _keyed_record(raw, path, study, keys)
    kept = {name: a for name, a in old.get("agents", {}).items()
            if name in keys and a.get("key") == keys[name]}
    todo = [name for name in tuning.grid if name not in kept]
    agents = {**kept, **_tune(study, todo, list(zip(paths, scenarios, strict=True)))}
    record = {"period": tuning.period, "forecast_mode": study.forecast.mode,
              "objective": OBJECTIVE, "scenario_seeds": study.scenario_seeds,
              "study_hash": study.run_hash(),
              "agents": {name: {**agents[name], "key": keys[name]} for name in tuning.grid}}
    if old and (todo or set(old.get("agents", {})) - set(kept)):  # choices replaced
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        shutil.copy2(path, path.with_name(f"tuning.{stamp}.json"))
    if raw != record:
        _write_record(path, record)
    return record


def _keyed_record(record: dict[str, Any], path: Path, study: Study, keys: dict[str, str],
                  ) -> dict[str, Any]:
    """The tuning ``record`` read from ``path``; one from before tuning keys, when it was
    made by this study, with the current keys."""
    agents = record.get("agents", {})
    if not record or all("key" in a for a in agents.values()):
        return record
    if record.get("study_hash") not in (study.run_hash(), study.path_run_hash()):
        raise TuningError(f"{path}: tuning record of another study, made before tuning keys "
                          "were recorded (move it aside to tune again)")
    return {**record, "agents": {name: {**a, "key": keys.get(name)} for name, a in agents.items()}}


def _tune(study: Study, names: list[str], inputs: list[tuple[Path, Any]]) -> dict[str, Any]:
    """Tune the agents ``names`` on the validation episodes of every scenario seed."""
    if not names:
        return {}
    from gridrl.agents.evaluate import make_setup
    from gridrl.agents.train import env_inputs
    from gridrl.experiments.units import agent_scenario

    tuning, mode = study.tuning, study.forecast.mode
    assert tuning is not None
    data = [(scenario, env_inputs(p, mode, study.forecast.config)) for p, scenario in inputs]
    agents = {}
    for name in names:
        spec = study.agent(name)
        assert isinstance(spec, ReferenceAgentSpec)
        setups = [make_setup(agent_scenario(study, scenario, name), period="validation",
                             forecast_mode=mode, data=d) for scenario, d in data]
        res = tune_agent(spec, tuning.grid[name], setups, episodes=tuning.episodes,
                         seed=tuning.seed, per_site=name in tuning.per_site)
        agents[name] = {"reference": spec.reference, "chosen": res.chosen,
                        "validation_J": res.score, "trials": res.trials}
    return agents


def _write_record(path: Path, record: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(record, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_tuning(run_dir: Path) -> dict[str, Any]:
    """``tuning.json`` of a run folder ({} without one).

    Raises
    ------
    TuningError
        unreadable (names the file).
    """
    path = Path(run_dir) / TUNING_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TuningError(f"{path}: unreadable tuning record ({exc})") from None
    if not isinstance(record, dict):
        raise TuningError(f"{path}: expected a JSON object (the tuning record)")
    return record


def tuned_study(study: Study, record: dict[str, Any]) -> Study:
    """``study`` with each tuned agent's parameters replaced by the chosen ones."""
    chosen = {name: a["chosen"] for name, a in record.get("agents", {}).items()}
    if not chosen:
        return study
    agents = [
        a.model_copy(update={"params": {**a.params, **chosen[a.name]}})
        if a.name in chosen else a
        for a in study.agents
    ]
    return study.model_copy(update={"agents": agents})
