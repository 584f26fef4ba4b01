"""Weather forecasts used as covariates of the target hour.

A weather forecast is stored by *target* row: ``leads[L][s, n]`` is the forecast of
row ``s`` at site ``n`` issued ``L`` hours earlier (at row ``s - L``). For an issue time
``t`` and a horizon ``h`` the freshest forecast that was available at ``t`` has the
smallest lead ``L >= h``; its issue row ``t + h - L`` is at or before ``t``, so nothing
after the issue time is used. Horizons beyond the longest lead get no covariate (NaN).

Two sources:

- real forecast products (CityLearn's 6/12/24 h irradiance forecasts) via
  :meth:`WeatherForecasts.from_issue_arrays`;
- forecasts simulated from an observed signal with an error that grows with the lead
  (:func:`simulate_weather`), for data sets that have none (the embedded TMY weather).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gridrl.forecast.config import WeatherCovariate
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.inputs import SignalTable

_HOURS_PER_DAY = 24


@dataclass(frozen=True, eq=False)
class WeatherForecasts:
    """Weather forecasts by covariate name: ``forecasts[name][lead_h] -> [T, N]`` float64,
    indexed by target row (NaN where no forecast exists)."""

    forecasts: Mapping[str, Mapping[int, np.ndarray]]

    @property
    def names(self) -> tuple[str, ...]:
        """Covariate names."""
        return tuple(self.forecasts)

    @classmethod
    def from_issue_arrays(
        cls, name: str, by_lead: Mapping[int, np.ndarray]
    ) -> WeatherForecasts:
        """Build from arrays indexed by *issue* row (``a[t]`` = forecast of ``t + L``
        made at ``t``), the way CityLearn's ``*_predicted_*`` columns are laid out.

        Parameters
        ----------
        by_lead
            lead (hours) -> ``[T, N]`` (or ``[T]`` for one site).
        """
        out: dict[int, np.ndarray] = {}
        for lead, arr in by_lead.items():
            a = np.asarray(arr, dtype=np.float64)
            a = a[:, None] if a.ndim == 1 else a
            shifted = np.full_like(a, np.nan)
            shifted[lead:] = a[:-lead]
            out[int(lead)] = shifted
        return cls({name: out})

    def merge(self, other: WeatherForecasts) -> WeatherForecasts:
        """Both sets of covariates (names must not repeat)."""
        dup = set(self.names) & set(other.names)
        if dup:
            raise ForecastError(f"weather covariates given twice: {sorted(dup)}")
        return WeatherForecasts({**self.forecasts, **other.forecasts})

    def at_target(self, name: str, t_idx: np.ndarray, h_idx: np.ndarray,
                  n_idx: np.ndarray) -> np.ndarray:
        """Freshest forecast of covariate ``name`` for target row ``t + h`` available at
        issue row ``t`` (NaN beyond the longest lead)."""
        if name not in self.forecasts:
            raise ForecastError(f"no weather forecast for covariate {name!r}; have {self.names}")
        leads = sorted(self.forecasts[name])
        out = np.full(t_idx.shape, np.nan)
        target = t_idx + h_idx
        done = np.zeros(t_idx.shape, dtype=bool)
        for lead in leads:
            sel = ~done & (h_idx <= lead)
            out[sel] = self.forecasts[name][lead][target[sel], n_idx[sel]]
            done |= sel
        return out

    def content_hash(self, names: Sequence[str] | None = None) -> str:
        """SHA-256 prefix of every array (cache keys), or of the covariates ``names``."""
        h = hashlib.sha256()
        for name in sorted(self.forecasts if names is None else set(names) & set(self.forecasts)):
            for lead in sorted(self.forecasts[name]):
                h.update(f"{name}:{lead}".encode())
                h.update(np.ascontiguousarray(self.forecasts[name][lead]).tobytes())
        return h.hexdigest()[:20]


def simulate_weather(
    table: SignalTable, covariates: Sequence[WeatherCovariate], seed: int = 0
) -> WeatherForecasts:
    """Forecasts of observed weather signals with lead-dependent, autocorrelated error.

    For each covariate, lead ``L`` and site, ``e[s]`` is an AR(1) series over target
    hours with standard deviation ``error_at_24h * sqrt(L / 24)``; the forecast is
    ``y[s] * (1 + e[s])`` (relative, clipped at 0 for nonnegative signals) or
    ``y[s] + e[s]`` (additive). Seeded per (seed, covariate name, lead).

    Raises
    ------
    ForecastError
        if a covariate is not a signal of the table.
    """
    out: dict[str, dict[int, np.ndarray]] = {}
    for cov in covariates:
        if cov.signal not in table.signals:
            raise ForecastError(
                f"weather covariate {cov.signal!r} is not among the signals {table.signals}"
            )
        y = table.column(cov.signal)
        nonneg = bool(np.nanmin(y) >= 0)
        out[cov.signal] = {}
        for lead in cov.leads_h:
            rng = np.random.default_rng([seed, zlib.crc32(cov.signal.encode()), lead])
            std = cov.error_at_24h * np.sqrt(lead / _HOURS_PER_DAY)
            e = _ar1(rng, y.shape, std, cov.autocorrelation)
            if cov.error == "relative":
                fc = y * (1.0 + e)
                if nonneg:
                    fc = np.maximum(fc, 0.0)
            else:
                fc = y + e
            out[cov.signal][int(lead)] = fc
    return WeatherForecasts(out)


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], std: float, phi: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 with marginal standard deviation ``std``."""
    from scipy.signal import lfilter

    innov = rng.standard_normal(shape) * std * np.sqrt(1.0 - phi**2)
    innov[0] = rng.standard_normal(shape[1:]) * std
    return lfilter([1.0], [1.0, -phi], innov, axis=0)
