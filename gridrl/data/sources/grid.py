"""Grid connection: background load, feeder capacity after events, and headroom.

Equations (hour ``t``, site parameters from ``GridConfig``; local standard time ``h``
is the hour of day, 0-23, at the hour's middle):

Background load (other consumers on the same feeder), temperature-driven::

    L_T(t)   = base + heating * max(T_heat - T(t), 0) + cooling * max(T(t) - T_cool, 0)
    shape(t) = (1 + A * cos(2 pi (h(t) + 0.5 - h_peak) / 24)) * (w if weekend else 1)
    L(t)     = L_T(t) * shape(t)                                              [kW]

with ``A = background_daily_amplitude_fraction``, ``h_peak =
background_peak_hour_local``, ``w = background_weekend_factor``; the slopes are kW per
degree C of departure from the comfort band (degree-hours).

Events, drawn per site from seeded streams (``EventProcess``): the number of events in
the year is Poisson with mean ``rate_per_year * hours / 8760``, start hours uniform,
durations geometric with mean ``mean_duration_h`` (at least one hour). Overlapping
events do not stack: the deepest one applies::

    congestion(t) = max depth_fraction of the congestion events covering t  (else 0)
    outage(t)     = 1 if an outage covers t (depth_fraction of outages is ignored:
                    an outage takes the whole connection)
    C(t)          = feeder_capacity_kw * (1 - congestion(t)) * (1 - outage(t))  [kW]

Headroom (import power the site may still draw)::

    H(t) = max(C(t) - L(t) - reserve_fraction * feeder_capacity_kw, 0)        [kW]

The ``max(., 0)`` is physics, not a repair: when the background load plus the reserve
exceed the capacity left by an event, the site may import nothing; those hours are
counted in ``GridSignals.saturated_hours`` and reported by ``gridrl signals``.
Headroom is 0 during every outage hour and never exceeds ``C(t)``.

Notice: each outage is planned work with probability ``planned_fraction`` (its own
seeded stream), announced ``planned_notice_h`` hours before it starts; the others come
without notice. Overlapping outages form one outage with the notice of the first.
``outage_view`` holds what the site knows of them each hour
(:func:`gridrl.data.sources.events.announced_view`: hours until the next announced
outage and its hours left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridrl.data.sources.events import HOURS_PER_YEAR, GridEvent, announced_view
from gridrl.data.sources.rng import stream_rng
from gridrl.data.sources.weather import SiteWeather, local_standard_time
from gridrl.scenario import EventProcess, GridConfig

HOURS_PER_DAY = 24.0
SATURDAY = 5  # pandas dayofweek: Monday = 0


@dataclass(frozen=True)
class GridSignals:
    """Hourly grid signals of one site (kW) and how often headroom was 0 by physics.

    Attributes
    ----------
    background_load_kw, feeder_capacity_kw, headroom_kw : numpy.ndarray
        Shape ``[T]``.
    congestion_hours, outage_hours : int
        Hours with a congestion event / an outage.
    saturated_hours : int
        Hours outside outages in which background load plus reserve reached the
        capacity left, so headroom is 0.
    outage_view : numpy.ndarray
        ``[T, 2]``: hours until the current or next announced outage starts, its hours
        left (module doc).
    """

    background_load_kw: np.ndarray
    feeder_capacity_kw: np.ndarray
    headroom_kw: np.ndarray
    congestion_hours: int
    outage_hours: int
    saturated_hours: int
    outage_view: np.ndarray



def daily_weekly_shape(
    weather: SiteWeather, amplitude: float, peak_hour_local: float, weekend_factor: float
) -> np.ndarray:
    """``(1 + amplitude cos(2 pi (h + 0.5 - peak) / 24)) * (weekend_factor on weekends)``.

    ``h`` is the local-standard hour of day of each UTC hour, evaluated at mid-hour;
    weekends are Saturday and Sunday in local standard time.
    """
    local = local_standard_time(weather.frame.index, weather.tz_offset_h)
    hour = local.hour.to_numpy() + 0.5
    daily = 1.0 + amplitude * np.cos(2.0 * np.pi * (hour - peak_hour_local) / HOURS_PER_DAY)
    weekend = local.dayofweek.to_numpy() >= SATURDAY
    return daily * np.where(weekend, weekend_factor, 1.0)


def temperature_load_kw(grid: GridConfig, temp_c: np.ndarray) -> np.ndarray:
    """``base + heating max(T_heat - T, 0) + cooling max(T - T_cool, 0)``, kW."""
    heating = grid.background_heating_kw_per_c * np.maximum(grid.heating_threshold_c - temp_c, 0)
    cooling = grid.background_cooling_kw_per_c * np.maximum(temp_c - grid.cooling_threshold_c, 0)
    return grid.background_base_kw + heating + cooling


def background_load_kw(grid: GridConfig, weather: SiteWeather) -> np.ndarray:
    """Background load on the feeder, kW (module equations ``L(t)``)."""
    shape = daily_weekly_shape(
        weather,
        grid.background_daily_amplitude_fraction,
        grid.background_peak_hour_local,
        grid.background_weekend_factor,
    )
    return temperature_load_kw(grid, weather.frame["temp_c"].to_numpy()) * shape


def event_depth(process: EventProcess, n_hours: int, rng: np.random.Generator) -> np.ndarray:
    """Depth of the events covering each hour (0 when none), shape ``[n_hours]``.

    Poisson number of events (mean ``rate_per_year * n_hours / 8760``), uniform start
    hours, geometric durations with mean ``mean_duration_h`` (>= 1 h); overlapping
    events take the largest depth. Events that run past the last hour are cut there.
    """
    depth = np.zeros(n_hours)
    depth[_covered(*draw_events(process, n_hours, rng), n_hours)] = process.depth_fraction
    return depth


def draw_events(process: EventProcess, n_hours: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` hour indices of the process's events (ends exclusive, cut at
    ``n_hours``), in drawing order."""
    if process.rate_per_year == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_events = rng.poisson(process.rate_per_year * n_hours / HOURS_PER_YEAR)
    starts = rng.integers(0, n_hours, size=n_events)
    durations = rng.geometric(min(1.0 / process.mean_duration_h, 1.0), size=n_events)
    return starts, np.minimum(starts + durations, n_hours)


