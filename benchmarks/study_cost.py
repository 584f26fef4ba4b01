"""What a study costs: measure its parts on a few weeks, extrapolate to the whole plan.

For a study file this measures, in one process and in CPU seconds (``time.process_time``,
so that a machine shared with other work still gives the figure an idle machine would):

- building the signals of one scenario seed from a cold cache (what every extra
  scenario seed costs; this script caches into a temporary folder);
- each reference agent on ``--weeks`` test weeks (its CPU seconds per week);
- each SB3 agent: ``--train-steps`` environment steps of training (CPU per step; the
  study's budget is then extrapolated) and its evaluation per week;
- the LightGBM forecast cube (one per scenario seed), built from a cold cache on the
  first ``--cube-sites`` sites and scaled by the number of sites (fits and predictions
  grow with the rows, i.e. the sites), or given with ``--cube-cpu-s`` (measured by a
  run that built it). With several scenario seeds the second seed's cube is built
  into the same cache: what each further seed costs (the targets its seed leaves
  unchanged are reused when the forecaster config fixes ``seed``). Its wall time is
  its CPU time over the cores LightGBM uses (``lightgbm.num_threads`` of the forecaster
  config, at most ``--cores``).

It then counts the study's units (:func:`gridrl.experiments.units.plan_units`), their
test and validation weeks and the tuning's candidate evaluations, and prints the CPU
total and the wall time on ``--cores`` cores (units run side by side, one per core).

Usage: ``python benchmarks/study_cost.py STUDY.yaml [--weeks 2] [--train-steps 20000]
[--cube-sites K | --cube-cpu-s S] [--cores 2]``. Needs the study's data (``$GRIDRL_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: its spinning threads would starve LightGBM's on a shared
# machine and inflate the cube's CPU seconds (see gridrl.forecast.model).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.table import Table

from gridrl.agents.evaluate import evaluate, make_setup, select_windows
from gridrl.agents.registry import make_policy
from gridrl.agents.train import env_inputs, load_forecaster, train_policy
from gridrl.env.episodes import EpisodeWindows
from gridrl.env.inputs import make_forecast
from gridrl.experiments.schema import SB3AgentSpec, load_study
from gridrl.experiments.tuning import candidates
from gridrl.experiments.units import (
    agent_scenario,
    plan_units,
    write_run_scenario,
    write_scenario_yaml,
)
from gridrl.forecast.config import ForecastConfig
from gridrl.io import CACHE_ENV_VAR
from gridrl.scenario import load_scenario

console = Console()
WARMUP_STEPS = 4096  # one rollout of 128 steps x 32 envs: compiles and warms up, untimed


def cpu(fn, *args, **kwargs):
    """``(result, CPU seconds)`` of a call (all threads of this process)."""
    t0 = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t0


def cube_cpu(paths: list[Path], config_path: str | None, n_sites: int) -> tuple[float, float]:
    """CPU seconds of the LightGBM cube of the first scenario seed (``paths[0]``) and of
    each further one (``paths[1]``, same cache: the targets its seed leaves unchanged
    are read back when the config fixes ``seed``), each built on the first ``n_sites``
    sites and scaled by the number of sites."""
    from gridrl.data.build import build_signals

    cfg = load_forecaster(config_path)
    out = []
    for path in paths[:2]:
        scenario = load_scenario(path)
        frame = build_signals(scenario, base_dir=path.parent).frame
        sites = list(dict.fromkeys(frame.columns.get_level_values(0)))
        k = min(n_sites, len(sites))
        cut = frame.loc[:, frame.columns.get_level_values(0).isin(sites[:k])]
        _, t = cpu(make_forecast, scenario, cut, "lightgbm", forecast_config=cfg,
                   seed=scenario.seed)
        out.append(t * len(sites) / k)
        console.print(f"LightGBM cube of {path.name} on {k} of {len(sites)} sites: "
                      f"{t:,.1f} CPU-s; all sites (scaled): {out[-1]:,.0f} CPU-s")
    return out[0], out[-1]


def cube_threads(study, cores: int) -> int:
    """Cores one cube build keeps busy: LightGBM's threads, at most ``cores``."""
    cfg = load_forecaster(study.forecast.config) or ForecastConfig()
    return max(1, min(cfg.lightgbm.num_threads, cores))


def tuning_trials(study, n_sites: int) -> dict[str, int]:
    """Candidate evaluations of each tuned agent: the grid, then per site the grid
    again for every site (the same count :func:`gridrl.experiments.tuning.tune_agent`
    runs at most)."""
    if study.tuning is None:
        return {}
    out = {}
    for name, grid in study.tuning.grid.items():
        n = len(candidates(grid))
        out[name] = n + (n_sites * (n - 1) if name in study.tuning.per_site else 0)
    return out


