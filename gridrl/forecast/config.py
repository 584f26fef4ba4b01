"""Forecaster configuration (``forecasts/*.yaml``), validated by pydantic.

Every number the forecasting layer uses lives here; the defaults below are the ones
documented in ``forecasts/default.yaml``. Unknown keys are errors and every error names
the YAML path of the offending key (``lightgbm.num_leaves``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gridrl.config import Count, drop_unused, format_validation_errors, read_yaml_mapping
from gridrl.errors import GridrlError

PosInt = Annotated[Count, Field(ge=1)]
# How a target is expressed for its model (:data:`gridrl.forecast.features.REFERENCES`).
Reference = Literal["last", "seasonal", "ramp", "level"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


# Keys added after cached forecasts were first written, with the value that behaves as
# before they existed (not always today's default)
LATER_KEYS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("selection", "hold_candidate"), False), (("training", "own_model_bags"), 1))


class ForecastConfigError(GridrlError, ValueError):
    """A forecaster config file is missing, unreadable or invalid (message names the key)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureConfig(_Strict):
    """What the models see: all of it known at the issue time.

    ``lags_h`` are values ``y[t - lag]`` relative to the issue time ``t``;
    ``seasonal_lags_h`` are values at the *target* hour one day / one week earlier
    (``y[t + h - 24 ceil(h/24)]``, ``y[t + h - 168 ceil(h/168)]``), always at or before
    ``t``; ``rolling_windows_h`` are trailing means and standard deviations ending at ``t``;
    ``profile_days`` is the number of past days averaged at the target hour of day.
    """

    lags_h: list[PosInt] = [1, 2, 3, 6, 12, 24]
    seasonal_lags_h: list[PosInt] = [24, 168]
    rolling_windows_h: list[PosInt] = [6, 24, 168]
    profile_days: PosInt = 7
    calendar: list[Literal["hour", "weekday"]] = ["hour", "weekday"]
    solar: bool = True  # solar elevation and clear-sky GHI of the target hour (pvlib)
    site_categorical: bool = True  # one global model per signal with the site as a category


class WeatherCovariate(_Strict):
    """A weather forecast of a signal, used at the target hour.

    Where no real forecast product exists it is simulated from the observed signal with
    an error that grows with the lead time: ``relative`` errors multiply the truth by
    ``1 + e`` (irradiance, wind speed), ``additive`` ones add ``e`` in the signal's unit
    (temperature). ``e`` is Gaussian with standard deviation ``error_at_24h *
    sqrt(lead_h / 24)``, correlated hour to hour with coefficient ``autocorrelation`` the
    way numerical-weather-prediction errors are. Zero error makes it a perfect forecast.
    """

    signal: str
    leads_h: list[PosInt] = [6, 12, 24, 48]
    error: Literal["relative", "additive"] = "relative"
    error_at_24h: Annotated[float, Field(ge=0.0)] = 0.3
    autocorrelation: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9


class PVConfig(_Strict):
    """PV is forecast as a clear-sky index times the clear-sky power of the target hour.

    ``clearsky_power_quantile`` scales clear-sky GHI into clear-sky power when the site
    geometry is not known (national fleets): the ratio ``pv / ghi_clearsky`` at this
    quantile over the training data. ``min_clearsky_fraction`` is the share of the peak
    clear-sky power below which the index is not defined (sunrise/sunset) and the
    forecast falls back to zero index weight.
    """

    signals: list[str] = ["pv_kw"]
    clearsky_power_quantile: Fraction = 0.98
    min_clearsky_fraction: Fraction = 0.02
    max_clearsky_index: Annotated[float, Field(gt=0.0)] = 1.5
    smart_persistence_window_h: PosInt = 3  # hours the smart-persistence index averages
    # The model predicts the index relative to the index at the target's hour on the
    # latest day known (``seasonal``) or the index itself (``none``).
    index_reference: Literal["seasonal", "none"] = "seasonal"


class BoundsConfig(_Strict):
    """Physical bounds applied to every forecast (all modes), then quantiles are sorted.

    Signals the registry (:func:`gridrl.data.signals.signal_spec`) calls nonnegative are
    clipped at 0, and so are those listed in ``nonnegative`` and (with
    ``nonnegative_from_data``) any signal that is never negative in the data;
    ``zero_at_night`` signals are 0 when the sun stays below the horizon for the whole
    target hour (pvlib solar position of the site); ``upper`` maps a signal to
    the signal that caps it (its largest value in the data: the nominal capacity).
    """

    nonnegative: list[str] = []
    nonnegative_from_data: bool = True
    zero_at_night: list[str] = ["pv_kw"]
    upper: dict[str, str] = {"headroom_kw": "feeder_capacity_kw"}


