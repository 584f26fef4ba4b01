"""Dispatch plot of one evaluated episode (PNG).

Per site, two panels: power (facility load, grid import, PV, wind and headroom in kW,
with the grid's carbon intensity on a second axis) and work (flexible work queued and
overdue in GPU-h, with the mean power cap on a second axis).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # written by headless runs and CI
import matplotlib.pyplot as plt  # noqa: E402

from gridrl.agents.evaluate import Trace  # noqa: E402
from gridrl.io import atomic_path  # noqa: E402

__all__ = ["dispatch_plot"]


def dispatch_plot(trace: Trace, path: str | Path, *, max_sites: int = 6,
                  title: str | None = None) -> Path:
    """Write the dispatch plot of ``trace`` to ``path`` (PNG, atomically).

    Parameters
    ----------
    trace : Trace
        One episode's hour-by-hour record (``evaluate_detailed(..., trace_episodes=...)``).
    path : path
    max_sites : int
        Plot at most this many sites (the first ones); the title says how many are left
        out.
    title : str, optional
    """
    names = trace.site_names[:max_sites]
    n = len(names)
    fig, axes = plt.subplots(2 * n, 1, figsize=(12, 3.2 * 2 * n), sharex=True, squeeze=False)
    t = trace.index
    load = trace.field("facility_kwh")
    grid = trace.field("grid_import_kwh")
    pv, wind = trace.signal("pv_kw"), trace.signal("wind_kw")
    head, carbon = trace.signal("headroom_kw"), trace.signal("carbon_g_per_kwh")
    queued, overdue = trace.field("queued_gpu_h"), trace.field("overdue_gpu_h")
    cap = trace.field("cap")
    for i, site in enumerate(names):
        ax = axes[2 * i, 0]
        ax.plot(t, load[:, i], color="black", lw=1.4, label="facility load")
        ax.plot(t, grid[:, i], color="tab:red", lw=1.0, label="grid import")
        ax.fill_between(t, 0, pv[:, i], color="gold", alpha=0.5, step="mid", label="PV")
        ax.fill_between(t, pv[:, i], pv[:, i] + wind[:, i], color="tab:cyan", alpha=0.4,
                        step="mid", label="wind (on PV)")
        ax.plot(t, head[:, i], color="tab:purple", lw=1.0, ls="--", label="headroom")
        ax.set_ylabel("kW")
        ax.set_title(f"{site}: power")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(t, carbon[:, i], color="tab:green", lw=0.9, alpha=0.8, label="carbon")
        ax2.set_ylabel("g CO2e/kWh", color="tab:green")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7, ncol=6)
        ax = axes[2 * i + 1, 0]
        ax.fill_between(t, 0, queued[:, i], color="tab:blue", alpha=0.35, step="mid",
                        label="queued")
        ax.plot(t, overdue[:, i], color="tab:red", lw=1.0, label="overdue")
        ax.set_ylabel("GPU h")
        ax.set_title(f"{site}: flexible work and power cap")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.step(t, cap[:, i], where="mid", color="tab:orange", lw=1.0, label="power cap")
        ax2.set_ylim(0.0, 1.05)
        ax2.set_ylabel("cap fraction", color="tab:orange")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7, ncol=3)
    left_out = len(trace.site_names) - n
    head_line = title or f"{trace.policy}: dispatch from {t[0]:%Y-%m-%d %H:%M} UTC"
    if left_out:
        head_line += f" (first {n} of {len(trace.site_names)} sites)"
    fig.suptitle(head_line)
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.3 / (2 * n)))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
