r"""Batched simulation core: ``reset`` and ``step`` as pure functions over numpy arrays.

This is the readable statement of the model and the test oracle: the environments step
the compiled kernel (:mod:`gridrl.env.kernel`, which also holds every formula the
planners share), and tests check that both give the same numbers. No production path
calls :func:`step`.

Every array has a leading batch axis ``B`` (independent episodes) and a site axis ``N``.
Nothing here loops over episodes, sites, jobs or slack buckets; the cost of a step is
linear in ``B * N * S``, except two site-pair terms (``N^2`` per episode): inference
routing (2e, only with ``env.inference_remote_fraction_max > 0``) and transfer prices
that differ by destination (2d; a price per source stays linear in the kernel).

Step length
===========

A step lasts ``dt = env.step_minutes / 60`` hours (1, 1/2 or 1/4; ``params.step_h``).
Signals and parameters keep their units: power in kW (``pv``, ``wind``, ``h``, ``lvl``,
``F0``, ``P0``, ``P_b``, ``K_bk``), inference demand ``D`` in GPUs busy, arrivals ``a`` in
GPU-h per step (:mod:`gridrl.env.clock` shares an hour's arrivals over its steps). The
equations below are written per step: wherever a power or a GPU count enters, it enters
as what the step holds, ``x dt`` (kWh, GPU-h), so ``pv``, ``wind``, ``h``, ``lvl``, ``F0``,
``P_b``, ``K_bk`` read ``pv dt``, ..., ``G`` reads ``G dt`` (GPU-h the site offers in the
step, so ``G P0`` is ``G dt P0`` kWh) and ``D`` reads ``D dt``. Every energy, work,
carbon and money output is then the step's amount. Stocks held through the step are
charged per hour held: holding ``hold`` and the overdue output (``overdue dt``, GPU-h
held for ``dt`` hours), the event payment ``on pay_e dt``, and the hour counts
``dr_event_h``, ``dr_compliant_h``, ``headroom_violation`` (``dt`` per step). So the
reward of a step shrinks with ``dt`` and an episode's return (its sum over ``H / dt``
steps) stays comparable across step lengths; with hourly-constant signals and a decision
held for the hour, sub-hourly steps reproduce the hourly step's flows exactly except
where the model is not linear in time: a share of the queue taken ``1 / dt`` times an
hour, earliest-deadline order inside the hour, and stocks integrated over the hour (the
queue grows through the hour as work arrives); battery limits are not among them (the
per-step limits ``P_b dt`` and the charge left add up to the hour's). Queue buckets stay
hours at every step length: deadlines fall at the ends of hours (work arriving in any
step of hour ``t`` with ``d`` hours of slack may run until the end of hour ``t + d``), and
ageing (9.) happens only in the last step of each hour (``ends_hour``), so ``S`` and the
cost of a step do not grow with ``1 / dt``; in other steps queue and transit keep their
buckets and no deadline passes. The destination limit of 2c stays ``G d_j`` with ``d_j``
in hours (GPUs times the hours the work may wait). Migration's transit delay is one
step. Demand-response compliance is measured per step: an event step complies when its
import stays within ``lvl dt`` (``dr_compliant_h`` adds ``dt``), so an event hour may be
met in some of its steps and missed in others. Hours-valued observations (notice, event
time left, slack edges, horizons) stay in hours. At ``dt = 1`` every step ends an hour and
everything below reads as written.

Step equations
==============

Notation, per episode and site ``i`` (batch index omitted). Parameters
(:class:`~gridrl.env.params.EnvParams`): ``G`` GPUs, ``P0`` idle kW per GPU (board and
host share), ``Pb`` the board's max kW (what a cap ``c`` is a fraction of), ``Hb`` the
host's kW per busy GPU (CPUs, memory, NICs, fans: not capped), ``F0`` the facility's
fixed overhead kW, two throttle curves (linear interpolation of the scenario's tables):
``tau_X(c)``, ``pi_X(c)`` for flexible (training) work and ``tau_I(c)``, ``pi_I(c)`` for
inference, the throughput and the board power fraction a busy GPU draws at cap ``c``,
``c_min``, ``S`` slack buckets, ``A[b]`` arrival split, ``kappa``
migration kWh per GPU-h (``network.transfer_kwh_per_gb x gb``), ``gb`` =
``network.checkpoint_gb_per_gpu_h``, ``L`` the link's GPU-h per step
(:func:`gridrl.env.params.migration_link_gpu_h`), ``r_o`` restart overhead GPU-h per
GPU-h moved, ``pi[i, j]`` price per GB sent from ``i`` to ``j``, ``W[i, j]`` 1 where
``j`` is within ``network.inference_rtt_max_ms`` of ``i``, ``f_inf`` =
``env.inference_remote_fraction_max``, ``k_inf`` network kWh per GPU-h of inference
routed, ``m_max``, ``beta`` route logit scale, battery ``E_cap``, ``P_b``,
``eta = sqrt(round-trip efficiency)``, ``soc_min``, ``soc_max``, ``theta`` rule discharge
threshold. Exogenous inputs of hour ``t`` (``exo_t[..., k]``, order ``EXO_SIGNALS``):
``pv``, ``wind`` (kW), ``h`` headroom (kW, 0 in an outage), ``carbon`` (g/kWh),
``price`` (per MWh), ``D`` inference demand (GPUs of uncapped work), ``a`` flexible
arrivals (GPU-h), ``temp`` (deg C), and the announced grid events
(:mod:`gridrl.data.sources.events`): the current or next announced demand-response event
(``dr_starts_in_h``, ``dr_remaining_h``, ``dr_limit_kw`` ``lvl``) and outage
(``outage_starts_in_h``, ``outage_remaining_h``). An outage is ``h = 0`` in its hours
whether or not it was announced, and standby generation (5b) runs in its hours only;
notice changes what a policy knows (observations, the planners' view of the hours
ahead), not the step. Work is measured in GPU-hours *of
uncapped work*: a GPU capped at ``c`` does ``tau(c)`` of it per hour.

Queue vector ``q`` (length ``S + 1``): ``q[0]`` overdue, ``q[1 + s]`` work that may still
wait ``s`` hours (it must run in this hour or the next ``s``). ``z`` is work in transit to
this site, already in the buckets it has on arrival.

Actions ``u`` in [-1, 1] (clipped before the core), mapped affinely:
``r = (u_run + 1)/2`` in [0, 1]; ``c = c_min + (u_cap + 1)/2 (1 - c_min)``;
``lam = beta u_route`` (route logits); ``m = m_max (u_migrate + 1)/2`` (0 when ``N = 1``);
battery action ``p_b = P_b u_battery`` (kW, + charges) with ``env.battery_control:
setpoint``, ``p_b = clip(rule, -P_b, P_b) + 2 P_b u_battery`` with ``residual`` (``rule``
the rule's ``ch* - dis*`` of equation 5: action 0 is the rule, and every setpoint in
[-P_b, P_b] is reachable from it).

1. **Arrivals, transit**: ``q1 = q + z + a A`` (arrivals of hour ``t`` may run in hour
   ``t``); ``z = 0``.
2. **Migration** (proportional over buckets).

   a. *Link*: a site sends at most ``L`` GPU-h a step: ``m' = min(m, L / sum(q1))``.
      ``L`` is what the link (``bandwidth x link share``) delivers in one step less the
      latency, over ``gb``, so every step's transfer arrives by the next: the transit
      delay is one step.
   b. *Offer*: ``O = m' q1``. Destination shares exclude the source:
      ``E_j = exp(lam_j - max lam)``, ``P[i->j] = E_j / (sum_k E_k - E_i)`` for
      ``j != i``; arriving at ``j``: ``Z_j = (1 + r_o) sum_{i != j} P[i->j] O_i``
      (computed in O(N) as ``E_j (sum_i O_i/den_i - O_j/den_j)``; ``r_o`` is the
      restart overhead, work the destination must also run).
   c. *Destination limit*: ``j`` accepts the share ``f_j = min(1, max(G_j d_j - Q_j, 0)
      / sum(Z_j))`` (1 when nothing arrives) of what arrives: what it can run within
      the work's slack, ``d_j = sum_b Z_j[b] max(b - 1, 0) / sum(Z_j)`` the mean hours
      the arriving work may still wait after its transit, ``Q_j = sum(q1_j - O_j)`` its
      own queue (before refused work returns).
   d. *Refusals stay home*: the share of ``i``'s offer refused is
      ``rho_i = sum_{j != i} (1 - f_j) P[i->j]``; ``M = (1 - rho) O``, ``q2 = q1 - M``,
      ``mu = sum(M)``, in transit to ``j``: ``z'_j = f_j Z_j``. Migration energy
      ``e_mig = kappa mu`` kWh, charged at the source in this hour and not curtailable;
      transfer cost ``gb sum(O_i) sum_{j != i} pi[i, j] f_j P[i->j]`` (each GB at its
      link's price); restart overhead ``r_o mu`` GPU-h.
   e. *Inference overflow* (at the action's caps ``c``, ``C_i = G_i tau_I(c_i)``): what a
      site cannot serve, up to ``f_inf`` of its demand, ``o_i = min(max(D_i - C_i, 0),
      f_inf D_i)``, is offered to the sites in reach in proportion to their spare
      capacity ``s_j = max(C_j - D_j, 0)``: ``o_ij = o_i W_ij s_j / sum_k W_ik s_k``;
      ``j`` takes ``g_j = min(1, s_j / sum_i o_ij)`` of its offers. Routed away
      ``rt_i = sum_j g_j o_ij``; the demand each site dispatches (4.) becomes
      ``D_i - rt_i + sum_k g_i o_ki``; network energy ``e_inf = k_inf rt_i`` at the home
      site, not curtailable. ``e_net = e_mig + e_inf``.
3. **Request**: ``Q = sum(q2)``, ``R = r Q`` (GPU-h requested, earliest deadline first).
4. **Dispatch at cap c** (one cap for all of a site's GPUs; inference first, it cannot
   wait): ``I = min(D, G tau_I(c))``; ``X = min(R, (G - I/tau_I(c)) tau_X(c))``;
   ``busy = I/tau_I(c) + X/tau_X(c)`` (a capped GPU serves fewer requests, so the same
   demand needs more GPUs). Energy per GPU-h of work above idle
   ``e_w(c) = (pi_w(c) Pb + Hb - P0) / tau_w(c)`` for ``w`` in ``{X, I}``: a busy GPU
   draws ``pi_w(c) Pb`` on its board (at most the cap; less for work that does not reach
   the limit) plus ``Hb`` in its host, which the cap does not touch, so capping saves
   board power only while every work-hour still pays the host. ``IT = G P0 + I e_I(c) +
   X e_X(c)`` (idle GPUs stay powered at ``P0``).
   **Facility**: ``PUE_t = pue + slope max(temp - T0, 0)``; ``F = F0 + PUE_t IT + e_net``:
   a fixed overhead (lighting, UPS and transformer no-load losses, cooling that runs at
   any load) plus a part proportional to IT whose multiplier rises with outdoor
   temperature, so the effective PUE ``F / IT`` falls with load and rises with heat.
5. **Battery** (``gen = pv + wind``). Rule (``battery_control: rule``):
   ``ch* = max(gen - F, 0)``, ``dis* = max(F - gen - theta h, 0)``. Action (``setpoint``,
   ``residual``): ``ch* = min(max(p_b, 0), max(h + gen - F, 0))`` (grid charging never
   pushes import above headroom), ``dis* = max(-p_b, 0)``.
   Limits: ``ch = min(ch*, P_b, max(soc_max - soc, 0)/eta)``,
   ``dis = min(dis*, P_b, max(soc - soc_min, 0) eta)``.
   ``excess0 = max(F - gen + ch - dis - h - bk, 0)`` with 5b.

5b. **Standby generation** (``backup``: capacity ``K_bk``, fuel ``f_bk`` per kWh, carbon
   ``c_b`` g/kWh): ``bk = o_t min(max(F - gen + ch - dis - h, 0), K_bk)`` with ``o_t`` 1 in
   an outage hour (``outage_starts_in_h = 0`` and ``outage_remaining_h > 0``; an outage
   without notice shows 1 hour left while it lasts), else 0. The sets run only in
   outages, for import that would exceed headroom (emergency use: US EPA RICE NESHAP,
   40 CFR 63.6640(f), allows emergency engines unlimited hours only in an emergency
   such as a grid outage; congestion relief or demand response is not emergency use),
   after the battery and local generation and before any curtailment. Outside outages
   import above headroom is curtailed. An NFPA 110 type-10 set takes load
   within 10 s and the UPS carries the load until then (the scenario checks
   ``start_s <= ups_ride_through_s``), so at the hourly step the set covers the whole
   hour an outage begins. Overdraw is what neither battery, local generation, backup nor
   curtailment covers.
6. **Curtailment**, in a fixed order, each stage only as far as needed:

   a. *cap to c_min*: dispatch (4.) again at ``c_min`` -> ``I_m, X_m, busy_m, IT_m``;
      ``red = PUE_t (IT - IT_m)``; ``phi = clip(excess0 / red, 0, 1)`` if ``red > 0``
      else 0. A share ``phi`` of the site's GPUs (and work) moves to ``c_min`` (power
      caps are per GPU): every quantity ``v`` becomes ``v + phi (v_m - v)``;
      ``excess1 = 0`` if ``0 < phi < 1`` else ``max(excess0 - phi red, 0)``. The mean
      cap ``c_eff = c + phi (c_min - c)`` is what the observation shows next hour.
   b. *pause flexible work*: ``c* = c_min`` if ``phi = 1`` else ``c`` (stages b and c
      only act when stage a could not remove the excess, so all GPUs run at ``c*``);
      each GPU-h paused saves ``k_X = PUE_t e_X(c*)`` kW.
      ``x = min(X1, excess1 / k_X)``, ``excess2 = excess1 - x k_X`` (exactly 0 when
      ``x < X1``; ``x = 0`` when ``k_X = 0``).
   c. *shed inference*: ``k_I = PUE_t e_I(c*)``; ``y = min(I1, excess2 / k_I)``,
      ``excess3 = excess2 - y k_I`` (exactly 0 when ``y < I1``).

   Paused and shed GPUs go idle (they keep drawing ``P0``): idle power, the fixed
   overhead and network energy are never curtailed, so an outage that battery, standby
   generation and local generation cannot carry leaves ``overdraw = excess3 > 0``.
7. **Grid**: ``X2 = X1 - x``, ``I2 = I1 - y``, ``busy2 = busy1 - x/tau_X(c*) -
   y/tau_I(c*)``, ``IT2 = IT1 - x e_X(c*) - y e_I(c*)``, ``F2 = F0 + PUE_t IT2 + e_net``,
   ``net = F2 - gen + ch - dis - bk``;
   ``import = max(net, 0)``, ``export = max(-net, 0)`` (surplus generation spilled or
   exported without pay), ``overdraw = excess3`` (= ``max(import - h, 0)``).
   ``carbon_kg = (import carbon + bk c_b) / 1000``, ``cost = import price / 1000``,
   ``fuel = bk f_bk``.
   **Demand response**: an hour is an event hour (``on = 1``) when the announced event
   has started and has hours left (``dr_starts_in_h = 0``, ``dr_remaining_h > 0``); the
   event asks the site to keep grid import at or below ``lvl``. ``shortfall = on
   max(import - lvl, 0)`` kWh; the programme pays ``pay_e`` per event hour (availability,
   whatever the performance) and charges ``pen`` per kWh of shortfall (non-performance
   charge, as PJM Capacity Performance and ERCOT ERS settle). The core does not
   curtail for an event: complying is the policy's choice.
8. **Work**: ``slo = D' - I2`` (GPU-h of inference not served, ``D'`` the demand
   after routing: summed over sites, demand less what was served anywhere). ``X2`` is taken from
   ``q2`` earliest deadline first (overdue, then slack 0, 1, ...) with a cumulative sum:
   ``take_b = min(q2_b, max(X2 - (cumsum(q2)_b - q2_b), 0))``; ``q3 = q2 - take``.
9. **Ageing** (queue and transit): overdue keeps its work and receives slack 0
   (``miss = q3[1] + z'[1]`` is the deadline-miss GPU-h of the hour); every other bucket
   moves down one; the last bucket empties.
   ``overdue = q'[0] + z''[0]`` is penalised in this hour's reward and every later hour
   until it runs.
10. **Battery**: ``soc' = soc + eta ch - dis / eta``.
11. **Reward**: GPU time is priced: ``rent = busy2 rho_r`` (``rho_r`` =
    ``gpu_rent_per_gpu_h``, the site's price of a busy GPU-hour where capacity is rented,
    0 where owned) and ``hold = (sum(q') + sum(z'')) h_q`` (``h_q`` =
    ``workload.holding_cost_per_gpu_h_h``: every GPU-h of flexible work still queued or
    in transit at the end of the hour, overdue included, costs the value of an hour's
    delay); battery wear ``wear = dis c_d`` (``c_d`` =
    ``battery.degradation_cost_per_kwh`` per kWh discharged); ``transfer`` the transfer
    cost of 2d. Reward ``-(w . [carbon_kg, cost, slo, overdue, overdraw, rent, hold,
    wear, transfer, fuel, short pen, on pay_e]) / scale`` summed over sites (``rent``,
    ``hold``, ``wear``, ``transfer``, ``fuel`` and the demand-response penalty are money:
    their weight is ``reward.cost_per_unit``; the payment is a credit, weight
    ``-reward.cost_per_unit``).
    At the last hour of an episode the environments also subtract ``sum_i (leftover_i
    v_i - (soc_i - soc0_i) v_b,i) / scale``. ``soc0`` is the charge the episode started
    with, drawn uniformly from ``battery.soc_initial_fraction_range`` by a generator
    seeded by the scenario seed and the first hour
    (:func:`gridrl.env.physics.initial_soc_kwh`); ``v_b = eta (w_c carbon / 1000 + w_e
    price / 1000)`` at the episode's mean carbon and price
    (:func:`gridrl.env.physics.battery_value_per_kwh`): a kWh left in store delivers
    ``eta`` kWh later and displaces that much import, so emptying the battery at the end
    is not free energy. ``v_i`` is the charge per GPU-h of work still queued or in
    transit (:func:`gridrl.env.physics.terminal_value_per_gpu_h`): what running it costs after
    the end, its uncapped energy ``PUE e_X(1)`` at the episode's mean carbon and
    price plus one rented GPU-hour ``rho_r``, and its holding ``h_q d`` over ``d`` =
    the site's mean deadline slack (the wait the work was allowed on average), so
    work pushed past the end still pays its rent and holding.

Given the caps, every equation is linear or piecewise linear (min/max) in the work and
energy quantities, so a linear program can model it: with a fixed cap per hour the
facility energy is the floor ``F0 + PUE_t G P0`` plus ``PUE_t e_w(c)`` kWh per GPU-h of
work of kind ``w`` plus network energy (linear in the work at a given temperature);
the GPUs hold ``I/tau_I(c) + X/tau_X(c) <= G``, and rent is ``rho_r / tau_w(c)`` per
GPU-h of work (a capped GPU needs more busy hours for the same work). Mixing tabulated cap
levels in an hour is a convex relaxation of choosing one cap (per-GPU caps make that
mixture physical, as stage 6a does).

Timing: the decision for hour ``t`` sees the signals of hour ``t`` (a nowcast, as
telemetry and hour-ahead forecasts give in operation), the forecasts issued at ``t``
for ``t + h``, and the state at the start of ``t``; arrivals of hour ``t`` are in
``exo_t`` and can run in hour ``t``.

Invariants (property-tested): ``sum(q) + sum(z)`` changes by ``a + r_o mu - X2`` each
hour (no work is lost; the restart overhead is work added); a site sends at most ``L``
and a destination receives at most ``G (S - 1)`` a step; inference demand less served
equals ``slo`` over the fleet; ``F2 + ch + export = import + pv + wind + dis + bk``;
``soc_min <= soc <= soc_max``; queues are never negative; ``import <= h + overdraw``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridrl.env.kernel import (
    _TERM_COLS,
    EXO_SIGNALS,
    KG_PER_G,
    MWH_PER_KWH,
    OUTPUT_FIELDS,
    Act,
    Exo,
    StepOutputs,
    backup_kw,
    backup_terms,
    dr_compliant,
    dr_event_on,
    dr_shortfall_kwh,
    dr_terms,
    migration_accept_share,
    outage_on,
)
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = [
    "EXO_SIGNALS",
    "OUTPUT_FIELDS",
    "PhysicalAction",
    "StepOutputs",
    "normalise_action",
    "physical_action",
    "reset",
    "reward",
    "step",
]

_F = {name: i for i, name in enumerate(OUTPUT_FIELDS)}


@dataclass(frozen=True, eq=False)
class PhysicalAction:
    """Actions in physical units, ``[B, N]`` each.

    Attributes
    ----------
    run : share of runnable flexible work requested now, [0, 1]
    cap : power cap fraction, [cap_min, 1]
    route_logit : softmax logit of each site as a migration destination
    migrate : share of each site's queue sent away, [0, max_migration_fraction]
    battery_kw : battery action in kW (+ charge): the setpoint, or what is added to the
        rule's setpoint (``residual``); None under the dispatch rule
    """

    run: np.ndarray
    cap: np.ndarray
    route_logit: np.ndarray
    migrate: np.ndarray
    battery_kw: np.ndarray | None


def physical_action(params: EnvParams, action: np.ndarray) -> PhysicalAction:
    """Map a normalised action ``[B, N, A]`` in [-1, 1] to physical units (see module doc)."""
    half = (action + 1.0) * 0.5
    migrate = half[..., Act.MIGRATE] * params.max_migration_fraction
    if params.n_sites == 1:
        migrate = np.zeros_like(migrate)  # nowhere to go
    return PhysicalAction(
        run=half[..., Act.RUN],
        cap=params.cap_min + half[..., Act.CAP] * (1.0 - params.cap_min),
        route_logit=action[..., Act.ROUTE] * params.route_logit_scale,
        migrate=migrate,
        battery_kw=action[..., Act.BATTERY] * params.battery_action_span_kw if params.battery_action
        else None,
    )


def normalise_action(params: EnvParams, run: np.ndarray, cap: np.ndarray,
                     route_logit: np.ndarray, migrate: np.ndarray,
                     battery_kw: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`physical_action`: physical decisions ``[..., N]`` to the
    normalised action ``[..., N, A]`` (not clipped: values outside [-1, 1] mean the
    decision is outside the action's range, and the environments clip them).

    ``battery_kw`` (the battery action in kW, see :class:`PhysicalAction`) is required
    with a battery action and ignored without; ``gridrl.env.physics.encode_battery_kw``
    sets it from a wanted setpoint. With one site ``migrate`` has no effect (any value maps to -1).
    """
    run, cap, route_logit, migrate = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (run, cap, route_logit, migrate)))
    out = np.empty(run.shape + (params.n_actions_per_site,))
    out[..., Act.RUN] = 2.0 * run - 1.0
    span = 1.0 - params.cap_min  # 0 when cap_min = 1: every action means cap 1
    out[..., Act.CAP] = 2.0 * (cap - params.cap_min) / span - 1.0 if span > 0 else 1.0
    out[..., Act.ROUTE] = route_logit / params.route_logit_scale
    if params.n_sites > 1 and params.max_migration_fraction > 0:
        out[..., Act.MIGRATE] = 2.0 * migrate / params.max_migration_fraction - 1.0
    else:
        out[..., Act.MIGRATE] = -1.0
    if params.battery_action:
        if battery_kw is None:
            raise ValueError("battery_kw is needed: the scenario has a battery action")
        power = params.battery_action_span_kw
        out[..., Act.BATTERY] = np.divide(np.asarray(battery_kw, dtype=np.float64), power,
                                out=np.zeros(run.shape), where=power > 0)
    return out