class LightGBMConfig(_Strict):
    """LightGBM parameters (kept small: every geo3 model and the cube fit in a minute)."""

    num_threads: PosInt = 2
    n_estimators: PosInt = 60
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.15
    num_leaves: Annotated[Count, Field(ge=2)] = 15
    min_data_in_leaf: PosInt = 40
    feature_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    bagging_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    bagging_freq: Annotated[Count, Field(ge=0)] = 1
    max_bin: Annotated[Count, Field(ge=2)] = 63
    lambda_l2: Annotated[float, Field(ge=0.0)] = 1.0


class TrainingConfig(_Strict):
    """Which (issue time, horizon) pairs are used to fit.

    Every hour is an issue time but, to keep fitting fast, each issue time contributes
    ``horizons_per_issue`` horizons drawn at random (seeded) from 1..H; the test and
    the cube always predict every horizon.
    """

    horizons_per_issue: PosInt = 1
    # Horizons with a model of their own, fitted on every issue time: pooled, they would
    # get 1/H of the rows and, their changes being the smallest, little of the loss. The
    # pooled model also gets them from every issue time (the next horizons gain).
    own_model_horizons_h: list[PosInt] = [1]
    # Reference of those models per signal where it differs from the signal's (not PV).
    own_model_reference: dict[str, Reference] = {}
    # Fits of the median averaged in each own-horizon model, LightGBM seeded differently
    # for each (row and feature subsampling then differ): a steadier point forecast for
    # one more median fit per bag.
    own_model_bags: PosInt = 5
    min_history_h: PosInt = 168  # issue times with less history than this are not used


class SelectionConfig(_Strict):
    """Per-signal choice of a model's reference, made at every fit on its training data.

    For each model listed in ``models`` (``own``: the own-horizon models, ``pooled``:
    the pooled one) of every signal not modelled as a clear-sky index, a P50 model per
    reference in ``references`` (``sun_references`` for solar output) is fitted on the
    training pairs whose target row lies before the last ``window_h`` issue rows of the
    training data and scored (MAE, in the signal's unit) on the pairs issued in those
    rows. The reference with the lowest MAE, or with ``blend`` the equal-weight mean of
    several references' quantiles if lower still, is refitted on every training pair.
    The scores are kept with the model. A fit with fewer than ``min_train_h`` issue rows
    before the window, or a single candidate, keeps the signal's reference
    (``own_model_reference`` for own models).

    ``plain_candidate`` adds one more candidate to the own-horizon models of signals that
    do not follow the sun: ``plain``, the plain per-horizon LightGBM
    (:mod:`gridrl.forecast.plain`: per site, lags 1, 2, 3, 24, 48, 168 and the target
    hour's UTC calendar, LightGBM's defaults rather than ``lightgbm``, a quantile
    objective per quantile), fitted and scored on the same pairs as the references (its
    P50) and blended with them under ``blend``. Not for solar output: a model of levels,
    fitted before summer, cannot reach summer's peaks.

    ``hold_candidate`` adds ``hold`` to the candidates of both models of those signals:
    the value at the issue time, every quantile (persistence). Alone it is the no-change
    forecast; blended, it halves a model's predicted change. The band of a blend with it
    is narrower and left to the calibration (``calibration``) to widen.
    """

    models: list[Literal["own", "pooled"]] = ["own", "pooled"]
    references: list[Reference] = ["last", "seasonal", "ramp", "level"]
    # Candidates of signals that follow the sun (``follows_sun``: national solar output):
    # their hour-to-hour changes grow with the season, and a model of changes from the
    # latest value, fitted before summer, under-forecast summer ramps that the last
    # weeks before it did not show.
    sun_references: list[Reference] = ["seasonal", "ramp"]
    blend: bool = True
    plain_candidate: bool = False
    hold_candidate: bool = False
    window_h: PosInt = 720
    min_train_h: PosInt = 720


