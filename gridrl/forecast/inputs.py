"""The forecasting layer's view of the signals: one ``[T, N, K]`` float64 array.

Accepts a :class:`gridrl.data.signals.Signals` (its ``frame``: hourly UTC index named
``time``, columns ``(site, signal)``) or such a frame directly, and checks what the
forecasters rely on: a regular hourly tz-aware index and the target columns at every
site, not all NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gridrl.forecast.errors import ForecastError


@dataclass(frozen=True, eq=False)
class SignalTable:
    """Signals as arrays.

    Attributes
    ----------
    frame : pandas.DataFrame
        the original frame (columns ``(site, signal)``).
    data : numpy.ndarray
        float64 ``[T, N, K]`` (NaN where a site lacks a signal).
    index : pandas.DatetimeIndex
        hourly UTC.
    sites, signals : tuple of str
    """

    frame: pd.DataFrame
    data: np.ndarray
    index: pd.DatetimeIndex
    sites: tuple[str, ...]
    signals: tuple[str, ...]

    def column(self, signal: str) -> np.ndarray:
        """``[T, N]`` values of one signal at every site."""
        return self.data[:, :, self.signals.index(signal)]

    def has(self, site: str, signal: str) -> bool:
        """Whether ``site`` has a ``signal`` column."""
        return (site, signal) in self.frame.columns


def signal_table(signals: Any) -> SignalTable:
    """Turn a ``Signals`` (or its frame) into a :class:`SignalTable`.

    Raises
    ------
    ForecastError
        on a non-hourly, naive or irregular index, or flat columns.
    """
    frame = signals.frame if hasattr(signals, "frame") else signals
    if not isinstance(frame, pd.DataFrame):
        raise ForecastError(f"expected Signals or a DataFrame, got {type(signals).__name__}")
    if not isinstance(frame.columns, pd.MultiIndex) or frame.columns.nlevels != 2:
        raise ForecastError("expected columns as a 2-level MultiIndex (site, signal)")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ForecastError("expected a tz-aware DatetimeIndex (UTC) on the signals")
    if len(index) >= 2:
        steps = np.diff(index.asi8)
        bad = np.flatnonzero(steps != pd.Timedelta(hours=1).value)
        if bad.size:
            raise ForecastError(
                f"expected a regular hourly index; step at row {int(bad[0]) + 1} "
                f"({index[bad[0] + 1]}) is {pd.Timedelta(int(steps[bad[0]]))}"
            )
    sites = tuple(dict.fromkeys(str(s) for s in frame.columns.get_level_values(0)))
    names = tuple(dict.fromkeys(str(s) for s in frame.columns.get_level_values(1)))
    full = pd.MultiIndex.from_product([sites, names])
    arr = frame.reindex(columns=full).to_numpy(dtype=np.float64)
    data = arr.reshape(len(index), len(sites), len(names))
    return SignalTable(frame=frame, data=data, index=index.tz_convert("UTC"), sites=sites,
                       signals=names)


def check_targets(table: SignalTable, targets: Sequence[str], *, allow_nan: bool) -> None:
    """Every target exists at every site and is not all NaN (nor has NaN unless allowed).

    Raises
    ------
    ForecastError
        naming the signal, the site and (for NaN) the first bad row.
    """
    if len(set(targets)) != len(targets):
        raise ForecastError(f"targets are repeated: {list(targets)}")
    for name in targets:
        for n, site in enumerate(table.sites):
            if not table.has(site, name):
                raise ForecastError(f"target {name!r} is missing at site {site!r}")
            col = table.data[:, n, table.signals.index(name)]
            finite = np.isfinite(col)
            if not finite.any():
                raise ForecastError(f"target {name!r} at site {site!r} is all NaN")
            if not allow_nan and not finite.all():
                row = int(np.flatnonzero(~finite)[0])
                raise ForecastError(
                    f"target {name!r} at site {site!r} has a non-finite value at row {row} "
                    f"({table.index[row]}); fill or drop it before forecasting"
                )


def check_horizons(table: SignalTable, horizons_h: Sequence[int]) -> None:
    """Horizons are positive, increasing and shorter than the data.

    Raises
    ------
    ForecastError
        naming the horizon that is not valid.
    """
    h = list(horizons_h)
    if not h:
        raise ForecastError("expected at least one horizon")
    if any(int(x) != x or x < 1 for x in h):
        raise ForecastError(f"expected positive integer horizons in hours, got {h}")
    if sorted(set(h)) != h:
        raise ForecastError(f"expected strictly increasing horizons, got {h}")
    if h[-1] >= len(table.index):
        raise ForecastError(
            f"horizon {h[-1]} h is beyond the data: only {len(table.index)} hourly rows "
            f"({table.index[0]} .. {table.index[-1]})"
        )


def check_quantiles(quantiles: Sequence[float]) -> None:
    """Quantiles lie in (0, 1) and strictly increase.

    Raises
    ------
    ForecastError
    """
    q = list(quantiles)
    if not q or any(not 0.0 < x < 1.0 for x in q) or sorted(set(q)) != q:
        raise ForecastError(f"expected strictly increasing quantiles in (0, 1), got {q}")