def _covered(starts: np.ndarray, ends: np.ndarray, n_hours: int) -> np.ndarray:
    # Mark +1 at each start and -1 after each end: a running sum counts active events.
    active = np.zeros(n_hours + 1, dtype=np.int64)
    np.add.at(active, starts, 1)
    np.add.at(active, ends, -1)
    return np.cumsum(active[:-1]) > 0


def outage_events(process: EventProcess, n_hours: int, rng: np.random.Generator,
                  notice_rng: np.random.Generator) -> tuple[np.ndarray, list[GridEvent]]:
    """Hours in an outage ``[n_hours]`` and the outages as announced events (overlapping
    draws merged, a planned share with notice; module doc)."""
    starts, ends = draw_events(process, n_hours, rng)
    covered = _covered(starts, ends, n_hours)
    planned = notice_rng.random(len(starts)) < process.planned_fraction
    events: list[GridEvent] = []
    for k in np.argsort(starts, kind="stable"):
        s, e = int(starts[k]), int(ends[k])
        if events and s <= events[-1].end:  # merge: notice of the first
            last = events[-1]
            events[-1] = GridEvent(last.announced, last.start, max(last.end, e),
                                   end_known=last.end_known)
            continue
        notice = process.planned_notice_h if planned[k] else 0
        events.append(GridEvent(s - notice, s, e, end_known=bool(planned[k])))
    return covered, events


def grid_signals(
    grid: GridConfig, weather: SiteWeather, seed: int, site: str,
    load_kw: np.ndarray | None = None,
) -> GridSignals:
    """Background load, feeder capacity after events and headroom of one site, kW.

    Parameters
    ----------
    grid : GridConfig
        Feeder capacity (kW), reserve fraction, background-load model, event processes.
    weather : SiteWeather
        Hourly temperature (degC) and the local time zone.
    seed : int
        Scenario seed; with ``site`` it keys the congestion and outage streams.
    site : str
        Site name.
    load_kw : numpy.ndarray, optional
        A real background load (kW) in place of the temperature-driven model.

    Returns
    -------
    GridSignals
        See the module docstring for the equations.
    """
    n = len(weather.frame)
    load = background_load_kw(grid, weather) if load_kw is None else load_kw
    congestion = event_depth(grid.congestion, n, stream_rng(seed, site, "congestion"))
    outage, outages = outage_events(grid.outages, n, stream_rng(seed, site, "outage"),
                                    stream_rng(seed, site, "outage_notice"))
    capacity = grid.feeder_capacity_kw * (1.0 - congestion) * np.where(outage, 0.0, 1.0)
    raw = capacity - load - grid.reserve_fraction * grid.feeder_capacity_kw
    headroom = np.maximum(raw, 0.0)
    return GridSignals(
        background_load_kw=load,
        feeder_capacity_kw=capacity,
        headroom_kw=headroom,
        congestion_hours=int(np.count_nonzero(congestion > 0)),
        outage_hours=int(np.count_nonzero(outage)),
        saturated_hours=int(np.count_nonzero((raw <= 0) & ~outage)),
        outage_view=announced_view(outages, n)[:, :2],
    )
