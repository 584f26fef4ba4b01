"""Run a study: plan its units, prepare the run folder and inputs, execute the units on
a backend, merge their results and write the report.

One unit = (agent, seed, forecast mode) (:mod:`gridrl.experiments.units`). An SB3 unit
trains on the native VecEnv and is then evaluated; a reference unit is evaluated only.
Evaluation always goes through the shared harness in :mod:`gridrl.agents`, on the
study's evaluation period and episodes, with the study's evaluation seed, so that every
policy and every training seed meets the same episodes.

Each unit writes its own result and done marker (:class:`~gridrl.experiments.store.RunStore`)
before it returns, so a killed run loses at most the units that were running. One
driver holds the run folder at a time (its lock), its workers end with it
(:mod:`gridrl.experiments.backends`), and ``resume`` checks every finished unit's files
(checksum, columns, rows) before skipping it: a damaged unit is moved aside and runs
again. A resumed study may have changed: only the units whose key changed
(:mod:`gridrl.experiments.keys`) run again. The runner reports through a
:class:`~gridrl.experiments.progress.RunProgress`; it draws nothing itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl.errors import GridrlError
from gridrl.experiments.backends import run_units
from gridrl.experiments.keys import changed_parts, unit_keys
from gridrl.experiments.progress import LogProgress, RunProgress
from gridrl.experiments.schema import (
    BackendSpec,
    SB3AgentSpec,
    Study,
    dump_study,
    load_study,
)
from gridrl.experiments.store import REJECTED_DIR, RunStore
from gridrl.experiments.tuning import VALIDATION_FILE, tune_study, tuned_study
from gridrl.experiments.units import (
    Unit,
    agent_scenario,
    evaluation_episodes,
    plan_units,
    policy_for_agent,
    result_check,
    run_scenario_path,
    unit_identity,
    write_run_scenario,
    write_scenario_yaml,
)
from gridrl.io import write_with
from gridrl.scenario import Scenario, load_scenario

__all__ = ["Unit", "UnitsFailedError", "plan_units", "run_study"]

UnitFn = Callable[[dict[str, Any]], dict[str, Any]]


class UnitsFailedError(GridrlError, RuntimeError):
    """Some units raised; every other unit finished and was saved (names the units)."""

    exit_code = 1  # part of the study is done and kept


# --------------------------------------------------------------------------- unit work


@dataclass(frozen=True)
class UnitContext:
    """What a worker needs to run one unit (built from the picklable payload).

    ``scenario`` is the agent's scenario (in memory, with its overrides);
    ``scenario_path`` the run's scenario file, which the signals and forecasts are
    built from.
    """

    study: Study
    unit: Unit
    store: RunStore
    scenario: Scenario
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
        scenario=payload["scenario"],
        scenario_path=Path(payload["scenario_path"]),
    )
    ctx.unit_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def training_scenario_path(ctx: UnitContext) -> Path:
    """The scenario file an SB3 unit trains on: the run's, or, when the agent overrides
    it, the agent's scenario written into the policy folder (``scenario.yaml``), which
    ``meta.json`` then names for export."""
    if ctx.study.agent(ctx.unit.agent).battery_control is None:
        return ctx.scenario_path
    raw = ctx.scenario.model_dump(mode="json")
    return write_scenario_yaml(raw, ctx.scenario_path.parent, ctx.unit_dir / "scenario.yaml")


def train_unit(ctx: UnitContext) -> dict[str, Any]:
    """Train an SB3 unit into its folder (policy directory); returns the training summary."""
    from gridrl.agents.imitation import train_imitating
    from gridrl.agents.train import train_policy

    study, unit, agent = ctx.study, ctx.unit, ctx.study.agent(ctx.unit.agent)
    assert isinstance(agent, SB3AgentSpec)
    train = train_policy if agent.imitation is None else train_imitating
    info = train(
        training_scenario_path(ctx), agent, study.training, ctx.unit_dir,
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
    if unit.scenario_seed is not None:
        summary["scenario_seed"] = unit.scenario_seed
    result = kpis.copy()
    ids = unit_identity(ctx.study, unit, summary["kind"], summary["algo"])
    for i, (k, v) in enumerate(ids.items()):
        result.insert(i, k, v)
    ctx.store.write_unit(unit.unit_id, result, summary)
    return summary


def execute_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """Train (SB3) and evaluate one unit, write its result and done marker.

    Runs in a worker process (local pool or Ray). ``payload`` holds the study as a
    dict, the unit, the run folder and the agent's scenario; the return value is the
    done-marker summary.
    """
    ctx = unit_context(payload)
    agent = ctx.study.agent(ctx.unit.agent)
    t0 = time.perf_counter()
    if isinstance(agent, SB3AgentSpec):
        summary = train_unit(ctx)
    else:
        summary = {"kind": "reference", "algo": agent.reference}
    policy = policy_for_agent(ctx.study, agent.name, ctx.unit_dir)
    t_eval = time.perf_counter()
    kpis = evaluate_unit(policy, ctx)
    if ctx.study.validation_rows():
        write_validation_rows(policy, ctx)
    summary["eval_wall_s"] = time.perf_counter() - t_eval
    summary["wall_s"] = time.perf_counter() - t0
    return finish_unit(ctx, kpis, summary)


def write_validation_rows(policy: Any, ctx: UnitContext) -> None:
    """Evaluate the unit on the validation windows too (every one, or
    ``validation_episodes`` of the agent or the study drawn), reported beside the test
    (``<unit>/validation.parquet``, written before the unit's done marker)."""
    from gridrl.agents.evaluate import evaluate
    from gridrl.agents.train import env_inputs

    study, unit, mode = ctx.study, ctx.unit, ctx.unit.forecast_mode
    rows = evaluate(
        policy, ctx.scenario, period="validation", seed=study.evaluation.seed,
        **study.episode_draw(ctx.unit.agent, "validation"),
        forecast_mode=mode, data=env_inputs(ctx.scenario_path, mode, study.forecast.config),
        deterministic=study.evaluation.deterministic,
    )  # fmt: skip
    agent = study.agent(unit.agent)
    algo = agent.algo if isinstance(agent, SB3AgentSpec) else agent.reference
    ids = unit_identity(study, unit, agent.kind, algo)
    for i, (k, v) in enumerate(ids.items()):
        rows.insert(i, k, v)
    write_with(ctx.unit_dir / VALIDATION_FILE, lambda p: rows.to_parquet(p, index=False))


def evaluate_unit(policy: Any, ctx: UnitContext) -> pd.DataFrame:
    """The shared harness (:func:`gridrl.agents.evaluate.evaluate`) on the study's period.

    The inputs are the same scenario-seeded signals and forecasts the policy trained on;
    the evaluation seed picks the episodes, so every policy and seed meets the same ones.
    """
    from gridrl.agents.evaluate import evaluate
    from gridrl.agents.train import env_inputs

    study, mode = ctx.study, ctx.unit.forecast_mode
    return evaluate(
        policy,
        ctx.scenario,
        period=study.evaluation.period,
        **study.episode_draw(ctx.unit.agent),
        seed=study.evaluation.seed,
        forecast_mode=mode,
        data=env_inputs(ctx.scenario_path, mode, study.forecast.config),
        deterministic=study.evaluation.deterministic,
    )


# --------------------------------------------------------------------------- the run


@dataclass
class RunPlan:
    """What a run will do: the study (backend overrides applied), its folder and units."""

    study: Study
    run_dir: Path
    resume: bool
    units: list[Unit]
    store: RunStore = field(init=False)

    def __post_init__(self) -> None:
        # every scenario seed has the same windows: the first one's count them
        first = (self.study.scenario_seeds or [None])[0]
        scenario_path = run_scenario_path(self.study, self.run_dir, first)
        rows = functools.partial(evaluation_episodes, self.study, scenario_path)
        self.store = RunStore(self.run_dir, check_result=result_check(self.study, rows))

    def todo(self) -> list[Unit]:
        """Units without a trusted done marker, in plan order."""
        return [u for u in self.units if not self.store.is_done(u.unit_id)]


def default_run_dir(study: Study) -> Path:
    """``output_dir`` of the study, else ``runs/<name>``."""
    return Path(study.output_dir or Path("runs") / study.name).resolve()


def plan_run(
    study: Study | str | Path,
    *,
    out_dir: str | Path | None = None,
    backend: str | None = None,
    address: str | None = None,
    resume: bool = False,
) -> RunPlan:
    """Validate the study, apply the backend overrides and plan its units (no writes)."""
    if not isinstance(study, Study):
        study = load_study(study)
    if backend is not None or address is not None:
        spec = study.backend.model_dump()
        spec.update({k: v for k, v in (("kind", backend), ("address", address)) if v is not None})
        study = study.model_copy(update={"backend": BackendSpec.model_validate(spec)})
    run_dir = Path(out_dir).resolve() if out_dir else default_run_dir(study)
    return RunPlan(study, run_dir, resume, plan_units(study))


def prepare_run(plan: RunPlan, progress: RunProgress) -> list[dict[str, Any]]:
    """Start (or resume) the run folder, check finished units, build shared inputs.

    Returns the payloads of the units to run. Call it holding the folder's lock.
    """
    study, store = plan.study, plan.store
    changed = store.start(dump_study(study), study.run_hash(), resume=plan.resume,
                          also_accept=(study.path_run_hash(),))
    paths = dict(zip(study.scenario_seeds or [None], write_run_scenario(study, plan.run_dir),
                     strict=True))
    run_scenarios = {s: load_scenario(path) for s, path in paths.items()}
    # tuning changes an agent's parameters, never its scenario: one build serves both
    scenarios = {(u.agent, u.scenario_seed): agent_scenario(
        study, run_scenarios[u.scenario_seed], u.agent) for u in plan.units}
    keys = unit_keys(study, plan.units, run_scenarios, scenarios)
    supersede_changed_units(plan, keys, changed, progress)
    reject_invalid_units(plan, progress)
    todo = plan.todo()
    for u in todo:  # before it runs: checkpoints it leaves belong to this key
        store.write_key(u.unit_id, keys[u.unit_id])
    progress.message(
        f"{study.name}: {len(plan.units)} units, {len(plan.units) - len(todo)} already "
        f"finished, {len(todo)} to run on backend {study.backend.kind} -> {plan.run_dir}"
    )
    modes = {u.forecast_mode for u in todo}
    if study.tuning is not None:
        modes.add(study.forecast.mode)  # tuning evaluates in the study's mode
    for k, path in enumerate(paths.values(), start=1):
        prepare_inputs(study, path, modes, progress, f"{path.stem} ({k} of {len(paths)})")
    study = tune_references(study, list(paths.values()), plan.run_dir, progress)
    study_dict = study.model_dump(mode="json")
    return [
        {
            "study": study_dict,
            "unit": asdict(u),
            "run_dir": str(plan.run_dir),
            "scenario": scenarios[(u.agent, u.scenario_seed)],
            "scenario_path": str(paths[u.scenario_seed]),
        }
        for u in todo
    ]


def tune_references(
    study: Study, scenario_paths: list[Path], run_dir: Path, progress: RunProgress
) -> Study:
    """The study with its ``tuning`` agents' settings chosen on validation (recorded in
    ``tuning.json``; a resumed run reads the record); scored over every scenario seed."""
    if study.tuning is None:
        return study
    t0 = time.perf_counter()
    progress.message(f"tuning {', '.join(study.tuning.grid)} on the validation period")
    record = tune_study(study, scenario_paths, run_dir)
    for name, agent in record["agents"].items():
        progress.message(f"tuned {name}: {agent['chosen']} (validation J "
                         f"{agent['validation_J']:,.3f}, {len(agent['trials'])} candidates)")
    progress.message(f"tuning done in {time.perf_counter() - t0:,.1f} s")
    return tuned_study(study, record)


def supersede_changed_units(plan: RunPlan, keys: dict[str, dict[str, str]],
                            study_changed: bool, progress: RunProgress) -> None:
    """Move aside every unit the study no longer has, and every unit whose key changed
    (whole: result, policy, checkpoints), saying why; the others are kept.

    ``study_changed``: the folder was made by another version of the study. Without that,
    a unit folder without a key was made by this study before keys were recorded, and
    is given its key.
    """
    store = plan.store
    for unit_id in store.marked_units():
        if unit_id not in keys:
            moved = store.reject_unit(unit_id, "not a unit of the study any more")
            progress.message(f"unit {unit_id} is no longer in the study (its result moved to "
                             f"{moved})", "warning")
    for unit_id, key in keys.items():
        folder = store.unit_dir(unit_id)
        if not folder.is_dir() or not any(p.name != REJECTED_DIR for p in folder.iterdir()):
            continue
        old = store.read_key(unit_id)
        if old is None and not study_changed:
            store.write_key(unit_id, key)
            continue
        parts = changed_parts(old or {}, key)
        if parts:
            reason = (f"the study changed its {', '.join(parts)}" if old is not None
                      else "made by another version of the study, no key recorded")
            moved = store.reject_unit(unit_id, reason, whole=True)
            progress.message(f"unit {unit_id} runs again: {reason} (moved to {moved})",
                             "warning")


def reject_invalid_units(plan: RunPlan, progress: RunProgress) -> None:
    """Check every planned unit with a done marker; move damaged ones aside, saying why.

    A unit's files must match the checksum, rows and columns of its marker, and its
    result must have the study's columns, one row per evaluation episode and this
    unit's identity (:meth:`RunStore.check_unit` with :func:`result_check`).
    """
    store = plan.store
    marked = set(store.marked_units())
    for unit in (u for u in plan.units if u.unit_id in marked):
        reason = store.check_unit(unit.unit_id)
        if reason is not None:
            moved = store.reject_unit(unit.unit_id, reason)
            progress.message(
                f"unit {unit.unit_id} runs again: {reason} (moved to {moved})", "warning"
            )


def prepare_inputs(
    study: Study, scenario_path: Path, modes: set[str], progress: RunProgress, label: str = "",
) -> None:
    """Fit the LightGBM forecast cubes the units need, once, before fanning out.

    The cubes land in the on-disk forecast cache, where every unit then finds them;
    without this step parallel units would fit the same cube side by side.
    """
    from gridrl.agents.train import env_inputs

    for mode in sorted(m for m in modes if m == "lightgbm"):
        t0 = time.perf_counter()
        progress.message(f"forecasts {label}: building the {mode} cube (cached after the "
                         "first run)")
        env_inputs(scenario_path, mode, study.forecast.config)
        progress.message(f"forecasts {label}: {mode} ready in "
                         f"{time.perf_counter() - t0:,.1f} s")


def execute_run(
    plan: RunPlan, payloads: list[dict[str, Any]], unit_fn: UnitFn, progress: RunProgress
) -> list[str]:
    """Run the payloads on the study's backend; returns the ids of the failed units.

    Every finished unit is merged into ``results.parquet`` at once; a failed unit's
    traceback goes to ``<unit>/ERROR.txt``.
    """
    store, backend = plan.store, plan.study.backend
    running = [Unit(**p["unit"]) for p in payloads]
    failed: list[str] = []

    def poll() -> None:
        for u in running:
            p = store.read_progress(u.unit_id)
            if p is not None and not store.done_path(u.unit_id).exists():
                progress.unit_progress(u.unit_id, *p)

    t0 = time.perf_counter()
    progress.units_started(len(plan.units), len(plan.units) - len(payloads))
    try:
        for index, _summary, error in run_units(
            unit_fn, payloads, kind=backend.kind, max_workers=backend.max_workers,
            address=backend.address, poll=poll,
        ):
            unit_id = running[index].unit_id
            progress.unit_finished(unit_id, error)
            if error is not None:
                store.write_error(unit_id, error)
                failed.append(unit_id)
                progress.message(f"unit {unit_id} failed (see {unit_id}/ERROR.txt)", "error")
            else:
                store.merge()  # results.parquet always holds every finished unit
    finally:
        progress.units_ended()
    progress.message(f"units finished in {time.perf_counter() - t0:,.1f} s")
    return failed


def driver_command() -> str:
    """The command line of this process as typed (``gridrl run ...``), for the report."""
    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return shlex.join(argv)


def code_commit() -> str:
    """The git commit of the gridrl source that runs (``+dirty`` with local changes),
    or ``unknown`` outside a git checkout."""
    src = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--",
                                "gridrl"], capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def merge_run(plan: RunPlan, report: bool, progress: RunProgress) -> None:
    """Merge every finished unit and (re)write the report."""
    plan.store.merge()
    if report:
        from gridrl.experiments.report import write_report

        progress.message(f"report: {write_report(plan.run_dir)}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (``kill``, a batch scheduler) stop the driver as Ctrl-C does, so that
    its time is recorded and the local pool ends its workers (``backends.run_local``).
    Only the main thread may install a signal handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_study(
    study: Study | str | Path,
    *,
    out_dir: str | Path | None = None,
    backend: str | None = None,
    address: str | None = None,
    resume: bool = False,
    report: bool = True,
    unit_fn: UnitFn = execute_unit,
    progress: RunProgress | None = None,
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
        Continue a run folder: finished units whose files check out are skipped,
        damaged ones are moved aside and run again.
    report
        Write ``report.md`` and its plots at the end.
    unit_fn
        The per-unit function (module level, picklable); default :func:`execute_unit`.
    progress
        Receives messages and unit progress; default :class:`LogProgress`.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    RunDirError
        when another driver holds the run folder, or the folder does not fit the study.
    UnitsFailedError
        naming the failed units (their tracebacks are in ``<unit>/ERROR.txt``) after
        every other unit has finished and been saved.
    """
    progress = progress or LogProgress()
    plan = plan_run(study, out_dir=out_dir, backend=backend, address=address, resume=resume)
    with plan.store.lock(), _terminate_as_interrupt():
        t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit = code_commit()  # the code that runs, not what is checked out at the end
        try:
            payloads = prepare_run(plan, progress)
            failed = execute_run(plan, payloads, unit_fn, progress)
        except KeyboardInterrupt:  # a stopped driver's time still counts (--resume adds on)
            plan.store.record_driver(driver_command(), commit, started,
                                     time.perf_counter() - t0, stopped=True)
            raise
        plan.store.record_driver(driver_command(), commit, started, time.perf_counter() - t0)
        merge_run(plan, report, progress)
    if failed:
        raise UnitsFailedError(
            f"{len(failed)} unit(s) failed: {', '.join(failed)}; finished units are saved, "
            "fix the cause and rerun with --resume"
        )
    return plan.run_dir
