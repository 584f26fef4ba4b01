"""Temporal-shifting check on real grid data (Wiesner et al. 2021, "Let's Wait Awhile").

A GPU-hour job runs every night at 01:00 UTC; it may instead run anywhere within
+- W hours. On a zone's hourly carbon intensity (by default France's and Great Britain's
2020 series of the data set ``entsoe_2020``, published with the paper), this prints the
carbon saved against running at 01:00 by

- ``lp_bound``: the perfect-foresight LP over each week, through the evaluation harness;
- ``carbon_aware``: the heuristic (run when the hour's carbon is at or below its
  quantile of the forecast over the rest of the window; perfect forecasts);
- the direct answer: the cleanest hour of each job's window, in numpy,

for W = 1 .. 8 h. The LP and the direct answer must agree (a test checks it too). The job
and its site come from ``--scenario`` (default ``envs/entsoe_shift_fr.yaml``); the site
takes the zone's name and the year and monthly test blocks move to the data's year.
Every run goes through the environment.

Usage: ``python benchmarks/temporal_shifting.py [--dataset NAME] [--zone Z ...]
[--year Y] [--windows 1 2 ...] [--plot PATH.png]``. ``--dataset multiregion_2021_2024``
takes any of its eight zones (``--zone DE-LU AU-VIC``; default all) and year (default
its last, 2024; direct intensity). For any other region ``--zone NAME --file PATH``
with a carbon CSV in the ENTSO-E layout (``Time`` in UTC, ``Carbon Intensity``
gCO2e/kWh, any regular or mixed step) or in Electricity Maps' hourly layout
(``Datetime (UTC)``, ``Carbon Intensity gCO₂eq/kWh (direct)``, as the multiregion
files). A missing data set names ``gridrl data fetch``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from gridrl.agents.evaluate import evaluate
from gridrl.agents.registry import make_policy
from gridrl.agents.shifting import direct_min_carbon, shifting_case
from gridrl.data.datasets import DataNotFoundError, dataset, dataset_file
from gridrl.data.loaders import ZONE_TIMEZONES, load_entsoe_carbon, load_multiregion_carbon
from gridrl.data.loaders.multiregion import CARBON_COLUMNS, MULTIREGION_DATASET, UTC_COLUMN
from gridrl.io import atomic_path
from gridrl.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "entsoe_2020"
DEFAULT_SCENARIO = ROOT / "envs" / "entsoe_shift_fr.yaml"
CARBON_FILE_SUFFIX = "_carbon_intensity.csv"  # {zone}_carbon_intensity.csv in a data set
MULTIREGION_LAST_YEAR = 2024  # the multiregion set's default year (its test year)
EM_DIRECT = next(k for k, v in CARBON_COLUMNS.items() if v == "carbon_direct_g_per_kwh")
console = Console()


def dataset_zones(name: str) -> list[str]:
    """Zones with a carbon file in data set ``name`` (``{zone}_carbon_intensity.csv``)."""
    return sorted(f.path.removesuffix(CARBON_FILE_SUFFIX) for f in dataset(name).files
                  if f.path.endswith(CARBON_FILE_SUFFIX))


def zone_scenario(template: Path, zone: str, year: int) -> Scenario:
    """The template's job and site, named after ``zone``, on ``year`` (monthly blocks)."""
    data = load_scenario(template).model_dump(mode="json")
    data["name"] = f"shift_{zone}"
    data["sites"][0]["name"] = zone
    data["year"] = year
    months = pd.period_range(f"{year}-01", f"{year}-12", freq="M")
    data["periods"] = {
        "train": [{"start": f"{year}-01-01", "end": f"{year}-12-31"}],
        "test": [{"start": str(m.start_time.date()), "end": str(m.end_time.date())}
                 for m in months],
    }
    return Scenario.model_validate(data)


