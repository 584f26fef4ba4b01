"""Per-site summary table and one-week plot of a scenario's signals.

``site_summary`` computes, per site, over the whole year of signals: PV and wind energy
(MWh) and capacity factor (mean output / nameplate), headroom minimum and median (kW)
and hours at zero headroom, carbon and price means, mean inference demand (GPUs) and
flexible work per day (GPU-h). ``summary_tables`` renders it with rich; ``plot_week``
draws one week of every signal (one panel per signal, one line per site) to a PNG,
written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gridrl.data.signals import SignalError, Signals
from gridrl.io import write_with
from gridrl.scenario import Scenario

KW_PER_MW = 1000.0
HOURS_PER_DAY = 24
WEEK = pd.Timedelta(days=7)
MAX_LEGEND_SITES = 8  # above this the legend hides the data; lines stay unlabeled
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (5.0, 2.4)
PLOT_DPI = 110


def site_summary(scenario: Scenario, signals: Signals) -> pd.DataFrame:
    """One row per site with annual energy, capacity factors, headroom, carbon, demand.

    Parameters
    ----------
    scenario : Scenario
        For nameplate capacities (PV kWp, wind kW) and GPU counts.
    signals : Signals
        Built signals (``build_signals``) of the same scenario.

    Returns
    -------
    pandas.DataFrame
        Index: site. Columns: ``gpus``, ``pv_kwp``, ``pv_mwh``, ``pv_cf`` (fraction,
        NaN without PV), ``wind_kw``, ``wind_mwh``, ``wind_cf``, ``headroom_min_kw``,
        ``headroom_median_kw``, ``headroom_zero_h`` (hours, outages included),
        ``outage_h`` and ``congestion_h`` (from the build record; NaN when absent),
        ``dr_event_h`` (hours of demand-response events),
        ``carbon_mean_g_per_kwh``,
        ``price_mean_per_mwh``, ``inference_mean_gpus``, ``flexible_gpu_h_per_day``.
        Energies are per calendar year: sums over the signals' hours divided by the
        number of calendar years they touch.
    """
    from gridrl.data.build import build_stats

    stats = build_stats(signals)
    rows = {}
    # Energies per calendar year (the signals may span several).
    n_years = len(set(signals.index.year))
    for site in scenario.expanded_sites():
        d = signals.site(site.name)
        hours = len(d)
        pv_kwh = float(d["pv_kw"].sum())
        wind_kwh = float(d["wind_kw"].sum())
        rows[site.name] = {
            "gpus": site.gpus,
            "pv_kwp": site.pv.kwp,
            "pv_mwh": pv_kwh / KW_PER_MW / n_years,
            "pv_cf": pv_kwh / (site.pv.kwp * hours) if site.pv.kwp > 0 else np.nan,
            "wind_kw": site.wind.capacity_kw,
            "wind_mwh": wind_kwh / KW_PER_MW / n_years,
            "wind_cf": (
                wind_kwh / (site.wind.capacity_kw * hours) if site.wind.capacity_kw > 0 else np.nan
            ),
            "headroom_min_kw": float(d["headroom_kw"].min()),
            "headroom_median_kw": float(d["headroom_kw"].median()),
            "headroom_zero_h": int((d["headroom_kw"] <= 0).sum()),
            "outage_h": stats[site.name].outage_hours if site.name in stats else np.nan,
            "congestion_h": (stats[site.name].congestion_hours if site.name in stats
                             else np.nan),
            # hours of demand-response events (announced or not: in force)
            "dr_event_h": int(((d["dr_starts_in_h"] <= 0) & (d["dr_remaining_h"] > 0)).sum()),
            "carbon_mean_g_per_kwh": float(d["carbon_g_per_kwh"].mean()),
            "price_mean_per_mwh": float(d["price_per_mwh"].mean()),
            "inference_mean_gpus": float(d["inference_gpus"].mean()),
            "flexible_gpu_h_per_day": float(d["flexible_gpu_h"].mean()) * HOURS_PER_DAY,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("site")


def _fmt(value: float, digits: int = 0, pct: bool = False) -> str:
    if value is None or pd.isna(value):
        return "-"
    if pct:
        return f"{100 * value:.1f}%"
    return f"{value:,.{digits}f}"


def summary_tables(summary: pd.DataFrame, title: str = "") -> list:
    """Rich tables of ``site_summary``: local generation; grid; market and demand.

    Three narrow tables instead of one wide one, so they fit an 80-column terminal.
    Units are in the headers.
    """
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    specs = [
        ("local generation",
         [("GPUs", "gpus", 0, False), ("PV\nkWp", "pv_kwp", 0, False),
          ("PV\nMWh/yr", "pv_mwh", 0, False), ("PV\nCF", "pv_cf", 1, True),
          ("wind\nkW", "wind_kw", 0, False), ("wind\nMWh/yr", "wind_mwh", 0, False),
          ("wind\nCF", "wind_cf", 1, True)]),
        ("grid",
         [("headroom\nmin kW", "headroom_min_kw", 0, False),
          ("headroom\nmedian kW", "headroom_median_kw", 0, False),
          ("headroom\n0 (h)", "headroom_zero_h", 0, False),
          ("outage\n(h)", "outage_h", 0, False),
          ("congestion\n(h)", "congestion_h", 0, False),
          ("DR event\n(h)", "dr_event_h", 0, False)]),
        ("market and demand",
         [("carbon mean\ng/kWh", "carbon_mean_g_per_kwh", 0, False),
          ("price mean\n/MWh", "price_mean_per_mwh", 1, False),
          ("inference\nmean GPUs", "inference_mean_gpus", 1, False),
          ("flexible\nGPU-h/day", "flexible_gpu_h_per_day", 0, False)]),
    ]
    tables = []
    for name, cols in specs:
        table = Table(title=f"{title} - {name}" if title else name, header_style="bold",
                      box=SIMPLE_HEAD, pad_edge=False)
        table.add_column("site", no_wrap=True)
        for header, *_ in cols:
            table.add_column(header, justify="right")
        for site, r in summary.iterrows():
            table.add_row(str(site), *[_fmt(r[key], digits, pct) for _, key, digits, pct in cols])
        tables.append(table)
    return tables


def plot_week(
    signals: Signals, path: str | Path, start: str | pd.Timestamp, title: str = ""
) -> Path:
    """Draw one week of every signal, one panel per signal and one line per site.

    Parameters
    ----------
    signals : Signals
    path : str or pathlib.Path
        PNG file to write (atomically; parent folders are created).
    start : str or pandas.Timestamp
        First hour of the week (naive values are read as UTC).
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    SignalError
        When the week is not inside the signals' time range.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    week = signals.between(start, start + WEEK)
    if len(week.frame) < WEEK / pd.Timedelta(hours=1):
        raise SignalError(
            signals.source,
            f"the week from {start} is not fully inside the signals "
            f"({signals.index[0]} .. {signals.index[-1]})",
        )
    names = list(signals.signals)
    n_rows = int(np.ceil(len(names) / PANEL_COLUMNS))
    fig, axes = plt.subplots(
        n_rows,
        PANEL_COLUMNS,
        sharex=True,
        squeeze=False,
        figsize=(PANEL_SIZE_IN[0] * PANEL_COLUMNS, PANEL_SIZE_IN[1] * n_rows),
    )
    sites = list(signals.sites)
    for ax, name in zip(axes.flat, names, strict=False):
        for site in sites:
            ax.plot(
                week.frame.index,
                week.frame[(site, name)],
                linewidth=1.0,
                label=site if len(sites) <= MAX_LEGEND_SITES else None,
            )
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    if len(sites) <= MAX_LEGEND_SITES:
        axes.flat[0].legend(fontsize=8, loc="upper right")
    fig.autofmt_xdate()
    fig.suptitle(title or f"{signals.source}: week from {start:%Y-%m-%d} (UTC)")
    fig.tight_layout()
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, dpi=PLOT_DPI))
    finally:
        plt.close(fig)
    return Path(path)