def _rule_battery_kw(params: EnvParams, fac_kw: np.ndarray, gen_kw: np.ndarray,
                    headroom_kw: np.ndarray) -> np.ndarray:
    """The dispatch rule's wanted battery power ``ch* - dis*`` (kW, + charges; equation
    5) for facility power ``F`` before curtailment, local generation and headroom."""
    return np.maximum(gen_kw - fac_kw, 0.0) - np.maximum(
        fac_kw - gen_kw - params.battery_discharge_threshold_fraction * headroom_kw, 0.0)


def reset(params: EnvParams, batch_size: int) -> EnvState:
    """Initial state of ``batch_size`` episodes: empty queues, nothing in transit, battery
    at ``soc_initial_kwh``, cap 1 (the environments draw the charge per episode instead,
    :func:`gridrl.env.physics.initial_soc_kwh`)."""
    n, s = params.n_sites, params.slack_buckets
    return EnvState(
        queue_gpu_h=np.zeros((batch_size, n, s + 1)),
        transit_gpu_h=np.zeros((batch_size, n, s + 1)),
        soc_kwh=np.broadcast_to(params.soc_initial_kwh, (batch_size, n)).copy(),
        cap=np.ones((batch_size, n)),
    )


def reward(params: EnvParams, values: np.ndarray) -> np.ndarray:
    """``[B]`` reward from step output values ``[B, N, F]`` (module doc, equation 11)."""
    terms = values[..., _REWARD_IDX].sum(axis=1)  # [B, len(REWARD_TERMS)]
    return -(terms @ params.reward_weights) / params.reward_scale