def electricitymaps_carbon(path: Path, zone: str) -> pd.Series:
    """Direct carbon intensity of an Electricity Maps hourly CSV (the multiregion layout)."""
    df = pd.read_csv(path)
    missing = [c for c in (UTC_COLUMN, EM_DIRECT) if c not in df.columns]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {missing}")
    values = pd.to_numeric(df[EM_DIRECT], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
    if bad.size:
        raise SystemExit(f"{path}: column {EM_DIRECT!r} row {bad[0] + 2}: expected a number, "
                         f"got {df[EM_DIRECT].iloc[bad[0]]!r}")
    index = pd.DatetimeIndex(pd.to_datetime(df[UTC_COLUMN]), name=zone).tz_localize("UTC")
    return pd.Series(values.to_numpy(dtype=float), index=index, name=zone)


def read_carbon(zone: str, path: Path | None, year: int | None) -> pd.Series:
    """Hourly carbon of ``zone``: a multiregion zone by name (``path`` None), an
    Electricity Maps file or an ENTSO-E file."""
    if path is None:
        year = year if year is not None else MULTIREGION_LAST_YEAR
        return load_multiregion_carbon(zone, (year, year)).frame[(zone, "carbon_direct_g_per_kwh")]
    with pd.io.common.get_handle(path, "r", compression="infer") as handle:
        header = handle.handle.readline()
    if UTC_COLUMN in header:
        return electricitymaps_carbon(path, zone)
    return load_entsoe_carbon(path, site=zone, resample="mean").frame[(zone, "carbon_g_per_kwh")]


def zone_carbon(zone: str, path: Path | None, year: int | None) -> tuple[pd.Series, int]:
    """Hourly carbon intensity of ``zone`` and the year it is evaluated on."""
    carbon = read_carbon(zone, path, year)
    # default: the year most of the series lies in (ENTSO-E 2020 runs 2019-12-20..2021-01-09)
    return carbon, year if year is not None else int(carbon.index.year.value_counts().idxmax())


def run_zone(zone: str, path: Path | None, windows: list[int], template: Path,
             year: int | None = None) -> list[dict]:
    """Savings per window for one zone (fractions of the 01:00 carbon)."""
    carbon, year = zone_carbon(zone, path, year)
    scenario = zone_scenario(template, zone, year)
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
            "zone": zone, "year": year, "W": w, "jobs": len(case.arrivals),
            "status_quo_kg": c0, "lp_bound": 1 - bound["carbon_kg"].sum() / c0,
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
        ax.set_title(f"{zone.upper()} {rz[0]['year']}, nightly 1 h job ({rz[0]['jobs']} jobs)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """(zone, carbon file) pairs from ``--file`` or the data set (None: a multiregion
    zone, read by its loader)."""
    if args.file is not None:
        if not args.zone or len(args.zone) != 1:
            raise SystemExit("--file needs exactly one --zone NAME (the label of the series)")
        return [(args.zone[0], args.file)]
    if args.dataset == MULTIREGION_DATASET:
        zones = args.zone or list(ZONE_TIMEZONES)
        unknown = sorted(set(zones) - set(ZONE_TIMEZONES))
        if unknown:
            raise SystemExit(f"unknown zone(s) {unknown}; {MULTIREGION_DATASET} has "
                             f"{', '.join(ZONE_TIMEZONES)}")
        return [(z, None) for z in zones]
    zones = args.zone or dataset_zones(args.dataset)
    if not zones:
        raise SystemExit(f"data set {args.dataset!r} has no *{CARBON_FILE_SUFFIX} file")
    return [(z, dataset_file(args.dataset, f"{z}{CARBON_FILE_SUFFIX}")) for z in zones]


def main() -> None:
    """Print the savings table (and write the plot)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=DEFAULT_DATASET, help="registered data set")
    ap.add_argument("--zone", nargs="+", help="zones; default: every zone of the data set")
    ap.add_argument("--file", type=Path,
                    help="a carbon CSV (ENTSO-E or Electricity Maps layout) instead")
    ap.add_argument("--year", type=int, help="year evaluated; default: the data's main year")
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO,
                    help="one-site scenario giving the job's site")
    ap.add_argument("--windows", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--plot", type=Path, default=ROOT / "runs" / "temporal_shifting.png")
    args = ap.parse_args()
    try:
        inputs = _inputs(args)
    except DataNotFoundError as exc:  # names the command that fetches the data set
        raise SystemExit(str(exc)) from None
    rows = []
    for zone, path in inputs:
        with console.status(f"{zone}: W = {args.windows}"):
            rows += run_zone(zone, path, args.windows, args.scenario, args.year)
    table = Table(title="Carbon saved by shifting a nightly 01:00 job within +-W h "
                        f"({args.file or args.dataset})")
    for col in ("zone", "year", "W (h)", "jobs", "lp_bound", "direct min", "carbon_aware",
                "LP s/week"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["zone"].upper(), str(r["year"]), str(r["W"]), str(r["jobs"]),
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
