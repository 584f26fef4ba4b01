"""Report figures: leaderboard, learning curves, forecast ablation, training throughput.

Every function takes tidy tables (pandas) and writes one PNG atomically; none computes
statistics of its own (that is :mod:`gridrl.experiments.report`'s job), so a figure
always shows the numbers of the report's tables.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written by headless workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gridrl.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def leaderboard_plot(board: pd.DataFrame, column: str, label: str, path: str | Path) -> Path:
    """Horizontal bars of ``board[column]`` with their CI half-widths, best at the top.

    Parameters
    ----------
    board
        Leaderboard table indexed by policy with ``<column>`` and ``<column>_ci``
        (half-width of the confidence interval over seeds).
    column, label
        Column to plot and its axis label (with units).
    """
    data = board.dropna(subset=[column])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(data), 2) + 1.2))
    y = np.arange(len(data))[::-1]
    ci = data.get(f"{column}_ci")
    xerr = None if ci is None else np.nan_to_num(ci.to_numpy(dtype=float))
    colors = ["tab:orange" if k == "sb3" else "tab:blue" for k in data.get("kind", [])]
    ax.barh(y, data[column].to_numpy(dtype=float), xerr=xerr, color=colors or None, capsize=3)
    ax.set_yticks(y, data.index.astype(str))
    ax.set_xlabel(label)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Leaderboard (mean over seeds, 95% CI); orange = learned")
    return _save(fig, Path(path))


def learning_curves_plot(bands: pd.DataFrame, path: str | Path) -> Path:
    """Episode return vs training steps per agent and forecast mode: mean over seeds
    with a min-max band.

    Parameters
    ----------
    bands
        ``report.learning_curve_bands`` output (``agent``, ``forecast_mode``, ``seeds``,
        ``timesteps``, ``mean``, ``low``, ``high``).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    several_modes = bands["forecast_mode"].nunique() > 1
    for (agent, mode), g in bands.groupby(["agent", "forecast_mode"], sort=True):
        seeds = int(g["seeds"].iloc[0])
        name = f"{agent}, {mode}" if several_modes else str(agent)
        x = g["timesteps"].to_numpy()
        ax.plot(x, g["mean"].to_numpy(), label=f"{name} ({seeds} seeds)")
        if seeds > 1:
            ax.fill_between(x, g["low"].to_numpy(), g["high"].to_numpy(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (rolling mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Learning curves (training episodes)")
    return _save(fig, Path(path))


def ablation_plot(table: pd.DataFrame, column: str, label: str, path: str | Path) -> Path:
    """Grouped bars: one group per agent, one bar per forecast mode, with CI whiskers.

    Parameters
    ----------
    table
        Columns ``policy``, ``forecast_mode``, ``<column>`` and ``<column>_ci``.
    """
    agents = list(dict.fromkeys(table["policy"]))
    modes = list(dict.fromkeys(table["forecast_mode"]))
    width = 0.8 / max(len(modes), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(agents) * max(len(modes), 1) / 2), 4))
    x = np.arange(len(agents))
    for j, mode in enumerate(modes):
        sub = table[table["forecast_mode"] == mode].set_index("policy").reindex(agents)
        ax.bar(
            x + (j - (len(modes) - 1) / 2) * width,
            sub[column].to_numpy(dtype=float),
            width,
            yerr=np.nan_to_num(sub[f"{column}_ci"].to_numpy(dtype=float)),
            capsize=3,
            label=mode,
        )
    ax.set_xticks(x, agents)
    ax.set_ylabel(label)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="forecast mode", fontsize=8)
    ax.set_title("Forecast ablation (mean over seeds, 95% CI)")
    return _save(fig, Path(path))


def interval_plot(board: pd.DataFrame, objective: str, path: str | Path) -> Path:
    """``<objective>_iqm`` per policy with its ``_ci_low`` / ``_ci_high`` interval."""
    data = board.dropna(subset=[f"{objective}_iqm"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(data), 2) + 1.2))
    y = np.arange(len(data))[::-1]
    mid = data[f"{objective}_iqm"].to_numpy(dtype=float)
    err = np.vstack([mid - data[f"{objective}_ci_low"].to_numpy(dtype=float),
                     data[f"{objective}_ci_high"].to_numpy(dtype=float) - mid])
    colors = ["tab:orange" if k == "sb3" else "tab:blue" for k in data.get("kind", [])]
    ax.barh(y, mid, xerr=np.maximum(err, 0.0), color=colors or None, capsize=3)
    ax.set_yticks(y, data.index.astype(str))
    ax.set_xlabel(f"{objective} (interquartile mean over seeds x weeks)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Leaderboard (IQM, stratified bootstrap CI); orange = learned")
    return _save(fig, Path(path))


def profile_plot(profiles: dict[str, np.ndarray], cis: dict[str, np.ndarray],
                 taus: np.ndarray, label: str, path: str | Path) -> Path:
    """rliable's performance-profile figure for the profiles of ``stats``."""
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=cis, ax=ax, xlabel=label,
        ylabel="share of seed x week scores > threshold",
    )
    ax.legend(fontsize="small", loc="best")  # rliable labels each line by policy
    return _save(fig, Path(path))


def week_distribution_plot(results: pd.DataFrame, column: str, label: str,
                           path: str | Path) -> Path:
    """Box plot of ``column`` per policy over every seed x week (each point a week)."""
    groups = [(name, g[column].to_numpy(dtype=float))
              for name, g in results.groupby("policy", sort=False)]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(groups), 2) + 1.2))
    ax.boxplot([g for _, g in groups], orientation="horizontal", showmeans=True)
    for k, (_, g) in enumerate(groups, start=1):
        ax.scatter(g, np.full(g.size, k), s=8, alpha=0.5, color="tab:gray")
    ax.set_yticks(np.arange(1, len(groups) + 1), [n for n, _ in groups])
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Per-week distribution (box: quartiles, triangle: mean)")
    return _save(fig, Path(path))


def site_savings_plot(savings: pd.DataFrame, label: str, path: str | Path) -> Path:
    """Grouped bars: one group per site (region), one bar per policy.

    Parameters
    ----------
    savings
        Indexed by policy, one column per site: what the policy saves there against
        ``run_now`` (positive = less).
    """
    policies, sites = list(savings.index), list(savings.columns)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(sites) + 2), 4.0))
    width = 0.8 / max(len(policies), 1)
    x = np.arange(len(sites))
    for k, policy in enumerate(policies):
        ax.bar(x + (k - (len(policies) - 1) / 2) * width,
               savings.loc[policy].to_numpy(dtype=float), width, label=str(policy))
    ax.set_xticks(x, [str(s) for s in sites], rotation=30, ha="right")
    ax.set_ylabel(label)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncol=2, loc="best")
    ax.set_title("Saved against run_now per region (mean per episode)")
    return _save(fig, Path(path))
