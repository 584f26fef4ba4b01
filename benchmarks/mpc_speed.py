"""What MPC and the bounds cost per evaluated week, in CPU seconds.

On a scenario's test weeks (default ``envs/multiregion.yaml``, perfect forecasts) this
evaluates, in one process and timed with ``time.process_time`` (a machine shared with
other work still gives the figure an idle machine would):

- ``mpc`` solving every step's LP from scratch (the default) and warm-started from the
  previous step's basis (``warm_start: true``), with their simplex iterations per step
  and the difference of their J per week (the two may settle on different ones of
  equally good plans);
- ``lp_bound`` (the LP over the whole week) and ``lp_bound_rule`` (the battery-rule MIP,
  under ``env.battery_control: rule`` as the studies run it).

The kernel is compiled by an untimed ``run_now`` week first.

Usage: ``python benchmarks/mpc_speed.py [--scenario envs/multiregion.yaml] [--weeks 1]
[--seed 0] [--agents mpc mpc_warm lp_bound lp_bound_rule] [--rule-time-limit 60]``. Needs the
scenario's data (``$GRIDRL_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gridrl.agents.evaluate import evaluate, make_setup, select_windows
from gridrl.agents.registry import make_policy
from gridrl.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("mpc", "mpc_warm", "lp_bound", "lp_bound_rule")
console = Console()


def _with_rule(scenario: Scenario) -> Scenario:
    raw = scenario.model_dump(mode="json")
    raw["env"]["battery_control"] = "rule"
    return Scenario.model_validate(raw)


def _policy(name: str, rule_time_limit_s: float):
    if name == "mpc_warm":
        return make_policy("mpc", warm_start=True)
    if name == "lp_bound_rule":
        return make_policy("lp_bound", battery="rule", time_limit_s=rule_time_limit_s)
    return make_policy(name)


def main() -> None:
    """Time every agent and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "envs" / "multiregion.yaml")
    ap.add_argument("--weeks", type=int, default=1, help="test weeks, drawn with --seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS))
    ap.add_argument("--rule-time-limit", type=float, default=60.0,
                    help="time limit (s, wall) of lp_bound_rule's MIP per week")
    args = ap.parse_args()

    setup = make_setup(args.scenario, period="test", forecast_mode="perfect")
    scenario = setup.scenario
    rule_setup = make_setup(_with_rule(scenario), period="test", forecast_mode="perfect",
                            data=setup.data)
    starts = [w.start for w in select_windows(setup.windows, args.weeks, args.seed)]
    days = ", ".join(str(setup.data.index[s].date()) for s in starts)
    console.print(f"{scenario.name}: {len(starts)} test week(s) of "
                  f"{setup.windows.episode_hours} h from {days}, {setup.params.n_sites} sites")
    evaluate(make_policy("run_now"), setup, starts=starts)  # compiles the kernel
    table = Table(title=f"{scenario.name}: CPU seconds per evaluated week (perfect forecasts)")
    for col in ("agent", "CPU-s / week", "simplex iterations / step", "mean J"):
        table.add_column(col, justify="right")
    j: dict[str, np.ndarray] = {}
    for name in args.agents:
        pol = _policy(name, args.rule_time_limit)
        t0 = time.process_time()
        res = evaluate(pol, rule_setup if name == "lp_bound_rule" else setup, starts=starts)
        cpu_s = time.process_time() - t0
        j[name] = res["J"].to_numpy()
        iters = getattr(pol, "simplex_iterations", None)
        table.add_row(name, f"{cpu_s / len(starts):,.2f}",
                      f"{np.mean(iters):,.0f}" if iters else "",
                      f"{j[name].mean():,.4f}")
        console.print(f"  {name}: {cpu_s:,.1f} CPU-s", highlight=False)
    console.print(table)
    if {"mpc", "mpc_warm"} <= j.keys():
        diff = j["mpc_warm"] - j["mpc"]
        rel = np.max(np.abs(diff) / np.abs(j["mpc"]))
        console.print(f"J(mpc_warm) - J(mpc) per week: {np.array2string(diff, precision=4)} "
                      f"(relative {rel:.2e} at most)")


if __name__ == "__main__":
    main()
