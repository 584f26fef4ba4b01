"""The site model's formulas on a scenario's parameters, for code that runs as numpy.

The formulas themselves live once, in :mod:`gridrl.env.kernel` (numba compiles the same
source into the environment's step); these wrappers only pick the per-site parameters
of an :class:`~gridrl.env.params.EnvParams` so that planners, heuristics and replay call
them with signals ``[..., N]``. :func:`encode_battery_kw` finds the facility power the
battery rule reacts to with one compiled step.
"""

from __future__ import annotations

import numpy as np

from gridrl.env import kernel
from gridrl.env.kernel import Act, Exo
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = [
    "announced_events", "battery_value_per_kwh", "battery_values", "dispatch",
    "encode_battery_kw", "facility_kw", "idle_kw", "initial_soc_kwh", "import_price_per_kwh",
    "it_kw", "it_kwh_per_gpu_h",
    "pue", "pue_of", "rule_battery_kw", "terminal_value_per_gpu_h", "terminal_values",
]


def pue(params: EnvParams, temp_c: np.ndarray) -> np.ndarray:
    """``[..., N]`` PUE at outdoor temperatures ``temp_c`` ``[..., N]``."""
    p = params
    return kernel.pue_at(temp_c, p.pue, p.pue_temp_slope_per_c, p.pue_temp_threshold_c)


def pue_of(params: EnvParams, exo: np.ndarray) -> np.ndarray:
    """``[..., N]`` PUE of the hours of exogenous rows ``exo`` ``[..., N, K]``."""
    return pue(params, exo[..., Exo.TEMP_C])


def it_kwh_per_gpu_h(params: EnvParams, cap: np.ndarray | float,
                     inference: bool = False) -> np.ndarray:
    """``[..., N]`` IT energy above idle per GPU-h of uncapped work at cap ``cap``
    (training curve, or the inference curve), board and host together."""
    p = params
    tau = p.inference_throughput_at(cap) if inference else p.throughput(cap)
    return kernel.it_kwh_per_gpu_h(p.power_at(cap, inference), tau, p.gpu_idle_kw,
                                   p.gpu_board_max_kw, p.host_busy_kw_per_gpu)


def dispatch(params: EnvParams, demand_gpus: np.ndarray, request_gpu_h: np.ndarray,
             cap: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inference, flexible, busy GPUs)`` ``[..., N]`` served at cap ``cap`` (core step 4)."""
    p = params
    return kernel.dispatch(demand_gpus, request_gpu_h, p.gpus, p.inference_throughput_at(cap),
                           p.throughput(cap))


def it_kw(params: EnvParams, inference_gpu_h: np.ndarray, flexible_gpu_h: np.ndarray,
          cap: np.ndarray | float) -> np.ndarray:
    """``[..., N]`` IT power with ``inference_gpu_h`` and ``flexible_gpu_h`` of work done
    per site at power cap ``cap``."""
    p = params
    return kernel.it_kw(inference_gpu_h, flexible_gpu_h, it_kwh_per_gpu_h(p, cap, True),
                        it_kwh_per_gpu_h(p, cap), p.gpus, p.gpu_idle_kw)


def facility_kw(params: EnvParams, pue_t: np.ndarray, it: np.ndarray,
                migration_kw: np.ndarray | float = 0.0) -> np.ndarray:
    """``[..., N]`` facility power: fixed overhead, ``PUE_t`` x IT, migration."""
    return kernel.facility_kw(params.facility_fixed_kw, pue_t, it, migration_kw)


def idle_kw(params: EnvParams) -> np.ndarray:
    """``[N]`` IT power with every GPU idle: the floor no decision removes."""
    return kernel.it_kw_from_active(0.0, params.gpus, params.gpu_idle_kw)


def import_price_per_kwh(params: EnvParams, carbon_g_per_kwh: np.ndarray,
                         price_per_mwh: np.ndarray) -> np.ndarray:
    """Reward weight (before the scale) of a kWh imported at this carbon and price."""
    w = params.reward_weights
    return kernel.import_price_per_kwh(w[0], w[1], carbon_g_per_kwh, price_per_mwh)


def rule_battery_kw(params: EnvParams, fac_kw: np.ndarray, gen_kw: np.ndarray,
                    headroom_kw: np.ndarray) -> np.ndarray:
    """The dispatch rule's wanted battery power (kW, + charges; core equation 5)."""
    return kernel.rule_battery_kw(fac_kw, gen_kw, headroom_kw,
                                  params.battery_discharge_threshold_fraction)


