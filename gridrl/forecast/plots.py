"""PNG plots of forecast quality: error against horizon, and a fan chart of one week."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gridrl.forecast.backtest import BacktestResult  # noqa: E402
from gridrl.forecast.errors import ForecastError  # noqa: E402
from gridrl.io import write_with  # noqa: E402

HOURS_PER_WEEK = 168
_MODEL_STYLE = {
    "lightgbm": {"color": "C0", "lw": 2.2},
    "seasonal_naive": {"color": "C1", "ls": "--"},
    "persistence": {"color": "C2", "ls": ":"},
    "climatology": {"color": "C4", "ls": "-."},
    "smart_persistence": {"color": "C3", "ls": "--"},
}


def plot_error_vs_horizon(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """MAE against horizon, one panel per signal, one line per model.

    ``table`` is :attr:`BacktestResult.table`; skipped models are those with no finite
    MAE. Written atomically.
    """
    signals = list(dict.fromkeys(table["signal"]))
    cols = min(3, len(signals))
    rows = int(np.ceil(len(signals) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, sig in zip(axes.ravel(), signals, strict=False):
        t = table[table["signal"] == sig]
        for model, g in t.groupby("model", sort=False):
            if not np.isfinite(g["mae"]).any():
                continue
            if model == "persistence" and g["mae"].max() > 3 * t[t["model"] == "lightgbm"][
                    "mae"].max():
                continue  # diurnal signals: persistence would flatten the other curves
            ax.plot(g["horizon_h"], g["mae"], label=model, **_MODEL_STYLE.get(model, {}))
        ax.set_title(sig)
        ax.set_xlabel("horizon (h)")
        ax.set_ylabel("MAE")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(signals):]:
        ax.axis("off")
    handles: dict[str, object] = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def plot_fan_week(result: BacktestResult, signal: str, site: str, path: str | Path,
                  start: str | pd.Timestamp | None = None,
                  horizons_h: tuple[int, ...] = (1, 24)) -> Path:
    """Fan chart of one week: truth, P50 and the outer band at fixed horizons.

    The week starts at the first evaluated issue time at or after ``start`` (default:
    the first one); each panel shows the forecasts of one horizon plotted at their
    target times.

    Raises
    ------
    ForecastError
        unknown signal, site or horizon, or no evaluated rows after ``start``.
    """
    if signal not in result.targets or site not in result.sites:
        raise ForecastError(f"no forecasts of {signal!r} at {site!r} in this backtest")
    k, n = result.targets.index(signal), result.sites.index(site)
    times = result.index[result.rows]
    first = 0
    if start is not None:
        ts = pd.Timestamp(start)
        first = int(np.searchsorted(times, ts.tz_localize("UTC") if ts.tz is None else ts))
    if first >= len(times):
        raise ForecastError(f"no evaluated issue times at or after {start}")
    sel = np.flatnonzero((times >= times[first]) &
                         (times < times[first] + pd.Timedelta(hours=HOURS_PER_WEEK)))
    fig, axes = plt.subplots(len(horizons_h), 1, figsize=(11, 2.8 * len(horizons_h)),
                             sharex=True, squeeze=False)
    q = result.quantiles
    for ax, h in zip(axes[:, 0], horizons_h, strict=True):
        if h not in result.horizons_h:
            raise ForecastError(f"horizon {h} h not in the backtest {result.horizons_h}")
        i = result.horizons_h.index(h)
        target = times[sel] + pd.Timedelta(hours=h)
        f = result.forecasts[sel, n, k, i]
        ax.fill_between(target, f[:, 0], f[:, -1], color="C0", alpha=0.25,
                        label=f"P{100 * q[0]:g}-P{100 * q[-1]:g}")
        ax.plot(target, f[:, q.index(0.5)], color="C0", lw=1.5, label="P50")
        ax.plot(target, result.truth[sel, n, k, i], color="k", lw=1.0, label="observed")
        ax.set_title(f"{site} {signal}, {h} h ahead")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    try:
        return write_with(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    finally:
        plt.close(fig)
