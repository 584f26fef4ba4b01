"""Reference controllers on geo3's twelve test weeks: solve times and gap closed.

Prints

1. ``lp_bound`` solve time per geo3 week (goal: 2 s or less), for the LP and, when the
   batteries follow the rule (``env.battery_control: rule``) and unless
   ``--rule-time-limit 0``, for the mixed-integer variant that models the rule
   (``battery="rule"``);
2. ``mpc`` decision time per hour and episode (goal: 50 ms or less), per forecast mode;
3. gap closed ``(J - J_run_now) / (J_lp_bound - J_run_now)`` of every reference on the
   test weeks (from mean J, and the smallest week), against both bounds, with
   ``perfect`` forecasts for the heuristics and each ``--modes`` forecast for MPC;
4. run_now, lp_bound and mpc (perfect forecasts) for geo3 under the other battery
   controls (``--compare``: with ``rule`` the bound is the rule MIP).

Usage: ``python benchmarks/references.py [--weeks N] [--modes perfect persistence
lightgbm] [--rule-time-limit S] [--battery-control rule|setpoint|residual] [--compare
...] [--forecast-config forecasts/default.yaml]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gridrl.agents.evaluate import evaluate_detailed, gap_closed, make_setup
from gridrl.agents.registry import make_policy
from gridrl.agents.train import env_inputs
from gridrl.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
GEO3 = ROOT / "envs" / "geo3.yaml"
HEURISTICS = ("carbon_aware", "follow_renewables", "headroom_guard")
CONTROLS = ("rule", "setpoint", "residual")
console = Console()


def _with_control(scenario: Scenario, control: str) -> Scenario:
    raw = scenario.model_dump(mode="json")
    raw["env"]["battery_control"] = control
    return Scenario.model_validate(raw)


def _run(policy, setup, starts, label: str) -> tuple[np.ndarray, float, object]:
    t0 = time.perf_counter()
    with console.status(f"{label} on {len(starts)} weeks"):
        res = evaluate_detailed(policy, setup, starts=starts)
    console.print(f"  {label}: {time.perf_counter() - t0:,.1f} s", highlight=False)
    return res.table["J"].to_numpy(), res.policy_s_per_step, policy


def main() -> None:
    """Run everything and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weeks", type=int, default=None, help="first N test weeks (default all)")
    ap.add_argument("--modes", nargs="+", default=["perfect", "persistence", "lightgbm"])
    ap.add_argument("--rule-time-limit", type=float, default=60.0,
                    help="time limit (s) per week of the battery-rule MIP; 0 skips it")
    ap.add_argument("--battery-control", choices=CONTROLS, default=None,
                    help="env.battery_control of the main run (default: geo3's own)")
    ap.add_argument("--compare", nargs="*", choices=CONTROLS, default=None,
                    help="battery controls of table 4 (default: the other two)")
    ap.add_argument("--forecast-config", default=str(ROOT / "forecasts" / "default.yaml"))
    args = ap.parse_args()

    scenario = load_scenario(GEO3)
    control = args.battery_control or scenario.env.battery_control
    scenario = _with_control(scenario, control)
    data = env_inputs(GEO3, "perfect", args.forecast_config)
    setup = make_setup(scenario, data=data)
    starts = [w.start for w in setup.windows.fixed][: args.weeks]
    console.print(f"geo3: {len(starts)} test weeks of {setup.windows.episode_hours} h, "
                  f"{setup.params.n_sites} sites, battery_control {control}")
    j: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    j["run_now"], _, _ = _run(make_policy("run_now"), setup, starts, "run_now")
    j["lp_bound"], timing["lp_bound"], _ = _run(make_policy("lp_bound"), setup, starts,
                                                "lp_bound (LP)")
    bounds = ["lp_bound"]
    if args.rule_time_limit > 0 and control == "rule":
        rule = make_policy("lp_bound", battery="rule", time_limit_s=args.rule_time_limit)
        j["lp_bound_rule"], timing["lp_bound_rule"], _ = _run(rule, setup, starts,
                                                              "lp_bound (battery rule MIP)")
        bounds.append("lp_bound_rule")
    for name in HEURISTICS:
        j[name], _, _ = _run(make_policy(name), setup, starts, name)
    mpc_ms: dict[str, np.ndarray] = {}
    for mode in args.modes:
        d = data if mode == "perfect" else env_inputs(GEO3, mode, args.forecast_config)
        s = make_setup(scenario, data=d, forecast_mode=mode)
        pol = make_policy("mpc")
        j[f"mpc ({mode})"], _, pol = _run(pol, s, starts, f"mpc with {mode} forecasts")
        mpc_ms[mode] = 1e3 * np.asarray(pol.solve_times)

    compare = [c for c in CONTROLS if c != control] if args.compare is None else args.compare
    jc: dict[str, dict[str, np.ndarray]] = {}
    for other in compare:
        s = make_setup(_with_control(scenario, other), data=data)
        bound = (make_policy("lp_bound", battery="rule", time_limit_s=args.rule_time_limit)
                 if other == "rule" and args.rule_time_limit > 0 else make_policy("lp_bound"))
        jc[other] = {name: _run(pol, s, starts, f"{name} (battery_control {other})")[0]
                     for name, pol in (("run_now", make_policy("run_now")), ("lp_bound", bound),
                                       ("mpc", make_policy("mpc")))}

    t = Table(title="Solve times on geo3 (one week = 168 h x 3 sites)")
    t.add_column("what")
    t.add_column("mean", justify="right")
    t.add_column("max / p90", justify="right")
    t.add_column("goal", justify="right")
    per_week = {k: v * setup.windows.episode_hours for k, v in timing.items()}
    t.add_row("lp_bound (LP), s per week", f"{per_week['lp_bound']:.2f}", "", "<= 2 s")
    if "lp_bound_rule" in per_week:
        t.add_row(f"lp_bound (battery rule MIP, limit {args.rule_time_limit:g} s), s per week",
                  f"{per_week['lp_bound_rule']:.1f}", "", "")
    for mode, ms in mpc_ms.items():
        t.add_row(f"mpc ({mode}), ms per episode-hour", f"{ms.mean():.1f}",
                  f"{np.percentile(ms, 90):.1f}", "<= 50 ms")
    console.print(t)

    g = Table(title="Gap closed on geo3 test weeks: (J - J_run_now) / (J_bound - J_run_now)")
    g.add_column("policy")
    g.add_column("mean J", justify="right")
    for b in bounds:
        g.add_column(f"vs {b}: mean J", justify="right")
        g.add_column("worst week", justify="right")
    for name, values in j.items():
        row = [name, f"{values.mean():.2f}"]
        for b in bounds:
            row += [f"{gap_closed(values.mean(), j['run_now'].mean(), j[b].mean()):.3f}",
                    f"{np.nanmin(gap_closed(values, j['run_now'], j[b])):.3f}"]
        g.add_row(*row)
    console.print(g)
    a = Table(title="geo3 under other battery controls (perfect forecasts; bound: the rule "
                    "MIP for rule, else the LP)")
    a.add_column("battery_control")
    a.add_column("policy")
    a.add_column("mean J", justify="right")
    a.add_column("gap closed (mean J)", justify="right")
    a.add_column("worst week", justify="right")
    for other, ja in jc.items():
        low, top = ja["run_now"], ja["lp_bound"]
        for name, values in ja.items():
            a.add_row(other, name, f"{values.mean():.2f}",
                      f"{gap_closed(values.mean(), low.mean(), top.mean()):.3f}",
                      f"{np.nanmin(gap_closed(values, low, top)):.3f}")
    console.print(a)
    for name in ("lp_bound", *bounds[1:]):
        worst = max(float(np.max(j[k] - j[name])) for k in j if not k.startswith("lp_bound"))
        console.print(f"largest J(policy) - J({name}) over weeks: {worst:.3g} (must be <= 0)")


if __name__ == "__main__":
    main()