def terminal_values(params: EnvParams, mean_carbon_g_per_kwh: np.ndarray,
                    mean_price_per_mwh: np.ndarray) -> np.ndarray:
    """``[..., N]`` charge per GPU-h left at the end at these mean carbon and price
    (reward units before ``reward.scale``), whatever ``terminal_queue_valuation`` says."""
    p = params
    w = p.reward_weights
    return kernel.terminal_value_per_gpu_h(p.pue, it_kwh_per_gpu_h(p, 1.0), w[0], w[1],
                                           mean_carbon_g_per_kwh, mean_price_per_mwh,
                                           p.gpu_rent_per_gpu_h, p.holding_cost_per_gpu_h_h,
                                           p.terminal_delay_h)


def terminal_value_per_gpu_h(params: EnvParams, exo_episode: np.ndarray) -> np.ndarray:
    """What one GPU-h of flexible work left at the end of an episode is charged (reward
    units before ``reward.scale``), ``[..., N]``.

    ``env.terminal_queue_valuation = "episode_mean"``: the marginal energy of running it
    uncapped, ``pue * e_X(1)`` kWh per GPU-h (training curve, board and host; idle
    power and the fixed overhead are paid anyway), priced at the episode's mean carbon
    and price, plus one rented GPU-hour and the holding price over ``terminal_delay_h``
    hours (the site's mean deadline slack).
    ``"none"``: 0.

    Parameters
    ----------
    exo_episode : ndarray
        ``[..., L, N, len(EXO_SIGNALS)]`` exogenous rows of the episode.
    """
    if params.scenario.env.terminal_queue_valuation == "none":
        return np.zeros(exo_episode.shape[:-3] + (params.n_sites,))
    mean = exo_episode[..., [Exo.CARBON_G_PER_KWH, Exo.PRICE_PER_MWH]].mean(axis=-3)
    return terminal_values(params, mean[..., 0], mean[..., 1])


def initial_soc_kwh(params: EnvParams, starts: np.ndarray | list[int]) -> np.ndarray:
    """``[E, N]`` battery charge at the start of episodes starting at data rows ``starts``:
    uniform in ``[soc_initial_low_kwh, soc_initial_high_kwh]``, drawn from a generator
    seeded by the scenario seed and the start's hour (row 0 is hour 0: the same start time
    draws the same charge at every step length, for every policy and every run; the low
    end when the range is a point)."""
    p = params
    hours = np.atleast_1d(np.asarray(starts, dtype=np.int64)) // p.steps_per_hour
    draws = np.empty((len(hours), p.n_sites))
    for j, hour in enumerate(hours.tolist()):
        draws[j] = np.random.default_rng([p.scenario.seed, hour]).random(p.n_sites)
    return p.soc_initial_low_kwh + draws * (p.soc_initial_high_kwh - p.soc_initial_low_kwh)


def battery_values(params: EnvParams, mean_carbon_g_per_kwh: np.ndarray,
                   mean_price_per_mwh: np.ndarray) -> np.ndarray:
    """``[..., N]`` credit per kWh the battery gained over an episode at these mean carbon
    and price (reward units before ``reward.scale``), whatever
    ``terminal_battery_valuation`` says."""
    w = params.reward_weights
    return kernel.battery_value_per_kwh(params.battery_eta, w[0], w[1], mean_carbon_g_per_kwh,
                                        mean_price_per_mwh)


def battery_value_per_kwh(params: EnvParams, exo_episode: np.ndarray) -> np.ndarray:
    """Credit per kWh of charge gained over an episode (lost: charged), ``[..., N]``.

    ``env.terminal_battery_valuation = "episode_mean"``: the ``eta`` kWh it delivers at
    the episode's mean carbon and price (it displaces that much import later). ``"none"``:
    0 (the final charge is worth nothing).
    """
    if params.scenario.env.terminal_battery_valuation == "none":
        return np.zeros(exo_episode.shape[:-3] + (params.n_sites,))
    mean = exo_episode[..., [Exo.CARBON_G_PER_KWH, Exo.PRICE_PER_MWH]].mean(axis=-3)
    return battery_values(params, mean[..., 0], mean[..., 1])


