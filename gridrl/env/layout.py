"""Observation and action layouts (names, units, scales) and the observation builder.

The layouts are explicit objects because a policy bundle's manifest repeats them: a
scheduler that calls an exported policy builds the same vector from the same raw
quantities. ``to_dict()`` gives the form :mod:`gridrl.export.manifest` validates.

Observation vector (float32), in order:

1. calendar (4): ``hour_sin, hour_cos, weekday_sin, weekday_cos`` of the step's UTC start.
2. per site, site after site (``site_names`` order):

   a. the step's signals (``EXO_SIGNALS``: pv, wind, headroom, carbon, price, inference
      demand, flexible arrivals, temperature, and the announced grid events: hours until
      the current or next announced demand-response event starts, its hours left and
      its level, hours until the next announced outage and its hours left);
   b. forecasts issued now for each ``env.forecast_targets`` x ``env.forecast_horizons_h``:
      P50 and spread (highest minus lowest of ``env.forecast_quantiles``), same scale as
      the signal (absent when the environment has no forecast cube);
   c. state: queued flexible work in coarse slack groups (``env.observation_slack_edges_h``:
      edges ``[2, 6, 12]`` give slack 0-2 h, 2-6 h, 6-12 h, 12 h and more), overdue work,
      work in transit to the site, battery state of charge, mean power cap of the last
      step.

Each entry is ``(value - offset) / scale`` with ``offset = 0``. Scales: power (kW) by
the site's reference power ``EnvParams.ref_kw`` (the facility with every GPU busy
uncapped: ``F0 + G (Pb + Hb) pue``); GPUs and GPU-h by ``G``; carbon,
price and temperature by ``env.obs_carbon_scale_g_per_kwh``, ``env.obs_price_scale_per_mwh``,
``env.obs_temp_scale_c``; event hours by ``env.obs_event_scale_h``; state of charge by
the battery capacity (1 without battery); cap
and calendar unscaled. Values are near unit range, not clipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gridrl.calendar import CALENDAR_FIELDS, calendar_features
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import EXO_SIGNALS, _fill
from gridrl.env.params import EnvParams

__all__ = [
    "ActionField",
    "ActionLayout",
    "ObservationBuilder",
    "ObservationField",
    "ObservationLayout",
    "action_layout",
]

_UNITS = {"pv_kw": "kW", "wind_kw": "kW", "headroom_kw": "kW", "carbon_g_per_kwh": "g/kWh",
          "price_per_mwh": "currency/MWh", "inference_gpus": "GPU", "flexible_gpu_h": "GPU h",
          "temp_c": "degC", "dr_starts_in_h": "h", "dr_remaining_h": "h", "dr_limit_kw": "kW",
          "outage_starts_in_h": "h", "outage_remaining_h": "h"}


@dataclass(frozen=True)
class ObservationField:
    """One observation entry: ``observation = (value - offset) / scale``."""

    name: str
    key: str
    site: str | None
    unit: str
    offset: float
    scale: float
    description: str


@dataclass(frozen=True)
class ObservationLayout:
    """The observation vector, in order."""

    fields: tuple[ObservationField, ...]

    @property
    def dim(self) -> int:
        """Length of the observation vector."""
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        """Field names in order."""
        return [f.name for f in self.fields]

    def to_dict(self) -> dict:
        """``{"fields": [...]}`` for manifests."""
        return {"fields": [asdict(f) for f in self.fields]}


@dataclass(frozen=True)
class ActionField:
    """One action entry in [low, high], mapped affinely onto [physical_low, physical_high]."""

    name: str
    site: str
    component: str
    low: float
    high: float
    physical_low: float
    physical_high: float
    unit: str


@dataclass(frozen=True)
class ActionLayout:
    """The action vector (site after site, components in ``params.action_names`` order),
    and how batteries are dispatched (``env.battery_control`` and the rule's discharge
    threshold, which a ``residual`` battery action adds to)."""

    sites: tuple[str, ...]
    fields: tuple[ActionField, ...]
    battery_control: str = "rule"
    battery_rule_threshold_fraction: float = 0.0

    @property
    def dim(self) -> int:
        """Length of the action vector."""
        return len(self.fields)

    def to_dict(self) -> dict:
        """``{"sites": [...], "fields": [...], "battery_control": ..., ...}`` for manifests."""
        return {**asdict(self), "sites": list(self.sites),
                "fields": [asdict(f) for f in self.fields]}


def action_layout(params: EnvParams) -> ActionLayout:
    """The action layout of a scenario's parameters (see ``core.physical_action``)."""
    fields = []
    m_max = params.max_migration_fraction if params.n_sites > 1 else 0.0
    for i, site in enumerate(params.site_names):
        ranges = {
            "run": (0.0, 1.0, "1"),
            "cap": (params.cap_min, 1.0, "1"),
            "route": (-params.route_logit_scale, params.route_logit_scale, "logit"),
            "migrate": (0.0, m_max, "1"),
            "battery": (-float(params.battery_action_span_kw[i]),
                        float(params.battery_action_span_kw[i]), "kW"),
        }
        for comp in params.action_names:
            lo, hi, unit = ranges[comp]
            fields.append(ActionField(f"{site}.{comp}", site, comp, -1.0, 1.0, lo, hi, unit))
    return ActionLayout(tuple(params.site_names), tuple(fields), params.battery_control,
                        params.battery_discharge_threshold_fraction)


