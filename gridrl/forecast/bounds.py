"""Physical bounds of forecasts and non-crossing quantiles.

Every forecast mode ends here. In order:

1. ``zero_at_night`` signals (PV) are set to 0 where the target hour is night at the
   site (:func:`gridrl.forecast.solar.night_mask`, pvlib solar position);
2. nonnegative signals are clipped at 0 (those the signal registry calls nonnegative,
   the configured ones, and any signal that is never negative in the data);
3. capped signals are clipped at their cap (headroom at the site's nominal feeder
   capacity: the largest ``feeder_capacity_kw`` in the data);
4. quantiles are sorted along the quantile axis (the rearrangement of Chernozhukov et
   al., 2010), which can only lower the pinball loss and keeps every bound because the
   bounds are the same for all quantiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridrl.forecast.config import BoundsConfig
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.solar import SiteLocation, night_mask


@dataclass(frozen=True)
class PhysicalBounds:
    """Bounds of the target signals.

    Attributes
    ----------
    lower, upper : numpy.ndarray
        ``[N, K]`` lower and upper limits in each signal's unit (``-inf``/``inf`` where
        none), or ``[T, N, K]`` limits per issue row (``running`` bounds).
    night : numpy.ndarray
        bool ``[T, N, K]``: True where target row ``r`` must be 0 (night, zero-at-night
        signal).
    """

    lower: np.ndarray
    upper: np.ndarray
    night: np.ndarray

    def apply(self, values: np.ndarray, rows: np.ndarray, horizons_h: Sequence[int]) -> np.ndarray:
        """Clip ``values`` ``[len(rows), N, K, H, Q]`` in place and sort its quantiles.

        ``rows`` are the issue rows; the target row of horizon ``h`` is
        ``min(row + h, T - 1)`` (targets past the data hold the last row).
        """
        t_len = self.night.shape[0]
        rows = np.asarray(rows, dtype=np.int64)
        h = np.asarray(horizons_h, dtype=np.int64)
        target = np.minimum(rows[:, None] + h[None, :], t_len - 1)
        if self.night.any():
            mask = self.night[target]  # [R, H, N, K]
            mask = np.moveaxis(mask, 1, 3)  # [R, N, K, H]
            values[mask] = 0.0
        lo = self.lower[rows] if self.lower.ndim == 3 else self.lower[None]  # [R|1, N, K]
        hi = self.upper[rows] if self.upper.ndim == 3 else self.upper[None]
        lo = lo[:, :, :, None, None].astype(values.dtype)
        hi = hi[:, :, :, None, None].astype(values.dtype)
        np.clip(values, lo, hi, out=values)
        values.sort(axis=-1)
        return values


def _registry_nonnegative(name: str) -> bool:
    from gridrl.data.signals import SignalError, signal_spec

    try:
        return signal_spec(name).nonnegative
    except SignalError:
        return False


def _extreme(col: np.ndarray, ufunc: np.ufunc, running: bool) -> np.ndarray:
    """Smallest/largest (``np.fmin``/``np.fmax``) value per site, NaN skipped: ``[N]``
    over all rows, or ``[T, N]`` over rows ``0..t``."""
    if running:
        return ufunc.accumulate(col, axis=0)
    return ufunc.reduce(col, axis=0)


def physical_bounds(
    data: np.ndarray,
    index: pd.DatetimeIndex,
    sites: Sequence[str],
    signals: Sequence[str],
    targets: Sequence[str],
    config: BoundsConfig,
    locations: Mapping[str, SiteLocation] | None = None,
    *,
    running: bool = False,
) -> PhysicalBounds:
    """Bounds of ``targets`` from the data ``[T, N, len(signals)]`` and the config.

    With ``running`` the data-derived bounds of issue row ``t`` come from rows ``0..t``
    only (a signal never negative *so far*, the largest capacity *so far*): what a
    forecaster knows at the issue time. Otherwise from the whole data.

    Raises
    ------
    ForecastError
        when a zero-at-night target has no site location to compute the night from.
    """
    n_sites = len(sites)
    k_targets = len(targets)
    shape = (len(index), n_sites, k_targets) if running else (n_sites, k_targets)
    lower = np.full(shape, -np.inf)
    upper = np.full(shape, np.inf)
    night = np.zeros((len(index), n_sites, k_targets), dtype=bool)
    pos = {s: i for i, s in enumerate(signals)}
    for k, name in enumerate(targets):
        col = np.where(np.isfinite(data[:, :, pos[name]]), data[:, :, pos[name]], np.nan)
        if name in config.nonnegative or _registry_nonnegative(name):
            lower[..., k] = 0.0
        elif config.nonnegative_from_data:
            lowest = _extreme(col, np.fmin, running)
            with np.errstate(invalid="ignore"):
                lower[..., k] = np.where(lowest >= 0, 0.0, -np.inf)
        cap = config.upper.get(name)
        if cap is not None and cap in pos:
            cap_col = data[:, :, pos[cap]]
            highest = _extreme(np.where(np.isfinite(cap_col), cap_col, np.nan), np.fmax,
                               running)
            upper[..., k] = np.where(np.isfinite(highest), highest, np.inf)
        if name in config.zero_at_night:
            for n, site in enumerate(sites):
                loc = (locations or {}).get(site)
                if loc is None:
                    raise ForecastError(
                        f"signal {name!r} at site {site!r}: zero at night needs the site's "
                        "latitude/longitude; pass locations={site: SiteLocation(...)}"
                    )
                night[:, n, k] = night_mask(index, loc)
    return PhysicalBounds(lower=lower, upper=upper, night=night)