def encode_battery_kw(params: EnvParams, state: EnvState, action: np.ndarray,
                      exo_t: np.ndarray, setpoint_kw: np.ndarray | None = None,
                      packed: kernel.PackedParams | None = None) -> np.ndarray:
    """``action`` ``[B, N, A]`` with its battery component set so that the battery is
    asked for ``setpoint_kw`` ``[B, N]`` (kW, + charges; None, or NaN entries: what the
    dispatch rule wants). Without a battery action ``action`` is returned unchanged.

    The rule depends on the facility power the other components draw this hour, so one
    compiled step (:func:`gridrl.env.kernel.step`, ``packed`` or packed here) finds it.
    The result is clipped to [-1, 1].
    """
    p = params
    if not p.battery_action:
        return action
    out = np.array(action, dtype=np.float64)
    power = p.battery_power_kw
    if setpoint_kw is not None:
        setpoint_kw = np.asarray(setpoint_kw, dtype=np.float64)
    if p.battery_residual or setpoint_kw is None or np.isnan(setpoint_kw).any():
        out[..., Act.BATTERY] = 0.0
        _, outputs = kernel.step(packed or kernel.pack(p), state, out, exo_t)
        # the step's energy back to power: the rule is stated in kW
        fac = (outputs["facility_kwh"] + outputs["curtailed_kwh"]) / p.step_h
        gen = exo_t[..., Exo.PV_KW] + exo_t[..., Exo.WIND_KW]
        rule = np.clip(rule_battery_kw(p, fac, gen, exo_t[..., Exo.HEADROOM_KW]), -power, power)
        setpoint_kw = rule if setpoint_kw is None else np.where(np.isnan(setpoint_kw), rule,
                                                                 setpoint_kw)
    # asking for more than the rating is asking for the rating
    setpoint_kw = np.clip(setpoint_kw, -power, power)
    if p.battery_residual:
        setpoint_kw = setpoint_kw - rule
    span = p.battery_action_span_kw
    out[..., Act.BATTERY] = np.clip(np.divide(setpoint_kw, span, out=np.zeros(out.shape[:-1]),
                                    where=span > 0), -1.0, 1.0)
    return out


def announced_events(exo_now: np.ndarray, plan: np.ndarray, step_h: float = 1.0) -> np.ndarray:
    """``plan`` ``[B, H, N, K]`` (row ``h`` = ``h`` steps of ``step_h`` hours after the
    decided step) with its grid-event signals replaced by what is announced at the decided
    step
    ``exo_now`` ``[B, N, K]``: the current or next demand-response event in its hours
    (``gridrl.data.sources.events``), nothing after it; headroom 0 in the hours of the
    announced outage. Events announced later are unknown to a planner."""
    out = plan.copy()
    h = np.arange(plan.shape[1])[None, :, None] * step_h  # [1, H, 1] hours ahead
    start = exo_now[:, None, :, Exo.DR_STARTS_IN_H]
    end = start + exo_now[:, None, :, Exo.DR_REMAINING_H]
    out[..., Exo.DR_STARTS_IN_H] = np.where(h < start, start - h, 0.0) * (end > start)
    out[..., Exo.DR_REMAINING_H] = np.where(h < end, end - np.maximum(h, start), 0.0)
    out[..., Exo.DR_LIMIT_KW] = np.where(h < end, exo_now[:, None, :, Exo.DR_LIMIT_KW], 0.0)
    o_start = exo_now[:, None, :, Exo.OUTAGE_STARTS_IN_H]
    o_end = o_start + exo_now[:, None, :, Exo.OUTAGE_REMAINING_H]
    outage = (h >= o_start) & (h < o_end)
    out[..., Exo.HEADROOM_KW] = np.where(outage, 0.0, out[..., Exo.HEADROOM_KW])
    out[..., Exo.OUTAGE_STARTS_IN_H] = np.where(h < o_start, o_start - h, 0.0) * (o_end > o_start)
    out[..., Exo.OUTAGE_REMAINING_H] = np.where(h < o_end, o_end - np.maximum(h, o_start), 0.0)
    return out
