"""Run a study: plan its units, fan them out on a backend, keep results, write the report.

One unit = (agent, seed, forecast mode). An SB3 unit trains on the native VecEnv and is
then evaluated; a reference unit is evaluated only. Evaluation always goes through the
shared harness in :mod:`gridrl.agents`, on the study's evaluation period and episodes,
with the study's evaluation seed, so that every policy and every training seed meets the
same episodes.

Each unit writes its own result and done marker (:class:`~gridrl.experiments.store.RunStore`)
before it returns, so a killed run loses at most the units that were running; ``resume``
skips every unit with a done marker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gridrl.experiments.backends import run_units
from gridrl.experiments.schema import (
    BackendSpec,
    ReferenceAgentSpec,
    SB3AgentSpec,
    Study,
    dump_study,
    load_study,
    mode_slug,
)
from gridrl.experiments.store import RunStore
from gridrl.io import write_text_atomic
from gridrl.scenario import load_scenario


@dataclass(frozen=True)
class Unit:
    """One unit of work: an agent, a seed and a forecast mode."""

    agent: str
    seed: int
    forecast_mode: str

    @property
    def unit_id(self) -> str:
        """Folder name of the unit (and policy id of an SB3 unit)."""
        return f"{self.agent}-seed{self.seed}-{mode_slug(self.forecast_mode)}"


def plan_units(study: Study) -> list[Unit]:
    """Every unit of the study, agents in file order, then seeds, then forecast modes."""
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
            for mode in agent_modes:
                units.append(Unit(agent.name, seed, mode))
    return units


def run_scenario_path(study: Study, run_dir: Path, agent: str | None = None) -> Path:
    """The scenario file the run's units (of ``agent``, if given) read.

    Without overrides that is the study's scenario file itself. With the study's periods
    or the agent's ``battery_control``, the scenario is copied into the run folder
    (``scenario.yaml``, or ``scenario-battery_<control>.yaml``) with them, and relative
    file references that exist beside the original (CSV sources) are made absolute so
    that the copy reads the same data.
    """
    control = study.agent(agent).battery_control if agent is not None else None
    if study.periods is None and control is None:
        return Path(study.scenario)
    src = Path(study.scenario)
    raw = yaml.safe_load(src.read_text())
    if study.periods is not None:
        raw["periods"] = study.periods.model_dump(mode="json")
    name = "scenario.yaml"
    if control is not None:
        raw.setdefault("env", {})["battery_control"] = control
        name = f"scenario-battery_{control}.yaml"
    path = run_dir / name
    write_text_atomic(path, yaml.safe_dump(_absolute_files(raw, src.parent), sort_keys=False))
    load_scenario(path)  # the override must still make a valid scenario
    return path


def _absolute_files(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and (k == "file" or k.endswith("_file")):
                p = Path(v)
                v = str((base / p).resolve()) if not p.is_absolute() and (base / p).exists() else v
            out[k] = _absolute_files(v, base)
        return out
    if isinstance(node, list):
        return [_absolute_files(v, base) for v in node]
    return node


# --------------------------------------------------------------------------- unit work


@dataclass(frozen=True)
class UnitContext:
    """What a worker needs to run one unit (built from the picklable payload)."""

    study: Study
    unit: Unit
    store: RunStore
    scenario_path: Path

    @property
    def unit_dir(self) -> Path:
        """The unit's folder (the policy folder of an SB3 unit)."""
        return self.store.unit_dir(self.unit.unit_id)


def unit_context(payload: dict[str, Any]) -> UnitContext:
    """Rebuild the unit context in a worker and pin its torch thread count."""
    study = Study.model_validate(payload["study"])
    threads = study.training.torch_threads
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    ctx = UnitContext(
        study=study,
        unit=Unit(**payload["unit"]),
        store=RunStore(payload["run_dir"]),
        scenario_path=Path(payload["scenario_path"]),
    )
    ctx.unit_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def train_unit(ctx: UnitContext) -> dict[str, Any]:
    """Train an SB3 unit into its folder (policy directory); returns the training summary."""
    from gridrl.agents.train import train_policy

    study, unit, agent = ctx.study, ctx.unit, ctx.study.agent(ctx.unit.agent)
    assert isinstance(agent, SB3AgentSpec)
    info = train_policy(
        ctx.scenario_path, agent, study.training, ctx.unit_dir,
        seed=unit.seed, forecast_mode=unit.forecast_mode, forecast_config=study.forecast.config,
        # the driver shows unit progress from progress.json (no SB3 bar in workers)
        progress=lambda done, total: ctx.store.write_progress(unit.unit_id, done, total),
    )  # fmt: skip
    return {
        "kind": "sb3",
        "algo": agent.algo,
        "train_wall_s": info["wall_time_s"],
        "env_steps_per_s": info["env_steps_per_s"],
        "timesteps": info["timesteps"],
    }