def measure(args: argparse.Namespace) -> None:
    study = load_study(args.study)
    tmp = Path(tempfile.mkdtemp(prefix="study_cost_"))
    os.environ[CACHE_ENV_VAR] = str(tmp / "cache")  # cold: the signals are measured
    paths = write_run_scenario(study, tmp)
    path = paths[0]
    scenario = load_scenario(path)
    mode = "perfect" if study.forecast.mode == "lightgbm" else study.forecast.mode
    data, signals_cpu = cpu(env_inputs, path, mode, study.forecast.config)
    console.print(f"signals of one scenario seed: {signals_cpu:,.1f} CPU-s")
    args.cube_extra_cpu_s = args.cube_cpu_s
    if study.forecast.mode == "lightgbm" and args.cube_sites:
        args.cube_cpu_s, args.cube_extra_cpu_s = cube_cpu(paths, study.forecast.config,
                                                          args.cube_sites)
    windows = {p: len(EpisodeWindows(data.index, scenario, p).fixed)
               for p in ("test", "validation")}
    per_week: dict[str, float] = {}
    train_per_step: dict[str, float] = {}
    for agent in study.agents:
        own = agent_scenario(study, scenario, agent.name)
        setup = make_setup(own, period="test", forecast_mode=mode, data=data)
        starts = [w.start for w in select_windows(setup.windows, args.weeks, 0)]
        if isinstance(agent, SB3AgentSpec):
            spec = agent.model_copy(update={"timesteps": args.train_steps})
            training = study.training.model_copy(update={
                "checkpoint_every_steps": None, "tensorboard": False, "progress_bar": False})
            # trained in its own scenario (battery_control), as the runner does
            own_path = write_scenario_yaml(own.model_dump(mode="json"), path.parent,
                                           tmp / f"{agent.name}.yaml")
            # untimed first run: numba compiles the kernel, torch warms up
            train_policy(own_path, spec.model_copy(update={"timesteps": WARMUP_STEPS}),
                         training, tmp / f"{agent.name}_warmup", seed=0, forecast_mode=mode,
                         forecast_config=study.forecast.config)
            _, t = cpu(train_policy, own_path, spec, training, tmp / agent.name, seed=0,
                       forecast_mode=mode, forecast_config=study.forecast.config)
            train_per_step[agent.name] = t / args.train_steps
            console.print(f"{agent.name}: {args.train_steps / t:,.0f} env-steps per CPU-s")
            policy = tmp / agent.name
        else:
            policy = make_policy(agent.reference, **agent.params)
        _, t = cpu(evaluate, policy, setup, starts=starts)
        per_week[agent.name] = t / len(starts)
        console.print(f"{agent.name}: {per_week[agent.name]:,.2f} CPU-s per week")
    n_sites = setup.params.n_sites
    report(study, n_sites, windows, per_week, train_per_step, signals_cpu, args)


def report(study, n_sites, windows, per_week, train_per_step, signals_cpu, args) -> None:
    units = plan_units(study)
    ev = study.evaluation
    test_weeks = ev.episodes or windows["test"]
    val_weeks = (ev.validation_episodes or windows["validation"]) if study.validation_rows() else 0
    eval_weeks = test_weeks + val_weeks
    tune_weeks = (study.tuning.episodes if study.tuning else None) or windows["validation"]
    scen_seeds = len(study.scenario_seeds or [None])
    rows, total = [], 0.0
    for name in dict.fromkeys(u.agent for u in units):
        n = sum(u.agent == name for u in units)
        agent = study.agent(name)
        train = 0.0
        if isinstance(agent, SB3AgentSpec):
            steps = study.training.budget(agent)[0]
            train = train_per_step[name] * steps
        unit_s = train + per_week[name] * eval_weeks
        rows.append((name, n, train, per_week[name] * eval_weeks, n * unit_s))
        total += n * unit_s
    trials = tuning_trials(study, n_sites)
    tuning_s = sum(k * per_week[name] * tune_weeks * scen_seeds for name, k in trials.items())
    cube_s = args.cube_cpu_s + (scen_seeds - 1) * args.cube_extra_cpu_s
    inputs_s = scen_seeds * signals_cpu + cube_s
    table = Table(title=f"{study.name}: measured on {args.weeks} test week(s), CPU seconds")
    for col in ("agent", "units", "train / unit", "eval / unit", "total"):
        table.add_column(col, justify="right")
    for name, n, train, ev, tot in rows:
        table.add_row(name, str(n), f"{train:,.0f}", f"{ev:,.0f}", f"{tot:,.0f}")
    console.print(table)
    longest = max(r[2] + r[3] for r in rows)
    # the driver builds the inputs (signals in one process, the cube on LightGBM's
    # threads) and tunes (one process) before the units fan out over the cores
    wall = (max(total / args.cores, longest) + scen_seeds * signals_cpu
            + cube_s / cube_threads(study, args.cores) + tuning_s)
    console.print(
        f"weeks per unit: {eval_weeks} ({test_weeks} test, {val_weeks} validation); "
        f"tuning weeks {tune_weeks}; scenario seeds {scen_seeds}\n"
        f"signals per scenario seed {signals_cpu:,.0f} CPU-s, cubes {cube_s:,.0f} "
        f"({args.cube_cpu_s:,.0f} the first, {args.cube_extra_cpu_s:,.0f} each further); "
        f"tuning {sum(trials.values())} candidates: {tuning_s:,.0f} CPU-s\n"
        f"units {total:,.0f} CPU-s; all {total + tuning_s + inputs_s:,.0f} CPU-s; "
        f"estimated wall time on {args.cores} cores: {wall / 3600:,.2f} h "
        f"(longest unit {longest / 60:,.1f} min)"
    )
    if math.isfinite(wall) and wall > args.budget_h * 3600:
        console.print(f"[red]over the {args.budget_h} h budget[/red]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--weeks", type=int, default=2, help="test weeks each agent is timed on")
    ap.add_argument("--train-steps", type=int, default=20_000)
    ap.add_argument("--cube-sites", type=int, default=0,
                    help="build the LightGBM cube on this many sites (cold) and scale it")
    ap.add_argument("--cube-cpu-s", type=float, default=0.0,
                    help="CPU seconds of one LightGBM cube (measured by a run that built it)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--budget-h", type=float, default=3.0)
    measure(ap.parse_args())


if __name__ == "__main__":
    main()
