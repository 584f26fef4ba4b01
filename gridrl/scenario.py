"""Scenario configuration: sites, data sources, workload, grid, reward weights.

A scenario is one YAML file in ``envs/``. It is validated by pydantic at load time;
every error names the YAML path of the offending key (``sites[1].battery.power_kw``).
Every number the simulation, the data sources or the environment use lives here
(or in a file the scenario names), never as a constant in code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gridrl.config import (
    Count,
    drop_unused,
    format_validation_errors,
    json_hash,
    read_yaml_mapping,
)
from gridrl.errors import GridrlError

NonNeg = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ScenarioError(GridrlError, ValueError):
    """A scenario file is missing, unreadable or invalid; the message names the key path."""


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sources


class MultiregionKeys(StrictModel):
    """Keys of ``source: multiregion``: one zone of a real multi-year data set.

    ``zone`` (``US-CAL-CISO``, ``AU-VIC``, ...) and ``years: [first, last]`` (inclusive)
    pick the files of data set ``multiregion_2021_2024`` (found by name through
    ``$GRIDRL_DATA_DIR``, ``gridrl.data.datasets``).
    Nothing is resampled or filled unless asked: ``resample`` converts a non-hourly
    step, ``fill: interpolate`` fills empty cells (runs up to ``max_fill_h`` hours);
    both are recorded in the signals' provenance. They apply to ``source: csv`` too.
    """

    zone: str | None = None
    years: tuple[int, int] | None = None
    resample: Literal["mean", "sum", "interpolate"] | None = None
    fill: Literal["interpolate"] | None = None
    max_fill_h: Annotated[int, Field(gt=0)] | None = None

    def _check_multiregion(self, source: str) -> None:
        if source != "multiregion":
            return
        if self.zone is None or self.years is None:
            raise ValueError("source: multiregion needs zone and years: [first, last]")
        if self.years[0] > self.years[1]:
            raise ValueError(f"expected years [first, last] with first <= last, got {self.years}")


SeriesSignal = Literal[
    "pv_kw", "wind_kw", "temp_c", "background_load_kw", "headroom_kw", "carbon_g_per_kwh",
    "price_per_mwh", "inference_gpus", "flexible_gpu_h",
]
# Data sets read through the built-in ``source: multiregion`` keys, not as a series.
MULTIREGION_DATASET = "multiregion_2021_2024"
# ``format: llm_requests``: the one signal it gives, its required keys, the keys of the
# time-series form it refuses (the request log has its own columns and times).
LLM_REQUESTS_SIGNAL = "inference_gpus"
LLM_REQUESTS_KEYS = ("gpu_s_per_1k_context_tokens", "gpu_s_per_1k_generated_tokens")
LLM_REQUESTS_REFUSED = (
    "column", "time_column", "time_format", "time_origin", "resample", "fill", "max_fill_h",
)


class SeriesSource(StrictModel):
    """A real hourly series in place of a built-in model (``sites[i].series.<signal>``).

    The series is read from ``file`` (CSV, or parquet by its ``.parquet`` suffix) or
    from a named data set (``dataset``, found through ``$GRIDRL_DATA_DIR``;
    ``entsoe_2020``, ``eia930_2022`` and ``citylearn_2022`` go through their loaders,
    any other registered set is read as a plain file inside its folder). ``column``
    names the raw column, or a list of columns that are summed (onshore + offshore
    wind); for ``citylearn_2022`` each is ``<building>/<signal>`` of its loader
    (``Building_1/load_kw``). Values are multiplied by ``scale`` (unit conversion or the
    site's share of a regional fleet: 1000 turns MW into kW).

    Time: ``time_column`` (default the first column) holds ISO timestamps with or
    without offset (naive ones need ``assume_tz``), epoch seconds (``time_format:
    epoch_s``) or whole hours from ``time_origin`` (``time_format: offset_h``).
    ``resample`` converts a non-hourly step, ``fill: interpolate`` fills empty cells
    (runs up to ``max_fill_h`` hours); ``typical_year`` maps a one-year series onto
    every build year by UTC month, day and hour, as the TMY files are (29 February
    repeats 28 February); ``repeat: day | week`` maps a shorter one by UTC hour of the
    day (or weekday and hour), each taking the mean of the series' values at it. Every
    choice is recorded in the signals' provenance.

    ``format: llm_requests`` (``inference_gpus`` only) reads a request log in the Azure
    LLM inference trace format (``TIMESTAMP,ContextTokens,GeneratedTokens``) through
    ``gridrl.data.loaders.demand.load_llm_requests``: GPU seconds per thousand tokens
    (``gpu_s_per_1k_context_tokens``, ``gpu_s_per_1k_generated_tokens``) and the log's
    zone (``assume_tz``) are required; the columns and the time form are the format's,
    so ``column``, the time keys, ``resample`` and ``fill`` are refused.
    """

    format: Literal["timeseries", "llm_requests"] = "timeseries"
    file: str | None = None
    dataset: str | None = None
    column: str | list[str] | None = None
    time_column: str | None = None
    time_format: Literal["iso", "epoch_s", "offset_h"] = "iso"
    time_origin: str | None = None
    assume_tz: str | None = None
    scale: float = 1.0
    resample: Literal["mean", "sum", "interpolate"] | None = None
    fill: Literal["interpolate"] | None = None
    max_fill_h: Annotated[int, Field(gt=0)] | None = None
    typical_year: bool = False
    repeat: Literal["day", "week"] | None = None
    gpu_s_per_1k_context_tokens: NonNeg | None = None
    gpu_s_per_1k_generated_tokens: NonNeg | None = None

    @model_validator(mode="after")
    def _series(self) -> SeriesSource:
        if self.dataset == MULTIREGION_DATASET:
            raise ValueError(
                f"data set {MULTIREGION_DATASET} is read by source: multiregion of "
                "weather, carbon and price (zone, years), not as a series"
            )
        if self.file is None and self.dataset != "citylearn_2022":
            raise ValueError("expected file (a path, or a file of the named dataset)")
        if self.typical_year and self.repeat is not None:
            raise ValueError("typical_year and repeat: give one way to map the series")
        if self.format == "llm_requests":
            self._llm_requests_keys()
        else:
            self._timeseries_keys()
        return self

    def _timeseries_keys(self) -> None:
        token_keys = sorted(set(LLM_REQUESTS_KEYS) & self.model_fields_set)
        if token_keys:
            raise ValueError(f"{', '.join(token_keys)}: only for format: llm_requests")
        if (self.time_format == "offset_h") != (self.time_origin is not None):
            raise ValueError("time_format: offset_h needs time_origin, and only it")
        if not self.columns:
            raise ValueError("expected column: the raw column, or a list of columns summed")

    def _llm_requests_keys(self) -> None:
        refused = sorted(set(LLM_REQUESTS_REFUSED) & self.model_fields_set)
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: not for format: llm_requests (a request log in "
                "the Azure LLM trace format: its own columns TIMESTAMP, ContextTokens, "
                "GeneratedTokens and times)"
            )
        absent = [k for k in LLM_REQUESTS_KEYS if getattr(self, k) is None]
        if absent:
            raise ValueError(
                f"format: llm_requests needs {' and '.join(absent)} (GPU seconds per "
                "thousand tokens of the served model on its hardware)"
            )
        if self.assume_tz is None:
            raise ValueError(
                "format: llm_requests needs assume_tz: the log's timestamps carry no zone "
                "(UTC if they are in UTC)"
            )

    @property
    def columns(self) -> list[str]:
        """The raw columns, summed into the signal (none named for ``llm_requests``)."""
        if self.column is None:
            return []
        return [self.column] if isinstance(self.column, str) else list(self.column)


class SiteLocation(StrictModel):
    """Where a site is: sun position for solar features and PV models, and local time.

    When given, it replaces the weather file's coordinates (TMY header, multiregion
    grid point) for the solar geometry of the PV model and of the forecast features,
    and ``tz`` (an IANA zone, ``America/New_York``) gives the local standard time
    (without daylight saving, ``gridrl.data.loaders.multiregion.standard_offset_h``)
    the daily shapes of the load and workload models run on.
    """

    latitude_deg: Annotated[float, Field(ge=-90.0, le=90.0)]
    longitude_deg: Annotated[float, Field(ge=-180.0, le=180.0)]
    altitude_m: float = 0.0
    tz: str = "UTC"


class WeatherSource(MultiregionKeys):
    """Weather behind PV, wind, temperature-driven load and the carbon/price models.

    ``source: pvlib_tmy`` reads one of the typical-meteorological-year files that ship
    inside pvlib (``723170TYA.CSV``, ``703165TY.csv``, ``12839.tm2``); ``source: csv``
    reads a file with a column mapping; ``source: multiregion`` reads Open-Meteo hourly
    weather of a zone (``gridrl.data.loaders.multiregion``): its local labels are at one
    fixed UTC offset, ``utc_offset_h`` (default: the file's ``utc_offset_seconds``),
    checked against the data (the diurnal temperature peak must lag solar noon by
    ``offset_check_lag_h`` hours); PV irradiance comes from clear sky and cloud cover.
    """

    source: Literal["pvlib_tmy", "csv", "multiregion"] = "pvlib_tmy"
    file: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    utc_offset_h: float | None = None  # None: the file's utc_offset_seconds
    # Open interval the diurnal temperature peak must lag solar noon by (hours): air
    # temperature peaks 2-3 h after noon over land; a wrong offset moves it by hours.
    offset_check_lag_h: tuple[float, float] = (1.0, 4.0)
    # Hours of the year range the fixed-offset files leave uncovered at its two ends
    # (up to |offset| hours): "none" is an error; "adjacent_day" takes the same hour of
    # the nearest covered day (counted in the provenance).
    edge_fill: Literal["none", "adjacent_day"] = "none"
    # GHI under full cloud cover as a share of clear-sky GHI (Larson et al. 2016, the
    # linear model of pvlib's former forecast module: 35 %).
    cloud_offset_fraction: Fraction = 0.35

    @model_validator(mode="after")
    def _weather(self) -> WeatherSource:
        if self.source != "multiregion" and not self.file:
            raise ValueError(f"source: {self.source} needs file")
        lo, hi = self.offset_check_lag_h
        if not lo < hi:
            raise ValueError("expected offset_check_lag_h [low, high] with low < high")
        self._check_multiregion(self.source)
        return self


class PVConfig(StrictModel):
    """Fixed-tilt PV array modelled with pvlib (PVWatts DC + inverter)."""

    kwp: NonNeg = 0.0
    tilt_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 25.0
    azimuth_deg: Annotated[float, Field(ge=0.0, lt=360.0)] = 180.0
    gamma_pdc_per_c: float = -0.004
    system_loss_fraction: Fraction = 0.14
    inverter_efficiency: Annotated[float, Field(gt=0.0, le=1.0)] = 0.96
    dc_ac_ratio: Positive = 1.2  # kWp DC per kW of inverter AC rating (PVWatts default)
    albedo: Fraction = 0.2  # ground reflectance seen by the tilted array
    temperature_model: Literal[
        "open_rack_glass_glass", "close_mount_glass_glass", "open_rack_glass_polymer",
        "insulated_back_glass_polymer",
    ] = "open_rack_glass_polymer"  # pvlib SAPM cell-temperature parameter set


class WindConfig(StrictModel):
    """Wind turbines: TMY wind speed extrapolated to hub height through a power curve."""

    capacity_kw: NonNeg = 0.0
    turbine_type: str = "E-82/2350"
    hub_height_m: Positive = 100.0
    measurement_height_m: Positive = 10.0
    roughness_length_m: Positive = 0.1


class BatteryConfig(StrictModel):
    """Stationary battery; SoC limits are fractions of ``capacity_kwh``."""

    capacity_kwh: NonNeg = 0.0
    power_kw: NonNeg = 0.0
    round_trip_efficiency: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    soc_min_fraction: Fraction = 0.1
    soc_max_fraction: Fraction = 0.9
    soc_initial_fraction: Fraction = 0.5
    # [low, high]: the initial charge of each episode is drawn uniformly from this range
    # (seeded by the scenario seed and the episode's first hour, so every policy starts an
    # episode alike); None: always soc_initial_fraction.
    soc_initial_fraction_range: tuple[Fraction, Fraction] | None = None
    # Wear priced per kWh discharged (bus side); 0: cycling is free.
    degradation_cost_per_kwh: NonNeg = 0.0

    @model_validator(mode="after")
    def _soc_order(self) -> BatteryConfig:
        if not self.soc_min_fraction <= self.soc_initial_fraction <= self.soc_max_fraction:
            raise ValueError(
                "expected soc_min_fraction <= soc_initial_fraction <= soc_max_fraction"
            )
        rng = self.soc_initial_fraction_range
        if rng is not None and not (self.soc_min_fraction <= rng[0] <= rng[1]
                                    <= self.soc_max_fraction):
            raise ValueError(
                f"soc_initial_fraction_range = {list(rng)}: expected soc_min_fraction <= "
                "low <= high <= soc_max_fraction")
        return self


class EventProcess(StrictModel):
    """Random events (congestion, outages): Poisson starts, geometric durations."""

    rate_per_year: NonNeg = 0.0
    mean_duration_h: Positive = 4.0
    depth_fraction: Fraction = 1.0  # share of feeder capacity lost while the event lasts
    # Outages only: share of outages that are planned work announced notice_h ahead
    # (the rest come without notice). Utilities announce planned interruptions days ahead
    # (e.g. the UK's Guaranteed Standards, SI 2015/699 reg. 11: two days' notice; most US
    # tariffs ask for 24-72 h).
    planned_fraction: Fraction = 0.0
    planned_notice_h: Annotated[Count, Field(ge=0)] = 48


class BackupConfig(StrictModel):
    """Standby generation (diesel sets), run only in outage hours, for import that would
    exceed headroom.

    US EPA RICE NESHAP (40 CFR 63.6640(f)) lets emergency engines run without limit in an
    emergency (a grid outage) but caps non-emergency use, so backup here covers only what
    the grid cannot deliver in an outage; congestion outside outages is curtailed.
    NFPA 110 type-10 sets take load within 10 s; the UPS bridges that start, so at the
    hourly step the set carries load from the hour an outage begins.
    """

    capacity_kw: NonNeg = 0.0
    # 0.262 L/kWh at 100 % load (Caterpillar 3516C: 524 L/h at 2000 ekW) x 1.0 USD/L
    fuel_cost_per_kwh: NonNeg = 0.26
    carbon_g_per_kwh: NonNeg = 707.0  # 0.262 L/kWh x 2.70 kg CO2/L (US EPA, 10.21 kg/gal)
    start_s: NonNeg = 10.0  # NFPA 110 type 10
    ups_ride_through_s: NonNeg = 300.0  # UPS battery autonomy at full load (typ. 5-10 min)
    source: str | None = None

    @model_validator(mode="after")
    def _bridged(self) -> BackupConfig:
        if self.capacity_kw > 0 and self.start_s > self.ups_ride_through_s:
            raise ValueError(
                f"start_s = {self.start_s} exceeds ups_ride_through_s = "
                f"{self.ups_ride_through_s}: the UPS must carry the load until the set starts")
        return self


class DemandResponseConfig(StrictModel):
    """Demand-response programme of a site: events asking it to keep grid import at or
    below a level over a window, announced ahead, paid per event hour and penalised per
    kWh above the level (programme terms: PJM Emergency Load Response / Capacity
    Performance non-performance charges, ERCOT ERS, CAISO BIP).

    Events come from a seeded process (``rate_per_year`` > 0) and/or a CSV file
    (``file``: columns ``dr_event_id, dr_start, dr_end, dr_notice_h`` and ``dr_limit_kw``
    or ``dr_shed_kw`` with ``dr_baseline_kw``; see ``gridrl.data.sources.events``).
    """

    payment_per_event_h: NonNeg = 0.0  # paid for every event hour (availability)
    penalty_per_kwh: NonNeg = 0.0  # charged per kWh imported above the level
    rate_per_year: NonNeg = 0.0
    limit_kw: NonNeg | None = None  # level of the drawn events (required with rate_per_year)
    duration_h_min: Annotated[Count, Field(ge=1)] = 2
    duration_h_max: Annotated[Count, Field(ge=1)] = 4
    start_hour_local_min: Annotated[Count, Field(le=23)] = 14
    start_hour_local_max: Annotated[Count, Field(le=23)] = 18
    # notice of the drawn events (hours between announcement and start) and their shares
    notice_h: list[Annotated[Count, Field(ge=0)]] = [24, 1, 0]
    notice_shares: list[Fraction] = [0.5, 0.3, 0.2]
    file: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _ranges(self) -> DemandResponseConfig:
        if self.rate_per_year > 0 and self.limit_kw is None:
            raise ValueError("limit_kw: expected the import level (kW) of the drawn events "
                             "when rate_per_year > 0")
        if self.duration_h_min > self.duration_h_max:
            raise ValueError("expected duration_h_min <= duration_h_max")
        if self.start_hour_local_min > self.start_hour_local_max:
            raise ValueError("expected start_hour_local_min <= start_hour_local_max")
        if len(self.notice_h) != len(self.notice_shares) or not self.notice_h:
            raise ValueError("expected notice_h and notice_shares of equal, non-zero length")
        if abs(sum(self.notice_shares) - 1.0) > 1e-9:
            raise ValueError(f"notice_shares {self.notice_shares} must sum to 1")
        return self

    @property
    def active(self) -> bool:
        """True when the site takes part (events drawn or read from a file)."""
        return self.rate_per_year > 0 or self.file is not None


class GridConfig(StrictModel):
    """Grid connection: headroom = capacity x (1 - events) - background load - reserve.

    Background load is temperature-driven: ``base + heating * max(T_h - T, 0) +
    cooling * max(T - T_c, 0)``, times a daily/weekly shape.
    """

    feeder_capacity_kw: Positive
    reserve_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    background_base_kw: NonNeg = 0.0
    background_heating_kw_per_c: NonNeg = 0.0
    background_cooling_kw_per_c: NonNeg = 0.0
    heating_threshold_c: float = 15.0
    cooling_threshold_c: float = 22.0
    background_daily_amplitude_fraction: Fraction = 0.3
    background_peak_hour_local: Annotated[float, Field(ge=0.0, lt=24.0)] = 18.0
    background_weekend_factor: Positive = 0.9  # weekend load relative to weekdays
    congestion: EventProcess = EventProcess()
    outages: EventProcess = EventProcess()


class CarbonConfig(MultiregionKeys):
    """Grid carbon intensity: a weather-driven regional-mix model, a real CSV, or a zone
    of the multiregion data set (Electricity Maps; ``basis`` direct or life-cycle)."""

    source: Literal["model", "csv", "multiregion"] = "model"
    basis: Literal["direct", "lca"] = "direct"  # for source: multiregion
    file: str | None = None
    column: str | None = None
    base_g_per_kwh: NonNeg = 400.0
    solar_displacement_g_per_kwh: NonNeg = 150.0  # at regional clear-sky noon
    wind_displacement_g_per_kwh: NonNeg = 150.0  # at rated regional wind
    peak_load_g_per_kwh: NonNeg = 80.0  # extra marginal fossil at peak demand
    noise_g_per_kwh: NonNeg = 20.0
    noise_ar1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # hour-to-hour persistence
    regional_clearsky_weight: Fraction = 0.5  # regional solar between clear-sky and local
    min_g_per_kwh: NonNeg = 0.0  # floor of the mix (lifecycle emissions of the cleanest)
    time_column: str = "time"  # for source: csv
    assume_tz: str | None = None  # for source: csv, zone of naive timestamps

    @model_validator(mode="after")
    def _carbon(self) -> CarbonConfig:
        if self.source == "csv" and (self.file is None or self.column is None):
            raise ValueError("source: csv needs file and column")
        self._check_multiregion(self.source)
        floor = self.base_g_per_kwh - self.solar_displacement_g_per_kwh
        if floor - self.wind_displacement_g_per_kwh < self.min_g_per_kwh:
            raise ValueError(
                "expected base_g_per_kwh - solar_displacement_g_per_kwh - "
                "wind_displacement_g_per_kwh >= min_g_per_kwh"
            )
        return self


class PriceConfig(MultiregionKeys):
    """Wholesale price: a merit-order model driven by the same weather, a real CSV, or a
    zone of the multiregion data set (market prices in USD/MWh)."""

    source: Literal["model", "csv", "multiregion"] = "model"
    # Scenario currency per US dollar, for source: multiregion (1: prices stay in USD).
    currency_per_usd: Positive = 1.0
    file: str | None = None
    column: str | None = None
    base_per_mwh: float = 60.0
    carbon_slope_per_mwh_per_g: float = 0.1
    peak_adder_per_mwh: float = 30.0
    noise_per_mwh: NonNeg = 5.0
    noise_ar1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.8  # hour-to-hour persistence
    time_column: str = "time"  # for source: csv
    assume_tz: str | None = None  # for source: csv, zone of naive timestamps

    @model_validator(mode="after")
    def _csv(self) -> PriceConfig:
        if self.source == "csv" and (self.file is None or self.column is None):
            raise ValueError("source: csv needs file and column")
        self._check_multiregion(self.source)
        return self


class WorkloadConfig(StrictModel):
    """Inference demand (GPUs, latency-sensitive) and flexible work (GPU-h with deadlines)."""

    # generator (default), alibaba (the trace replayed) or alibaba_calibrated (a
    # generator fitted to the trace: gridrl.data.sources.alibaba_calibrated)
    source: Literal["generator", "alibaba", "alibaba_calibrated"] = "generator"
    # pods.csv of the Alibaba GPU trace; alibaba_calibrated defaults to the registered set
    trace_file: str | None = None
    trace_nodes_file: str | None = None  # its gpu_nodes.csv; default: beside trace_file
    trace_window_days: Annotated[Count, Field(gt=0)] = 28  # last whole days of the trace, tiled
    # alibaba_calibrated: weekday (Monday = 0) of the trace's first local midnight
    trace_start_weekday: Annotated[Count, Field(le=6)] = 0
    # alibaba_calibrated: mean GPU share busy (inference + flexible) at the site; None
    # keeps the traced cluster's own share (site.gpus / cluster GPUs, as source alibaba)
    trace_target_utilisation_fraction: Fraction | None = None
    inference_peak_fraction: Fraction = 0.4  # of the site's GPUs at the daily peak
    inference_trough_fraction: Fraction = 0.15
    weekend_factor: Positive = 0.8
    flexible_utilisation_fraction: Fraction = 0.35  # mean GPU share the flexible work needs
    # Price of holding a GPU-h of flexible work (queued or in transit) for one hour: the
    # value of results delivered sooner.
    holding_cost_per_gpu_h_h: NonNeg = 0.0
    deadline_slack_h_min: Annotated[Count, Field(ge=0)] = 4
    deadline_slack_h_max: Annotated[Count, Field(ge=1)] = 24
    noise_fraction: Fraction = 0.1
    noise_ar1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.7  # hour-to-hour persistence
    inference_peak_hour_local: Annotated[float, Field(ge=0.0, lt=24.0)] = 14.0
    flexible_peak_hour_local: Annotated[float, Field(ge=0.0, lt=24.0)] = 11.0
    flexible_daily_amplitude_fraction: Fraction = 0.3  # submissions peak in working hours

    @model_validator(mode="after")
    def _slack_order(self) -> WorkloadConfig:
        if self.deadline_slack_h_min > self.deadline_slack_h_max:
            raise ValueError("expected deadline_slack_h_min <= deadline_slack_h_max")
        if self.source == "alibaba" and not self.trace_file:
            raise ValueError("source 'alibaba' needs trace_file (the trace's pods.csv)")
        if self.source != "alibaba_calibrated" and self.trace_target_utilisation_fraction:
            raise ValueError("trace_target_utilisation_fraction applies to source "
                             "'alibaba_calibrated' only")
        return self


# --------------------------------------------------------------------------- sites


class SiteConfig(StrictModel):
    """One site: accelerators, facility, local generation, storage, grid, signals, workload."""

    name: str
    # Sites with the same region share the carbon/price noise of the regional mix
    # (default: the site's own name, i.e. a region of its own).
    region: str | None = None
    weather: WeatherSource
    gpus: Annotated[Count, Field(gt=0)]
    # Per GPU: its board (what a power cap limits) and its share of the host (CPUs,
    # memory, NICs, fans; not capped), idle and with the GPU busy.
    gpu_board_idle_kw: NonNeg
    gpu_board_max_kw: Positive
    host_idle_kw_per_gpu: NonNeg = 0.0
    host_busy_kw_per_gpu: NonNeg = 0.0
    # Facility power = facility_fixed_kw + PUE_t x IT: a fixed overhead (lighting, UPS
    # and transformer no-load losses, cooling that runs at any load) and a part
    # proportional to IT whose multiplier pue rises above pue_temp_threshold_c.
    facility_fixed_kw: NonNeg = 0.0
    pue: Annotated[float, Field(ge=1.0)] = 1.2
    pue_temp_slope_per_c: NonNeg = 0.0  # PUE rises above pue_temp_threshold_c
    pue_temp_threshold_c: float = 20.0
    # Price of a busy GPU-hour where the capacity is rented by the hour (cloud on-demand);
    # 0 where it is owned.
    gpu_rent_per_gpu_h: NonNeg = 0.0
    pv: PVConfig = PVConfig()
    wind: WindConfig = WindConfig()
    battery: BatteryConfig = BatteryConfig()
    grid: GridConfig
    backup: BackupConfig = BackupConfig()
    demand_response: DemandResponseConfig = DemandResponseConfig()
    carbon: CarbonConfig = CarbonConfig()
    price: PriceConfig = PriceConfig()
    workload: WorkloadConfig = WorkloadConfig()
    location: SiteLocation | None = None
    # Real series that replace the built-in model of a signal (see SeriesSource).
    series: dict[SeriesSignal, SeriesSource] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _old_power_keys(cls, data: Any) -> Any:
        old = sorted({"gpu_idle_kw", "gpu_max_kw"} & set(data)) if isinstance(data, dict) else []
        if old:
            raise ValueError(
                f"{', '.join(old)}: replaced by gpu_board_idle_kw and gpu_board_max_kw (the "
                "GPU board, which a power cap limits) and host_idle_kw_per_gpu and "
                "host_busy_kw_per_gpu (the GPU's share of its server, which the cap does "
                "not touch); the old keys lumped both under the cap"
            )
        return data

    @model_validator(mode="after")
    def _power_order(self) -> SiteConfig:
        if self.gpu_board_idle_kw > self.gpu_board_max_kw:
            raise ValueError("expected gpu_board_idle_kw <= gpu_board_max_kw")
        if self.host_idle_kw_per_gpu > self.host_busy_kw_per_gpu:
            raise ValueError("expected host_idle_kw_per_gpu <= host_busy_kw_per_gpu")
        if {"background_load_kw", "headroom_kw"} <= set(self.series):
            raise ValueError(
                "series: give background_load_kw or headroom_kw, not both (headroom "
                "follows from the feeder load)"
            )
        for signal, cfg in (("carbon_g_per_kwh", self.carbon), ("price_per_mwh", self.price)):
            if signal in self.series and cfg.source != "model":
                raise ValueError(
                    f"series.{signal} and {signal.split('_')[0]}.source: {cfg.source} "
                    "both give the signal; keep one"
                )
        for signal, src in self.series.items():
            if src.format == "llm_requests" and signal != LLM_REQUESTS_SIGNAL:
                raise ValueError(
                    f"series.{signal}.format: llm_requests gives GPUs busy serving "
                    f"requests; only series.{LLM_REQUESTS_SIGNAL} takes it"
                )
        return self


class SiteGroup(StrictModel):
    """``count`` sites made from one template, each parameter in ``vary`` drawn uniformly in
    ``value * (1 ± vary[key])`` with the scenario seed. Keys are dotted paths
    (``pv.kwp``, ``grid.feeder_capacity_kw``); names are ``{prefix}{index:02d}``."""

    prefix: str
    count: Annotated[Count, Field(gt=0)]
    template: dict[str, Any]
    vary: dict[str, Fraction] = Field(default_factory=dict)


# --------------------------------------------------------------------------- environment


class ThrottleCurve(StrictModel):
    """GPU board power cap (fraction of board max power) -> throughput (fraction of
    uncapped) and board power drawn by a busy GPU.

    ``cap_fraction`` is the board power limit as a fraction of ``gpu_board_max_kw`` (what
    ``nvidia-smi -pl`` sets: 420 W / 700 W = 0.6 on an H100 SXM). ``power_fraction`` is
    what a busy GPU at that cap draws, as a fraction of ``gpu_board_max_kw`` (at most the
    cap; default: the cap, i.e. the limit binds, as in training). Work that does not
    reach the board limit uncapped (memory-bound inference) draws less. Host power is
    not part of the curve.

    Interpolated linearly; caps increasing and ending at 1, throughput non-decreasing and
    ending at 1. ``source`` cites the measurements the points come from.
    """

    cap_fraction: list[float]
    throughput_fraction: list[float]
    power_fraction: list[float] | None = None
    source: str

    @model_validator(mode="after")
    def _curve(self) -> ThrottleCurve:
        cap = np.asarray(self.cap_fraction)
        thr = np.asarray(self.throughput_fraction)
        if cap.size < 2 or cap.size != thr.size:
            raise ValueError("expected >= 2 points and equal lengths for cap and throughput")
        if np.any(np.diff(cap) <= 0) or np.any(np.diff(thr) < 0):
            raise ValueError("expected increasing cap_fraction and non-decreasing throughput")
        if cap[-1] != 1.0 or thr[-1] != 1.0 or cap[0] <= 0 or thr[0] <= 0:
            raise ValueError("expected the curve to end at (1, 1) and start above 0")
        if self.power_fraction is not None:
            pw = np.asarray(self.power_fraction)
            if pw.size != cap.size or np.any(pw <= 0) or np.any(pw > cap + 1e-12):
                raise ValueError("expected power_fraction with one value per cap, each in "
                                 "(0, cap_fraction]")
            if np.any(np.diff(pw) < 0):
                raise ValueError("expected non-decreasing power_fraction")
        return self

    @property
    def power(self) -> list[float]:
        """Board power fraction drawn by a busy GPU at each cap (the cap when not given)."""
        return list(self.power_fraction or self.cap_fraction)


class ThrottleCurves(StrictModel):
    """One throttle curve for flexible (training) work and one for inference."""

    training: ThrottleCurve
    inference: ThrottleCurve

    @model_validator(mode="before")
    @classmethod
    def _old_single_curve(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cap_fraction" in data:
            raise ValueError(
                "a single curve (cap_fraction, throughput_fraction) is replaced by two: "
                "throttle.training (flexible work) and throttle.inference, each with "
                "cap_fraction, throughput_fraction, optional power_fraction and source"
            )
        return data


class RewardWeights(StrictModel):
    """Reward weights.

    ``reward = -(w_c carbon_kg + w_e (cost + gpu_rent_cost + holding_cost) + w_s slo_gpu_h
    + w_o overdue_gpu_h + w_g overdraw_kwh) / scale``.
    """

    carbon_per_kg: NonNeg = 1.0
    cost_per_unit: NonNeg = 1.0
    slo_per_gpu_h: NonNeg = 10.0
    overdue_per_gpu_h: NonNeg = 5.0
    overdraw_per_kwh: NonNeg = 20.0
    scale: Positive = 1.0  # divides the reward to keep it near unit range for learning


class EnvConfig(StrictModel):
    """Decision model: queue resolution, limits, costs and observation layout."""

    # Minimum hourly queue buckets; the queue grows to the longest deadline slack of any site.
    slack_buckets: Annotated[Count, Field(ge=2)] = 25
    cap_min_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    max_migration_fraction: Fraction = 0.5
    # Largest share of a site's inference demand served at other sites (within
    # network.inference_rtt_max_ms): the share it cannot serve at its cap overflows.
    inference_remote_fraction_max: Fraction = 0.0
    inference_remote_penalty_per_gpu_h: NonNeg = 0.0
    # How batteries are dispatched: "rule" (the site rule below, no battery action),
    # "setpoint" (an action sets battery power) or "residual" (an action adds power to
    # the rule's setpoint, so action 0 is the rule and every setpoint stays reachable).
    battery_control: Literal["rule", "setpoint", "residual"] = "rule"
    forecast_horizons_h: list[Annotated[Count, Field(ge=1)]] = [1, 2, 4, 8, 12, 24]
    observation_slack_edges_h: list[Annotated[Count, Field(ge=1)]] = [2, 6, 12]
    episode_hours: Annotated[Count, Field(gt=0)] = 168
    # Battery rule (battery_control rule or residual): discharge covers grid import above
    # this share of headroom (0 = self-consumption: any import; 1 = only import above
    # headroom). Import above headroom (outages included) is always covered first.
    battery_discharge_threshold_fraction: Fraction = 0.0
    # route action a in [-1, 1] becomes the softmax logit a * route_logit_scale.
    route_logit_scale: Positive = 4.0
    # Signals the observation carries forecasts of (cube targets), and the quantiles the
    # cube is built with: P50 = quantile 0.5, spread = highest minus lowest quantile.
    forecast_targets: list[str] = [
        "pv_kw", "wind_kw", "headroom_kw", "carbon_g_per_kwh", "price_per_mwh", "inference_gpus",
    ]
    forecast_quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = [0.1, 0.5, 0.9]
    # Observation scales of signals that have no per-site capacity to divide by.
    obs_carbon_scale_g_per_kwh: Positive = 500.0
    obs_price_scale_per_mwh: Positive = 100.0
    obs_temp_scale_c: Positive = 30.0
    obs_event_scale_h: Positive = 24.0  # hours until / left of announced grid events
    # Work still queued or in transit when an episode ends is charged what running it at
    # full power would cost at the episode's mean carbon and price ("none": not charged),
    # so no policy gains by pushing work past the episode end.
    terminal_queue_valuation: Literal["episode_mean", "none"] = "episode_mean"
    # The battery's charge at the end of an episode, less its charge at the start, is
    # credited at the episode's mean carbon and price per kWh it can deliver ("none":
    # the final charge is worth nothing).
    terminal_battery_valuation: Literal["episode_mean", "none"] = "episode_mean"
    discrete_action_levels: Annotated[Count, Field(ge=2)] = 5  # per action, MultiDiscrete wrapper
    # Length of a simulation step (minutes): 60, 30 or 15. Durations above stay in hours
    # and convert to steps in gridrl.env.clock; power is kW, energy kW x step hours.
    step_minutes: Literal[60, 30, 15] = 60


LATITUDE_MAX_DEG = 90.0
LONGITUDE_MAX_DEG = 180.0


class NetworkConfig(StrictModel):
    """Links between sites: what moving work and serving inference elsewhere costs.

    Defaults are geo3's values, each sourced in ``envs/geo3.yaml``; units are in the
    names. Work sent in a step arrives at the start of the next: the link carries at
    most what it can deliver within the step (``gridrl.env.params.migration_link_gpu_h``).
    ``transfer_cost_regions`` maps every site to a cloud region of the data set
    ``transfer_cost_dataset``'s ``transfer_cost_file`` (a USD/GB matrix, rows the
    source); without it every transfer costs ``transfer_cost_per_gb``.
    ``coordinates_deg`` (site -> [latitude, longitude]) give great-circle distances, and
    round-trip times ``rtt_inflation x 2 d / c``; sites without coordinates serve no
    inference for others.
    """

    checkpoint_gb_per_gpu_h: NonNeg = 1.0
    bandwidth_gbps: Positive = 10.0
    link_share_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    latency_ms: NonNeg = 30.0
    transfer_kwh_per_gb: NonNeg = 0.0075
    transfer_cost_per_gb: NonNeg = 0.02
    transfer_cost_dataset: str = "multiregion_2021_2024"
    transfer_cost_file: str = "aws_transmission_cost_matrix.csv"
    transfer_cost_regions: dict[str, str] = Field(default_factory=dict)
    # USD per GB between two sites mapped to the same region (the matrix's diagonal is
    # 0): the provider's cross-zone price; required when two sites share a region
    transfer_cost_intra_region_per_gb: NonNeg | None = None
    restart_overhead_gpu_h_per_gpu_h: NonNeg = 0.04
    coordinates_deg: dict[str, tuple[float, float]] = Field(default_factory=dict)
    rtt_inflation: Annotated[float, Field(ge=1.0)] = 3.0
    inference_rtt_max_ms: NonNeg = 50.0
    inference_kwh_per_gpu_h: NonNeg = 0.001

    @model_validator(mode="after")
    def _coordinates(self) -> NetworkConfig:
        for name, (lat, lon) in self.coordinates_deg.items():
            if not (-LATITUDE_MAX_DEG <= lat <= LATITUDE_MAX_DEG
                    and -LONGITUDE_MAX_DEG <= lon <= LONGITUDE_MAX_DEG):
                raise ValueError(
                    f"network.coordinates_deg.{name}: [{lat}, {lon}] is not a [latitude, "
                    f"longitude] in degrees (expected latitude in [-90, 90], longitude in "
                    "[-180, 180])")
        return self


class Period(StrictModel):
    """A date range in UTC: ``start`` 00:00 up to and including the whole ``end`` day."""

    start: str
    end: str

    @model_validator(mode="after")
    def _dates(self) -> Period:
        try:
            start, end = pd.Timestamp(self.start), pd.Timestamp(self.end)
        except ValueError as exc:
            raise ValueError(f"expected dates like 2021-03-01: {exc}") from None
        if end < start:
            raise ValueError("expected start <= end")
        return self

    def hours(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Integer positions of ``index`` (hourly, UTC) inside this period."""
        start = pd.Timestamp(self.start, tz="UTC")
        end = pd.Timestamp(self.end, tz="UTC") + pd.Timedelta(days=1)
        return np.flatnonzero((index >= start) & (index < end))


