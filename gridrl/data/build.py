"""Build the validated hourly signals of a whole scenario from the embedded sources.

``build_signals(scenario)`` returns a ``Signals`` table with, for every site (groups
expanded), the signals in ``SITE_SIGNALS`` over every hour of ``scenario.year`` in UTC.
It is deterministic: the same scenario (content hash) gives bit-identical values,
because every random draw comes from a stream keyed by (scenario seed, site name,
purpose).

Work shared between sites is done once: each TMY file is read once per year, the solar
geometry once per location; the per-site models are numpy over the whole year.

Results are cached on disk (parquet) under ``$GRIDRL_CACHE`` (default
``~/.cache/gridrl``) in ``signals/``, keyed by the scenario's content hash, the build
version, and the size and modification time of every CSV the scenario names; writes
are atomic. ``cache=False`` bypasses the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.signals import SignalError, Signals
from gridrl.data.sources.grid import grid_signals
from gridrl.data.sources.market import (
    carbon_model,
    csv_series,
    market_drivers,
    price_model,
    resolve_data_path,
)
from gridrl.data.sources.pv import pv_power_kw, solar_geometry
from gridrl.data.sources.weather import load_weather
from gridrl.data.sources.wind import wind_capacity_factor
from gridrl.data.sources.workload import workload_signals
from gridrl.io import default_cache_dir
from gridrl.scenario import Scenario, SiteConfig

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
    "price_per_mwh",
    "inference_gpus",
    "flexible_gpu_h",
)
# Bump when a source model changes, so cached tables from older code are not reused.
BUILD_VERSION = 1


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
    """

    congestion_hours: int
    outage_hours: int
    saturated_hours: int
    carbon_floored_hours: int


def build_site(
    site: SiteConfig, scenario: Scenario, base_dir: Path | None = None
) -> tuple[pd.DataFrame, SiteBuildStats]:
    """All ``SITE_SIGNALS`` of one site over the scenario year.

    Parameters
    ----------
    site : SiteConfig
    scenario : Scenario
        For ``seed`` and ``year``.
    base_dir : pathlib.Path, optional
        Folder that relative CSV paths in the site config are resolved against
        (the scenario file's folder).

    Returns
    -------
    frame : pandas.DataFrame
        Hourly UTC index named ``time``, one float64 column per signal.
    stats : SiteBuildStats
    """
    weather = load_weather(site.weather, scenario.year)
    index = weather.frame.index
    geo = solar_geometry(weather)
    wind_cf = wind_capacity_factor(site.wind, weather)
    grid = grid_signals(site.grid, weather, scenario.seed, site.name)
    drivers = market_drivers(
        weather,
        geo["ghi_clearsky"].to_numpy(),
        wind_cf,
        grid.background_load_kw,
        site.carbon.regional_clearsky_weight,
    )
    region = site.region or site.name  # sites of one region share the market noise
    carbon, carbon_det, floored = carbon_model(site.carbon, drivers, scenario.seed, region)
    if site.carbon.source == "csv":
        carbon = csv_series(
            site.carbon.file,
            site.carbon.column,
            site.carbon.time_column,
            "carbon_g_per_kwh",
            index,
            base_dir,
        )
        floored = 0
    if site.price.source == "csv":
        price = csv_series(
            site.price.file,
            site.price.column,
            site.price.time_column,
            "price_per_mwh",
            index,
            base_dir,
        )
    else:
        price = price_model(site.price, site.carbon, carbon_det, drivers, scenario.seed, region)
    work = workload_signals(site, weather, scenario.seed, base_dir)
    w = weather.frame
    frame = pd.DataFrame(
        {
            "pv_kw": pv_power_kw(site.pv, weather),
            "wind_kw": site.wind.capacity_kw * wind_cf,
            "temp_c": w["temp_c"].to_numpy(),
            "ghi_w_per_m2": w["ghi_w_per_m2"].to_numpy(),
            "wind_speed_m_per_s": w["wind_speed_m_per_s"].to_numpy(),
            "background_load_kw": grid.background_load_kw,
            "feeder_capacity_kw": grid.feeder_capacity_kw,
            "headroom_kw": grid.headroom_kw,
            "carbon_g_per_kwh": carbon,
            "price_per_mwh": price,
            "inference_gpus": work["inference_gpus"].to_numpy(),
            "flexible_gpu_h": work["flexible_gpu_h"].to_numpy(),
        },
        index=index,
        columns=list(SITE_SIGNALS),
        dtype=np.float64,
    )
    stats = SiteBuildStats(grid.congestion_hours, grid.outage_hours, grid.saturated_hours, floored)
    return frame, stats


def _csv_fingerprints(scenario: Scenario, base_dir: Path | None) -> list[Any]:
    """Size and mtime of every CSV the scenario names (part of the cache key)."""
    out = []
    for site in scenario.expanded_sites():
        files = [c.file for c in (site.carbon, site.price) if c.source == "csv" and c.file]
        if site.workload.source == "alibaba":
            files += [f for f in (site.workload.trace_file, site.workload.trace_nodes_file) if f]
        for file in files:
            path = resolve_data_path(file, base_dir)
            st = path.stat() if path.is_file() else None
            out.append([str(path), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def cache_path(scenario: Scenario, base_dir: Path | None = None) -> Path:
    """Where the built signals of ``scenario`` are cached."""
    import hashlib
    import json

    key = json.dumps(
        [scenario.content_hash(), BUILD_VERSION, _csv_fingerprints(scenario, base_dir)],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
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
        every signal in ``SITE_SIGNALS``; index every hour of ``scenario.year`` (UTC).
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
    frames, stats = [], {}
    for site in sites:
        frame, st = build_site(site, scenario, base)
        frames.append(frame)
        stats[site.name] = asdict(st)
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
            "sites": stats,
        }
    ]
    signals = Signals.from_frame(table, source=f"scenario {scenario.name}")
    if path is not None:
        signals.to_parquet(path)
    return signals
