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
        none).
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
        h = np.asarray(horizons_h, dtype=np.int64)
        target = np.minimum(np.asarray(rows, dtype=np.int64)[:, None] + h[None, :], t_len - 1)
        if self.night.any():
            mask = self.night[target]  # [R, H, N, K]
            mask = np.moveaxis(mask, 1, 3)  # [R, N, K, H]
            values[mask] = 0.0
        lo = self.lower[None, :, :, None, None].astype(values.dtype)
        hi = self.upper[None, :, :, None, None].astype(values.dtype)
        np.clip(values, lo, hi, out=values)
        values.sort(axis=-1)
        return values


def _registry_nonnegative(name: str) -> bool:
    from gridrl.data.signals import SignalError, signal_spec

    try:
        return signal_spec(name).nonnegative
    except SignalError:
        return False


def physical_bounds(
    data: np.ndarray,
    index: pd.DatetimeIndex,
    sites: Sequence[str],
    signals: Sequence[str],
    targets: Sequence[str],
    config: BoundsConfig,
    locations: Mapping[str, SiteLocation] | None = None,
) -> PhysicalBounds:
    """Bounds of ``targets`` from the data ``[T, N, len(signals)]`` and the config.

    Raises
    ------
    ForecastError
        when a zero-at-night target has no site location to compute the night from.
    """
    n_sites = len(sites)
    k_targets = len(targets)
    lower = np.full((n_sites, k_targets), -np.inf)
    upper = np.full((n_sites, k_targets), np.inf)
    night = np.zeros((len(index), n_sites, k_targets), dtype=bool)
    pos = {s: i for i, s in enumerate(signals)}
    for k, name in enumerate(targets):
        col = data[:, :, pos[name]]
        with np.errstate(invalid="ignore"):
            never_negative = np.nanmin(np.where(np.isfinite(col), col, np.nan), axis=0) >= 0
        if name in config.nonnegative or _registry_nonnegative(name):
            lower[:, k] = 0.0
        elif config.nonnegative_from_data:
            lower[never_negative, k] = 0.0
        cap = config.upper.get(name)
        if cap is not None and cap in pos:
            cap_col = data[:, :, pos[cap]]
            finite = np.isfinite(cap_col).any(axis=0)
            upper[finite, k] = np.nanmax(np.where(np.isfinite(cap_col), cap_col, -np.inf)[
                :, finite], axis=0)
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