class CalibrationConfig(_Strict):
    """Rolling conformalised quantile regression (CQR) of each symmetric quantile pair.

    For a pair ``(q, 1 - q)`` the conformity score of a past forecast is
    ``max(lo - y, y - hi) / width`` with ``width = max(hi - lo, floor)`` and ``floor =
    width_floor_fraction x`` the site's mean absolute value of the signal up to the
    issue row (a size known at the time). A forecast issued at ``t`` for horizon ``h``
    is widened (or narrowed) to ``[lo - c w, hi + c w]`` where ``c`` is the ``1 - 2q``
    quantile of the scores of the same signal and horizon, pooled over sites, whose
    target was observed by ``t`` (issue rows ``t - h - window_h + 1 .. t - h``).
    Strictly causal; with fewer than ``min_scores`` scores the raw quantiles are kept.
    Scores of forecasts that are exactly right with a zero band (PV at night) are left
    out. ``method: none`` keeps the raw quantiles.
    """

    method: Literal["rolling_cqr", "none"] = "rolling_cqr"
    window_h: PosInt = 720
    min_scores: PosInt = 48
    width_floor_fraction: Annotated[float, Field(gt=0.0)] = 0.05


class CrossFitConfig(_Strict):
    """Cross-fitting: ``folds`` contiguous time blocks; each is forecast by a model trained
    on the others, with ``gap_h`` hours removed on each side of the block so that no
    training target overlaps the block's issue times."""

    folds: Annotated[Count, Field(ge=2)] = 4
    gap_h: Annotated[Count, Field(ge=0)] = 48


class CausalConfig(_Strict):
    """Forecasts issued in the evaluation periods (validation and test): each comes from
    a model fitted only on pairs whose issue and target rows lie before its *origin*,
    and the origin is at or before the issue time, so nothing after the issue time is
    seen. ``refit``: one origin per calendar quarter, month or week (UTC) that holds
    evaluation hours, at its first evaluation hour. ``origin``: the model uses all data
    before the origin (``expanding``) or the last ``rolling_window_h`` hours
    (``rolling``). An origin needs ``min_train_h`` hours of data before it.
    ``n_estimators`` sets the trees of these refits (``lightgbm.n_estimators`` if null).
    ``refit_growth``: of those origins, refit only where the hours of data before it
    exceed those before the last origin by at least this fraction of them (a model
    serves for a time in proportion to its history: refits are frequent while the
    history is short, rare once it is long); null refits at every origin.
    """

    refit: Literal["quarterly", "monthly", "weekly"] = "monthly"
    refit_growth: Annotated[float, Field(gt=0.0)] | None = 0.25
    origin: Literal["expanding", "rolling"] = "expanding"
    rolling_window_h: PosInt = 24 * 365
    min_train_h: PosInt = 24 * 14
    n_estimators: PosInt | None = None


class BacktestConfig(_Strict):
    """Rolling origin: the model is refit every ``refit_every_h`` hours on all data before
    the origin (at least ``initial_train_h``) and forecasts the next block."""

    initial_train_h: PosInt = 24 * 120
    refit_every_h: PosInt = 24 * 61


