"""Features of the direct multi-horizon models, vectorised over (issue time, site, horizon).

A training or prediction row is a triple ``(t, n, h)``: issue row ``t`` (data up to and
including row ``t``), site ``n``, horizon ``h`` (target row ``s = t + h``). Every
feature is known at the issue time:

- ``last``: the value at ``t``; ``lag{l}``: the value at ``t - l``; ``anomaly24``: the
  change of the value at ``t`` over 24 hours;
- ``mean{w}``, ``std{w}``: trailing mean and standard deviation of rows ``t-w+1..t``;
- ``seas{L}``: the value at the target's hour ``L`` hours earlier, the latest one known
  (row ``s - L ceil(h / L)``, at or before ``t``); ``profile``: the mean of the latest
  ``profile_days`` values at the target's hour of day;
- target-hour calendar (``hour``, ``weekday`` in local mean solar time when the site's
  longitude is known, UTC otherwise; no day of year: with one year of history trees
  cannot extrapolate to unseen months), solar elevation and clear-sky GHI of the target
  hour (pvlib);
- weather forecasts of the target hour issued at or before ``t``
  (:mod:`gridrl.forecast.weather`) and the observed weather at ``t``;
- ``h`` itself and the site as a categorical.

Values are expressed relative to the model's reference (:data:`REFERENCES`) and a
per-site scale, so one global model serves sites of different sizes. Features are
built by gathering from per-series arrays computed once with cumulative sums; no Python
loop runs over rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gridrl.forecast.config import ForecastConfig
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.inputs import SignalTable
from gridrl.forecast.solar import (
    SiteLocation,
    clearsky_array_w_per_m2,
    clearsky_ghi_w_per_m2,
    solar_elevation_deg,
)
from gridrl.forecast.weather import WeatherForecasts

HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7
DEG_PER_HOUR = 15.0  # the sun moves 15 degrees of longitude per hour
_SHORT_HOURS = 3  # window of the short clear-sky index feature (hours)

# How the target is expressed for the model:
#   level    z = y[s] / scale
#   last     z = (y[s] - y[t]) / scale      (change from the latest value)
#   seasonal z = (y[s] - y[s - 24 ceil(h/24)]) / scale  (change from the same hour on the
#            latest day known; the latest value where that is missing)
#   ramp     z = (y[s] - y[t] - (y[s - d] - y[t - d])) / scale, d = 24 ceil(h/24)  (change
#            from the latest value plus the change over the same hours of the latest day
#            known: the daily cycle's ramp; the latest value where that is missing)
#   clearsky z = y[s] / clear-sky power[s]   (clear-sky index, PV)
REFERENCES = ("level", "last", "seasonal", "ramp", "clearsky")


@dataclass(frozen=True, eq=False)
class TargetHourArrays:
    """Deterministic properties of every row as a target hour, ``[T, N]`` each."""

    hour: np.ndarray
    weekday: np.ndarray
    elevation_deg: np.ndarray
    clearsky_ghi_w_per_m2: np.ndarray
    clearsky_array_w_per_m2: np.ndarray


def target_hour_arrays(
    table: SignalTable, locations: Mapping[str, SiteLocation] | None
) -> TargetHourArrays:
    """Calendar and sun geometry of every row at every site (NaN sun without location)."""
    t_len, n_sites = len(table.index), len(table.sites)
    hours_utc = (table.index.asi8 // 3_600_000_000_000).astype(np.float64)  # hours since 1970
    hour = np.empty((t_len, n_sites))
    weekday = np.empty((t_len, n_sites))
    elev = np.full((t_len, n_sites), np.nan)
    cs_ghi = np.full((t_len, n_sites), np.nan)
    cs_arr = np.full((t_len, n_sites), np.nan)
    for n, site in enumerate(table.sites):
        loc = (locations or {}).get(site)
        offset_h = 0.0 if loc is None else loc.longitude_deg / DEG_PER_HOUR
        local = np.floor(hours_utc + offset_h)
        hour[:, n] = np.mod(local, HOURS_PER_DAY)
        # 1970-01-01 was a Thursday: shift so that Monday = 0.
        weekday[:, n] = np.mod(np.floor(local / HOURS_PER_DAY) + 3, DAYS_PER_WEEK)
        if loc is not None:
            elev[:, n] = solar_elevation_deg(table.index, loc)
            cs_ghi[:, n] = clearsky_ghi_w_per_m2(table.index, loc)
            cs_arr[:, n] = clearsky_array_w_per_m2(table.index, loc)
    return TargetHourArrays(hour, weekday, elev, cs_ghi, cs_arr)


def trailing_sums(y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum, sum of squares and count of finite values over rows ``t-w+1..t``.

    Each sum reads only the rows of its window (:func:`window_sums`), so values outside
    the window cannot change it, not even in the last bit.
    """
    finite = np.isfinite(y)
    v = np.where(finite, y, 0.0)
    return window_sums(v, w), window_sums(v * v, w), window_sums(finite.astype(np.float64), w)