def finish_unit(ctx: UnitContext, kpis: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """Prefix the unit's identity columns to its KPI rows and write result + done marker."""
    unit = ctx.unit
    summary = {
        "agent": unit.agent,
        "seed": unit.seed,
        "forecast_mode": unit.forecast_mode,
        **summary,
    }
    result = kpis.copy()
    ids = {
        "policy": unit.agent,
        "kind": summary["kind"],
        "algo": summary["algo"],
        "seed": unit.seed,
        "forecast_mode": unit.forecast_mode,
        "unit_id": unit.unit_id,
    }
    for i, (k, v) in enumerate(ids.items()):
        result.insert(i, k, v)
    ctx.store.write_unit(unit.unit_id, result, summary)
    return summary


def execute_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """Train (SB3) and evaluate one unit, write its result and done marker.

    Runs in a worker process (local pool or Ray). ``payload`` holds the study as a
    dict, the unit and the run folder; the return value is the done-marker summary.
    """
    ctx = unit_context(payload)
    agent = ctx.study.agent(ctx.unit.agent)
    t0 = time.perf_counter()
    if isinstance(agent, SB3AgentSpec):
        from gridrl.agents.train import load_policy

        summary = train_unit(ctx)
        policy = load_policy(ctx.unit_dir)
    else:
        assert isinstance(agent, ReferenceAgentSpec)
        policy = _make_reference(agent, ctx.scenario_path, ctx.unit.forecast_mode, ctx.study)
        summary = {"kind": "reference", "algo": agent.reference}
    t_eval = time.perf_counter()
    kpis = _evaluate(policy, ctx.scenario_path, ctx.unit, ctx.study)
    summary["eval_wall_s"] = time.perf_counter() - t_eval
    summary["wall_s"] = time.perf_counter() - t0
    return finish_unit(ctx, kpis, summary)


def _make_reference(
    agent: ReferenceAgentSpec, scenario_path: Path, forecast_mode: str, study: Study
) -> Any:
    from gridrl.agents.registry import make_policy

    return make_policy(agent.reference, **agent.params)


def _evaluate(policy: Any, scenario_path: Path, unit: Unit, study: Study) -> pd.DataFrame:
    """The shared harness (:func:`gridrl.agents.evaluate.evaluate`) on the study's period.

    The inputs are the same scenario-seeded signals and forecasts the policy trained on;
    the evaluation seed picks the episodes, so every policy and seed meets the same ones.
    """
    from gridrl.agents.evaluate import evaluate
    from gridrl.agents.train import env_inputs

    data = env_inputs(scenario_path, unit.forecast_mode, study.forecast.config)
    return evaluate(
        policy,
        scenario_path,
        period=study.evaluation.period,
        episodes=study.evaluation.episodes,
        seed=study.evaluation.seed,
        forecast_mode=unit.forecast_mode,
        data=data,
        deterministic=study.evaluation.deterministic,
    )


# --------------------------------------------------------------------------- the run


def prepare_inputs(study: Study, scenario_path: Path, modes: set[str], console: Any) -> None:
    """Fit the LightGBM forecast cubes the units need, once, before fanning out.

    The cubes land in the on-disk forecast cache, where every unit then finds them;
    without this step parallel units would fit the same cube side by side.
    """
    from gridrl.agents.train import env_inputs

    for mode in sorted(m for m in modes if m == "lightgbm"):
        t0 = time.perf_counter()
        console.print(f"forecasts: building the {mode} cube (cached after the first run)")
        env_inputs(scenario_path, mode, study.forecast.config)
        console.print(f"forecasts: {mode} ready in {time.perf_counter() - t0:,.1f} s")


def default_run_dir(study: Study) -> Path:
    """``output_dir`` of the study, else ``runs/<name>``."""
    return Path(study.output_dir or Path("runs") / study.name).resolve()


def run_study(
    study: Study | str | Path,
    *,
    out_dir: str | Path | None = None,
    backend: str | None = None,
    address: str | None = None,
    resume: bool = False,
    report: bool = True,
    unit_fn: Callable[[dict[str, Any]], dict[str, Any]] = execute_unit,
    console: Any = None,
) -> Path:
    """Run every unfinished unit of a study and write results (and the report).

    Parameters
    ----------
    study
        A validated :class:`Study` or the path of a study YAML file (validated here,
        before any work).
    out_dir
        Run folder; default ``output_dir`` of the study or ``runs/<name>``.
    backend, address
        Override ``backend.kind`` and ``backend.address`` of the study.
    resume
        Continue a run folder: finished units are skipped.
    report
        Write ``report.md`` and its plots at the end.
    unit_fn
        The per-unit function (module level, picklable); default :func:`execute_unit`.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    RuntimeError
        naming the failed units (their tracebacks are in ``<unit>/ERROR.txt``) after
        every other unit has finished and been saved.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    if not isinstance(study, Study):
        study = load_study(study)
    if backend is not None or address is not None:
        spec = study.backend.model_dump()
        spec.update({k: v for k, v in (("kind", backend), ("address", address)) if v is not None})
        study = study.model_copy(update={"backend": BackendSpec.model_validate(spec)})
    run_dir = Path(out_dir).resolve() if out_dir else default_run_dir(study)
    store = RunStore(run_dir)
    # backend and output folder do not change results: leave them out of the resume check
    hashed = study.model_copy(update={"backend": BackendSpec(), "output_dir": None})
    store.start(dump_study(study), hashed.content_hash(), resume=resume)
    scenario_path = run_scenario_path(study, run_dir)
    units = plan_units(study)
    todo = [u for u in units if not store.is_done(u.unit_id)]
    skipped = len(units) - len(todo)
    console.print(
        f"[bold]{study.name}[/]: {len(units)} units, {skipped} already finished, "
        f"{len(todo)} to run on backend [cyan]{study.backend.kind}[/] -> {run_dir}"
    )
    prepare_inputs(study, scenario_path, {u.forecast_mode for u in todo}, console)
    # one scenario file per agent, written (and validated) once, not once per unit
    agent_paths = {a: run_scenario_path(study, run_dir, a) for a in {u.agent for u in todo}}
    payloads = [
        {
            "study": study.model_dump(mode="json"),
            "unit": asdict(u),
            "run_dir": str(run_dir),
            "scenario_path": str(agent_paths[u.agent]),
        }
        for u in todo
    ]
    failed: list[str] = []
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        overall = progress.add_task("units", total=len(units), completed=skipped)
        tasks: dict[str, Any] = {}

        def poll() -> None:
            for u in todo:
                p = store.read_progress(u.unit_id)
                if p is None or store.is_done(u.unit_id):
                    continue
                if u.unit_id not in tasks:
                    tasks[u.unit_id] = progress.add_task(f"  train {u.unit_id}", total=p[1])
                progress.update(tasks[u.unit_id], completed=p[0], total=p[1])

        for index, _summary, error in run_units(
            unit_fn,
            payloads,
            kind=study.backend.kind,
            max_workers=study.backend.max_workers,
            address=study.backend.address,
            poll=poll,
        ):
            unit = todo[index]
            if unit.unit_id in tasks:
                progress.remove_task(tasks.pop(unit.unit_id))
            if error is not None:
                store.write_error(unit.unit_id, error)
                failed.append(unit.unit_id)
                console.print(f"[red]unit {unit.unit_id} failed[/] (see {unit.unit_id}/ERROR.txt)")
            else:
                store.merge()  # results.parquet always holds every finished unit
            progress.advance(overall)
    store.merge()
    console.print(f"units finished in {time.perf_counter() - t0:,.1f} s")
    if report:
        from gridrl.experiments.report import write_report

        path = write_report(run_dir)
        console.print(f"report: {path}")
    if failed:
        raise RuntimeError(
            f"{len(failed)} unit(s) failed: {', '.join(failed)}; finished units are saved, "
            "fix the cause and rerun with --resume"
        )
    return run_dir
