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


def learning_curves_plot(curves: pd.DataFrame, path: str | Path) -> Path:
    """Episode return vs training steps per agent: mean over seeds with a min-max band.

    Parameters
    ----------
    curves
        Columns ``agent``, ``seed``, ``timesteps``, ``episode_return`` (already
        smoothed), one row per finished training episode.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for agent, g in curves.groupby("agent", sort=True):
        grid = np.linspace(g["timesteps"].min(), g["timesteps"].max(), 200)
        per_seed = [
            np.interp(grid, s["timesteps"].to_numpy(), s["episode_return"].to_numpy())
            for _, s in g.groupby("seed")
        ]
        arr = np.vstack(per_seed)
        ax.plot(grid, arr.mean(axis=0), label=f"{agent} ({len(per_seed)} seeds)")
        if len(per_seed) > 1:
            ax.fill_between(grid, arr.min(axis=0), arr.max(axis=0), alpha=0.2)
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