def window_sums(a: np.ndarray, w: int) -> np.ndarray:
    """Sums of rows ``t-w+1..t`` of ``a`` (rows before 0 count as 0), in O(T).

    The rows are cut into blocks of ``w``; a window spans the tail of one block and the
    head of the next, summed by a backward and a forward cumulative sum inside each
    block (van Herk / Gil-Werman), which both stay inside the window.
    """
    t_len = len(a)
    n_blocks = -(-(t_len + w - 1) // w)
    padded = np.zeros((n_blocks * w,) + a.shape[1:])
    padded[w - 1: w - 1 + t_len] = a
    blocks = padded.reshape((n_blocks, w) + a.shape[1:])
    head = np.cumsum(blocks, axis=1).reshape(padded.shape)  # block start .. row
    tail = np.cumsum(blocks[:, ::-1], axis=1)[:, ::-1].reshape(padded.shape)  # row .. end
    start = np.arange(t_len)  # window of row t: padded rows t .. t + w - 1
    end = start + w - 1
    aligned = (start % w == 0).reshape((-1,) + (1,) * (a.ndim - 1))
    return np.where(aligned, head[end], tail[start] + head[end])


def _daily_profile(y: np.ndarray, days: int) -> np.ndarray:
    """Mean of ``y[s], y[s-24], ..., y[s-24(days-1)]`` ignoring NaN (NaN if none)."""
    acc = np.zeros_like(y)
    cnt = np.zeros_like(y)
    for d in range(days):  # a handful of whole-array shifts, not a row loop
        shifted = np.full_like(y, np.nan)
        lag = d * HOURS_PER_DAY
        shifted[lag:] = y[: len(y) - lag] if lag else y
        ok = np.isfinite(shifted)
        acc += np.where(ok, shifted, 0.0)
        cnt += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)


def required_history_h(config: ForecastConfig) -> int:
    """Rows of history before the issue time that the lag features reach back to."""
    f = config.features
    return max(
        max(f.lags_h, default=0),
        max(f.rolling_windows_h, default=1) - 1,
        max(f.seasonal_lags_h, default=1) - 1,
        HOURS_PER_DAY * f.profile_days - 1,
    )