class Periods(StrictModel):
    """Train, optional validation, and test periods, each a list of date ranges (blocks).

    Test blocks spread over the year (one week per month, say) keep evaluation from
    seeing only one season; an episode always lies inside one block. Validation blocks
    (optional, default none) are where settings are tuned, so the test is run once.
    """

    train: list[Period]
    validation: list[Period] = Field(default_factory=list)
    test: list[Period]

    def last_year(self) -> int:
        """The calendar year of the latest end date of any block."""
        blocks = [*self.train, *self.validation, *self.test]
        return max(pd.Timestamp(b.end).year for b in blocks)

    @model_validator(mode="before")
    @classmethod
    def _single_to_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: [v] if isinstance(v, dict) else v for k, v in data.items()}
        return data


# Site keys (paths) added after hashes were first recorded, with the value that means
# "not used": scenario hashes include them only when set otherwise (``content_hash``).
_LATER_KEYS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("location",), None), (("series",), {}), (("carbon", "assume_tz"), None),
    (("price", "assume_tz"), None), (("workload", "trace_start_weekday"), 0),
    (("workload", "trace_target_utilisation_fraction"), None),
    # "*": every entry (a site's ``series.<signal>`` sit under any signal name)
    (("series", "*", "format"), "timeseries"), (("series", "*", "repeat"), None),
    (("series", "*", "gpu_s_per_1k_context_tokens"), None),
    (("series", "*", "gpu_s_per_1k_generated_tokens"), None),
)


