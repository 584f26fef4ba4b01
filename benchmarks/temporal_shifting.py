"""Temporal-shifting check on real grid data (Wiesner et al. 2021, "Let's Wait Awhile").

A GPU-hour job runs every night at 01:00 UTC; it may instead run anywhere within
+- W hours. On France's and Great Britain's 2020 carbon intensity (ENTSO-E, from the
data sets published with the paper), this prints the carbon saved against running at
01:00 by

- ``lp_bound``: the perfect-foresight LP over each week, through the evaluation harness;
- ``carbon_aware``: the heuristic (run when the hour's carbon is at or below its
  quantile of the forecast over the rest of the window; perfect forecasts);
- the direct answer: the cleanest hour of each job's window, in numpy,

for W = 1 .. 8 h. The LP and the direct answer must agree (a test checks it too). The
scenario is ``envs/entsoe_shift_{fr,gb}.yaml`` with inputs from
:mod:`gridrl.agents.shifting`; every run goes through the environment.

Usage: ``python benchmarks/temporal_shifting.py [--data DIR] [--windows 1 2 ...]
[--plot PATH.png]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gridrl.agents.evaluate import evaluate
from gridrl.agents.registry import make_policy
from gridrl.agents.shifting import direct_min_carbon, shifting_case
from gridrl.data.loaders import load_entsoe_carbon
from gridrl.io import atomic_path
from gridrl.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "grid" / "entsoe_2020"
ZONES = ("fr", "gb")
console = Console()


def run_zone(zone: str, data_dir: Path, windows: list[int]) -> list[dict]:
    """Savings per window for one zone (fractions of the 01:00 carbon)."""
    scenario = load_scenario(ROOT / "envs" / f"entsoe_shift_{zone}.yaml")
    site = scenario.sites[0].name
    signals = load_entsoe_carbon(data_dir / f"{zone}_carbon_intensity.csv", site=site,
                                 resample="mean")
    carbon = signals.frame[(site, "carbon_g_per_kwh")]
    widest = max(windows)
    base = shifting_case(scenario, carbon, 0, max_window_h=widest)
    status_quo = evaluate("run_now", base.setup, starts=base.starts)
    c0 = status_quo["carbon_kg"].sum()
    rows = []
    for w in windows:
        case = shifting_case(scenario, carbon, w, max_window_h=widest)
        t0 = time.perf_counter()
        bound = evaluate("lp_bound", case.setup, starts=case.starts)
        lp_s = time.perf_counter() - t0
        aware = evaluate(make_policy("carbon_aware"), case.setup, starts=case.starts)
        intensity = case.setup.data.exo[:, 0, 3]
        job_kwh = base.setup.params.gpu_max_kw[0]
        direct = direct_min_carbon(intensity, case.arrivals, w).sum() * job_kwh / 1000.0
        for name, table in (("lp_bound", bound), ("carbon_aware", aware)):
            late = table["deadline_miss_gpu_h"].sum()
            if late > 0 or table["leftover_gpu_h"].sum() > 0:
                raise RuntimeError(f"{zone} W={w}: {name} missed {late} GPU-h of deadlines")
        rows.append({
            "zone": zone, "W": w, "jobs": len(case.arrivals), "status_quo_kg": c0,
            "lp_bound": 1 - bound["carbon_kg"].sum() / c0,
            "carbon_aware": 1 - aware["carbon_kg"].sum() / c0,
            "direct": 1 - direct / c0, "lp_s": lp_s, "episodes": len(case.starts),
        })
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Savings vs window, one panel per zone (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zones = sorted({r["zone"] for r in rows})
    fig, axes = plt.subplots(1, len(zones), figsize=(5 * len(zones), 3.6), squeeze=False)
    for ax, zone in zip(axes[0], zones, strict=True):
        rz = [r for r in rows if r["zone"] == zone]
        w = [r["W"] for r in rz]
        ax.plot(w, [100 * r["lp_bound"] for r in rz], "o-", label="lp_bound (= best hour)")
        ax.plot(w, [100 * r["carbon_aware"] for r in rz], "s--", label="carbon_aware")
        ax.set_xlabel("shifting window +-W (h)")
        ax.set_ylabel("carbon saved vs 01:00 (%)")
        ax.set_title(f"{zone.upper()} 2020, nightly 1 h job ({rz[0]['jobs']} jobs)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main() -> None:
    """Print the savings table (and write the plot)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the ENTSO-E CSVs")
    ap.add_argument("--windows", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--plot", type=Path, default=ROOT / "runs" / "temporal_shifting.png")
    args = ap.parse_args()
    rows = []
    for zone in ZONES:
        with console.status(f"{zone}: W = {args.windows}"):
            rows += run_zone(zone, args.data, args.windows)
    table = Table(title="Carbon saved by shifting a nightly 01:00 job within +-W h "
                        "(ENTSO-E 2020)")
    for col in ("zone", "W (h)", "jobs", "lp_bound", "direct min", "carbon_aware",
                "LP s/week"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["zone"].upper(), str(r["W"]), str(r["jobs"]),
                      f"{100 * r['lp_bound']:.2f} %", f"{100 * r['direct']:.2f} %",
                      f"{100 * r['carbon_aware']:.2f} %", f"{r['lp_s'] / r['episodes']:.4f}")
    console.print(table)
    worst = max(abs(r["lp_bound"] - r["direct"]) for r in rows)
    console.print(f"largest |lp_bound - direct| saving difference: {worst:.2e}")
    if not np.isfinite(worst) or worst > 1e-9:
        raise SystemExit("lp_bound and the direct computation disagree")
    console.print(f"plot: {plot(rows, args.plot)}")


if __name__ == "__main__":
    main()
