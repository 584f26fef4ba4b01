"""What each lever is worth: the LP bound with one lever removed, and static power caps.

Per scenario, on its test weeks (perfect foresight, the evaluation harness of
:mod:`gridrl.agents.evaluate`), this prints and writes two tables:

1. **Levers**: ``lp_bound`` on the scenario and on copies with one lever removed
   (``Scenario.model_copy``; the inputs are the scenario's own, built once):

   - ``cap``: power caps fixed at 1 (``env.cap_min_fraction = 1``; curtailment then
     pauses and sheds instead of throttling);
   - ``deferral``: every flexible job due in the hour it arrives (deadline slack 0 at
     every site): work may still wait, but every hour it waits is overdue;
   - ``migration``: ``env.max_migration_fraction = 0``;
   - ``battery``: every battery's capacity and power 0;
   - ``inference_routing``: ``env.inference_remote_fraction_max = 0``.

   A lever the scenario does not have (one site: no migration; no batteries; no remote
   inference) is ``n/a``. Columns: mean ``J``, gap closed between ``run_now`` and the
   full ``lp_bound`` (``gridrl.agents.evaluate.gap_closed`` of the means), and the
   lever's value ``J_bound(full) - J_bound(without)`` (reward units; also as a share
   of the full gap).

2. **Static caps**: run now (all queued work every hour, no migration, the battery on
   the env's rule) at one fixed power cap at every site, for each cap of ``--caps``;
   and with the best fixed cap per site, found by grid search over the caps the env's
   action can set (``env.cap_min_fraction`` .. 1): sites do not interact without
   migration, so each site's cap is searched with the others uncapped, all in one
   batch, and the chosen caps are then evaluated together. A cap below the scenario's
   ``env.cap_min_fraction`` is run on a copy whose ``cap_min_fraction`` is lowered to
   it (marked ``*``): that env is not the one the full bound covers.

Each table is also written as CSV and as a PNG of bars (one panel per scenario) under
``--out``.

Usage: ``python benchmarks/levers.py [--scenarios geo3 edge24 congested1]
[--weeks 0 3 6 9 | --weeks edge24:0,6] [--caps 0.5 0.6 ...] [--out docs/benchmarks]``.
``--weeks`` takes test-week indices (0-based) for every scenario, or ``name:i,j`` for
one scenario; default all test weeks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridrl.agents.evaluate import EvalSetup, evaluate_detailed, gap_closed, make_setup
from gridrl.agents.policy import EpisodeBatch, StepContext, actions_from
from gridrl.agents.registry import make_policy
from gridrl.agents.train import env_inputs
from gridrl.env.inputs import EnvData
from gridrl.io import atomic_path, write_with
from gridrl.scenario import Scenario, SiteConfig, load_scenario

matplotlib.use("Agg")  # headless runs
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
DEFAULT_SCENARIOS = ("geo3", "edge24", "congested1")
DEFAULT_CAPS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_OUT = ROOT / "docs" / "benchmarks"
LEVERS = ("cap", "deferral", "migration", "battery", "inference_routing")
FULL = "full"
NA = "n/a"
# Gap closed below this is drawn cut (and red) in the static-caps figure.
STATIC_PLOT_FLOOR = -1.0
# Cap values closer than this are the same setting.
_CAP_TOL = 1e-9
console = Console()


# --------------------------------------------------------------------------- levers


def flatten_sites(scenario: Scenario) -> Scenario:
    """The same scenario with its site groups expanded into ``sites`` (each site can
    then be copied on its own; the expansion's seeded variation is kept)."""
    if not scenario.site_groups:
        return scenario
    return scenario.model_copy(update={"sites": scenario.expanded_sites(), "site_groups": []})


def _with_sites(scenario: Scenario, change: Callable[[SiteConfig], SiteConfig]) -> Scenario:
    flat = flatten_sites(scenario)
    return flat.model_copy(update={"sites": [change(s) for s in flat.sites]})


def _with_env(scenario: Scenario, **update: object) -> Scenario:
    return scenario.model_copy(update={"env": scenario.env.model_copy(update=update)})


def _no_slack(site: SiteConfig) -> SiteConfig:
    work = site.workload.model_copy(update={"deadline_slack_h_min": 0, "deadline_slack_h_max": 0})
    return site.model_copy(update={"workload": work})


def _no_battery(site: SiteConfig) -> SiteConfig:
    battery = site.battery.model_copy(update={"capacity_kwh": 0.0, "power_kw": 0.0})
    return site.model_copy(update={"battery": battery})


def without(scenario: Scenario, lever: str) -> Scenario | None:
    """A copy of ``scenario`` with ``lever`` (one of :data:`LEVERS`) removed, or None
    when the scenario does not have the lever (nothing to remove).

    The copies skip validation on purpose: deadline slack 0 is below the schema's
    ``deadline_slack_h_max >= 1`` (a scenario file should give work some slack), yet
    the env and the LP handle it (all work due in its arrival hour).
    """
    env, sites = scenario.env, scenario.expanded_sites()
    if lever == "cap":
        return _with_env(scenario, cap_min_fraction=1.0) if env.cap_min_fraction < 1.0 else None
    if lever == "deferral":
        if all(s.workload.deadline_slack_h_max == 0 for s in sites):
            return None
        return _with_sites(scenario, _no_slack)
    if lever == "migration":
        if len(sites) < 2 or env.max_migration_fraction == 0.0:
            return None
        return _with_env(scenario, max_migration_fraction=0.0)
    if lever == "battery":
        if all(s.battery.capacity_kwh == 0.0 for s in sites):
            return None
        return _with_sites(scenario, _no_battery)
    if lever == "inference_routing":
        if env.inference_remote_fraction_max == 0.0:
            return None
        return _with_env(scenario, inference_remote_fraction_max=0.0)
    raise ValueError(f"unknown lever {lever!r}; known: {LEVERS}")


# --------------------------------------------------------------------------- static caps


class FixedCaps:
    """Run now at a fixed power cap per episode and site: every queued GPU-h every hour,
    no migration, the battery on the env's rule (``StepContext.set_battery``). With all
    caps 1 it is ``run_now``.

    Parameters
    ----------
    caps : array_like
        ``[B, N]`` cap of each episode of the batch it is reset with (values below the
        scenario's ``cap_min`` act as ``cap_min``, as the env's action does).
    """

    name = "fixed_caps"
    is_bound = False

    def __init__(self, caps: np.ndarray) -> None:
        self.caps = np.asarray(caps, dtype=np.float64)

    def reset(self, batch: EpisodeBatch) -> None:
        """Check that there is one row of caps per episode and one column per site."""
        want = (batch.size, batch.params.n_sites)
        if self.caps.shape != want:
            raise ValueError(f"fixed_caps: caps have shape {self.caps.shape}, expected {want} "
                             "(episodes, sites); every episode must have the same length")

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Run share 1 at the fixed caps."""
        run = np.ones_like(self.caps)
        return ctx.set_battery(actions_from(ctx.params, run, self.caps))


@dataclass
class SiteSearch:
    """Caps of one batch: uniform caps, then each site at each cap with the others at 1."""

    n_sites: int
    caps: tuple[float, ...]
    rows: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        ones = np.ones(self.n_sites)
        self.rows = [np.full(self.n_sites, c) for c in self.caps]
        for i in range(self.n_sites):
            for c in self.caps:
                if abs(c - 1.0) > _CAP_TOL:
                    row = ones.copy()
                    row[i] = c
                    self.rows.append(row)

    def best_per_site(self, j_mean: np.ndarray) -> tuple[np.ndarray, float]:
        """Best cap of each site from the batch's mean ``J`` per row, and the ``J`` the
        sum of the per-site gains predicts for them together."""
        k = len(self.caps)
        base = float(j_mean[self.caps.index(1.0)])
        others = [c for c in self.caps if abs(c - 1.0) > _CAP_TOL]
        gains = j_mean[k:].reshape(self.n_sites, len(others)) - base
        gains = np.concatenate([gains, np.zeros((self.n_sites, 1))], axis=1)
        choice = np.asarray([*others, 1.0])[gains.argmax(1)]
        return choice, base + float(gains.max(1).sum())


# --------------------------------------------------------------------------- runs


@dataclass
class Runner:
    """Evaluations of one scenario on fixed test weeks, with a progress display."""

    scenario: Scenario
    data: EnvData
    starts: list[int]
    progress: Progress

    def setup(self, scenario: Scenario | None = None) -> EvalSetup:
        """The harness setup of ``scenario`` (default: the runner's) on the runner's data."""
        return make_setup(scenario or self.scenario, data=self.data)

    def j(self, policy, scenario: Scenario | None = None, label: str = "",
          starts: Sequence[int] | None = None) -> np.ndarray:
        """``J`` per episode of ``policy`` on ``starts`` (default the runner's weeks)."""
        starts = list(self.starts if starts is None else starts)
        task = self.progress.add_task(f"  {self.scenario.name}: {label}", total=1)

        def step(done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=total)

        res = evaluate_detailed(policy, self.setup(scenario), starts=starts, on_step=step)
        self.progress.update(task, visible=False)
        return res.table["J"].to_numpy()


def lever_rows(run: Runner, j_run_now: float) -> list[dict]:
    """Table 1 of one scenario (see the module doc)."""
    j_full = float(run.j(make_policy("lp_bound"), label="lp_bound (full)").mean())
    rows = [{"scenario": run.scenario.name, "variant": FULL, "J": j_full,
             "gap_closed": gap_closed(j_full, j_run_now, j_full), "value": 0.0}]
    for lever in LEVERS:
        copy = without(run.scenario, lever)
        row = {"scenario": run.scenario.name, "variant": f"no {lever}"}
        if copy is None:
            rows.append({**row, "J": np.nan, "gap_closed": np.nan, "value": np.nan})
            continue
        j = float(run.j(make_policy("lp_bound"), copy, f"lp_bound without {lever}").mean())
        rows.append({**row, "J": j, "gap_closed": gap_closed(j, j_run_now, j_full),
                     "value": j_full - j})
    for row in rows:
        row["value_share_of_gap"] = row["value"] / (j_full - j_run_now)
    return rows


def _caps_label(caps: np.ndarray) -> str:
    if len(caps) <= 4:
        return "/".join(f"{c:.1f}" for c in caps)
    values, counts = np.unique(np.round(caps, 2), return_counts=True)
    return ", ".join(f"{v:.1f}x{n}" for v, n in zip(values, counts, strict=True))


def static_rows(run: Runner, caps: Sequence[float], j_run_now: float,
                j_bound: float) -> list[dict]:
    """Table 2 of one scenario (see the module doc)."""
    name, cap_min = run.scenario.name, run.scenario.env.cap_min_fraction
    settable = tuple(c for c in caps if c >= cap_min - _CAP_TOL)
    if not any(abs(c - 1.0) <= _CAP_TOL for c in settable):
        settable = (*settable, 1.0)
    search = SiteSearch(len(run.scenario.expanded_sites()), settable)
    n_w = len(run.starts)
    j_mean = run.j(FixedCaps(np.repeat(search.rows, n_w, axis=0)), label="static caps grid",
                   starts=run.starts * len(search.rows)).reshape(len(search.rows), n_w).mean(1)
    rows = [{"scenario": name, "policy": f"cap {c:.2f}", "cap": c, "J": float(j_mean[k]),
             "note": ""} for k, c in enumerate(settable) if c in caps]
    for c in (c for c in caps if c < cap_min - _CAP_TOL):
        low = _with_env(run.scenario, cap_min_fraction=c)
        j = float(run.j(FixedCaps(np.full((n_w, search.n_sites), c)), low, f"cap {c}").mean())
        rows.append({"scenario": name, "policy": f"cap {c:.2f}*", "cap": c, "J": j,
                     "note": f"env.cap_min_fraction lowered from {cap_min} to {c}"})
    best, predicted = search.best_per_site(j_mean)
    j_best = float(run.j(FixedCaps(np.tile(best, (n_w, 1))), label="best cap per site").mean())
    rows.append({"scenario": name, "policy": "best cap per site", "cap": float(best.mean()),
                 "J": j_best, "note": f"caps {_caps_label(best)}; sum of per-site gains "
                                      f"predicts J {predicted:.3f}"})
    rows.sort(key=lambda r: (r["policy"] == "best cap per site", r["cap"]))
    for row in rows:
        row["gap_closed"] = gap_closed(row["J"], j_run_now, j_bound)
    return rows


def week_starts(setup: EvalSetup, picks: list[int] | None, name: str) -> list[int]:
    """Start rows of the chosen test weeks (all by default)."""
    fixed = list(setup.windows.fixed)
    if picks is None:
        return [w.start for w in fixed]
    bad = [k for k in picks if not 0 <= k < len(fixed)]
    if bad:
        raise SystemExit(f"--weeks: {name} has test weeks 0..{len(fixed) - 1}, got {bad}")
    return [fixed[k].start for k in picks]


def run_scenario(name: str, picks: list[int] | None, caps: Sequence[float],
                 progress: Progress) -> tuple[list[dict], list[dict], dict]:
    """Both tables of one scenario and what was run (weeks, wall time)."""
    t0 = time.perf_counter()
    path = ENVS / f"{name}.yaml"
    task = progress.add_task(f"{name}: building inputs", total=None)
    scenario, data = load_scenario(path), env_inputs(path, "perfect", None)
    progress.update(task, visible=False)
    base = make_setup(scenario, data=data)
    run = Runner(scenario, data, week_starts(base, picks, name), progress)
    j_run_now = float(run.j(make_policy("run_now"), label="run_now").mean())
    levers = lever_rows(run, j_run_now)
    static = static_rows(run, caps, j_run_now, levers[0]["J"])
    static.insert(0, {"scenario": name, "policy": "run_now", "cap": 1.0, "J": j_run_now,
                      "gap_closed": 0.0, "note": ""})
    dates = [str(base.data.index[s].date()) for s in run.starts]
    info = {"weeks": dates, "wall_s": time.perf_counter() - t0}
    return levers, static, info


# --------------------------------------------------------------------------- output


def _fmt(x: float, spec: str) -> str:
    return NA if not np.isfinite(x) else format(x, spec)


def print_tables(levers: pd.DataFrame, static: pd.DataFrame) -> None:
    """Both tables on the console."""
    t = Table(title="LP bound with one lever removed (value = J_bound(full) - J_bound(without))")
    for col in ("scenario", "variant", "mean J", "gap closed", "value", "value / gap"):
        t.add_column(col, justify="left" if col in ("scenario", "variant") else "right")
    for r in levers.itertuples():
        t.add_row(r.scenario, r.variant, _fmt(r.J, ".3f"), _fmt(r.gap_closed, ".3f"),
                  _fmt(r.value, ".3f"), _fmt(r.value_share_of_gap, ".3f"))
    console.print(t)
    s = Table(title="Static policies: run now at a fixed cap (gap closed run_now -> lp_bound)")
    for col in ("scenario", "policy", "mean J", "gap closed", "note"):
        s.add_column(col, justify="right" if col in ("mean J", "gap closed") else "left")
    for r in static.itertuples():
        s.add_row(r.scenario, r.policy, f"{r.J:.3f}", _fmt(r.gap_closed, ".3f"), r.note)
    console.print(s)


def _bars(frame: pd.DataFrame, label: str, value: str, ylabel: str, title: str,
          path: Path, floor: float = -np.inf) -> Path:
    """One panel of bars per scenario, each labelled with its value; bars below
    ``floor`` are cut there (a collapsing policy would hide the others)."""
    names = list(dict.fromkeys(frame["scenario"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        part = frame[frame["scenario"] == name]
        y = part[value].to_numpy(dtype=float)
        x = np.arange(len(part))
        shown = np.maximum(np.nan_to_num(y), floor)
        ax.bar(x, shown, color=np.where(y < floor, "tab:red", "tab:blue"))
        for k in x:
            text = NA if not np.isfinite(y[k]) else f"{y[k]:.2f}"
            ax.text(k, shown[k], text, ha="center", va="bottom" if shown[k] >= 0 else "top",
                    fontsize=7)
        ax.set_xticks(x, part[label], rotation=45, ha="right", fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(name)
        ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_outputs(levers: pd.DataFrame, static: pd.DataFrame, out: Path) -> list[Path]:
    """CSV and PNG of each table under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_with(out / "levers.csv", lambda p: levers.to_csv(p, index=False)),
             write_with(out / "levers_static_caps.csv", lambda p: static.to_csv(p, index=False))]
    shown = levers[levers["variant"] != FULL]
    paths.append(_bars(shown, "variant", "value", "J_bound(full) - J_bound(without)",
                       "Value of each lever (LP bound, test weeks)", out / "levers.png"))
    paths.append(_bars(static, "policy", "gap_closed", "gap closed (run_now -> lp_bound)",
                       "Static caps: run now at a fixed cap (bars cut at -1)",
                       out / "levers_static_caps.png", floor=STATIC_PLOT_FLOOR))
    return paths


def parse_weeks(items: list[str] | None, names: Sequence[str]) -> dict[str, list[int] | None]:
    """``--weeks``: indices for every scenario, or ``name:i,j`` for one."""
    picks: dict[str, list[int] | None] = dict.fromkeys(names)
    common = [int(x) for x in items or [] if ":" not in x]
    for name in names:
        picks[name] = common or None
    for item in items or []:
        if ":" in item:
            name, _, idx = item.partition(":")
            if name not in picks:
                raise SystemExit(f"--weeks {item}: {name!r} is not among --scenarios {names}")
            picks[name] = [int(x) for x in idx.split(",") if x]
    return picks


def main() -> None:
    """Run the scenarios, print both tables and write them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=list(DEFAULT_SCENARIOS),
                    help="scenario names under envs/ (default: %(default)s)")
    ap.add_argument("--weeks", nargs="+", default=None,
                    help="test-week indices (0-based) for all scenarios, or NAME:i,j,...")
    ap.add_argument("--caps", nargs="+", type=float, default=list(DEFAULT_CAPS),
                    help="fixed caps of the static sweep (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the CSVs and PNGs")
    args = ap.parse_args()
    picks = parse_weeks(args.weeks, args.scenarios)
    t0 = time.perf_counter()
    levers: list[dict] = []
    static: list[dict] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for name in args.scenarios:
            lv, st, info = run_scenario(name, picks[name], args.caps, progress)
            levers += lv
            static += st
            progress.console.print(f"{name}: {len(info['weeks'])} test weeks from "
                                   f"{', '.join(info['weeks'])}; {info['wall_s']:.0f} s")
    lv_frame, st_frame = pd.DataFrame(levers), pd.DataFrame(static)
    print_tables(lv_frame, st_frame)
    for path in write_outputs(lv_frame, st_frame, args.out):
        console.print(f"wrote {path}")
    console.print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