class Scenario(StrictModel):
    """A whole scenario file. ``sites`` is the expanded list (groups resolved)."""

    name: str
    description: str = ""
    seed: Count = 0
    year: Count = 2021  # calendar year the TMY files are mapped onto
    sites: list[SiteConfig] = Field(default_factory=list)
    site_groups: list[SiteGroup] = Field(default_factory=list)
    throttle: ThrottleCurves
    reward: RewardWeights = RewardWeights()
    env: EnvConfig = EnvConfig()
    network: NetworkConfig = NetworkConfig()
    periods: Periods

    @model_validator(mode="after")
    def _has_sites(self) -> Scenario:
        if not self.sites and not self.site_groups:
            raise ValueError("expected at least one entry in sites or site_groups")
        return self

    def expanded_sites(self) -> list[SiteConfig]:
        """All sites: explicit ones, then each group's members with seeded variation."""
        rng = np.random.default_rng(self.seed)
        out = list(self.sites)
        for g, group in enumerate(self.site_groups):
            for i in range(group.count):
                data = json.loads(json.dumps(group.template))
                for key, spread in group.vary.items():
                    node = data
                    *parents, leaf = key.split(".")
                    for p in parents:
                        node = node.get(p) if isinstance(node, dict) else None
                    if not isinstance(node, dict) or leaf not in node:
                        raise ScenarioError(
                            f"site_groups[{g}].vary.{key}: key not set in the template"
                        )
                    value = node[leaf]
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise ScenarioError(
                            f"site_groups[{g}].vary.{key}: expected a number in the "
                            f"template, got {value!r}"
                        )
                    varied = float(value) * (1.0 + rng.uniform(-spread, spread))
                    # Integer parameters (GPU counts) stay integers after variation.
                    node[leaf] = int(round(varied)) if isinstance(value, int) else varied
                data["name"] = f"{group.prefix}{i:02d}"
                try:
                    out.append(SiteConfig.model_validate(data))
                except ValidationError as exc:
                    raise ScenarioError(
                        format_validation_errors(exc, "<memory>", f"site_groups[{g}].template")
                    ) from None
        names = [s.name for s in out]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ScenarioError(f"site names must be unique; repeated: {sorted(dup)}")
        return out

    def content_hash(self) -> str:
        """A stable hash of the validated scenario, for caches and bundle manifests.

        Keys added after hashes were first recorded (``_LATER_KEYS``) count only when
        set, so a scenario that does not use them keeps the hash it had.
        """
        data = self.model_dump(mode="json")
        if data["network"] == NetworkConfig().model_dump(mode="json"):
            data.pop("network")  # added later: counts only when set
        for site in data["sites"]:
            for path, unused in _LATER_KEYS:
                drop_unused(site, path, unused)
        return json_hash(data)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Raises
    ------
    ScenarioError
        naming the file and the YAML path of every bad key (unknown key, wrong type,
        out-of-range value such as a negative capacity).
    """
    path = Path(path)
    raw = read_yaml_mapping(path, ScenarioError, "scenario file")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_errors(exc, str(path))) from None
    try:
        scenario.expanded_sites()  # group templates are validated here too
    except ScenarioError as exc:
        lines = [line.removeprefix("<memory>: ") for line in str(exc).splitlines()]
        raise ScenarioError("\n".join(f"{path}: {line}" for line in lines)) from None
    return scenario
