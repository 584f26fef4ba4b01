"""Reference controllers on geo3's twelve test weeks: solve times and gap closed.

Prints

1. ``lp_bound`` solve time per geo3 week (goal: 2 s or less), for the LP (battery
   relaxed) and, unless ``--rule-time-limit 0``, for the mixed-integer variant that
   models the rule-dispatched battery (``battery="rule"``);
2. ``mpc`` decision time per hour and episode (goal: 50 ms or less), per forecast mode;
3. gap closed ``(J - J_run_now) / (J_lp_bound - J_run_now)`` of every reference on the
   test weeks (from mean J, and the smallest week), against both bounds, with
   ``perfect`` forecasts for the heuristics and each ``--modes`` forecast for MPC;
4. the same for geo3 with ``env.battery_action: true`` (the battery becomes an action,
   so the LP's battery is the env's and the bound is tight).

Usage: ``python benchmarks/references.py [--weeks N] [--modes perfect persistence
lightgbm] [--rule-time-limit S] [--forecast-config forecasts/default.yaml]``.
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
console = Console()


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
    ap.add_argument("--forecast-config", default=str(ROOT / "forecasts" / "default.yaml"))
    args = ap.parse_args()

    scenario = load_scenario(GEO3)
    data = env_inputs(GEO3, "perfect", args.forecast_config)
    setup = make_setup(scenario, data=data)
    starts = [w.start for w in setup.windows.fixed][: args.weeks]
    console.print(f"geo3: {len(starts)} test weeks of {setup.windows.episode_hours} h, "
                  f"{setup.params.n_sites} sites")
    j: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    j["run_now"], _, _ = _run(make_policy("run_now"), setup, starts, "run_now")
    j["lp_bound"], timing["lp_bound"], _ = _run(make_policy("lp_bound"), setup, starts,
                                                "lp_bound (LP)")
    bounds = ["lp_bound"]
    if args.rule_time_limit > 0:
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

    # battery as an action: the LP's battery is the env's
    raw = scenario.model_dump(mode="json")
    raw["env"]["battery_action"] = True
    act = make_setup(Scenario.model_validate(raw), data=data)
    ja = {name: _run(make_policy(name), act, starts, f"{name} (battery_action)")[0]
          for name in ("run_now", "lp_bound", "mpc")}

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
    a = Table(title="geo3 with env.battery_action: true (perfect forecasts)")
    a.add_column("policy")
    a.add_column("mean J", justify="right")
    a.add_column("gap closed (mean J)", justify="right")
    a.add_column("worst week", justify="right")
    for name, values in ja.items():
        a.add_row(name, f"{values.mean():.2f}",
                  f"{gap_closed(values.mean(), ja['run_now'].mean(), ja['lp_bound'].mean()):.3f}",
                  f"{np.nanmin(gap_closed(values, ja['run_now'], ja['lp_bound'])):.3f}")
    console.print(a)
    for name in ("lp_bound", *bounds[1:]):
        worst = max(float(np.max(j[k] - j[name])) for k in j if not k.startswith("lp_bound"))
        console.print(f"largest J(policy) - J({name}) over weeks: {worst:.3g} (must be <= 0)")


if __name__ == "__main__":
    main()