class FeatureBuilder:
    """Builds the feature matrix of one target signal for any set of rows.

    Parameters
    ----------
    table
        the signals.
    target
        the signal forecast.
    config
        features, weather covariates and PV settings.
    reference
        one of :data:`REFERENCES`.
    hours
        :func:`target_hour_arrays` of the table (shared between targets).
    weather
        weather forecasts (required when ``config.weather_for`` lists covariates for
        ``target``).
    """

    def __init__(
        self,
        table: SignalTable,
        target: str,
        config: ForecastConfig,
        reference: str,
        hours: TargetHourArrays,
        weather: WeatherForecasts | None = None,
    ) -> None:
        if reference not in REFERENCES:
            raise ForecastError(f"unknown reference {reference!r}; expected {REFERENCES}")
        self.table = table
        self.target = target
        self.config = config
        self.reference = reference
        self.hours = hours
        self.weather = weather
        self.covariates = list(config.weather_for.get(target, []))
        if self.covariates and weather is None:
            raise ForecastError(f"target {target!r} uses weather covariates "
                                f"{self.covariates} but no weather forecasts were given")
        f = config.features
        self.y = table.column(target)
        self.pad = required_history_h(config) + 1
        nan_rows = np.full((self.pad, self.y.shape[1]), np.nan)
        self.ypad = np.concatenate([nan_rows, self.y])
        self.rolling = {}
        for w in f.rolling_windows_h:
            s1, s2, cnt = trailing_sums(self.y, w)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cnt > 0, s1 / np.maximum(cnt, 1), np.nan)
                var = np.where(cnt > 1, s2 / np.maximum(cnt, 1) - mean**2, np.nan)
            self.rolling[w] = (mean, np.sqrt(np.maximum(var, 0.0)))
        self.profile = np.concatenate([nan_rows, _daily_profile(self.y, f.profile_days)])
        if reference == "clearsky":
            if not np.isfinite(hours.clearsky_array_w_per_m2).all():
                missing = [s for n, s in enumerate(table.sites)
                           if not np.isfinite(hours.clearsky_array_w_per_m2[:, n]).all()]
                raise ForecastError(
                    f"signal {target!r}: the clear-sky model needs the location of site(s) "
                    f"{missing}"
                )
            cs = hours.clearsky_array_w_per_m2
            ys = np.where(np.isfinite(self.y), self.y, 0.0)
            y_short, _, _ = trailing_sums(ys, _SHORT_HOURS)
            cs_short, _, _ = trailing_sums(cs, _SHORT_HOURS)
            y_day, _, _ = trailing_sums(ys, HOURS_PER_DAY)
            cs_day, _, _ = trailing_sums(cs, HOURS_PER_DAY)
            # Ratios in kW per W/m2; divided by the site's clear-sky scale at build time.
            with np.errstate(invalid="ignore", divide="ignore"):
                self.ratio_short = np.where(cs_short > 0, y_short / cs_short, np.nan)
                self.ratio_day = np.where(cs_day > 0, y_day / cs_day, np.nan)
                self.cs_peak = np.nanmax(cs, axis=0)
                lit = cs > config.pv.min_clearsky_fraction * self.cs_peak
                ratio_now = np.where(lit, self.y / cs, np.nan)
            self.ratio_now = ratio_now
            self.ratio_pad = np.concatenate([nan_rows, ratio_now])
        self.names = self._names()
        self.categorical = ["site"] if "site" in self.names else []

    def _names(self) -> list[str]:
        f = self.config.features
        names = ["h"]
        if f.site_categorical and len(self.table.sites) > 1:
            names.append("site")
        if self.reference == "clearsky":
            # PV in clear-sky-index units only: levels change with the season, indices
            # do not (trees cannot extrapolate to summer levels from winter data).
            names += ["k_now", "k_short", "k_day"]
            names += [f"k_lag{lag}" for lag in f.lags_h]
            names += [f"k_seas{s}" for s in f.seasonal_lags_h]
            names.append("clearsky_power")
        else:
            names.append("last")
            if self.reference in ("seasonal", "ramp"):
                names.append("last_rel")
            names.append("anomaly24")
            names += [f"lag{lag}" for lag in f.lags_h]
            for w in f.rolling_windows_h:
                names += [f"mean{w}", f"std{w}"]
            names += [f"seas{s}" for s in f.seasonal_lags_h]
            names.append("profile")
        names += list(f.calendar)
        if f.solar:
            names += ["elevation_deg", "clearsky_ghi"]
        for c in self.covariates:
            names += [f"wx_{c}"]
            if c in self.table.signals:
                names.append(f"wx_{c}_now")
        return names

    def base(self, t_idx: np.ndarray, n_idx: np.ndarray, h_idx: np.ndarray) -> np.ndarray:
        """The reference value of rows ``(t, n, h)`` in the signal's unit (0 for ``level``
        and ``clearsky``); targets are modelled relative to it."""
        t, n, h = (np.asarray(a, dtype=np.int64) for a in (t_idx, n_idx, h_idx))
        if self.reference in ("level", "clearsky"):
            return np.zeros(t.shape)
        last = self.y[t, n]
        last = np.where(np.isfinite(last), last, 0.0)
        if self.reference == "last":
            return last
        back = HOURS_PER_DAY * -(-h // HOURS_PER_DAY)
        seas = self.ypad[self.pad + t + h - back, n]
        if self.reference == "ramp":
            seas = last + seas - self.ypad[self.pad + t - back, n]
        return np.where(np.isfinite(seas), seas, last)

    def index_base(self, t_idx: np.ndarray, n_idx: np.ndarray, h_idx: np.ndarray,
                   clearsky_scale: np.ndarray) -> np.ndarray:
        """Reference clear-sky index of rows ``(t, n, h)`` (reference ``clearsky``): the
        index at the target's hour on the latest day known (``pv.index_reference:
        seasonal``; the index of the last 24 hours where that hour was dark), or 0."""
        t, n, h = (np.asarray(a, dtype=np.int64) for a in (t_idx, n_idx, h_idx))
        if self.config.pv.index_reference == "none":
            return np.zeros(t.shape)
        k = clearsky_scale[n]
        back = HOURS_PER_DAY * -(-h // HOURS_PER_DAY)
        src = t + h - back
        seas = self.ratio_pad[self.pad + src, n] / k  # NaN where that hour was (nearly) dark
        day = self.ratio_day[t, n] / k
        out = np.where(np.isfinite(seas), seas, np.where(np.isfinite(day), day, 0.0))
        return np.clip(out, 0.0, self.config.pv.max_clearsky_index)

    def build(
        self,
        t_idx: np.ndarray,
        n_idx: np.ndarray,
        h_idx: np.ndarray,
        scale: np.ndarray,
        clearsky_scale: np.ndarray | None = None,
    ) -> np.ndarray:
        """Feature matrix ``[R, F]`` (float32) for rows ``(t, n, h)``.

        Parameters
        ----------
        t_idx, n_idx, h_idx
            int arrays of length ``R``; ``t + h`` must be a row of the table.
        scale
            ``[N]`` per-site scale of the target (its unit).
        clearsky_scale
            ``[N]`` kW of the signal per W/m2 of clear-sky array irradiance (reference
            ``clearsky`` only).
        """
        f = self.config.features
        t = np.asarray(t_idx, dtype=np.int64)
        n = np.asarray(n_idx, dtype=np.int64)
        h = np.asarray(h_idx, dtype=np.int64)
        s = t + h
        if (s >= len(self.table.index)).any() or (t < 0).any():
            raise ForecastError("feature rows reach beyond the data (t + h >= T)")
        sc = scale[n]
        p = self.pad
        cols: dict[str, np.ndarray] = {"h": h.astype(np.float64)}
        if "site" in self.names:
            cols["site"] = n.astype(np.float64)
        day_back = HOURS_PER_DAY * -(-h // HOURS_PER_DAY)
        if self.reference == "clearsky":
            k = clearsky_scale[n]
            cols["k_now"] = self.ratio_now[t, n] / k
            cols["k_short"] = self.ratio_short[t, n] / k
            cols["k_day"] = self.ratio_day[t, n] / k
            for lag in f.lags_h:
                cols[f"k_lag{lag}"] = self.ratio_pad[p + t - lag, n] / k
            for period in f.seasonal_lags_h:
                back = period * -(-h // period)  # period * ceil(h / period)
                cols[f"k_seas{period}"] = self.ratio_pad[p + s - back, n] / k
            cols["clearsky_power"] = self.hours.clearsky_array_w_per_m2[s, n] * k / sc
        else:
            last = self.y[t, n]
            base = self.base(t, n, h)
            cols["last"] = last / sc
            if "last_rel" in self.names:
                cols["last_rel"] = (last - base) / sc
            cols["anomaly24"] = (last - self.ypad[p + t - HOURS_PER_DAY, n]) / sc
            for lag in f.lags_h:
                cols[f"lag{lag}"] = (self.ypad[p + t - lag, n] - base) / sc
            for w in f.rolling_windows_h:
                mean, std = self.rolling[w]
                cols[f"mean{w}"] = (mean[t, n] - base) / sc
                cols[f"std{w}"] = std[t, n] / sc
            for period in f.seasonal_lags_h:
                back = period * -(-h // period)  # period * ceil(h / period)
                cols[f"seas{period}"] = (self.ypad[p + s - back, n] - base) / sc
            cols["profile"] = (self.profile[p + s - day_back, n] - base) / sc
        if "hour" in f.calendar:
            cols["hour"] = self.hours.hour[s, n]
        if "weekday" in f.calendar:
            cols["weekday"] = self.hours.weekday[s, n]
        if f.solar:
            cols["elevation_deg"] = self.hours.elevation_deg[s, n]
            cols["clearsky_ghi"] = self.hours.clearsky_ghi_w_per_m2[s, n]
        for c in self.covariates:
            cols[f"wx_{c}"] = self.weather.at_target(c, t, h, n)
            if c in self.table.signals:
                cols[f"wx_{c}_now"] = self.table.column(c)[t, n]
        out = np.empty((len(t), len(self.names)), dtype=np.float32)
        for j, name in enumerate(self.names):
            out[:, j] = cols[name]
        return out


def check_history(table: SignalTable, targets: Sequence[str], config: ForecastConfig,
                  horizon_h: int) -> None:
    """Every target has enough finite history for the lags plus the horizon.

    Raises
    ------
    ForecastError
        naming the signal and site whose history is too short.
    """
    need = required_history_h(config) + horizon_h + 1
    for name in targets:
        col = table.column(name)
        for n, site in enumerate(table.sites):
            finite = np.flatnonzero(np.isfinite(col[:, n]))
            span = 0 if finite.size == 0 else int(finite[-1] - finite[0] + 1)
            if span < need:
                raise ForecastError(
                    f"history too short for the lags: signal {name!r} at site {site!r} spans "
                    f"{span} hourly rows, the features need {required_history_h(config)} rows "
                    f"of history plus the {horizon_h} h horizon ({need} rows)"
                )
