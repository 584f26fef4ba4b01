"""Compiled step: the equations of :mod:`gridrl.env.core`, fused into one numba kernel,
and the site model's formulas, written once.

``core.step`` is the readable reference (numpy, one array operation per equation) and a
test oracle only. Every production path runs this module: the environments step through
the compiled kernel, and the planners, heuristics and replay call the same formula
functions (PUE, IT power at a cap, energy per GPU-h, dispatch, the battery rule, the
price of imported energy, the terminal value, the reward) on numpy arrays. A formula is
a plain numpy function registered with numba (:func:`_formula`): called from Python it
runs as numpy; called from compiled code numba compiles the same source inline, with
``fmax``/``fmin`` lowered to scalar ``max``/``min``. Tests check kernel == oracle.

Every compiled function of the environment lives in this file (the step, the
observation fill of :mod:`gridrl.env.layout`, the batched step with bookkeeping of
:mod:`gridrl.env.batch`, the formulas and the column numbers they index): numba's
on-disk cache of a function is invalidated when its own file changes, not when a
function or constant it uses from another file does, so a kernel split over files could
run stale code after an upgrade.

Parameters are packed once per scenario (:class:`PackedParams`) so a call passes few
arguments: numba's argument checking costs per argument.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload

from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = [
    "DR_TOL_FRACTION", "DR_TOL_KWH", "EXO_SIGNALS", "FAST_MATH", "KG_PER_G", "MIN_DIVISOR",
    "MWH_PER_KWH", "OUTPUT_FIELDS", "REWARD_TERMS", "UNLIMITED_GPU_H",
    "Act", "BatteryMode", "Exo", "Out", "PackedParams", "StepBuffers", "StepOutputs",
    "backup_kw", "backup_terms", "discharge_available_kw", "dispatch", "dr_event_on",
    "dr_compliant", "dr_shortfall_kwh", "dr_terms", "event_on", "outage_on",
    "facility_kw", "fleet_facility_kw", "fmax", "fmin",
    "battery_value_per_kwh", "gpu_time_cost", "terminal_charge",
    "import_price_per_kwh", "it_kw", "it_kw_from_active", "it_kwh_per_gpu_h",
    "migration_accept_share", "pack",
    "penalty", "pue_at", "rule_battery_kw", "rule_wants_kw", "step", "step_into",
    "terminal_value_per_gpu_h",
]

#: LLVM may reassociate sums (vectorised reductions), fuse multiply-adds and use
#: reciprocals; results differ from the numpy reference in the last bits only. NaN and
#: infinity semantics are kept (inputs are validated, not assumed finite).
FAST_MATH = {"reassoc", "nsz", "arcp", "contract"}

KG_PER_G = 1e-3  # carbon intensity is in g/kWh, carbon in kg
MWH_PER_KWH = 1e-3  # prices are per MWh, energy in kWh
# shortfall below DR_TOL_KWH + DR_TOL_FRACTION x the level is solver round-off (the
# planners' import at a level of thousands of kW carries errors far above 1e-6 kWh)
DR_TOL_KWH = 1e-6
DR_TOL_FRACTION = 1e-7
# smallest divisor of a share: a share of nothing is 0 (never inf or nan)
MIN_DIVISOR = 1e-300
# an unlimited link packed as the largest finite float, so the kernel compares numbers
UNLIMITED_GPU_H = float(np.finfo(np.float64).max)


class Exo(IntEnum):
    """Exogenous signals of an hour: positions on the last axis of ``exo``."""

    PV_KW = 0
    WIND_KW = 1
    HEADROOM_KW = 2  # 0 in an outage
    CARBON_G_PER_KWH = 3
    PRICE_PER_MWH = 4
    INFERENCE_GPUS = 5  # GPUs of uncapped inference work demanded
    FLEXIBLE_GPU_H = 6  # flexible work arriving (uncapped GPU-h)
    TEMP_C = 7
    # announced grid events (gridrl.data.sources.events): the current or next announced
    # demand-response event and outage; remaining 0 when none is announced
    DR_STARTS_IN_H = 8  # hours until it starts, 0 while it is on
    DR_REMAINING_H = 9  # its hours left (its whole length before it starts)
    DR_LIMIT_KW = 10  # grid import level it asks the site to stay at or below
    OUTAGE_STARTS_IN_H = 11
    OUTAGE_REMAINING_H = 12  # 1 during an outage that came without notice


class Out(IntEnum):
    """Per-site outputs of a step: positions on the last axis of ``StepOutputs.values``."""

    ARRIVED_GPU_H = 0  # flexible work arriving at its home site this hour
    TRANSIT_IN_GPU_H = 1  # migrated work joining this site's queue at the start of the hour
    MIGRATED_GPU_H = 2  # work sent away from this site this hour
    WORK_DONE_GPU_H = 3  # flexible work done (uncapped GPU-h)
    INFERENCE_DEMAND_GPU_H = 4
    INFERENCE_SERVED_GPU_H = 5
    SLO_GPU_H = 6  # inference demand not served (capacity or shed)
    DEADLINE_MISS_GPU_H = 7  # work whose deadline passed this hour
    OVERDUE_GPU_H = 8  # overdue work held at the end of the step x step_h (penalised)
    QUEUED_GPU_H = 9  # work queued at the end of the hour (overdue included)
    TRANSIT_GPU_H = 10  # work in transit to this site at the end of the hour
    BUSY_GPUS = 11  # mean over the step
    CAP = 12  # mean power cap fraction applied
    IT_KWH = 13
    MIGRATION_KWH = 14
    FACILITY_KWH = 15  # fixed overhead + PUE x IT + migration
    PV_KWH = 16  # available
    WIND_KWH = 17  # available
    BATTERY_CHARGE_KWH = 18  # bus side
    BATTERY_DISCHARGE_KWH = 19  # bus side
    SOC_KWH = 20  # end of hour
    GRID_IMPORT_KWH = 21
    EXPORT_KWH = 22  # local generation not used (spilled or exported unpaid)
    OVERDRAW_KWH = 23  # import above headroom that curtailment could not remove
    CURTAILED_KWH = 24  # facility energy removed by curtailment
    PAUSED_GPU_H = 25  # flexible work paused by curtailment
    SHED_GPU_H = 26  # inference shed by curtailment
    HEADROOM_KW = 27
    CARBON_KG = 28
    COST = 29
    HEADROOM_VIOLATION = 30  # step_h (hours) when overdraw_kwh > 0, else 0
    GPU_RENT_COST = 31  # busy GPU-hours x the site's rental price per GPU-hour
    HOLDING_COST = 32  # work held (queued or in transit) at the end of the hour x its price
    BATTERY_DEGRADATION_COST = 33  # kWh discharged x the battery's wear cost per kWh
    TRANSFER_COST = 34  # GB of migrated work sent from this site x the link's price per GB
    RESTART_GPU_H = 35  # restart overhead added to the work migrated from this site
    INFERENCE_ROUTED_GPU_H = 36  # inference demand of this site served at other sites
    INFERENCE_NETWORK_KWH = 37  # network energy of the inference routed away
    BACKUP_KWH = 38  # standby generation (import above headroom it covered in an outage)
    BACKUP_FUEL_COST = 39
    BACKUP_CARBON_KG = 40  # also inside carbon_kg
    DR_EVENT_H = 41  # step_h (hours) in a step of a demand-response event, else 0
    DR_SHORTFALL_KWH = 42  # import above the event's level
    DR_PENALTY_COST = 43  # shortfall x the programme's penalty per kWh
    DR_PAYMENT = 44  # the programme's payment for an event hour (a credit)
    DR_COMPLIANT_H = 45  # step_h in an event step with no shortfall (beyond round-off)


class Act(IntEnum):
    """Action components of a site, in [-1, 1] (``core.physical_action``)."""

    RUN = 0
    CAP = 1
    ROUTE = 2
    MIGRATE = 3
    BATTERY = 4  # only with a battery action


class BatteryMode(IntEnum):
    """``env.battery_control`` as the kernel sees it."""

    RULE = 0
    SETPOINT = 1
    RESIDUAL = 2


#: Exogenous signal names, in ``Exo`` order.
EXO_SIGNALS = tuple(m.name.lower() for m in Exo)
#: Output field names, in ``Out`` order.
OUTPUT_FIELDS = tuple(m.name.lower() for m in Out)
#: Output columns of the reward terms, in ``reward.weights`` order.
REWARD_TERMS = (Out.CARBON_KG, Out.COST, Out.SLO_GPU_H, Out.OVERDUE_GPU_H, Out.OVERDRAW_KWH,
                Out.GPU_RENT_COST, Out.HOLDING_COST, Out.BATTERY_DEGRADATION_COST,
                Out.TRANSFER_COST, Out.BACKUP_FUEL_COST, Out.DR_PENALTY_COST, Out.DR_PAYMENT)
_TERM_COLS = np.array([int(c) for c in REWARD_TERMS])
_N_TERMS = len(REWARD_TERMS)
_N_OUT = len(Out)


@dataclass(frozen=True, eq=False)
class StepOutputs:
    """What happened in one step, per episode and site.

    ``values[b, i, f]`` is field ``OUTPUT_FIELDS[f]`` of site ``i`` in episode ``b``
    (float64); ``outputs["grid_import_kwh"]`` gives the ``[B, N]`` slice.
    ``reward`` is ``[B]``.
    """

    values: np.ndarray
    reward: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[..., Out[name.upper()]]

    def totals(self) -> np.ndarray:
        """``[B, F]``: every field summed over sites."""
        return self.values.sum(axis=1)


# --------------------------------------------------------------------------- formulas
#
# Arguments are floats or broadcastable numpy arrays (per-site parameters as ``[N]``
# arrays, signals as ``[..., N]``); compiled callers pass floats. Units are in the names.


def fmax(a: Any, b: Any) -> Any:
    """Elementwise maximum (``np.maximum``; scalar ``max`` when compiled)."""
    return np.maximum(a, b)


def fmin(a: Any, b: Any) -> Any:
    """Elementwise minimum (``np.minimum``; scalar ``min`` when compiled)."""
    return np.minimum(a, b)


def _scalar(*args: Any) -> bool:
    return all(isinstance(a, (types.Float, types.Integer)) for a in args)


@overload(fmax, inline="always")
def _fmax_nb(a, b):  # pragma: no cover - compiled
    if _scalar(a, b):
        return lambda a, b: max(a, b)
    return lambda a, b: np.maximum(a, b)


@overload(fmin, inline="always")
def _fmin_nb(a, b):  # pragma: no cover - compiled
    if _scalar(a, b):
        return lambda a, b: min(a, b)
    return lambda a, b: np.minimum(a, b)


def _formula(fn: Callable) -> Callable:
    """Register ``fn`` with numba: compiled callers inline its source; Python callers
    run it as it is (numpy)."""

    @functools.wraps(fn)
    def typer(*args: Any, **kwargs: Any) -> Callable:
        return fn

    overload(fn, inline="always")(typer)
    return fn


@_formula
def pue_at(temp_c: Any, pue: Any, slope_per_c: Any, threshold_c: Any) -> Any:
    """PUE of an hour at outdoor temperature ``temp_c`` (step 4):
    ``pue + slope max(temp - T0, 0)``."""
    return pue + slope_per_c * fmax(temp_c - threshold_c, 0.0)


@_formula
def it_kwh_per_gpu_h(power_fraction: Any, tau: Any, idle_kw: Any, board_max_kw: Any,
                     host_busy_kw: Any) -> Any:
    """IT energy (kWh) per GPU-h of uncapped work above idle, for work whose busy GPU
    draws ``power_fraction`` of the board's max power and does ``tau`` of uncapped work
    per hour: ``(pi Pb + Hb - P0) / tau`` (board plus the host's busy share, less the
    idle power ``P0`` paid anyway)."""
    return (power_fraction * board_max_kw + host_busy_kw - idle_kw) / tau


@_formula
def it_kw(inference_gpu_h: Any, flexible_gpu_h: Any, e_inference_kwh: Any,
          e_flexible_kwh: Any, gpus: Any, idle_kw: Any) -> Any:
    """IT power (kW): the idle floor ``G P0`` plus inference and flexible work at their
    energies per GPU-h above idle (:func:`it_kwh_per_gpu_h`): ``G P0 + I e_I + X e_X``."""
    return gpus * idle_kw + inference_gpu_h * e_inference_kwh + flexible_gpu_h * e_flexible_kwh


@_formula
def it_kw_from_active(active_kw: Any, gpus: Any, idle_kw: Any) -> Any:
    """IT power (kW) from the power drawn above idle by the work that runs: the idle
    floor ``G P0`` plus ``active_kw`` (the planners' form, work times energy per GPU-h)."""
    return gpus * idle_kw + active_kw


@_formula
def fleet_facility_kw(fixed_kw: Any, pue: Any, gpus: Any, kw_per_gpu: Any) -> Any:
    """Facility power of ``gpus`` GPUs each drawing ``kw_per_gpu`` (kW IT):
    ``F0 + PUE G P``; with ``P0`` the idle floor, with the busy uncapped power the most."""
    return fixed_kw + pue * gpus * kw_per_gpu


@_formula
def facility_kw(fixed_kw: Any, pue: Any, it: Any, migration_kw: Any) -> Any:
    """Facility power: ``F0 + PUE IT + migration`` (fixed overhead, the part that scales
    with IT, and migration energy)."""
    return fixed_kw + pue * it + migration_kw


@_formula
def dispatch(demand_gpus: Any, request_gpu_h: Any, gpus: Any, tau_inference: Any,
             tau_flexible: Any) -> tuple:
    """Work at throughputs ``tau_I`` (inference) and ``tau_X`` (flexible) of the cap
    (step 4), inference first: ``(inference, flexible, busy GPUs)`` with
    ``I = min(D, G tau_I)``, ``X = min(R, (G - I/tau_I) tau_X)``, ``busy = I/tau_I +
    X/tau_X``."""
    inf = fmin(demand_gpus, gpus * tau_inference)
    busy_inf = inf / tau_inference
    flex = fmin(request_gpu_h, fmax(gpus - busy_inf, 0.0) * tau_flexible)
    return inf, flex, busy_inf + flex / tau_flexible


@_formula
def rule_wants_kw(fac_kw: Any, gen_kw: Any, headroom_kw: Any, theta: Any) -> tuple:
    """The dispatch rule's wanted ``(charge, discharge)`` kW (step 5): charge from local
    surplus, discharge what import above ``theta`` of the headroom would be."""
    return fmax(gen_kw - fac_kw, 0.0), fmax(fac_kw - gen_kw - theta * headroom_kw, 0.0)


@_formula
def rule_battery_kw(fac_kw: Any, gen_kw: Any, headroom_kw: Any, theta: Any) -> Any:
    """The dispatch rule's wanted battery power ``ch* - dis*`` (kW, + charges) for
    facility power ``F`` before curtailment, local generation and headroom."""
    ch, dis = rule_wants_kw(fac_kw, gen_kw, headroom_kw, theta)
    return ch - dis


@_formula
def discharge_available_kw(soc_kwh: Any, soc_min_kwh: Any, eta: Any) -> Any:
    """Most the battery can deliver in an hour (bus side) by its charge alone."""
    return fmax(soc_kwh - soc_min_kwh, 0.0) * eta


@_formula
def import_price_per_kwh(w_carbon: Any, w_cost: Any, carbon_g_per_kwh: Any,
                         price_per_mwh: Any) -> Any:
    """Reward weight (before ``reward.scale``) of one kWh imported: its carbon and cost."""
    return w_carbon * carbon_g_per_kwh * KG_PER_G + w_cost * price_per_mwh * MWH_PER_KWH


@_formula
def gpu_time_cost(busy_gpus: Any, rent_per_gpu_h: Any, held_gpu_h: Any,
                  holding_per_gpu_h_h: Any) -> tuple:
    """``(rent, holding)`` of a site-hour (step 11): busy GPU-hours at the rental price,
    and work held at the end of the hour (queued or in transit) at the holding price."""
    return busy_gpus * rent_per_gpu_h, held_gpu_h * holding_per_gpu_h_h


@_formula
def terminal_value_per_gpu_h(pue: Any, e_uncapped_kwh: Any, w_carbon: Any,
                             w_cost: Any, carbon_g_per_kwh: Any, price_per_mwh: Any,
                             rent_per_gpu_h: Any, holding_per_gpu_h_h: Any,
                             delay_h: Any) -> Any:
    """What one GPU-h of flexible work left at the end is charged (before the scale):
    what running it uncapped costs, its marginal energy ``pue e_X(1)`` kWh
    (``e_uncapped_kwh``: IT energy above idle per GPU-h of flexible work uncapped; idle
    power and the fixed overhead are paid anyway) at the given (mean) carbon and price
    plus one rented GPU-hour, and its holding price over ``delay_h`` more hours."""
    e_kwh = pue * e_uncapped_kwh
    energy = e_kwh * import_price_per_kwh(w_carbon, w_cost, carbon_g_per_kwh, price_per_mwh)
    return energy + w_cost * (rent_per_gpu_h + holding_per_gpu_h_h * delay_h)


@_formula
def penalty(w: Any, carbon_kg: Any, cost: Any, slo_gpu_h: Any, overdue_gpu_h: Any,
            overdraw_kwh: Any, rent_cost: Any, holding_cost: Any, wear_cost: Any,
            transfer_cost: Any, fuel_cost: Any, dr_penalty: Any, dr_payment: Any) -> Any:
    """Weighted reward terms of a site-hour (step 11, before ``-1 / scale``); ``w`` the
    twelve weights of ``REWARD_TERMS`` (the payment's weight is negative: a credit)."""
    return (w[0] * carbon_kg + w[1] * cost + w[2] * slo_gpu_h + w[3] * overdue_gpu_h
            + w[4] * overdraw_kwh + w[5] * rent_cost + w[6] * holding_cost
            + w[7] * wear_cost + w[8] * transfer_cost + w[9] * fuel_cost
            + w[10] * dr_penalty + w[11] * dr_payment)


@_formula
def migration_accept_share(gpus: Any, wait_gpu_h2: Any, arriving_gpu_h: Any,
                           queued_gpu_h: Any) -> Any:
    """Share of the work arriving at a site it accepts (step 2c): what it can run within
    the work's slack, ``G d - Q`` with ``d = wait_gpu_h2 / arriving`` the arriving work's
    mean hours left and ``Q`` its own queue, over what arrives (1 when nothing does)."""
    safe = fmax(arriving_gpu_h, MIN_DIVISOR)
    room = fmax(gpus * wait_gpu_h2 / safe - queued_gpu_h, 0.0)
    return fmin(room / safe, 1.0)


@_formula
def event_on(starts_in_h: Any, remaining_h: Any) -> Any:
    """1.0 in an hour of an announced grid event (it has started and has hours left)."""
    return (starts_in_h <= 0.0) * (remaining_h > 0.0) * 1.0


@_formula
def dr_event_on(starts_in_h: Any, remaining_h: Any) -> Any:
    """1.0 in an hour of a demand-response event (``dr_*`` signals)."""
    return event_on(starts_in_h, remaining_h)


@_formula
def outage_on(starts_in_h: Any, remaining_h: Any) -> Any:
    """1.0 in an outage hour (``outage_*`` signals; an outage without notice shows
    ``remaining_h = 1`` while it lasts)."""
    return event_on(starts_in_h, remaining_h)


@_formula
def backup_kw(outage: Any, excess_kw: Any, capacity_kw: Any) -> Any:
    """Standby generation of an hour (step 5b): in an outage hour (``outage`` 1.0), what
    import above headroom would be after the battery, up to the sets' capacity; 0 in any
    other hour (emergency use only)."""
    return outage * fmin(excess_kw, capacity_kw)


@_formula
def backup_terms(backup_kwh: Any, fuel_cost_per_kwh: Any, carbon_g_per_kwh: Any) -> tuple:
    """``(fuel cost, carbon kg)`` of ``backup_kwh`` of standby generation."""
    return backup_kwh * fuel_cost_per_kwh, backup_kwh * carbon_g_per_kwh * KG_PER_G


@_formula
def dr_terms(on: Any, shortfall_kwh: Any, penalty_per_kwh: Any,
             payment_per_event_h: Any) -> tuple:
    """``(penalty, payment)`` of a demand-response hour: the shortfall at the penalty per
    kWh, and the payment of an event hour (``on`` 1.0)."""
    return shortfall_kwh * penalty_per_kwh, on * payment_per_event_h


@_formula
def dr_compliant(on: Any, shortfall_kwh: Any, limit_kw: Any) -> Any:
    """1.0 in an event hour whose shortfall is round-off at most (``DR_TOL_KWH`` plus
    ``DR_TOL_FRACTION`` of the level)."""
    return on * (shortfall_kwh <= DR_TOL_KWH + DR_TOL_FRACTION * limit_kw)


@_formula
def dr_shortfall_kwh(on: Any, import_kw: Any, limit_kw: Any) -> Any:
    """Import above the event's level in an event hour (step 7), else 0."""
    return on * fmax(import_kw - limit_kw, 0.0)


@_formula
def battery_value_per_kwh(eta: Any, w_carbon: Any, w_cost: Any, carbon_g_per_kwh: Any,
                          price_per_mwh: Any) -> Any:
    """Credit (before the scale) per kWh stored at the end of an episode beyond the
    charge it started with: the ``eta`` kWh it delivers to the bus, each displacing a kWh
    imported at the given (mean) carbon and price."""
    return eta * import_price_per_kwh(w_carbon, w_cost, carbon_g_per_kwh, price_per_mwh)


@_formula
def terminal_charge(left_gpu_h: Any, value_per_gpu_h: Any, soc_end_kwh: Any,
                    soc_start_kwh: Any, value_per_kwh: Any) -> Any:
    """Charge (before the scale) at the end of an episode: work left at its value, less
    the battery's gain in charge at its value."""
    return left_gpu_h * value_per_gpu_h - (soc_end_kwh - soc_start_kwh) * value_per_kwh


@_formula
def battery_kw(mode: int, action_kw: Any, fac_kw: Any, gen_kw: Any, headroom_kw: Any,
               theta: Any, power_kw: Any, soc_kwh: Any, soc_min_kwh: Any, soc_max_kwh: Any,
               eta: Any) -> tuple:
    """``(charge, discharge)`` kW, bus side, of the hour (step 5) under ``mode``
    (:class:`BatteryMode`); ``action_kw`` is the battery action in kW (setpoint, or what
    is added to the rule's setpoint; unused under the rule)."""
    if mode == BatteryMode.RULE:
        ch_want, dis_want = rule_wants_kw(fac_kw, gen_kw, headroom_kw, theta)
    else:
        want = action_kw
        if mode == BatteryMode.RESIDUAL:
            rule = rule_battery_kw(fac_kw, gen_kw, headroom_kw, theta)
            want = want + fmin(fmax(rule, -power_kw), power_kw)
        # grid charging never pushes import above headroom
        ch_want = fmin(fmax(want, 0.0), fmax(headroom_kw + gen_kw - fac_kw, 0.0))
        dis_want = fmax(-want, 0.0)
    ch = fmin(fmin(ch_want, power_kw), fmax(soc_max_kwh - soc_kwh, 0.0) / eta)
    dis = fmin(fmin(dis_want, power_kw), discharge_available_kw(soc_kwh, soc_min_kwh, eta))
    return ch, dis


# --------------------------------------------------------------------------- packing

# Columns of PackedParams.site
# (_IDLE: board + host idle kW per GPU; _PMAX: board max kW; _HOSTB: host kW per busy GPU;
# _FIXED: facility fixed overhead kW)
(_GPUS, _IDLE, _PMAX, _PUE, _SLOPE, _T0, _BPOW, _ETA, _SOCMIN, _SOCMAX, _BSPAN, _RENT,
 _HOLD, _WEAR, _LINK, _EGRESS, _BKCAP, _BKFUEL, _BKCARB, _DRPAY, _DRPEN, _HOSTB,
 _FIXED) = range(23)
# Rows of PackedParams.curve: caps, then training throughput and board power fraction,
# then inference throughput and board power fraction, all on the caps of both curves
(_C_CAP, _C_TAU_X, _C_PI_X, _C_TAU_I, _C_PI_I) = range(5)
# Entries of PackedParams.scalar: cap_min, tau(cap_min), migration kWh per GPU-h, largest
# migration share, route logit scale, BatteryMode, rule discharge threshold, the
# reward weights (REWARD_TERMS order), reward scale, then the network: GB per GPU-h
# migrated, restart overhead, largest remote inference share, network kWh per GPU-h of
# inference routed, 1 when transfer prices depend on the destination (else site column
# _EGRESS holds them), the step's length in hours
_CAPMIN, _TAUMIN, _KAPPA, _MMAX, _BETA, _BACT, _THETA, _W0 = range(8)
_SCALE = _W0 + len(REWARD_TERMS)
_GB, _RESTART, _INFMAX, _INFKWH, _PAIRWISE, _DT = range(_SCALE + 1, _SCALE + 7)
# Planes of PackedParams.pair [N, N, 2]: price per GB sent i -> j, j may serve i's inference
_PRICE, _ROUTABLE = range(2)
# Columns of the per-site scratch of a step
# (_WS_OVER: inference a site offers to others, _WS_REACH: spare capacity in its reach)
(_WS_ACCEPT, _WS_CAP, _WS_TAU, _WS_DEMAND, _WS_ROUTED, _WS_TCOST, _WS_INBOUND, _WS_OVER,
 _WS_REACH) = range(9)
_N_WS = _WS_REACH + 1


@dataclass(frozen=True, eq=False)
class PackedParams:
    """``EnvParams`` as five arrays: per-site ``[N, 23]``, scalars, arrival split, curves,
    site pairs."""

    site: np.ndarray
    scalar: np.ndarray
    split: np.ndarray
    curve: np.ndarray  # [5, P]: caps, training tau and pi, inference tau and pi
    pair: np.ndarray  # [N, N, 2]: price per GB i -> j, 1 where j may serve i's inference


def pack(params: EnvParams) -> PackedParams:
    """Pack parameters for the kernel."""
    p = params
    # a price per source when every row is one price off the diagonal: O(N) per step
    off = ~np.eye(p.n_sites, dtype=bool)
    egress = np.array([row[o].max(initial=0.0) for row, o in zip(p.transfer_cost_per_gb, off,
                                                                  strict=True)])
    pairwise = not np.all(np.where(off, p.transfer_cost_per_gb, egress[:, None])
                          == egress[:, None])
    site = np.stack(
        [p.gpus, p.gpu_idle_kw, p.gpu_board_max_kw, p.pue, p.pue_temp_slope_per_c,
         p.pue_temp_threshold_c, p.battery_power_kw, p.battery_eta, p.soc_min_kwh,
         p.soc_max_kwh, p.battery_action_span_kw, p.gpu_rent_per_gpu_h,
         p.holding_cost_per_gpu_h_h, p.battery_degradation_per_kwh,
         np.minimum(p.migration_link_gpu_h, UNLIMITED_GPU_H), egress,
         p.backup_capacity_kw, p.backup_fuel_cost_per_kwh, p.backup_carbon_g_per_kwh,
         p.dr_payment_per_event_h, p.dr_penalty_per_kwh, p.host_busy_kw_per_gpu,
         p.facility_fixed_kw],
        axis=1,
    )
    scalar = np.concatenate(
        [
            [p.cap_min, p.tau_min, p.migration_kwh_per_gpu_h,
             p.max_migration_fraction if p.n_sites > 1 else 0.0, p.route_logit_scale,
             float(BatteryMode[p.battery_control.upper()]),
             p.battery_discharge_threshold_fraction],
            p.reward_weights,
            [p.reward_scale],
            [p.migration_gb_per_gpu_h, p.restart_overhead_gpu_h_per_gpu_h,
             p.inference_remote_fraction_max if p.n_sites > 1 else 0.0,
             p.inference_network_kwh_per_gpu_h, float(pairwise), p.step_h],
        ]
    )
    curve = np.stack([p.throttle_cap, p.throttle_throughput, p.throttle_power,
                      p.inference_throughput, p.inference_power])
    pair = np.stack([p.transfer_cost_per_gb, p.inference_routable], axis=-1)
    return PackedParams(np.ascontiguousarray(site), scalar, np.ascontiguousarray(p.arrival_split),
                        np.ascontiguousarray(curve), np.ascontiguousarray(pair))


@numba.njit(cache=True, inline="always")
def _interp(x: float, xp: np.ndarray, fp: np.ndarray) -> float:
    # np.interp semantics: clamped at both ends, linear in between.
    n = xp.shape[0]
    if x <= xp[0]:
        return fp[0]
    if x >= xp[n - 1]:
        return fp[n - 1]
    j = 0
    while xp[j + 1] < x:
        j += 1
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    return slope * (x - xp[j]) + fp[j]


# --------------------------------------------------------------------------- step


@numba.njit(cache=True, fastmath=FAST_MATH)
def _route_inference(b, site, scalar, curve, pair, action, x_t, ws):  # pragma: no cover
    # Caps, throughputs and inference demand after overflow routing (step 2e) into ws.
    n_s = ws.shape[0]
    cap_min = scalar[_CAPMIN]
    f_max = scalar[_INFMAX]
    for i in range(n_s):
        cap = cap_min + (action[b, i, Act.CAP] + 1.0) * 0.5 * (1.0 - cap_min)
        tau = _interp(cap, curve[_C_CAP], curve[_C_TAU_I])  # inference throughput
        ws[i, _WS_CAP] = cap
        ws[i, _WS_TAU] = tau
        ws[i, _WS_DEMAND] = x_t[i, Exo.INFERENCE_GPUS]
        ws[i, _WS_ROUTED] = 0.0
    if f_max <= 0.0:
        return
    # offers o_i spare_j / sum_k spare_k, then each destination takes at most its spare
    for i in range(n_s):
        ws[i, _WS_INBOUND] = 0.0
    for i in range(n_s):
        d_i = x_t[i, Exo.INFERENCE_GPUS]
        over = min(max(d_i - site[i, _GPUS] * ws[i, _WS_TAU], 0.0), f_max * d_i)
        tot = 0.0
        for j in range(n_s):
            tot += pair[i, j, _ROUTABLE] * _spare(site, ws, x_t, j)
        ws[i, _WS_OVER] = over
        ws[i, _WS_REACH] = tot
        if over <= 0.0 or tot <= 0.0:
            continue
        for j in range(n_s):
            ws[j, _WS_INBOUND] += over * pair[i, j, _ROUTABLE] * _spare(site, ws, x_t, j) / tot
    for i in range(n_s):
        over = ws[i, _WS_OVER]
        tot = ws[i, _WS_REACH]
        if over <= 0.0 or tot <= 0.0:
            continue
        for j in range(n_s):
            offer = over * pair[i, j, _ROUTABLE] * _spare(site, ws, x_t, j) / tot
            if offer > 0.0:
                took = offer * min(_spare(site, ws, x_t, j) / ws[j, _WS_INBOUND], 1.0)
                ws[i, _WS_ROUTED] += took
                ws[i, _WS_DEMAND] -= took
                ws[j, _WS_DEMAND] += took


@numba.njit(cache=True, inline="always")
def _arriving(weight, acc_k, moved_jk, inv_den_j):  # pragma: no cover - compiled
    # work arriving at j in bucket k (step 2b, O(N)): weight (E_j (1 + r_o), times the
    # accepted share once known) x (sum_i O_i[k]/den_i - O_j[k]/den_j)
    return weight * (acc_k - moved_jk * inv_den_j)


@numba.njit(cache=True, inline="always")
def _spare(site, ws, x_t, j):  # pragma: no cover - compiled
    # GPU-h of inference site j could serve beyond its own demand at its cap
    return max(site[j, _GPUS] * ws[j, _WS_TAU] - x_t[j, Exo.INFERENCE_GPUS], 0.0)


@numba.njit(cache=True, fastmath=FAST_MATH)
def _step_env(b, site, scalar, split, curve, pair, queue, transit, soc_in, action, exo, rows,
              age, q_out, z_out, soc_out, cap_out, values, reward, q2, moved, acc, e, inv_den,
              mu_s, total_s, ws):  # pragma: no cover - compiled
    # One episode (batch row b) of the step; age: the step ends an hour (queues age);
    # q2 ... ws are scratch arrays.
    n_s, n_k = queue.shape[1], queue.shape[2]
    cap_min = scalar[_CAPMIN]
    kappa = scalar[_KAPPA]
    m_max = scalar[_MMAX]
    beta = scalar[_BETA]
    mode = int(scalar[_BACT])
    theta = scalar[_THETA]
    weights = scalar[_W0:_SCALE]
    grow = 1.0 + scalar[_RESTART]
    dt = scalar[_DT]  # powers and GPU counts enter as what the step holds (core doc)
    xp = curve[_C_CAP]
    # curve values at cap_min (stage 6a)
    tau_min = _interp(cap_min, xp, curve[_C_TAU_X])
    pi_min = _interp(cap_min, xp, curve[_C_PI_X])
    taui_min = _interp(cap_min, xp, curve[_C_TAU_I])
    pii_min = _interp(cap_min, xp, curve[_C_PI_I])
    multi = n_s > 1
    x_t = exo[rows[b]]
    # route weights (softmax without the source)
    mx = -np.inf
    for i in range(n_s):
        lg = action[b, i, Act.ROUTE] * beta
        if lg > mx:
            mx = lg
    esum = 0.0
    for i in range(n_s):
        e[i] = np.exp(action[b, i, Act.ROUTE] * beta - mx)
        esum += e[i]
    for i in range(n_s):
        inv_den[i] = 1.0 / (esum - e[i]) if multi else 0.0
    # 1.-2b. arrivals, transit in, migration offered (within the link)
    for k in range(n_k):
        acc[k] = 0.0
    for i in range(n_s):
        arr = x_t[i, Exo.FLEXIBLE_GPU_H]
        tin = 0.0
        tot1 = 0.0
        for k in range(n_k):
            zk = transit[b, i, k]
            tin += zk
            q1 = queue[b, i, k] + zk + arr * split[i, k]
            q2[i, k] = q1
            tot1 += q1
        m = (action[b, i, Act.MIGRATE] + 1.0) * 0.5 * m_max
        if m * tot1 > site[i, _LINK]:
            m = site[i, _LINK] / tot1
        w = inv_den[i]
        mu = 0.0
        for k in range(n_k):
            mv = m * q2[i, k]
            moved[i, k] = mv
            q2[i, k] -= mv
            mu += mv
            acc[k] += mv * w
        values[b, i, Out.TRANSIT_IN_GPU_H] = tin
        mu_s[i] = mu
        total_s[i] = tot1 - mu
    # 2c. each destination accepts what it can run within the arriving work's slack
    refused = 0.0
    fe_sum = 0.0
    for j in range(n_s):
        zt = 0.0
        wt = 0.0
        for k in range(n_k):
            zk = _arriving(grow * e[j], acc[k], moved[j, k], inv_den[j])
            zt += zk
            wt += zk * max(k - 1, 0)
        f = migration_accept_share(site[j, _GPUS], wt, zt, total_s[j]) if zt > 0.0 else 1.0
        ws[j, _WS_ACCEPT] = f
        refused += (1.0 - f) * e[j]
        fe_sum += f * e[j]
    # 2d. refused work stays at its source; transfer price of what is sent
    for i in range(n_s):
        if not multi:
            ws[i, _WS_TCOST] = 0.0
            continue
        f_i = ws[i, _WS_ACCEPT]
        rho = (refused - (1.0 - f_i) * e[i]) * inv_den[i]
        if scalar[_PAIRWISE] > 0.0:
            price = 0.0
            for j in range(n_s):
                price += pair[i, j, _PRICE] * ws[j, _WS_ACCEPT] * e[j]
        else:
            price = site[i, _EGRESS] * (fe_sum - f_i * e[i])
        ws[i, _WS_TCOST] = scalar[_GB] * mu_s[i] * price * inv_den[i]
        for k in range(n_k):
            q2[i, k] += rho * moved[i, k]
        total_s[i] += rho * mu_s[i]
        mu_s[i] *= 1.0 - rho
    # 2e. inference overflow to sites in reach
    _route_inference(b, site, scalar, curve, pair, action, x_t, ws)
    for i in range(n_s):
        # transit to i, aged on the way (step 9), restart overhead included
        ei = e[i] * grow * ws[i, _WS_ACCEPT]
        w = inv_den[i]
        ztot = 0.0
        if multi and age:
            zk1 = _arriving(ei, acc[1], moved[i, 1], w)
            z0 = _arriving(ei, acc[0], moved[i, 0], w) + zk1
            z_out[b, i, 0] = z0
            ztot = z0
            for k in range(1, n_k - 1):
                zk = _arriving(ei, acc[k + 1], moved[i, k + 1], w)
                z_out[b, i, k] = zk
                ztot += zk
            z_out[b, i, n_k - 1] = 0.0
        elif multi:  # inside the hour: transit keeps its buckets
            zk1 = 0.0
            for k in range(n_k):
                zk = _arriving(ei, acc[k], moved[i, k], w)
                z_out[b, i, k] = zk
                ztot += zk
        else:
            zk1 = 0.0
            for k in range(n_k):
                z_out[b, i, k] = 0.0
        gpus = site[i, _GPUS] * dt
        p_idle = site[i, _IDLE]
        p_max = site[i, _PMAX]
        h_busy = site[i, _HOSTB]
        f_fix = site[i, _FIXED] * dt
        pv = x_t[i, Exo.PV_KW] * dt
        wind = x_t[i, Exo.WIND_KW] * dt
        head = x_t[i, Exo.HEADROOM_KW] * dt
        demand = ws[i, _WS_DEMAND] * dt  # routing is linear in GPUs: scale after
        routed = ws[i, _WS_ROUTED] * dt
        mu = mu_s[i]
        e_net = kappa * mu + scalar[_INFKWH] * routed
        # 3.-4. request and dispatch
        request = (action[b, i, Act.RUN] + 1.0) * 0.5 * total_s[i]
        cap = ws[i, _WS_CAP]
        tau_i = ws[i, _WS_TAU]  # inference throughput at the cap (step 2e)
        tau = _interp(cap, xp, curve[_C_TAU_X])
        e_x = it_kwh_per_gpu_h(_interp(cap, xp, curve[_C_PI_X]), tau, p_idle, p_max, h_busy)
        e_i = it_kwh_per_gpu_h(_interp(cap, xp, curve[_C_PI_I]), tau_i, p_idle, p_max, h_busy)
        inf, flex, busy = dispatch(demand, request, gpus, tau_i, tau)
        it = it_kw(inf, flex, e_i, e_x, gpus, p_idle)
        pue = pue_at(x_t[i, Exo.TEMP_C], site[i, _PUE], site[i, _SLOPE], site[i, _T0])
        fac = facility_kw(f_fix, pue, it, e_net)
        # 5. battery
        gen = pv + wind
        eta = site[i, _ETA]
        soc = soc_in[b, i]
        # the battery entry exists only with a battery action
        act_kw = action[b, i, Act.BATTERY] * site[i, _BSPAN] if mode != BatteryMode.RULE else 0.0
        ch, dis = battery_kw(mode, act_kw * dt, fac, gen, head, theta,
                             site[i, _BPOW] * dt, soc, site[i, _SOCMIN], site[i, _SOCMAX], eta)
        # 5b. in an outage, standby generation covers import above headroom first
        out_on = outage_on(x_t[i, Exo.OUTAGE_STARTS_IN_H], x_t[i, Exo.OUTAGE_REMAINING_H])
        bk = backup_kw(out_on, max(fac - gen + ch - dis - head, 0.0), site[i, _BKCAP] * dt)
        excess0 = max(fac - gen + ch - dis - head - bk, 0.0)
        # 6a. share phi of GPUs to cap_min
        e_xm = it_kwh_per_gpu_h(pi_min, tau_min, p_idle, p_max, h_busy)
        e_im = it_kwh_per_gpu_h(pii_min, taui_min, p_idle, p_max, h_busy)
        inf_m, flex_m, busy_m = dispatch(demand, request, gpus, taui_min, tau_min)
        it_m = it_kw(inf_m, flex_m, e_im, e_xm, gpus, p_idle)
        red = pue * (it - it_m)
        can = red > 0.0
        phi = min(excess0 / red, 1.0) if can else 0.0
        inf1 = inf + phi * (inf_m - inf)
        flex1 = flex + phi * (flex_m - flex)
        busy1 = busy + phi * (busy_m - busy)
        it1 = it - phi * (it - it_m)
        cap_eff = cap + phi * (cap_min - cap)
        full = phi >= 1.0
        excess1 = 0.0 if (can and not full) else max(excess0 - phi * red, 0.0)
        # 6b.-c. pause flexible work, shed inference (all GPUs at c*)
        tau_s = tau_min if full else tau
        taui_s = taui_min if full else tau_i
        ex_s = e_xm if full else e_x
        ei_s = e_im if full else e_i
        kx = pue * ex_s
        ki = pue * ei_s
        x = min(flex1, excess1 / kx) if kx > 0.0 else 0.0
        excess2 = 0.0 if x < flex1 else max(excess1 - x * kx, 0.0)
        y = min(inf1, excess2 / ki) if ki > 0.0 else 0.0
        excess3 = 0.0 if y < inf1 else max(excess2 - y * ki, 0.0)
        flex2 = flex1 - x
        inf2 = inf1 - y
        busy2 = busy1 - x / tau_s - y / taui_s
        it2 = it1 - x * ex_s - y * ei_s
        fac2 = facility_kw(f_fix, pue, it2, e_net)
        # 7. grid
        net = fac2 - gen + ch - dis - bk
        grid = max(net, 0.0)
        export = max(-net, 0.0)
        dr_on = dr_event_on(x_t[i, Exo.DR_STARTS_IN_H], x_t[i, Exo.DR_REMAINING_H])
        level = x_t[i, Exo.DR_LIMIT_KW] * dt
        short = dr_shortfall_kwh(dr_on, grid, level)
        on_h = dr_on * dt
        # 8. earliest deadline first, 9. ageing at the end of an hour (overdue and
        # slack 0 merge); inside the hour every bucket keeps its place
        shift = 1 if age else 0
        q0 = q2[i, 0]
        t0 = min(q0, max(flex2, 0.0))
        q1b = q2[i, 1]
        cum = q0 + q1b
        t1 = min(q1b, max(flex2 - q0, 0.0))
        done = t0 + t1
        q3_1 = q1b - t1
        if age:
            qo0 = (q0 - t0) + q3_1
        else:
            qo0 = q0 - t0
            q_out[b, i, 1] = q3_1
        q_out[b, i, 0] = qo0
        queued = (q0 - t0) + q3_1
        k = 2
        while k < n_k and cum < flex2:  # buckets the work done reaches
            qk = q2[i, k]
            take = min(qk, flex2 - cum)
            cum += qk
            done += take
            q3 = qk - take
            q_out[b, i, k - shift] = q3
            queued += q3
            k += 1
        for k2 in range(k, n_k):  # the rest waits: copied, aged at an hour's end
            qk = q2[i, k2]
            q_out[b, i, k2 - shift] = qk
            queued += qk
        if age:
            q_out[b, i, n_k - 1] = 0.0
        else:
            q3_1 = 0.0  # no deadline passes inside an hour
        soc_next = soc + eta * ch - dis / eta
        soc_out[b, i] = soc_next
        cap_out[b, i] = cap_eff
        v = values[b, i]
        v[Out.ARRIVED_GPU_H] = x_t[i, Exo.FLEXIBLE_GPU_H]
        v[Out.MIGRATED_GPU_H] = mu
        v[Out.WORK_DONE_GPU_H] = done
        v[Out.INFERENCE_DEMAND_GPU_H] = x_t[i, Exo.INFERENCE_GPUS] * dt
        v[Out.INFERENCE_SERVED_GPU_H] = inf2
        v[Out.SLO_GPU_H] = demand - inf2
        v[Out.DEADLINE_MISS_GPU_H] = q3_1 + zk1
        v[Out.OVERDUE_GPU_H] = (q_out[b, i, 0] + z_out[b, i, 0]) * dt
        v[Out.QUEUED_GPU_H] = queued
        v[Out.TRANSIT_GPU_H] = ztot
        v[Out.BUSY_GPUS] = busy2 / dt
        v[Out.CAP] = cap_eff
        v[Out.IT_KWH] = it2
        v[Out.MIGRATION_KWH] = kappa * mu
        v[Out.FACILITY_KWH] = fac2
        v[Out.PV_KWH] = pv
        v[Out.WIND_KWH] = wind
        v[Out.BATTERY_CHARGE_KWH] = ch
        v[Out.BATTERY_DISCHARGE_KWH] = dis
        v[Out.SOC_KWH] = soc_next
        v[Out.GRID_IMPORT_KWH] = grid
        v[Out.EXPORT_KWH] = export
        v[Out.OVERDRAW_KWH] = excess3
        v[Out.CURTAILED_KWH] = fac - fac2
        v[Out.PAUSED_GPU_H] = x
        v[Out.SHED_GPU_H] = y
        v[Out.HEADROOM_KW] = x_t[i, Exo.HEADROOM_KW]
        bk_fuel, bk_kg = backup_terms(bk, site[i, _BKFUEL], site[i, _BKCARB])
        v[Out.CARBON_KG] = grid * x_t[i, Exo.CARBON_G_PER_KWH] * KG_PER_G + bk_kg
        v[Out.COST] = grid * x_t[i, Exo.PRICE_PER_MWH] * MWH_PER_KWH
        v[Out.HEADROOM_VIOLATION] = dt if excess3 > 0.0 else 0.0
        rent, hold = gpu_time_cost(busy2, site[i, _RENT], queued + ztot, site[i, _HOLD] * dt)
        v[Out.GPU_RENT_COST] = rent
        v[Out.HOLDING_COST] = hold
        v[Out.BATTERY_DEGRADATION_COST] = dis * site[i, _WEAR]
        v[Out.TRANSFER_COST] = ws[i, _WS_TCOST]
        v[Out.RESTART_GPU_H] = (grow - 1.0) * mu
        v[Out.INFERENCE_ROUTED_GPU_H] = routed
        v[Out.INFERENCE_NETWORK_KWH] = scalar[_INFKWH] * routed
        v[Out.BACKUP_KWH] = bk
        v[Out.BACKUP_FUEL_COST] = bk_fuel
        v[Out.BACKUP_CARBON_KG] = bk_kg
        v[Out.DR_EVENT_H] = on_h
        v[Out.DR_SHORTFALL_KWH] = short
        v[Out.DR_PENALTY_COST], v[Out.DR_PAYMENT] = dr_terms(on_h, short, site[i, _DRPEN],
                                                             site[i, _DRPAY])
        v[Out.DR_COMPLIANT_H] = dr_compliant(on_h, short, level)
    # 11. reward
    r = 0.0
    for i in range(n_s):
        v = values[b, i]
        r += penalty(weights, v[Out.CARBON_KG], v[Out.COST], v[Out.SLO_GPU_H],
                     v[Out.OVERDUE_GPU_H], v[Out.OVERDRAW_KWH], v[Out.GPU_RENT_COST],
                     v[Out.HOLDING_COST], v[Out.BATTERY_DEGRADATION_COST],
                     v[Out.TRANSFER_COST], v[Out.BACKUP_FUEL_COST], v[Out.DR_PENALTY_COST],
                     v[Out.DR_PAYMENT])
    reward[b] = -r / scalar[_SCALE]


@numba.njit(cache=True, fastmath=FAST_MATH)
def _scratch(n_s, n_k):  # pragma: no cover - compiled
    return (np.empty((n_s, n_k)), np.empty((n_s, n_k)), np.empty(n_k), np.empty(n_s),
            np.empty(n_s), np.empty(n_s), np.empty(n_s), np.empty((n_s, _N_WS)))


@numba.njit(cache=True, fastmath=FAST_MATH)
def _kernel(site, scalar, split, curve, pair, queue, transit, soc_in, action, exo, rows,
            ends, q_out, z_out, soc_out, cap_out, values, reward):  # pragma: no cover
    # exo is [T, N, K]; episode b reads row rows[b]; ends[b] > 0: its step ends an hour.
    n_b, n_s, n_k = queue.shape
    q2, moved, acc, e, inv_den, mu_s, total_s, ws = _scratch(n_s, n_k)
    for b in range(n_b):
        _step_env(b, site, scalar, split, curve, pair, queue, transit, soc_in, action, exo,
                  rows, ends[b] > 0.0, q_out, z_out, soc_out, cap_out, values, reward, q2,
                  moved, acc, e, inv_den, mu_s, total_s, ws)


@dataclass(eq=False)
class StepBuffers:
    """Preallocated outputs of one batched step (reused: copy what you keep)."""

    queue_gpu_h: np.ndarray
    transit_gpu_h: np.ndarray
    soc_kwh: np.ndarray
    cap: np.ndarray
    values: np.ndarray
    reward: np.ndarray

    @classmethod
    def empty(cls, batch_size: int, n_sites: int, slack_buckets: int) -> StepBuffers:
        """Buffers for ``batch_size`` episodes."""
        b, n, k = batch_size, n_sites, slack_buckets + 1
        return cls(np.empty((b, n, k)), np.empty((b, n, k)), np.empty((b, n)),
                   np.empty((b, n)), np.empty((b, n, _N_OUT)), np.empty(b))


def step_into(pp: PackedParams, state: EnvState, action: np.ndarray, exo_t: np.ndarray,
              out: StepBuffers, ends_hour: np.ndarray | bool = True) -> None:
    """Advance ``B`` episodes by one step, writing into ``out``.

    ``action`` ``[B, N, A]`` must be float64, finite and inside [-1, 1]; ``exo_t``
    ``[B, N, len(EXO_SIGNALS)]`` float64; ``ends_hour`` ``[B]`` (or one for all) True
    where the step is the last of its hour. ``out`` may hold ``state``'s own arrays (an
    in-place update: the kernel reads all of an episode's state before writing it).
    """
    rows = np.arange(exo_t.shape[0])
    ends = np.broadcast_to(np.asarray(ends_hour, dtype=np.float64), rows.shape).copy()
    _kernel(pp.site, pp.scalar, pp.split, pp.curve, pp.pair, state.queue_gpu_h, state.transit_gpu_h,
            state.soc_kwh, action, exo_t, rows, ends, out.queue_gpu_h, out.transit_gpu_h,
            out.soc_kwh, out.cap, out.values, out.reward)


def step(params: EnvParams | PackedParams, state: EnvState, action: np.ndarray,
         exo_t: np.ndarray, ends_hour: np.ndarray | bool = True
         ) -> tuple[EnvState, StepOutputs]:
    """Same contract as :func:`gridrl.env.core.step`, computed by the compiled kernel."""
    pp = params if isinstance(params, PackedParams) else pack(params)
    b, n, k = state.queue_gpu_h.shape
    out = StepBuffers.empty(b, n, k - 1)
    step_into(pp, state, np.ascontiguousarray(action, dtype=np.float64),
              np.ascontiguousarray(exo_t, dtype=np.float64), out, ends_hour)
    return (EnvState(out.queue_gpu_h, out.transit_gpu_h, out.soc_kwh, out.cap),
            StepOutputs(out.values, out.reward))


# --------------------------------------------------------------------------- observations


@numba.njit(cache=True, fastmath=FAST_MATH)
def _fill_env(b, calendar, site_exo, t, queue, transit, soc, cap, inv_scale, group_end,
              out):  # pragma: no cover - compiled
    # Observation of batch row b at data row t into out[b].
    n_s, n_e = site_exo.shape[1], site_exo.shape[2]
    n_g = group_end.shape[0]
    n_c = calendar.shape[1]
    per_site = n_e + n_g + 4
    for c in range(n_c):
        out[b, c] = calendar[t, c]
    for i in range(n_s):
        base = n_c + i * per_site
        for f in range(n_e):
            out[b, base + f] = site_exo[t, i, f]
        base += n_e
        k = 1
        for g in range(n_g):
            s = 0.0
            while k < group_end[g]:
                s += queue[b, i, k]
                k += 1
            out[b, base + g] = s * inv_scale[i, g]
        base += n_g
        zt = 0.0
        for k2 in range(transit.shape[2]):
            zt += transit[b, i, k2]
        out[b, base] = queue[b, i, 0] * inv_scale[i, n_g]
        out[b, base + 1] = zt * inv_scale[i, n_g + 1]
        out[b, base + 2] = soc[b, i] * inv_scale[i, n_g + 2]
        out[b, base + 3] = cap[b, i]


@numba.njit(cache=True, fastmath=FAST_MATH)
def _fill(calendar, site_exo, rows, queue, transit, soc, cap, inv_scale, group_end,
          out):  # pragma: no cover - compiled
    for b in range(rows.shape[0]):
        _fill_env(b, calendar, site_exo, rows[b], queue, transit, soc, cap, inv_scale,
                  group_end, out)


# --------------------------------------------------------------------------- batched step


@numba.njit(cache=True)
def _sanitize(a, out, clipped):  # pragma: no cover - compiled
    # Copy a [B, M] into out [B, M] clipped to [-1, 1]; count clipped entries per row.
    # Returns the flat position of the first NaN, or -1.
    n_b, n_m = a.shape
    for b in range(n_b):
        c = 0
        for m in range(n_m):
            v = a[b, m]
            if v != v:
                return b * n_m + m
            if v > 1.0:
                v = 1.0
                c += 1
            elif v < -1.0:
                v = -1.0
                c += 1
            out[b, m] = v
        clipped[b] = c
    return -1


@numba.njit(cache=True, fastmath=FAST_MATH)
def _advance(site, scalar, split, curve, pair, q, z, soc, action, exo, rows, ends, q2, z2, soc2,
             cap2, values, reward, end, sums, returns, tvalue, soc0, bvalue, charge, done,
             totals, calendar, site_exo, inv_scale, group_end, obs):  # pragma: no cover
    # One step for every episode (ends[t] > 0: data row t is the last step of its hour),
    # one episode at a time (its arrays stay in cache): the
    # kernel step into (q2, z2, soc2, cap2, values, reward), the bookkeeping (sums, rows,
    # terminal charge, returns, totals over sites with weighted reward terms) and the
    # observation of the new state.
    n_b, n_s, n_f = values.shape
    n_k = q2.shape[2]
    inv = 1.0 / scalar[_SCALE]
    last = exo.shape[0] - 1
    any_done = False
    s_q2, s_moved, s_acc, s_e, s_inv_den, s_mu, s_total, s_ws = _scratch(n_s, n_k)
    for b in range(n_b):
        _step_env(b, site, scalar, split, curve, pair, q, z, soc, action, exo, rows,
                  ends[rows[b]] > 0.0, q2, z2, soc2, cap2, values, reward, s_q2, s_moved,
                  s_acc, s_e, s_inv_den, s_mu, s_total, s_ws)
        for f in range(n_f):
            totals[b, f] = 0.0
        for i in range(n_s):
            for f in range(n_f):
                v = values[b, i, f]
                sums[b, i, f] += v
                totals[b, f] += v
        rows[b] += 1
        c = 0.0
        if rows[b] >= end[b]:
            done[b] = True
            any_done = True
            for i in range(n_s):
                left = 0.0
                for k in range(n_k):
                    left += q2[b, i, k] + z2[b, i, k]
                c += terminal_charge(left, tvalue[b, i], soc2[b, i], soc0[b, i],
                                     bvalue[b, i])
            reward[b] -= c * inv
        else:
            done[b] = False
        charge[b] = c
        returns[b] += reward[b]
        for j in range(_N_TERMS):
            totals[b, n_f + j] = -scalar[_W0 + j] * totals[b, _TERM_COLS[j]] * inv
        totals[b, n_f + _N_TERMS] = -c * inv
        _fill_env(b, calendar, site_exo, min(rows[b], last), q2, z2, soc2, cap2, inv_scale,
                  group_end, obs)
    return any_done