_REWARD_IDX = _TERM_COLS


def _route_inference(p: EnvParams, demand: np.ndarray,
                     capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Demand after overflow routing (step 2e) and inference routed away, ``[B, N]``."""
    f_max = p.inference_remote_fraction_max if p.n_sites > 1 else 0.0
    if f_max <= 0.0:
        return demand, np.zeros_like(demand)
    over = np.minimum(np.maximum(demand - capacity, 0.0), f_max * demand)
    spare = np.maximum(capacity - demand, 0.0)
    reach = p.inference_routable[None] * spare[:, None, :]  # [B, i, j]
    tot = reach.sum(-1, keepdims=True)
    offer = over[..., None] * np.divide(reach, tot, out=np.zeros_like(reach), where=tot > 0)
    inbound = offer.sum(1)  # [B, j]
    take = np.minimum(np.divide(spare, inbound, out=np.ones_like(spare), where=inbound > 0), 1.0)
    took = offer * take[:, None, :]
    out, into = took.sum(-1), took.sum(1)
    return demand - out + into, out


def _age(x: np.ndarray) -> np.ndarray:
    """Move every bucket down one hour; slack 0 joins overdue (index 0)."""
    out = np.empty_like(x)
    out[..., 0] = x[..., 0] + x[..., 1]
    out[..., 1:-1] = x[..., 2:]
    out[..., -1] = 0.0
    return out


def step(
    params: EnvParams, state: EnvState, action: np.ndarray, exo_t: np.ndarray,
    ends_hour: np.ndarray | bool = True,
) -> tuple[EnvState, StepOutputs]:
    """Advance ``B`` episodes by one step (``params.step_h`` hours).

    Parameters
    ----------
    params : EnvParams
    state : EnvState
        State at the start of the step (not modified).
    action : ndarray
        ``[B, N, A]`` normalised actions, finite and inside [-1, 1] (the callers
        validate and clip).
    exo_t : ndarray
        ``[B, N, len(EXO_SIGNALS)]`` float64 signals of the step.
    ends_hour : bool or ndarray
        ``[B]`` True where the step is the last of its hour (queues age); always at
        hourly steps.

    Returns
    -------
    (EnvState, StepOutputs)
        The state at the start of the next step and what happened (module doc).
    """
    p = params
    act = physical_action(p, action)
    dt = p.step_h  # powers enter as what the step holds (kWh, GPU-h): "Step length"
    pv, wind = exo_t[..., Exo.PV_KW] * dt, exo_t[..., Exo.WIND_KW] * dt
    head, demand = exo_t[..., Exo.HEADROOM_KW] * dt, exo_t[..., Exo.INFERENCE_GPUS] * dt
    carbon, price = exo_t[..., Exo.CARBON_G_PER_KWH], exo_t[..., Exo.PRICE_PER_MWH]
    arrivals, temp = exo_t[..., Exo.FLEXIBLE_GPU_H], exo_t[..., Exo.TEMP_C]
    gpus, p_idle, p_board, h_busy = (p.gpus * dt, p.gpu_idle_kw, p.gpu_board_max_kw,
                                     p.host_busy_kw_per_gpu)
    fixed, b_pow = p.facility_fixed_kw * dt, p.battery_power_kw * dt

    def curves(c):
        # (tau_X, e_X, tau_I, e_I) at cap c: throughput and IT kWh per GPU-h above idle
        tau_x = np.interp(c, p.throttle_cap, p.throttle_throughput)
        tau_i = np.interp(c, p.throttle_cap, p.inference_throughput)
        pi_x = np.interp(c, p.throttle_cap, p.throttle_power)
        pi_i = np.interp(c, p.throttle_cap, p.inference_power)
        return (tau_x, (pi_x * p_board + h_busy - p_idle) / tau_x,
                tau_i, (pi_i * p_board + h_busy - p_idle) / tau_i)

    def serve(tau_x, e_x, tau_i, e_i):
        # inference first, then flexible work on the GPUs left; IT power
        inf = np.minimum(demand, gpus * tau_i)
        flex = np.minimum(request, np.maximum(gpus - inf / tau_i, 0.0) * tau_x)
        return inf, flex, inf / tau_i + flex / tau_x, gpus * p_idle + inf * e_i + flex * e_x

    # 1. arrivals join their home queue; last hour's migrations arrive
    transit_in = state.transit_gpu_h.sum(-1)
    q1 = state.queue_gpu_h + state.transit_gpu_h + arrivals[..., None] * p.arrival_split

    # 2. migration out, proportional over buckets, within the link (2a-b)
    total1 = q1.sum(-1)
    link = p.migration_link_gpu_h
    over_link = act.migrate * total1 > link
    m = np.where(over_link, link / np.where(over_link, total1, 1.0), act.migrate)
    offered = m[..., None] * q1  # [B, N, S+1]
    mu_off = offered.sum(-1)
    e = np.exp(act.route_logit - act.route_logit.max(axis=-1, keepdims=True))
    den = e.sum(axis=-1, keepdims=True) - e
    grow = 1.0 + p.restart_overhead_gpu_h_per_gpu_h
    if p.n_sites > 1:
        per_den = offered / den[..., None]
        arriving = grow * e[..., None] * (per_den.sum(axis=1, keepdims=True) - per_den)
        # 2c. acceptance: what the destination can run within the work's slack
        zt = arriving.sum(-1)
        wt = (arriving * np.maximum(np.arange(q1.shape[-1]) - 1, 0)).sum(-1)
        acc = np.where(zt > 0, migration_accept_share(
            p.gpus, wt, zt, (q1 - offered).sum(-1)), 1.0)
        # 2d. refused work stays at the source
        fe = (1.0 - acc) * e
        rho = (fe.sum(-1, keepdims=True) - fe) / den
        transit = acc[..., None] * arriving
        # price of a GB from i: sum_j price_ij P[i->j] acc_j
        per_gb = np.einsum("ij,bj->bi", p.transfer_cost_per_gb, acc * e) / den
        transfer_cost = p.migration_gb_per_gpu_h * mu_off * per_gb
    else:
        rho = np.zeros_like(mu_off)
        transit = np.zeros_like(offered)
        transfer_cost = np.zeros_like(mu_off)
    moved = (1.0 - rho)[..., None] * offered
    q2 = q1 - moved
    mu = moved.sum(-1)
    e_mig = p.migration_kwh_per_gpu_h * mu

    # 2e. inference overflow to sites in reach
    cap = act.cap
    demand_home = demand
    demand, routed = _route_inference(
        p, demand, gpus * np.interp(cap, p.throttle_cap, p.inference_throughput))
    e_net = e_mig + p.inference_network_kwh_per_gpu_h * routed

    # 3.-4. request and dispatch at the action's cap
    cum = np.cumsum(q2, axis=-1)
    request = act.run * cum[..., -1]
    tau, e_x, tau_i, e_i = curves(cap)
    inf, flex, busy, it = serve(tau, e_x, tau_i, e_i)
    pue = p.pue + p.pue_temp_slope_per_c * np.maximum(temp - p.pue_temp_threshold_c, 0.0)
    fac = fixed + pue * it + e_net

    # 5. battery
    gen = pv + wind
    eta = p.battery_eta
    if p.battery_action:
        want = act.battery_kw * dt
        if p.battery_residual:
            want = want + np.clip(_rule_battery_kw(p, fac, gen, head), -b_pow, b_pow)
        ch_want = np.minimum(np.maximum(want, 0.0), np.maximum(head + gen - fac, 0.0))
        dis_want = np.maximum(-want, 0.0)
    else:
        ch_want = np.maximum(gen - fac, 0.0)
        dis_want = np.maximum(fac - gen - p.battery_discharge_threshold_fraction * head, 0.0)
    soc = state.soc_kwh
    room = np.maximum(p.soc_max_kwh - soc, 0.0) / eta
    avail = np.maximum(soc - p.soc_min_kwh, 0.0) * eta
    ch = np.minimum(np.minimum(ch_want, b_pow), room)
    dis = np.minimum(np.minimum(dis_want, b_pow), avail)
    # 5b. standby generation, in outage hours only
    out_on = outage_on(exo_t[..., Exo.OUTAGE_STARTS_IN_H], exo_t[..., Exo.OUTAGE_REMAINING_H])
    bk = backup_kw(out_on, np.maximum(fac - gen + ch - dis - head, 0.0),
                   p.backup_capacity_kw * dt)
    excess0 = np.maximum(fac - gen + ch - dis - head - bk, 0.0)

    # 6a. curtailment: a share phi of the GPUs goes to cap_min
    tau_m, e_xm, taui_m, e_im = curves(np.full_like(cap, p.cap_min))
    inf_m, flex_m, busy_m, it_m = serve(tau_m, e_xm, taui_m, e_im)
    red = pue * (it - it_m)
    can = red > 0.0
    phi = np.where(can, np.minimum(excess0 / np.where(can, red, 1.0), 1.0), 0.0)
    inf1 = inf + phi * (inf_m - inf)
    flex1 = flex + phi * (flex_m - flex)
    busy1 = busy + phi * (busy_m - busy)
    it1 = it - phi * (it - it_m)
    cap_eff = cap + phi * (p.cap_min - cap)
    full = phi >= 1.0
    excess1 = np.where(can & ~full, 0.0, np.maximum(excess0 - phi * red, 0.0))

    # 6b.-c. pause flexible work, then shed inference, all GPUs at c*
    tau_s = np.where(full, tau_m, tau)
    taui_s = np.where(full, taui_m, tau_i)
    ex_s = np.where(full, e_xm, e_x)  # IT kW saved per GPU-h of flexible work stopped
    ei_s = np.where(full, e_im, e_i)  # ... of inference shed
    kx, ki = pue * ex_s, pue * ei_s
    inv_kx = np.divide(1.0, kx, out=np.zeros_like(kx), where=kx > 0.0)
    inv_ki = np.divide(1.0, ki, out=np.zeros_like(ki), where=ki > 0.0)
    x = np.minimum(flex1, excess1 * inv_kx)
    excess2 = np.where(x < flex1, 0.0, np.maximum(excess1 - x * kx, 0.0))
    y = np.minimum(inf1, excess2 * inv_ki)
    excess3 = np.where(y < inf1, 0.0, np.maximum(excess2 - y * ki, 0.0))
    flex2 = flex1 - x
    inf2 = inf1 - y
    busy2 = busy1 - x / tau_s - y / taui_s
    it2 = it1 - x * ex_s - y * ei_s
    fac2 = fixed + pue * it2 + e_net

    # 7. grid
    net = fac2 - gen + ch - dis - bk
    grid = np.maximum(net, 0.0)
    export = np.maximum(-net, 0.0)
    dr_on = dr_event_on(exo_t[..., Exo.DR_STARTS_IN_H], exo_t[..., Exo.DR_REMAINING_H])
    level = exo_t[..., Exo.DR_LIMIT_KW] * dt
    short = dr_shortfall_kwh(dr_on, grid, level)
    bk_fuel, bk_kg = backup_terms(bk, p.backup_fuel_cost_per_kwh, p.backup_carbon_g_per_kwh)
    on_h = dr_on * dt  # event hours in the step
    dr_pen, dr_pay = dr_terms(on_h, short, p.dr_penalty_per_kwh, p.dr_payment_per_event_h)

    # 8. earliest deadline first
    take = np.minimum(q2, np.maximum(flex2[..., None] - (cum - q2), 0.0))
    q3 = q2 - take

    # 9. ageing, in the last step of an hour
    age = np.broadcast_to(np.asarray(ends_hour, dtype=bool), q3.shape[:1])[:, None, None]
    q_next = np.where(age, _age(q3), q3)
    z_next = np.where(age, _age(transit), transit)
    miss = np.where(age[..., 0], q3[..., 1] + transit[..., 1], 0.0)
    overdue = q_next[..., 0] + z_next[..., 0]

    soc_next = soc + eta * ch - dis / eta
    values = np.stack(
        [
            arrivals + 0.0,
            transit_in,
            mu,
            take.sum(-1),
            demand_home + 0.0,
            inf2,
            demand - inf2,
            miss,
            overdue * dt,
            q_next.sum(-1),
            z_next.sum(-1),
            busy2 / dt,
            cap_eff,
            it2,
            e_mig,
            fac2,
            pv + 0.0,
            wind + 0.0,
            ch,
            dis,
            soc_next,
            grid,
            export,
            excess3,
            fac - fac2,
            x,
            y,
            exo_t[..., Exo.HEADROOM_KW] + 0.0,
            grid * carbon * KG_PER_G + bk_kg,
            grid * price * MWH_PER_KWH,
            (excess3 > 0.0) * dt,
            busy2 * p.gpu_rent_per_gpu_h,
            (q_next.sum(-1) + z_next.sum(-1)) * p.holding_cost_per_gpu_h_h * dt,
            dis * p.battery_degradation_per_kwh,
            transfer_cost,
            (grow - 1.0) * mu,
            routed,
            p.inference_network_kwh_per_gpu_h * routed,
            bk,
            bk_fuel,
            bk_kg,
            on_h,
            short,
            dr_pen,
            dr_pay,
            dr_compliant(on_h, short, level),
        ],
        axis=-1,
    )
    new_state = EnvState(q_next, z_next, soc_next, cap_eff)
    return new_state, StepOutputs(values, reward(p, values))