class ObservationBuilder:
    """Builds observations: exogenous parts precomputed for every step, state parts per
    step in one compiled call.

    Parameters
    ----------
    params : EnvParams
    data : EnvData
        Rows are the steps ``t`` the builder can observe.
    """

    def __init__(self, params: EnvParams, data: EnvData) -> None:
        env = params.scenario.env
        n = params.n_sites
        ref = params.ref_kw
        gpus = params.gpus
        exo_scale = np.empty((n, len(EXO_SIGNALS)))
        for k, name in enumerate(EXO_SIGNALS):
            exo_scale[:, k] = {
                "kW": ref,
                "GPU": gpus,
                "GPU h": gpus * params.step_h,  # arrivals per step, seen as a rate per hour
                "g/kWh": env.obs_carbon_scale_g_per_kwh,
                "currency/MWh": env.obs_price_scale_per_mwh,
                "degC": env.obs_temp_scale_c,
                "h": env.obs_event_scale_h,
            }[_UNITS[name]]
        parts = [data.exo / exo_scale[None]]
        fields: list[ObservationField] = [
            ObservationField(name, name, None, "1", 0.0, 1.0, f"{name} of the hour (UTC)")
            for name in CALENDAR_FIELDS
        ]
        fc_fields: list[tuple[str, int, str]] = []
        if data.forecast is not None:
            targets = list(env.forecast_targets)
            unknown = [t for t in targets if t not in EXO_SIGNALS]
            if unknown:
                raise ValueError(f"env.forecast_targets {unknown} are not in {EXO_SIGNALS}")
            p50, spread = data.forecast_block(targets, list(env.forecast_horizons_h),
                                              list(env.forecast_quantiles))
            t_len = data.steps
            scale_k = exo_scale[:, [EXO_SIGNALS.index(t) for t in targets]]  # [N, K]
            both = np.stack([p50, spread], axis=-1)  # [T, N, K, H, 2]
            both = both / scale_k[None, :, :, None, None]
            parts.append(both.reshape(t_len, n, -1))
            fc_fields = [(t, h, kind) for t in targets for h in env.forecast_horizons_h
                         for kind in ("p50", "spread")]
        edges = list(env.observation_slack_edges_h)
        bounds = [0, *edges, params.slack_buckets]
        groups = [
            (f"queue_slack_{lo}_{hi}h" if hi < params.slack_buckets else f"queue_slack_{lo}h_plus",
             lo, hi)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        # queue index of slack s is 1 + s: group g ends (exclusive) at 1 + hi
        self._group_end = np.array([1 + hi for _, _, hi in groups], dtype=np.int64)
        cap_kwh = params.battery_capacity_kwh
        soc_scale = np.where(cap_kwh > 0, cap_kwh, 1.0)
        inv = np.empty((n, len(groups) + 3))
        inv[:, : len(groups)] = 1.0 / gpus[:, None]
        inv[:, len(groups)] = 1.0 / gpus
        inv[:, len(groups) + 1] = 1.0 / gpus
        inv[:, len(groups) + 2] = 1.0 / soc_scale
        self._inv_scale = inv
        self.site_exo = np.ascontiguousarray(np.concatenate(parts, axis=-1), dtype=np.float32)
        self.calendar = calendar_features(
            data.index.hour.to_numpy() + data.index.minute.to_numpy() / 60.0,
            data.index.dayofweek.to_numpy()).astype(np.float32)
        for i, site in enumerate(params.site_names):
            for k, name in enumerate(EXO_SIGNALS):
                fields.append(ObservationField(
                    f"{site}.{name}", name, site, _UNITS[name], 0.0, float(exo_scale[i, k]),
                    f"{name} of the hour at {site}"))
            for tgt, h, kind in fc_fields:
                k = EXO_SIGNALS.index(tgt)
                desc = ("median forecast" if kind == "p50" else
                        "forecast spread (highest minus lowest quantile)")
                fields.append(ObservationField(
                    f"{site}.fc_{tgt}_h{h}_{kind}", f"fc_{tgt}_h{h}_{kind}", site,
                    _UNITS[tgt], 0.0, float(exo_scale[i, k]),
                    f"{desc} of {tgt} {h} h ahead at {site}"))
            for g, (name, lo, hi) in enumerate(groups):
                fields.append(ObservationField(
                    f"{site}.{name}", name, site, "GPU h", 0.0, float(1.0 / inv[i, g]),
                    f"flexible work queued at {site} with {lo} <= slack < {hi} h"))
            fields += [
                ObservationField(f"{site}.overdue_gpu_h", "overdue_gpu_h", site, "GPU h", 0.0,
                                 float(gpus[i]), f"overdue flexible work at {site}"),
                ObservationField(f"{site}.transit_gpu_h", "transit_gpu_h", site, "GPU h", 0.0,
                                 float(gpus[i]), f"flexible work in transit to {site}"),
                ObservationField(f"{site}.soc_kwh", "soc_kwh", site, "kWh", 0.0,
                                 float(soc_scale[i]), f"battery state of charge at {site}"),
                ObservationField(f"{site}.cap", "cap", site, "1", 0.0, 1.0,
                                 f"mean GPU power cap fraction at {site} in the last step"),
            ]
        self.layout = ObservationLayout(tuple(fields))
        self.dim = self.layout.dim
        per_site = self.site_exo.shape[2] + len(groups) + 4
        if self.dim != len(CALENDAR_FIELDS) + n * per_site:
            raise AssertionError("observation layout and builder disagree")

    def build(self, rows: np.ndarray, state, out: np.ndarray | None = None) -> np.ndarray:
        """Observations ``[B, dim]`` float32 of episodes at data rows ``rows`` ``[B]`` in
        ``state`` (an :class:`~gridrl.env.state.EnvState`)."""
        if out is None:
            out = np.empty((len(rows), self.dim), dtype=np.float32)
        _fill(self.calendar, self.site_exo, rows, state.queue_gpu_h, state.transit_gpu_h,
              state.soc_kwh, state.cap, self._inv_scale, self._group_end, out)
        return out