class ForecastConfig(_Strict):
    """A whole forecaster config file."""

    name: str = "default"
    description: str = ""
    targets: list[str] = [
        "pv_kw",
        "wind_kw",
        "headroom_kw",
        "carbon_g_per_kwh",
        "price_per_mwh",
        "inference_gpus",
    ]
    max_horizon_h: Annotated[Count, Field(ge=1, le=168)] = 24
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = [0.1, 0.5, 0.9]
    features: FeatureConfig = FeatureConfig()
    # How each target is expressed for its model: ``last`` (change from the value at the
    # issue time), ``seasonal`` (change from the same hour on the latest day known) or
    # ``level``; PV signals (``pv.signals``) use the clear-sky index.
    default_reference: Reference = "last"
    reference: dict[str, Reference] = {
        "headroom_kw": "seasonal", "inference_gpus": "seasonal",
    }
    # Weather forecasts of the target hour (simulated from these observed signals unless
    # real forecasts are passed in) and which targets use them.
    weather: list[WeatherCovariate] = [
        WeatherCovariate(signal="ghi_w_per_m2", error="relative", error_at_24h=0.3),
        WeatherCovariate(signal="wind_speed_m_per_s", error="relative", error_at_24h=0.3),
        WeatherCovariate(signal="temp_c", error="additive", error_at_24h=1.5),
    ]
    # A covariate not listed under ``weather`` must come as a real forecast product
    # (``weather=`` argument of the forecaster).
    weather_for: dict[str, list[str]] = {
        "pv_kw": ["ghi_w_per_m2"],
        "wind_kw": ["wind_speed_m_per_s"],
        "headroom_kw": ["temp_c"],
        "carbon_g_per_kwh": ["ghi_w_per_m2", "wind_speed_m_per_s", "temp_c"],
        "price_per_mwh": ["ghi_w_per_m2", "wind_speed_m_per_s", "temp_c"],
    }
    pv: PVConfig = PVConfig()
    bounds: BoundsConfig = BoundsConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    training: TrainingConfig = TrainingConfig()
    selection: SelectionConfig = SelectionConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    crossfit: CrossFitConfig = CrossFitConfig()
    causal: CausalConfig = CausalConfig()
    backtest: BacktestConfig = BacktestConfig()
    # Seeds the simulated weather forecasts and LightGBM of ``lightgbm`` cubes; null: the
    # seed the cube is built with (the scenario's). Fixed, a target whose data no
    # scenario seed changes (real carbon, prices, weather-driven PV and wind) gets the
    # same forecasts under every scenario seed, fitted once (cubes cache each target).
    seed: Annotated[Count, Field(ge=0)] | None = None
    # Capacity for nMAE: ``max`` (largest value in the data: installed power) or the name
    # of the signal holding the capacity. Signals not listed get no nMAE.
    metrics_capacity: dict[str, str] = {
        "pv_kw": "max", "wind_kw": "max", "solar_mw": "max", "wind_mw": "max",
        "headroom_kw": "feeder_capacity_kw",
    }

    @model_validator(mode="after")
    def _check(self) -> ForecastConfig:
        q = self.quantiles
        if sorted(q) != q or len(set(q)) != len(q):
            raise ValueError("expected strictly increasing quantiles")
        if 0.5 not in q:
            raise ValueError("expected 0.5 among the quantiles (the point forecast)")
        return self

    def key_values(self) -> dict[str, Any]:
        """The values that key cached forecasts: every value, except keys added after
        caches were first written (:data:`LATER_KEYS`) while they keep their default, so
        a config that does not use them keeps its cached cubes."""
        data = self.model_dump(mode="json")
        for path, unused in LATER_KEYS:
            drop_unused(data, path, unused)
        return data

    @property
    def horizons_h(self) -> tuple[int, ...]:
        """Horizons 1..max_horizon_h (hours)."""
        return tuple(range(1, self.max_horizon_h + 1))


# Words of a signal name that mean its output follows the sun.
SUN_WORDS = frozenset({"pv", "solar", "sun", "ghi", "irradiance"})


def follows_sun(signal: str) -> bool:
    """Whether a signal is solar output or irradiance (``pv_kw``, ``solar_mw``)."""
    return any(word in SUN_WORDS for word in signal.lower().split("_"))


def derive_config(
    targets: Sequence[str],
    present: Sequence[str],
    *,
    located: bool,
    base: ForecastConfig | None = None,
) -> ForecastConfig:
    """A forecaster config for ``targets`` from ``base`` (default: the built-in one).

    Weather covariates are kept only for targets and observed signals that are in
    ``present``; sun features (solar elevation, clear-sky GHI), the PV clear-sky index
    and the night bound only when some target follows the sun (``follows_sun``) and
    the sites are ``located``. A solar series that is not a site's own array (a
    national fleet: not in ``base.pv.signals``) is modelled against the same hour of
    the latest day (``seasonal``) rather than a clear-sky index of one point.
    """
    base = base or ForecastConfig()
    targets, have = list(targets), set(present)
    sun = located and any(follows_sun(t) for t in targets)
    weather = [w for w in base.weather if w.signal in have]
    kept = {w.signal for w in weather}
    weather_for = {t: [c for c in covs if c in kept]
                   for t, covs in base.weather_for.items() if t in targets}
    pv_signals = [s for s in base.pv.signals if s in targets] if sun else []
    reference = {k: v for k, v in base.reference.items() if k in targets}
    for t in targets:
        if follows_sun(t) and t not in pv_signals:
            reference.setdefault(t, "seasonal")
    night = [s for s in base.bounds.zero_at_night if s in pv_signals]
    return base.model_copy(update={
        "targets": targets, "weather": weather,
        "weather_for": {t: c for t, c in weather_for.items() if c},
        "features": base.features.model_copy(update={"solar": sun}),
        "pv": base.pv.model_copy(update={"signals": pv_signals}),
        "reference": reference,
        "bounds": base.bounds.model_copy(update={"zero_at_night": night}),
    })


def load_forecast_config(path: str | Path) -> ForecastConfig:
    """Read and validate a forecaster YAML file.

    Raises
    ------
    ForecastConfigError
        naming the file and the YAML path of every bad key.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, ForecastConfigError, "forecaster config", empty_ok=True)
    try:
        return ForecastConfig.model_validate(raw)
    except ValidationError as exc:
        raise ForecastConfigError(format_validation_errors(exc, str(path))) from None
