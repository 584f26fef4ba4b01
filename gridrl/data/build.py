"""Build the validated hourly signals of a whole scenario from its sources.

``build_signals(scenario)`` returns a ``Signals`` table with, for every site (groups
expanded), the signals in ``SITE_SIGNALS`` over every hour in UTC of the build years:
``scenario.year`` up to the last year of its periods (``build_years``; one year for
scenarios whose periods lie in ``year``). Sources are embedded models on pvlib's TMY
weather (a typical year repeats each year), CSV files, or the real hourly carbon,
prices and weather of the multiregion data set (``source: multiregion``; the loaders'
records are kept in the provenance, ``source_summary`` tabulates them). It is
deterministic: the same scenario (content hash) and files give bit-identical values,
because every random draw comes from a stream keyed by (scenario seed, site name,
purpose).

Work shared between sites is done once: each TMY file is read once per year, each
multiregion file once, the solar geometry once per location; the per-site models are
numpy over all hours.

Results are cached on disk (parquet) under ``$GRIDRL_CACHE`` (default
``~/.cache/gridrl``) in ``signals/``, keyed by the scenario's content hash, the build
version, and the size and modification time of every data file the scenario names;
writes are atomic. ``cache=False`` bypasses the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.config import json_hash
from gridrl.data.loaders.multiregion import (
    load_multiregion_carbon,
    load_multiregion_price,
    multiregion_files,
    standard_offset_h,
)
from gridrl.data.signals import SignalError, Signals
from gridrl.data.sources.events import (
    GridEvent,
    announced_view,
    drawn_dr_events,
    read_dr_events,
)
from gridrl.data.sources.grid import grid_signals
from gridrl.data.sources.market import (
    MarketDrivers,
    carbon_model,
    market_drivers,
    price_model,
    resolve_data_path,
)
from gridrl.data.sources.multiregion import multiregion_site_weather
from gridrl.data.sources.pv import pv_power_kw, solar_geometry
from gridrl.data.sources.rng import stream_rng
from gridrl.data.sources.series import read_series, series_files
from gridrl.data.sources.weather import SiteWeather, load_weather_years, year_index
from gridrl.data.sources.wind import wind_capacity_factor
from gridrl.data.sources.workload import workload_signals
from gridrl.io import default_cache_dir
from gridrl.scenario import CarbonConfig, PriceConfig, Scenario, SeriesSource, SiteConfig

SITE_SIGNALS: tuple[str, ...] = (
    "pv_kw",
    "wind_kw",
    "temp_c",
    "ghi_w_per_m2",
    "wind_speed_m_per_s",
    "background_load_kw",
    "feeder_capacity_kw",
    "headroom_kw",
    "carbon_g_per_kwh",
    "carbon_estimated_fraction",
    "price_per_mwh",
    "inference_gpus",
    "flexible_gpu_h",
    "dr_starts_in_h",
    "dr_remaining_h",
    "dr_limit_kw",
    "outage_starts_in_h",
    "outage_remaining_h",
)
# Bump when a source model changes, so cached tables from older code are not reused.
BUILD_VERSION = 4


@dataclass(frozen=True)
class SiteBuildStats:
    """Counts a reader of the signals should know about (not errors).

    Attributes
    ----------
    congestion_hours, outage_hours : int
        Hours with a congestion event / an outage.
    saturated_hours : int
        Hours outside outages with headroom 0 because background load plus reserve
        reached the capacity left (physics; see ``sources.grid``).
    carbon_floored_hours : int
        Hours in which the carbon model's noise reached ``min_g_per_kwh``.
    dr_events_dropped : int
        Demand-response events drawn but not kept: overlapping an earlier event (or one
        of the file's), or ending after the last hour.
    """

    congestion_hours: int
    outage_hours: int
    saturated_hours: int
    carbon_floored_hours: int
    dr_events_dropped: int = 0


def build_years(scenario: Scenario) -> list[int]:
    """Calendar years the signals cover: ``scenario.year`` to the last year of its periods."""
    return list(range(scenario.year, max(scenario.year, scenario.periods.last_year()) + 1))


def build_index(scenario: Scenario) -> pd.DatetimeIndex:
    """Every UTC hour of ``build_years(scenario)``, start labels, named ``time``."""
    years = build_years(scenario)
    return year_index(years[0]).append([year_index(y) for y in years[1:]])


def site_weather(
    site: SiteConfig, scenario: Scenario
) -> tuple[SiteWeather, dict[str, Any] | None]:
    """The weather of a site over the build years, and the loader's report (real data).

    A site ``location`` replaces the weather file's coordinates and time zone.
    """
    if site.weather.source == "multiregion":
        weather, report = multiregion_site_weather(site.weather, build_index(scenario))
    else:
        weather, report = load_weather_years(site.weather, build_years(scenario)), None
    loc = site.location
    if loc is not None:
        weather = replace(
            weather, latitude_deg=loc.latitude_deg, longitude_deg=loc.longitude_deg,
            altitude_m=loc.altitude_m, tz_offset_h=standard_offset_h(loc.tz, scenario.year),
            source=f"{weather.source} @ {loc.latitude_deg},{loc.longitude_deg}",
        )
    return weather, report


def csv_source(cfg: CarbonConfig | PriceConfig) -> SeriesSource:
    """The series a carbon or price ``source: csv`` names."""
    return SeriesSource(
        file=cfg.file, column=cfg.column, time_column=cfg.time_column,
        assume_tz=cfg.assume_tz, resample=cfg.resample, fill=cfg.fill,
        max_fill_h=cfg.max_fill_h,
    )


def site_series(
    site: SiteConfig, index: pd.DatetimeIndex, base_dir: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every signal of a site that comes from a real series, and what each read did.

    Carbon and price ``source: csv`` are series too.
    """
    sources = dict(site.series)
    for signal, cfg in (("carbon_g_per_kwh", site.carbon), ("price_per_mwh", site.price)):
        if cfg.source == "csv":
            sources[signal] = csv_source(cfg)
    values, records = {}, {}
    for signal, src in sources.items():
        values[signal], records[signal] = read_series(src, signal, index, base_dir)
    return values, records


def _with_temperature(weather: SiteWeather, temp_c: np.ndarray | None) -> SiteWeather:
    """The weather with a real temperature series in place of the file's."""
    if temp_c is None:
        return weather
    return replace(weather, frame=weather.frame.assign(temp_c=temp_c))


def _grid(
    site: SiteConfig, weather: SiteWeather, seed: int, real: dict[str, np.ndarray]
) -> Any:
    """Grid signals; a real feeder load replaces the model, a real headroom is kept as
    is with the feeder load it leaves (capacity after events minus reserve minus
    headroom; a headroom above that is an error)."""
    grid = grid_signals(site.grid, weather, seed, site.name, real.get("background_load_kw"))
    if "headroom_kw" not in real:
        return grid
    headroom = real["headroom_kw"]
    load = grid.feeder_capacity_kw - site.grid.reserve_fraction * site.grid.feeder_capacity_kw
    load = load - headroom
    if (load < 0).any():
        r = int(np.flatnonzero(load < 0)[0])
        raise SignalError(
            f"site {site.name!r}", f"series headroom_kw {headroom[r]:.4g} kW exceeds the "
            "feeder capacity left after events and reserve (grid.feeder_capacity_kw, "
            "reserve_fraction)", column="headroom_kw", timestamp=weather.frame.index[r],
        )
    return replace(grid, background_load_kw=load, headroom_kw=headroom,
                   saturated_hours=int(np.count_nonzero(headroom <= 0)))


def _real_series(
    loaded: Signals, zone: str, signal: str, index: pd.DatetimeIndex, what: str
) -> np.ndarray:
    """One zone's column of a multiregion loader on the build index (all hours needed)."""
    series = loaded.frame[(zone, signal)]
    present = index.isin(series.index)
    if not present.all():
        raise SignalError(
            loaded.source,
            f"{what} years do not cover the scenario's hours (first missing "
            f"{index[~present][0]})",
            column=signal,
        )
    return series.reindex(index).to_numpy(dtype=np.float64)


def multiregion_carbon(
    carbon: CarbonConfig, index: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Carbon intensity (``basis``) and the estimated-hour flag of a zone on ``index``."""
    loaded = load_multiregion_carbon(
        carbon.zone, carbon.years, resample=carbon.resample, fill=carbon.fill,
        max_fill_h=carbon.max_fill_h,
    )
    value = _real_series(loaded, carbon.zone, f"carbon_{carbon.basis}_g_per_kwh", index, "carbon")
    flag = _real_series(loaded, carbon.zone, "carbon_estimated_fraction", index, "carbon")
    report = {**loaded.provenance[-1], "basis": carbon.basis}
    report["estimated_share"] = float(flag.mean())  # over the scenario's hours
    return value, flag, report


def multiregion_price(
    price: PriceConfig, index: pd.DatetimeIndex
) -> tuple[np.ndarray, dict[str, Any]]:
    """Market price of a zone on ``index``, USD/MWh times ``currency_per_usd``."""
    loaded = load_multiregion_price(
        price.zone, price.years, resample=price.resample, fill=price.fill,
        max_fill_h=price.max_fill_h,
    )
    value = _real_series(loaded, price.zone, "price_per_mwh", index, "price")
    report = {**loaded.provenance[-1], "currency_per_usd": price.currency_per_usd}
    return value * price.currency_per_usd, report


def _carbon_and_price(
    site: SiteConfig, scenario: Scenario, index: pd.DatetimeIndex, drivers: MarketDrivers,
    reports: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Carbon, its estimated-hour flag, price and the carbon model's floored hours."""
    region = site.region or site.name  # sites of one region share the market noise
    carbon, carbon_det, floored = carbon_model(site.carbon, drivers, scenario.seed, region)
    estimated = np.zeros(len(index))  # model and CSV carbon: no hour marked estimated
    if site.carbon.source == "multiregion":
        carbon, estimated, reports["carbon"] = multiregion_carbon(site.carbon, index)
        floored = 0
    if site.price.source == "multiregion":
        price, reports["price"] = multiregion_price(site.price, index)
    else:
        price = price_model(site.price, site.carbon, carbon_det, drivers, scenario.seed, region)
    return carbon, estimated, price, floored


def build_site(
    site: SiteConfig, scenario: Scenario, base_dir: Path | None = None
) -> tuple[pd.DataFrame, SiteBuildStats, dict[str, Any]]:
    """All ``SITE_SIGNALS`` of one site over the build years (``build_years``).

    Parameters
    ----------
    site : SiteConfig
    scenario : Scenario
        For ``seed``, ``year`` and the periods.
    base_dir : pathlib.Path, optional
        Folder that relative CSV paths in the site config are resolved against
        (the scenario file's folder).

    Returns
    -------
    frame : pandas.DataFrame
        Hourly UTC index named ``time``, one float64 column per signal.
    stats : SiteBuildStats
    reports : dict
        The real-data loaders' records by source (``weather``, ``carbon``, ``price``);
        empty for embedded sources.
    """
    weather, weather_report = site_weather(site, scenario)
    reports: dict[str, Any] = {"weather": weather_report} if weather_report else {}
    index = weather.frame.index
    real, series_reports = site_series(site, index, base_dir)
    if series_reports:
        reports["series"] = series_reports
    weather = _with_temperature(weather, real.get("temp_c"))
    geo = solar_geometry(weather)
    wind_cf = wind_capacity_factor(site.wind, weather)
    grid = _grid(site, weather, scenario.seed, real)
    drivers = market_drivers(weather, geo["ghi_clearsky"].to_numpy(), wind_cf,
                             grid.background_load_kw, site.carbon.regional_clearsky_weight)
    carbon, estimated, price, floored = _carbon_and_price(
        site, scenario, index, drivers, reports
    )
    if "carbon_g_per_kwh" in real:
        carbon, floored = real["carbon_g_per_kwh"], 0
    price = real.get("price_per_mwh", price)
    work = workload_signals(site, weather, scenario.seed, base_dir, scenario.periods)
    events, dropped = dr_events(site, weather, scenario.seed, base_dir)
    dr = announced_view(events, len(index))
    w = weather.frame
    frame = pd.DataFrame(
        {
            "pv_kw": real["pv_kw"] if "pv_kw" in real else pv_power_kw(site.pv, weather),
            "wind_kw": real.get("wind_kw", site.wind.capacity_kw * wind_cf),
            "temp_c": w["temp_c"].to_numpy(),
            "ghi_w_per_m2": w["ghi_w_per_m2"].to_numpy(),
            "wind_speed_m_per_s": w["wind_speed_m_per_s"].to_numpy(),
            "background_load_kw": grid.background_load_kw,
            "feeder_capacity_kw": grid.feeder_capacity_kw,
            "headroom_kw": grid.headroom_kw,
            "carbon_g_per_kwh": carbon,
            "carbon_estimated_fraction": estimated,
            "price_per_mwh": price,
            "inference_gpus": real.get("inference_gpus", work["inference_gpus"].to_numpy()),
            "flexible_gpu_h": real.get("flexible_gpu_h", work["flexible_gpu_h"].to_numpy()),
            "dr_starts_in_h": dr[:, 0],
            "dr_remaining_h": dr[:, 1],
            "dr_limit_kw": dr[:, 2],
            "outage_starts_in_h": grid.outage_view[:, 0],
            "outage_remaining_h": grid.outage_view[:, 1],
        },
        index=index,
        columns=list(SITE_SIGNALS),
        dtype=np.float64,
    )
    stats = SiteBuildStats(grid.congestion_hours, grid.outage_hours, grid.saturated_hours, floored,
                           dropped)
    return frame, stats, reports


def dr_events(site: SiteConfig, weather: SiteWeather, seed: int,
              base_dir: Path | None) -> tuple[list[GridEvent], int]:
    """A site's demand-response events: those of its file, and the seeded process's
    events that overlap none of them (``gridrl.data.sources.events``); and how many
    drawn events were dropped (overlapping, past the data's end)."""
    cfg = site.demand_response
    index = weather.frame.index
    from_file = [] if cfg.file is None else read_dr_events(
        resolve_data_path(cfg.file, base_dir), index)
    drawn = drawn_dr_events(cfg, index, weather.tz_offset_h,
                            stream_rng(seed, site.name, "demand_response"))
    kept = [d for d in drawn.events
            if all(d.end <= f.start or d.start >= f.end for f in from_file)]
    dropped = drawn.dropped + len(drawn.events) - len(kept)
    return sorted(from_file + kept, key=lambda e: e.start), dropped


def _csv_fingerprints(scenario: Scenario, base_dir: Path | None) -> list[Any]:
    """Size and mtime of every data file the scenario names (part of the cache key)."""
    out = []
    for site in scenario.expanded_sites():
        files = [c.file for c in (site.carbon, site.price) if c.source == "csv" and c.file]
        files += [site.demand_response.file] if site.demand_response.file else []
        if site.workload.source == "alibaba":
            files += [f for f in (site.workload.trace_file, site.workload.trace_nodes_file) if f]
        paths = [resolve_data_path(file, base_dir) for file in files]
        for src in site.series.values():
            paths += series_files(src, base_dir)
        for path in paths:
            st = path.stat() if path.is_file() else None
            out.append([str(path), st.st_size if st else None, st.st_mtime_ns if st else None])
        out += _multiregion_fingerprints(site)
    return out


def _multiregion_fingerprints(site: SiteConfig) -> list[Any]:
    """Size and mtime of every multiregion file a site reads (part of the cache key)."""
    out = []
    for kind, cfg in (("weather", site.weather), ("carbon", site.carbon), ("price", site.price)):
        if cfg.source == "multiregion":
            for path in multiregion_files(kind, cfg.zone, cfg.years):
                st = path.stat()
                out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


def cache_path(scenario: Scenario, base_dir: Path | None = None) -> Path:
    """Where the built signals of ``scenario`` are cached."""
    digest = json_hash(
        [scenario.content_hash(), BUILD_VERSION, _csv_fingerprints(scenario, base_dir)]
    )
    return default_cache_dir() / "signals" / f"{scenario.name}-{digest}.parquet"


def build_stats(signals: Signals) -> dict[str, SiteBuildStats]:
    """The per-site build statistics recorded in a built table's provenance."""
    for record in reversed(signals.provenance):
        if record.get("step") == "build_signals":
            return {k: SiteBuildStats(**v) for k, v in record["sites"].items()}
    return {}


def build_signals(
    scenario: Scenario,
    *,
    base_dir: str | Path | None = None,
    cache: bool = True,
    on_site: Callable[[str], None] | None = None,
) -> Signals:
    """Validated hourly signals of every site of a scenario (see the module notes).

    Parameters
    ----------
    scenario : Scenario
        Validated scenario (``load_scenario``).
    base_dir : str or pathlib.Path, optional
        Folder for relative CSV paths named by the scenario (its file's folder).
    cache : bool
        Read from / write to the on-disk cache.
    on_site : callable, optional
        Called with each site name after it is built (progress display).

    Returns
    -------
    Signals
        Columns ``(site, signal)`` for every site in ``scenario.expanded_sites()`` and
        every signal in ``SITE_SIGNALS``; index every hour of ``build_years(scenario)`` (UTC).
        ``provenance`` holds a ``build_signals`` record with the scenario hash and
        per-site ``SiteBuildStats``.

    Raises
    ------
    SignalError
        Bad source file or an invalid value (the message names the site and signal).
    """
    base = Path(base_dir) if base_dir is not None else None
    path = cache_path(scenario, base) if cache else None
    if path is not None and path.is_file():
        try:
            return Signals.from_parquet(path)
        except (SignalError, OSError, ValueError):
            pass  # unreadable or stale cache entry: rebuild and overwrite it below
    sites = scenario.expanded_sites()
    frames, stats, reports = [], {}, {}
    for site in sites:
        frame, st, rep = build_site(site, scenario, base)
        frames.append(frame)
        stats[site.name] = asdict(st)
        if rep:
            reports[site.name] = rep
        if on_site is not None:
            on_site(site.name)
    table = pd.concat(frames, axis=1, keys=[s.name for s in sites], names=["site", "signal"])
    table.index.name = "time"
    table.attrs["provenance"] = [
        {
            "step": "build_signals",
            "scenario": scenario.name,
            "content_hash": scenario.content_hash(),
            "build_version": BUILD_VERSION,
            "years": build_years(scenario),
            "sites": stats,
            "sources": reports,
        }
    ]
    signals = Signals.from_frame(table, source=f"scenario {scenario.name}")
    if path is not None:
        signals.to_parquet(path)
    return signals


def source_summary(signals: Signals) -> pd.DataFrame:
    """One row per site that reads real multi-year data: what its loaders did.

    Columns: ``zone``, ``utc_offsets_h`` (the fixed offsets of the weather labels),
    ``temp_peak_lag_h`` (range over files of the diurnal temperature peak after solar
    noon: the offset check), ``dst_change_days``, ``dst_hours_fixed`` (hours whose
    label is off the civil clock, placed by the fixed offset), ``edge_hours_filled``,
    ``carbon_basis``, ``carbon_estimated_share`` (over the signals' hours) and
    ``negative_price_hours`` (over the files' years). Empty without such sites.
    """
    record = next(
        (r for r in reversed(signals.provenance) if r.get("step") == "build_signals"), {}
    )
    rows = {}
    for site, rep in record.get("sources", {}).items():
        if not {"weather", "carbon", "price"} & set(rep):
            continue  # real series only: their records are under "series"
        weather, carbon, price = rep.get("weather", {}), rep.get("carbon", {}), rep.get("price", {})
        files = weather.get("files", [])
        lags = [f["temperature_peak_after_solar_noon_h"] for f in files]
        rows[site] = {
            "zone": weather.get("zone") or carbon.get("zone") or price.get("zone"),
            "utc_offsets_h": sorted({f["utc_offset_h"] for f in files}),
            "temp_peak_lag_h": f"{min(lags):.1f}-{max(lags):.1f}" if lags else None,
            "dst_change_days": sum(len(f["dst_change_days"]) for f in files),
            "dst_hours_fixed": weather.get("dst_hours_fixed"),
            "edge_hours_filled": weather.get("edge_hours_filled"),
            "carbon_basis": carbon.get("basis"),
            "carbon_estimated_share": carbon.get("estimated_share"),
            "negative_price_hours": price.get("negative_hours"),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("site")


def series_summary(signals: Signals) -> pd.DataFrame:
    """One row per (site, signal) read from a real series (``sites[i].series``, carbon
    and price ``source: csv``): file, columns, scale, the steps applied (time form or
    zone, resampling and filling with their method), cells filled and whether the
    series was mapped as a typical year. Empty without such signals."""
    record = next(
        (r for r in reversed(signals.provenance) if r.get("step") == "build_signals"), {}
    )
    rows = []
    for site, rep in record.get("sources", {}).items():
        for signal, s in rep.get("series", {}).items():
            steps = [p["step"] + (f" {p['method']}" if "method" in p else "")
                     for p in s["provenance"]]
            filled = sum(n for p in s["provenance"] for n in p.get("cells_filled", {}).values())
            rows.append({
                "site": site, "signal": signal, "file": Path(s["file"]).name,
                "columns": "+".join(s["columns"]),
                "scale": s["scale"], "steps": ", ".join(steps) or "-",
                "cells_filled": filled, "typical_year": s["typical_year"],
            })
    return pd.DataFrame(rows).set_index(["site", "signal"]) if rows else pd.DataFrame()
