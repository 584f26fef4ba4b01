r"""Linear program of the environment's step equations, shared by ``mpc`` and ``lp_bound``.

The model covers ``H`` steps of ``N`` sites from a given state and exogenous rows (the
truth for the bound, P50 forecasts for MPC). It is assembled with ``scipy.sparse`` from
index arrays (no loop over variables) and solved with HiGHS (``highspy``).

Step length: the formulation below is written for hourly steps. At steps of ``dt`` hours
(``env.step_minutes``) the env's equations are the hourly ones with every power and GPU
count taken as what the step holds (``gridrl.env.core``, "Step length"), so the LP reads
its parameters and rows in those units, converted once in :func:`step_units` and
:func:`step_exo` (powers ``x dt`` kWh, GPUs ``G dt`` GPU-h, the overdue weight, holding
and the event payment per step), and its plan is returned in the env's output units.
"Hour" below reads "step", except for deadlines: they fall at the ends of hours, so the
release table (:func:`release_table`) dates a deadline of ``k`` hours to the last step
of the hour ``k`` hours after the step's own (``LPInputs.phase`` places the first step
in its hour).

Formulation
===========

Per hour ``t`` and site ``i`` (all variables >= 0): ``w[t,i,k]`` work done at cap level
``k`` (``cap_min`` and the points of either throttle curve above it; GPU-h of uncapped
work), one set of levels ``wX`` for flexible work and one ``wI`` for inference, ``s``
inference served, ``x`` flexible work done, ``out``/``in`` flexible work sent away /
received (it joins site ``i``'s queue at ``t+1``), ``b`` flexible work queued at the end
of the hour, ``u`` cumulative work removed from the site's queue (done or sent),
``ov`` overdue work, ``g`` grid import, ``o`` overdraw, ``e`` spilled generation,
``ch``/``dis`` battery charge/discharge (bus side), ``soc`` state of charge at the end
of the hour, ``bk`` standby generation, ``sf`` demand-response shortfall; per hour
``v`` the fleet's cumulative flexible work done.

- queue ``b_t = b_{t-1} + in_{t-1} + a_t - x_t - out_t`` (plus the initial queue and
  transit at ``t = 0``); ``u_t = u_{t-1} + x_t + out_t``; ``v_t = v_{t-1} + sum_i x_t``;
- migration pool ``(1 + r_o) sum_i out_t = sum_i in_t`` (the restart overhead is work
  added at the destinations); ``out <= L`` (the link), ``in <= G (S - 1)`` (no
  destination accepts more than it can run within the longest slack);
- work ``sum_k wX_k = x``, ``sum_k wI_k = s``; GPUs ``sum_k wX_k / tau_X,k + wI_k /
  tau_I,k <= G``; inference ``s <= D``, or
  with routing (``r[t, i->j]`` for the pairs in reach, ``s`` served at the site from
  any origin): ``s_j >= sum_i r_ij``, ``s_i - sum_k r_ki + sum_j r_ij <= D_i`` (served
  for an origin within its demand), ``sum_j r_ij <= min(f_inf D_i, max(D_i - G_i
  tau_I(c_min), 0))`` (only overflow is routed);
- power ``F0 + PUE_t (sum_k (wX_k e_X,k + wI_k e_I,k) + G P0) + kappa out + k_inf
  sum_j r_ij + ch + e - g - dis - bk = pv + wind`` with ``e_w,k = (pi_w,k Pb + Hb - P0) /
  tau_w,k`` (linear in the work at the hour's temperature: the fixed overhead is a
  constant), ``bk <= o_t K_bk`` (standby capacity ``K_bk`` in outage hours,
  ``o_t = 1``, and none in other hours);
- headroom ``g - o <= h``; overdraw only for load that curtailment, standby generation
  and the battery cannot carry: ``o + beta dis <= max(a, 0) + kappa out + k_inf sum_j
  r_ij`` with ``a = F0 + PUE_t G P0 - pv - wind - h - o_t K_bk`` and
  ``beta = min(max(a, 0), P_b) / P_b`` (see below);
- migration share (MPC only, ``migration_share_rows``): ``out_t <= m_max (b_{t-1} +
  in_{t-1} + a_t)``, the env's limit on the share of a queue sent away in an hour; the
  bound leaves it out;
- demand response: ``g - sf <= lvl`` (the event's level) in the hours of an event
  (``sf = 0`` outside them);
  the events are the announced ones of the rows (all of them for the bound);
- battery ``soc_t = soc_{t-1} + eta ch - dis / eta`` within ``[soc_min, soc_max]``,
  ``ch, dis <= P_b``;
- **deadlines** (earliest deadline first in cumulative form). Let ``C_i[s, t]`` be the
  work that became available at site ``i`` (arrived, or was there at the start) in hours
  ``<= s`` with a deadline ``<= t``. Work due by ``t`` that is still undone at the end of
  hour ``t`` is at least what arrived with such deadlines after any hour ``s`` minus
  everything removed since: ``ov[t,i] >= C_i[t,t] - C_i[s,t] - (u_t - u_s)`` for every
  ``s < t`` (``s = -1``: ``u = 0``, ``C = 0``). For one site without migration the
  maximum over ``s`` *is* the overdue work of an EDF queue (a fluid queue's backlog is
  the supremum of arrivals minus service over past intervals), and EDF minimises it.
  For the fleet, ``sum_i ov[t,i] >= Cf[t,t] - Cf[s,t] - (v_t - v_s)`` with all sites'
  work pooled: migrated work keeps its deadline in the env, and the pooled EDF bound
  holds whatever sites the work sits at.
  These rows are many (``H^2/2`` per site) and almost all slack, so they are added
  lazily: solve, add the most violated row of every site and hour, re-solve (warm
  start), until none is violated. The final solution satisfies every row, so it is the
  optimum of the full LP.

Objective (minimised): the env's weighted reward terms, ``sum (w_c carbon/1000 +
w_e price/1000) g + w_s (D - s) + w_o ov + w_g o + w_e rho_r sum_k w_k / tau_k +
w_e h_q (b + in) + w_e c_d dis + w_e gb min_j pi[i, j] out + (w_e f + w_c c_b / 1000) bk
+ w_e pen sf - w_e pay_e on`` (rent per busy GPU-hour, holding per GPU-h queued or in
transit at the end of the hour, battery wear per kWh discharged, transfers at the site's
cheapest link, backup fuel and carbon, the demand-response penalty and payment), less a
credit
``v_b (soc_H - soc_0)`` for charge gained over the horizon, plus a charge per GPU-h left queued
or in transit after the last hour (the env's terminal charge for the bound; an
estimate for MPC). ``J = -objective / reward.scale`` is in the units of the env's
return.

Why it is a bound
=================

Every trajectory of the environment from the same state over the same exogenous rows
maps to a feasible point of this LP with exactly the env's objective, so the LP optimum
is at least the return of any policy (``J_lp >= J_env``):

- *caps*: a site runs all its GPUs at one cap ``c``, except that curtailment puts a
  share ``phi`` of them at ``cap_min``. The throttle curve is piecewise linear, so a GPU
  at a cap between two points ``c_k < c < c_{k+1}`` is exactly a convex combination of
  one GPU at ``c_k`` and one at ``c_{k+1}`` in work, busy GPUs and power (the levels
  hold the points of both curves, so each curve and its board power fraction are linear
  between neighbours). The LP allows any mixture of levels in an hour, chosen apart for
  inference and flexible work (a relaxation of one cap per site).
- *dispatch*: the env serves ``min(D, G tau_I(c))`` of inference and takes flexible work
  earliest deadline first; the LP may serve any amount up to the demand (unserved
  demand costs the SLO weight) and do any amount of flexible work the queue holds.
- *migration*: the env moves a share of every queue bucket to destinations set by one
  softmax; the LP may move any amount from any site to any other. The env sends at
  most ``L`` a step, and a destination accepts at most ``G d - Q <= G (S - 1)`` (``d``
  the arriving work's mean hours left, at most ``S - 1``); both are the LP's bounds.
  The env's transit carries the restart overhead ``r_o`` of what was accepted, as the
  pool row does. The env prices each GB at its link's price, at least the source's
  cheapest, which the LP charges. The overhead is work of no origin's release table:
  the deadline rows below ignore it (so they are weaker, still valid), and its holding
  and energy are charged as in the env.
- *inference routing*: the env's overflow rule routes at most ``min(f_inf D, max(D -
  G tau_I(c), 0))`` to sites in reach, at most the LP's ``min(f_inf D, max(D - G
  tau_I(c_min), 0))``, and serves routed demand with the site's own; map the served part of each
  site's demand (own and routed in, in proportion) to the LP's ``r`` and ``s``: every
  routing row holds, and the LP charges network energy only on routed work served
  (the env on all of it).
- *battery*: the env follows its dispatch rule (or a setpoint it may clip); the LP
  chooses charge and discharge freely within the same power and energy limits, and
  charges no more than the env ever can in that hour (:meth:`LPStructure.charge_limit`).
  Under the rule (``env.battery_control: rule``) this is the loosest part of the bound:
  no policy controls the battery, but the LP may hold its charge for a later hour
  (an outage, a carbon peak) where the env discharges it at once.
- *curtailment*: the env removes excess import by capping, pausing and shedding: less
  work or inference done this hour, which the LP may also choose. The env records
  overdraw only once every GPU is idle, the facility draws ``F0 + PUE_t G P0 + e_mig``
  and the battery is not charging, so its overdraw is ``max(a + e_mig - dis, 0)`` with
  ``a = F0 + PUE_t G P0 - pv - wind - h``: the battery covers the floor before any
  work runs. The concave envelope of that over ``0 <= dis <= P_b`` is the LP's row
  ``o - kappa out + beta dis <= max(a, 0)``, ``beta = min(max(a, 0), P_b) / P_b``
  (exactly the env's overdraw at ``dis = 0`` and ``dis = P_b``). (Without the row the
  LP could overdraw instead of shedding inference, or overdraw the floor while its
  battery serves inference, choices the env never offers.)
- *deadlines*: split the env's overdue work at hour ``t`` by where it started: work that
  started at site ``i`` (was queued there at the start or arrived there) and still sits
  at ``i``. Site ``i`` removed ``u`` GPU-h in total (done or sent away, whatever the
  work's origin); giving all of it to its own work, earliest deadline first, leaves the
  least of that work overdue, and the cumulative rows are exactly that least amount.
  So the env's overdue work of origin ``i`` still at ``i`` satisfies site ``i``'s rows;
  putting the rest of the env's overdue work on any one site satisfies the pooled rows
  too (pooled EDF over the work done anywhere is the least overdue any placement can
  reach), with the same total.
- *backup*: the env runs its sets only in outage hours and only for import above
  headroom, up to ``K_bk``; the LP may run them up to ``K_bk`` in any outage hour (a
  relaxation) and not otherwise. The env overdraws only with every GPU idle and, in an
  outage, the sets at ``K_bk``, so its overdraw is within the overdraw row, whose ``- K_bk``
  applies only in outage hours.
- *demand response*: the env's shortfall is ``max(g - lvl, 0)`` in an event hour, the
  least ``sf`` the row allows; the payment is a constant of the rows.
- *queue, energy and objective* terms are the env's equations once the choices above
  are fixed (rent, holding and battery wear are linear in busy GPUs, held work and
  discharge); the terminal charge and the battery's terminal credit are the env's.

So the LP relaxes the env only by offering more choices; it never forbids an env
trajectory and never charges one less. Work is fluid in both (GPU-hours, not jobs).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import highspy
import numpy as np
import scipy.sparse as sp

from gridrl.env import physics
from gridrl.env.clock import ClockError
from gridrl.env.kernel import (
    EXO_SIGNALS,
    KG_PER_G,
    MWH_PER_KWH,
    OUTPUT_FIELDS,
    Exo,
    Out,
    backup_terms,
    dr_compliant,
    dr_event_on,
    dr_terms,
    facility_kw,
    fleet_facility_kw,
    gpu_time_cost,
    it_kw_from_active,
    it_kwh_per_gpu_h,
    outage_on,
)
from gridrl.env.params import EnvParams, step_units
from gridrl.errors import GridrlError

__all__ = [
    "CutSet", "LPError", "LPInputs", "LPSolution", "LPStructure", "Solver", "WarmStart",
    "cap_levels", "release_table", "rule_battery_rows", "solve", "solve_rule_battery",
    "step_exo",
]

# Violations of a lazy deadline row below this (GPU-h) are solver round-off.
_CUT_TOL_GPU_H = 1e-7
# Overdraw below this (kWh in an hour) is solver round-off, not a headroom violation.
_OVERDRAW_TOL_KWH = 1e-6
# Rounds of lazy deadline rows before giving up (each round adds every violated row).
_MAX_CUT_ROUNDS = 200
# Column and row blocks of LPStructure, each laid out hour by hour (WarmStart maps them).
_COL_BLOCKS = ("cW", "cS", "cX", "cOUT", "cIN", "cB", "cU", "cOV", "cG", "cO", "cE", "cCH",
               "cDIS", "cSOC", "cV", "cR", "cBK", "cSF")
_ROW_BLOCKS = ("rWORK", "rINF", "rGPU", "rPOW", "rHEAD", "rOCAP", "rSOC", "rBACK", "rUREC",
               "rVREC", "rPOOL", "rLOCAL", "rDEM", "rROUT", "rDR", "rMSHARE")


class LPError(GridrlError, RuntimeError):
    """HiGHS did not find an optimal solution."""


#: Signals that are powers (or GPUs): the LP reads them as what a step holds.
_POWER_SIGNALS = (Exo.PV_KW, Exo.WIND_KW, Exo.HEADROOM_KW, Exo.INFERENCE_GPUS,
                  Exo.DR_LIMIT_KW)


def step_exo(exo: np.ndarray, step_h: float) -> np.ndarray:
    """Exogenous rows ``[..., K]`` with powers and GPU counts times ``step_h`` (kWh and
    GPU-h of a step; see :func:`step_units`)."""
    if step_h == 1.0:
        return exo
    out = np.array(exo, dtype=np.float64)
    out[..., list(_POWER_SIGNALS)] *= step_h
    return out


def cap_levels(params: EnvParams) -> tuple[np.ndarray, np.ndarray]:
    """Cap levels the LP mixes, per kind of work: ``cap_min`` and every point of either
    throttle curve above it, once for flexible work and once for inference. Returns the
    cap of every work column ``[2L]`` and its throughput (training curve for the first
    ``L``, inference curve for the rest)."""
    p = params
    caps = np.concatenate([[p.cap_min], p.throttle_cap[p.throttle_cap > p.cap_min]])
    return (np.concatenate([caps, caps]),
            np.concatenate([p.throughput(caps), p.inference_throughput_at(caps)]))


@dataclass(frozen=True, eq=False)
class LPInputs:
    """What one LP solve needs besides the parameters.

    Attributes
    ----------
    exo : ndarray
        ``[H, N, len(EXO_SIGNALS)]`` rows of the horizon (truth or forecasts).
    queue_gpu_h, transit_gpu_h : ndarray
        ``[N, S + 1]`` state at the start of the first hour (env bucket layout: index 0
        overdue, ``1 + s`` slack ``s``).
    soc_kwh : ndarray
        ``[N]`` battery state of charge at the start.
    terminal_value : ndarray
        ``[N]`` charge per GPU-h left queued or in transit after the last hour (reward
        weight units, before ``reward.scale``).
    overdue_carry : ndarray, optional
        ``[N]`` extra charge per GPU-h *overdue* after the last hour (MPC prices the
        overdue hours that follow its horizon; the bound uses none).
    battery_kw : (ndarray, ndarray), optional
        ``([H, N], [H, N])`` charge and discharge power (kW, over each step) fixed in
        advance (a prediction of a rule-dispatched battery); None lets the LP choose them.
    battery_value : ndarray, optional
        ``[N]`` credit per kWh of charge gained between the start and the end of the
        horizon (the env's terminal credit for the bound; an estimate for MPC); None: 0.
    phase : int
        Steps of the first row's hour before it (0 at hourly steps and at a whole hour;
        ``0 <= phase <`` steps per hour, else :class:`~gridrl.env.clock.ClockError`).
    """

    exo: np.ndarray
    queue_gpu_h: np.ndarray
    transit_gpu_h: np.ndarray
    soc_kwh: np.ndarray
    terminal_value: np.ndarray
    overdue_carry: np.ndarray | None = None
    battery_kw: tuple[np.ndarray, np.ndarray] | None = None
    battery_value: np.ndarray | None = None
    phase: int = 0


@dataclass(eq=False)
class LPSolution:
    """An optimal solution, per hour and site.

    Attributes
    ----------
    objective : float
        Minimised cost in reward weight units (constants included).
    J : float
        ``-objective / reward.scale``: the return of the plan in the LP.
    values : ndarray
        ``[H, N, F]`` the plan in ``core.OUTPUT_FIELDS`` terms (``curtailed``, ``paused``
        and ``shed`` are 0: the LP chooses its load; unserved inference is ``slo``;
        ``deadline_miss`` comes from an EDF replay of each site's work with the LP's
        removals; ``cap`` is the busy-GPU-weighted cap of the level mix, 1 when idle).
    leftover_gpu_h : ndarray
        ``[N]`` work queued or in transit after the last hour.
    first : dict
        First-step decision per site (``[N]`` arrays, amounts of the step: GPU-h and
        kWh): ``work`` (flexible), ``served``, ``busy`` (GPU-h), ``migrated``,
        ``received``, ``ch``, ``dis``.
    solve_s : float
        Wall time of the solve (all lazy rounds).
    rounds : int
        Lazy deadline rounds (1 = no row was missing).
    """

    objective: float
    J: float
    values: np.ndarray
    leftover_gpu_h: np.ndarray
    first: dict[str, np.ndarray]
    solve_s: float
    rounds: int = 1
    extra: dict = field(default_factory=dict)


def release_table(params: EnvParams, arrivals: np.ndarray, queue_gpu_h: np.ndarray,
                  transit_gpu_h: np.ndarray, steps_per_hour: int = 1,
                  phase: int = 0) -> np.ndarray:
    """``C[i, s + 1, t]``: work that became available at site ``i`` in steps ``<= s`` with a
    deadline ``<= t`` (``s = -1 .. H-1``, ``t = 0 .. H-1``; GPU-h).

    Arrivals of step ``r`` with slack ``k`` hours are due by the last step of the hour
    ``k`` hours after ``r``'s (step ``r + k`` at hourly steps); the initial queue and
    transit count as available at step 0, bucket 0 (overdue) due by step -1 and bucket
    ``1 + k`` by the last step of the hour ``k`` hours on. ``phase``: steps of the first
    step's hour before it.
    """
    h_len, n = arrivals.shape
    s_n = params.slack_buckets
    kh = int(steps_per_hour)

    def due(r: np.ndarray, k: int) -> np.ndarray:  # last step of the hour k hours after r's
        return ((r + phase) // kh + k + 1) * kh - 1 - phase

    # rel[i, r, d + 1]: released at r with deadline d (d = -1 .. H-1; later ones dropped)
    rel = np.zeros((n, h_len, h_len + 1))
    split = params.arrival_split  # [N, S + 1]
    r_idx = np.arange(h_len)
    for k in range(s_n):
        share = split[:, 1 + k]
        if not share.any():
            continue
        d = due(r_idx, k)
        ok = d <= h_len - 1
        rel[:, r_idx[ok], d[ok] + 1] += (arrivals[ok] * share[None, :]).T
    init = np.asarray(queue_gpu_h, float) + np.asarray(transit_gpu_h, float)  # [N, S+1]
    rel[:, 0, 0] += init[:, 0]
    d0 = due(np.zeros(s_n, dtype=np.int64), 0) + np.arange(s_n) * kh  # bucket 1 + k
    inside = d0 <= h_len - 1  # due later: never inside the horizon
    rel[:, 0, d0[inside] + 1] += init[:, 1:][:, inside]
    cum = np.cumsum(np.cumsum(rel, axis=1), axis=2)  # [N, r, d+1]
    out = np.zeros((n, h_len + 1, h_len))
    out[:, 1:, :] = cum[:, :, 1:]  # deadline <= t  ->  column t + 1
    return out


@dataclass(frozen=True, eq=False)
class CutSet:
    """Deadline rows: ``kind`` ``"site"`` (rows of ``site[j]`` at hour ``t[j]`` from hour
    ``s[j]``) or ``"fleet"`` (pooled rows at ``t[j]`` from ``s[j]``)."""

    kind: str
    t: np.ndarray
    s: np.ndarray
    site: np.ndarray | None = None

    def shifted(self, hours: int, horizon: int) -> CutSet | None:
        """The same rows ``hours`` later in time, i.e. indexed ``hours`` earlier in a
        horizon that starts later (rows with ``s = -1`` or leaving it are dropped)."""
        t, s = self.t - hours, self.s - hours
        keep = (s >= 0) & (t < horizon) & (s < t)
        if not keep.any():
            return None
        site = None if self.site is None else self.site[keep]
        return CutSet(self.kind, t[keep], s[keep], site)


# HiGHS basis status codes (HighsBasisStatus) and their objects, by code.
_LOWER, _BASIC, _UPPER, _ZERO = (int(highspy.HighsBasisStatus.kLower),
                                 int(highspy.HighsBasisStatus.kBasic),
                                 int(highspy.HighsBasisStatus.kUpper),
                                 int(highspy.HighsBasisStatus.kZero))
_STATUS = np.array([highspy.HighsBasisStatus(k) for k in range(5)], dtype=object)


@dataclass(frozen=True, eq=False)
class WarmStart:
    """The optimal basis of one solve and the rows it belongs to, from which a solve of
    the same plan ``shift`` hours later starts its simplex (:meth:`Solver.solve`).

    Attributes
    ----------
    structure : LPStructure
        The structure the basis was found in (its horizon may differ from the next).
    col_status, row_status : ndarray
        HiGHS basis status codes of every column and row.
    charge_pairs : ndarray
        Pair index ``t N + i`` of every charge row (:meth:`LPStructure.charge_rows`).
    cuts : list of CutSet
        The deadline rows, in the model's order.
    shift : int
        Hours between this solve and the one it starts.
    """

    structure: LPStructure
    col_status: np.ndarray
    row_status: np.ndarray
    charge_pairs: np.ndarray
    cuts: list[CutSet]
    shift: int = 0

    def shifted(self, hours: int) -> WarmStart:
        """The same basis, to start a solve ``hours`` later."""
        return WarmStart(self.structure, self.col_status, self.row_status,
                         self.charge_pairs, self.cuts, self.shift + hours)


class LPStructure:
    """Column and row layout of the LP for ``H`` hours of a scenario (reused across solves).

    Parameters
    ----------
    params : EnvParams
    hours : int
        Horizon ``H``.
    migration_share_rows : bool
        Add the env's limit on the share of a queue sent away in one step, ``out_t <=
        m_max (b_{t-1} + in_{t-1} + a_t)`` (MPC plans within it; the bound leaves it out,
        a relaxation).
    """

    def __init__(self, params: EnvParams, hours: int, *,
                 migration_share_rows: bool = False) -> None:
        if hours < 1:
            raise ValueError(f"hours must be >= 1, got {hours}")
        self.step_h = params.step_h  # the env's step; the LP works in step units
        self.steps_per_hour = params.steps_per_hour
        self.params = p = step_units(params)
        self.H = h_len = int(hours)
        self.N = n = p.n_sites
        self.caps, self.taus = cap_levels(p)
        self.Kc = kc = len(self.caps)  # work columns per hour and site
        self.L = kc // 2  # the first L hold flexible work, the rest inference
        self.migrate = n > 1 and p.max_migration_fraction > 0
        self.share_rows = self.migrate and migration_share_rows
        # routable (origin, server) pairs of inference
        oi, sj = np.nonzero(p.inference_routable > 0)
        if n < 2 or p.inference_remote_fraction_max <= 0:
            oi, sj = oi[:0], sj[:0]
        self.route_from, self.route_to = oi, sj
        self.K = kr = len(oi)
        self.P = npair = h_len * n
        off = 0

        def block(size: int) -> slice:
            nonlocal off
            sl = slice(off, off + size)
            off += size
            return sl

        self.cW = block(npair * kc)
        self.cS = block(npair)
        self.cX = block(npair)
        self.cOUT = block(npair if self.migrate else 0)
        self.cIN = block(npair if self.migrate else 0)
        self.cB = block(npair)
        self.cU = block(npair)
        self.cOV = block(npair)
        self.cG = block(npair)
        self.cO = block(npair)
        self.cE = block(npair)
        self.cCH = block(npair)
        self.cDIS = block(npair)
        self.cSOC = block(npair)
        self.cV = block(h_len if self.migrate else 0)
        self.cR = block(h_len * kr)  # inference of route_from served at route_to
        self.cBK = block(npair)
        self.cSF = block(npair)
        self.n_col = off
        lv = self.caps[: self.L]
        power = np.concatenate([p.power_at(lv), p.power_at(lv, inference=True)])
        e_k = it_kwh_per_gpu_h(power[None, :], self.taus, p.gpu_idle_kw[:, None],
                               p.gpu_board_max_kw[:, None], p.host_busy_kw_per_gpu[:, None])
        self.e_k = e_k  # [N, Kc] IT kWh per GPU-h of work in column k, above idle
        # cheapest transfer price per GPU-h sent from each site (the env pays at least it)
        price = np.where(np.eye(n, dtype=bool), np.inf, p.transfer_cost_per_gb)
        self.transfer_per_gpu_h = (p.migration_gb_per_gpu_h * price.min(axis=1)
                                   if n > 1 else np.zeros(n))
        self._build_static()

    def col(self, block: slice, t: np.ndarray | int, i: np.ndarray | int) -> np.ndarray:
        """Column index of per-(hour, site) variable ``block`` at ``(t, i)``."""
        return block.start + np.asarray(t) * self.N + np.asarray(i)

    # ------------------------------------------------------------------ structure

    def _build_static(self) -> None:
        h_len, n, kc, npair = self.H, self.N, self.Kc, self.P
        p = self.params
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        r0 = 0

        def add(r, c, v) -> None:
            r = np.asarray(r, dtype=np.int64)
            rows.append(r)
            cols.append(np.asarray(c, dtype=np.int64))
            vals.append(np.broadcast_to(np.asarray(v, dtype=np.float64), r.shape).copy())

        pidx = np.arange(npair)  # p = t * N + i
        site = pidx % n
        later = pidx >= n  # t >= 1
        wcol = self.cW.start + pidx[:, None] * kc + np.arange(kc)[None, :]
        kappa = p.migration_kwh_per_gpu_h
        kinf = p.inference_network_kwh_per_gpu_h
        kr = self.K
        t_r = np.repeat(np.arange(h_len), kr)  # hour of each route column
        rcol = self.cR.start + np.arange(h_len * kr)
        r_from = t_r * n + np.tile(self.route_from, h_len)  # pair index of the origin
        r_to = t_r * n + np.tile(self.route_to, h_len)

        def rowblock() -> slice:
            nonlocal r0
            sl = slice(r0, r0 + npair)
            r0 += npair
            return sl

        # work: sum_k wX_k - x = 0 (flexible), sum_k wI_k - s = 0 (inference)
        nl = self.L
        self.rWORK = rb = rowblock()
        add(np.repeat(rb.start + pidx, nl), wcol[:, :nl].ravel(), 1.0)
        add(rb.start + pidx, self.cX.start + pidx, -1.0)
        self.rINF = rb = rowblock()
        add(np.repeat(rb.start + pidx, kc - nl), wcol[:, nl:].ravel(), 1.0)
        add(rb.start + pidx, self.cS.start + pidx, -1.0)
        # GPUs
        self.rGPU = rb = rowblock()
        add(np.repeat(rb.start + pidx, kc), wcol.ravel(), np.tile(1.0 / self.taus, npair))
        # power; the PUE-dependent coefficients are refreshed per solve
        self.rPOW = rb = rowblock()
        pue_at = len(rows)
        add(np.repeat(rb.start + pidx, kc), wcol.ravel(), 0.0)
        if self.migrate:
            add(rb.start + pidx, self.cOUT.start + pidx, kappa)
        add(rb.start + pidx, self.cCH.start + pidx, 1.0)
        add(rb.start + pidx, self.cE.start + pidx, 1.0)
        add(rb.start + pidx, self.cG.start + pidx, -1.0)
        add(rb.start + pidx, self.cDIS.start + pidx, -1.0)
        add(rb.start + r_from, rcol, kinf)
        add(rb.start + pidx, self.cBK.start + pidx, -1.0)
        # headroom: g - o <= h
        self.rHEAD = rb = rowblock()
        add(rb.start + pidx, self.cG.start + pidx, 1.0)
        add(rb.start + pidx, self.cO.start + pidx, -1.0)
        # overdraw bound: o - kappa out + beta dis <= omax (beta refreshed per solve)
        self.rOCAP = rb = rowblock()
        add(rb.start + pidx, self.cO.start + pidx, 1.0)
        if self.migrate:
            add(rb.start + pidx, self.cOUT.start + pidx, -kappa)
        add(rb.start + r_from, rcol, -kinf)
        ocap_at = len(rows)
        add(rb.start + pidx, self.cDIS.start + pidx, 0.0)
        # state of charge
        self.rSOC = rb = rowblock()
        eta = p.battery_eta[site]
        add(rb.start + pidx, self.cSOC.start + pidx, 1.0)
        add(rb.start + pidx[later], self.cSOC.start + pidx[later] - n, -1.0)
        add(rb.start + pidx, self.cCH.start + pidx, -eta)
        add(rb.start + pidx, self.cDIS.start + pidx, 1.0 / eta)
        # queue: b - b[t-1] - in[t-1] + x + out = arrivals (+ initial state)
        self.rBACK = rb = rowblock()
        add(rb.start + pidx, self.cB.start + pidx, 1.0)
        add(rb.start + pidx[later], self.cB.start + pidx[later] - n, -1.0)
        add(rb.start + pidx, self.cX.start + pidx, 1.0)
        if self.migrate:
            add(rb.start + pidx[later], self.cIN.start + pidx[later] - n, -1.0)
            add(rb.start + pidx, self.cOUT.start + pidx, 1.0)
        # removal: u - u[t-1] - x - out = 0
        self.rUREC = rb = rowblock()
        add(rb.start + pidx, self.cU.start + pidx, 1.0)
        add(rb.start + pidx[later], self.cU.start + pidx[later] - n, -1.0)
        add(rb.start + pidx, self.cX.start + pidx, -1.0)
        if self.migrate:
            add(rb.start + pidx, self.cOUT.start + pidx, -1.0)
            # fleet work: v - v[t-1] - sum_i x = 0; pool: sum_i out - sum_i in = 0
            t_of = pidx // n
            self.rVREC = slice(r0, r0 + h_len)
            tt = np.arange(h_len)
            add(r0 + tt, self.cV.start + tt, 1.0)
            add(r0 + tt[1:], self.cV.start + tt[1:] - 1, -1.0)
            add(r0 + t_of, self.cX.start + pidx, -1.0)
            r0 += h_len
            self.rPOOL = slice(r0, r0 + h_len)
            add(r0 + t_of, self.cOUT.start + pidx, 1.0 + p.restart_overhead_gpu_h_per_gpu_h)
            add(r0 + t_of, self.cIN.start + pidx, -1.0)
            r0 += h_len
        else:
            self.rVREC = self.rPOOL = slice(r0, r0)
        # inference routing: served here from elsewhere <= served here; served for an
        # origin <= its demand; routed away <= its share of the demand
        self.rLOCAL = self.rDEM = self.rROUT = slice(r0, r0)
        if kr:
            self.rLOCAL = rb = rowblock()
            add(rb.start + pidx, self.cS.start + pidx, 1.0)
            add(rb.start + r_to, rcol, -1.0)
            self.rDEM = rb = rowblock()
            add(rb.start + pidx, self.cS.start + pidx, 1.0)
            add(rb.start + r_to, rcol, -1.0)
            add(rb.start + r_from, rcol, 1.0)
            self.rROUT = rb = rowblock()
            add(rb.start + r_from, rcol, 1.0)
        # demand response: g - sf <= L in event hours (free elsewhere)
        self.rDR = rb = rowblock()
        add(rb.start + pidx, self.cG.start + pidx, 1.0)
        add(rb.start + pidx, self.cSF.start + pidx, -1.0)
        # migration share: out - m_max (b[t-1] + in[t-1]) <= m_max (arrivals + initial)
        self.rMSHARE = slice(r0, r0)
        if self.share_rows:
            self.rMSHARE = rb = rowblock()
            fmax = p.max_migration_fraction
            add(rb.start + pidx, self.cOUT.start + pidx, 1.0)
            add(rb.start + pidx[later], self.cB.start + pidx[later] - n, -fmax)
            add(rb.start + pidx[later], self.cIN.start + pidx[later] - n, -fmax)
        self.n_row = r0
        rows_a, cols_a, vals_a = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        start = sum(len(r) for r in rows[:pue_at])
        order = np.lexsort((rows_a, cols_a))
        # the values in CSC order, and where the per-solve ones (PUE, overdraw) go
        self._data = vals_a[order]
        at = np.empty_like(order)
        at[order] = np.arange(len(order))
        self._pue_at = at[start : start + npair * kc]
        start = sum(len(r) for r in rows[:ocap_at])
        self._ocap_at = at[start : start + npair]
        cols_sorted = cols_a[order]
        self._indices = rows_a[order].astype(np.int32)
        self._indptr = np.searchsorted(cols_sorted, np.arange(self.n_col + 1)).astype(np.int32)

    # ------------------------------------------------------------------ per solve

    def model(self, inp: LPInputs) -> tuple[highspy.HighsLp, dict]:
        """The HiGHS model of ``inp`` without deadline rows, and the arrays the lazy rows
        and the solution need."""
        p = self.params
        h_len, n = self.H, self.N
        exo = np.asarray(inp.exo, dtype=np.float64)
        if exo.shape != (h_len, n, len(EXO_SIGNALS)):
            raise ValueError(f"exo has shape {exo.shape}, expected {(h_len, n, len(EXO_SIGNALS))}")
        if not 0 <= inp.phase < self.steps_per_hour:
            raise ClockError(f"LPInputs.phase = {inp.phase}: expected 0 .. "
                             f"{self.steps_per_hour - 1} (steps of the first row's hour "
                             "before it)")
        exo = step_exo(exo, self.step_h)
        pv, wind, head = exo[..., Exo.PV_KW], exo[..., Exo.WIND_KW], exo[..., Exo.HEADROOM_KW]
        carbon, price = exo[..., Exo.CARBON_G_PER_KWH], exo[..., Exo.PRICE_PER_MWH]
        demand, arr = exo[..., Exo.INFERENCE_GPUS], exo[..., Exo.FLEXIBLE_GPU_H]
        pue = physics.pue_of(p, exo)
        gen = pv + wind
        idle_kw = fleet_facility_kw(p.facility_fixed_kw, pue, p.gpus, p.gpu_idle_kw)  # [H, N]
        queue = np.asarray(inp.queue_gpu_h, float)
        transit = np.asarray(inp.transit_gpu_h, float)
        data = self._data.copy()
        data[self._pue_at] = (pue[..., None] * self.e_k[None]).ravel()
        # standby generation available: its capacity in outage hours, else 0 [H, N]
        out_on = outage_on(exo[..., Exo.OUTAGE_STARTS_IN_H], exo[..., Exo.OUTAGE_REMAINING_H])
        bk_max = out_on * p.backup_capacity_kw
        # load neither curtailment nor standby generation can remove [H, N]
        omax = np.maximum(idle_kw - gen - head - bk_max, 0.0)
        bpow = p.battery_power_kw
        data[self._ocap_at] = np.divide(np.minimum(omax, bpow), bpow,
                                        out=np.zeros_like(omax), where=bpow > 0).ravel()
        row_lo = np.zeros(self.n_row)
        row_hi = np.zeros(self.n_row)
        row_lo[self.rGPU] = -np.inf
        row_hi[self.rGPU] = np.tile(p.gpus, h_len)
        row_lo[self.rPOW] = row_hi[self.rPOW] = (gen - idle_kw).ravel()
        row_lo[self.rHEAD] = -np.inf
        row_hi[self.rHEAD] = head.ravel()
        row_lo[self.rOCAP] = -np.inf
        row_hi[self.rOCAP] = omax.ravel()
        dr_on = dr_event_on(exo[..., Exo.DR_STARTS_IN_H], exo[..., Exo.DR_REMAINING_H])
        row_lo[self.rDR] = -np.inf
        row_hi[self.rDR] = np.where(dr_on > 0, exo[..., Exo.DR_LIMIT_KW], np.inf).ravel()
        soc_rhs = np.zeros((h_len, n))
        soc_rhs[0] = np.asarray(inp.soc_kwh, float)
        row_lo[self.rSOC] = row_hi[self.rSOC] = soc_rhs.ravel()
        back = arr.copy()
        back[0] += queue.sum(-1) + transit.sum(-1)
        row_lo[self.rBACK] = row_hi[self.rBACK] = back.ravel()
        if self.share_rows:
            row_lo[self.rMSHARE] = -np.inf
            row_hi[self.rMSHARE] = p.max_migration_fraction * back.ravel()
        col_lo = np.zeros(self.n_col)
        col_hi = np.full(self.n_col, np.inf)
        if self.K:
            row_hi[self.rLOCAL] = np.inf
            row_lo[self.rDEM] = row_lo[self.rROUT] = -np.inf
            row_hi[self.rDEM] = demand.ravel()
            # the env routes only what a site cannot serve at its cap, at most
            # max(D - G tau_I(c_min), 0) (its capacity is G tau_I(c) >= G tau_I(c_min))
            over = np.maximum(demand - p.gpus * p.inference_throughput_at(p.cap_min), 0.0)
            row_hi[self.rROUT] = np.minimum(p.inference_remote_fraction_max * demand,
                                            over).ravel()
        else:
            col_hi[self.cS] = demand.ravel()
        if self.migrate:
            col_hi[self.cOUT] = np.tile(p.migration_link_gpu_h, h_len)
            col_hi[self.cIN] = np.tile(p.gpus * p.accept_hours, h_len)
        bpow = np.tile(p.battery_power_kw, h_len)
        col_hi[self.cCH] = np.minimum(bpow, self.charge_limit(gen, head, pue, demand).ravel())
        col_hi[self.cDIS] = bpow
        col_hi[self.cBK] = bk_max.ravel()
        col_hi[self.cSF] = np.where(dr_on > 0, np.inf, 0.0).ravel()
        col_lo[self.cSOC] = np.tile(p.soc_min_kwh, h_len)
        col_hi[self.cSOC] = np.tile(p.soc_max_kwh, h_len)
        if inp.battery_kw is not None:
            # kW over a step -> the step's kWh (the LP's units)
            ch_fix, dis_fix = (np.asarray(x, float).ravel() * self.step_h
                               for x in inp.battery_kw)
            col_lo[self.cCH] = col_hi[self.cCH] = ch_fix
            col_lo[self.cDIS] = col_hi[self.cDIS] = dis_fix
        cost, offset = self._objective(inp, carbon, price, demand, dr_on)
        lp = highspy.HighsLp()
        lp.num_col_ = self.n_col
        lp.num_row_ = self.n_row
        lp.col_cost_ = cost
        lp.col_lower_ = col_lo
        lp.col_upper_ = col_hi
        lp.row_lower_ = row_lo
        lp.row_upper_ = row_hi
        lp.offset_ = offset
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = self._indptr
        lp.a_matrix_.index_ = self._indices
        lp.a_matrix_.value_ = data
        rel = release_table(p, arr, queue, transit, self.steps_per_hour,
                            inp.phase)  # [N, H+1, H]
        aux = {"exo": exo, "pue": pue, "rel": rel,
               "rel_fleet": rel.sum(0) if self.migrate else None,
               "bounds": (col_lo, col_hi, row_lo, row_hi)}
        return lp, aux

    def _objective(self, inp: LPInputs, carbon: np.ndarray, price: np.ndarray,
                   demand: np.ndarray, dr_on: np.ndarray) -> tuple[np.ndarray, float]:
        """Column costs and constant of the objective (module doc)."""
        p = self.params
        h_len, n = self.H, self.N
        wts = p.reward_weights
        cost = np.zeros(self.n_col)
        cost[self.cG] = physics.import_price_per_kwh(p, carbon, price).ravel()
        # rent per busy GPU-hour: w_k / tau_k busy GPUs; holding per GPU-h held at the
        # end of the hour (queued b, in transit in)
        rent = wts[5] * p.gpu_rent_per_gpu_h[:, None] / self.taus[None, :]  # [N, Kc]
        cost[self.cW] = np.tile(rent, (h_len, 1)).ravel()
        hold = np.tile(wts[6] * p.holding_cost_per_gpu_h_h, h_len)
        cost[self.cB] = hold
        if self.migrate:
            cost[self.cIN] = hold
            cost[self.cOUT] = np.tile(wts[8] * self.transfer_per_gpu_h, h_len)
        cost[self.cDIS] = np.tile(wts[7] * p.battery_degradation_per_kwh, h_len)
        cost[self.cO] = wts[4]
        cost[self.cS] = -wts[2]
        cost[self.cOV] = wts[3]
        fuel_1, kg_1 = backup_terms(1.0, p.backup_fuel_cost_per_kwh, p.backup_carbon_g_per_kwh)
        cost[self.cBK] = np.tile(wts[9] * fuel_1 + wts[0] * kg_1, h_len)
        cost[self.cSF] = np.tile(wts[10] * p.dr_penalty_per_kwh, h_len)
        last = (h_len - 1) * n + np.arange(n)
        tval = np.asarray(inp.terminal_value, float)
        cost[self.cB.start + last] += tval
        if self.migrate:
            cost[self.cIN.start + last] += tval
        if inp.overdue_carry is not None:
            cost[self.cOV.start + last] += np.asarray(inp.overdue_carry, float)
        _, dr_pay = dr_terms(dr_on, 0.0, p.dr_penalty_per_kwh, p.dr_payment_per_event_h)
        offset = float(wts[2] * demand.sum() + wts[11] * dr_pay.sum())
        if inp.battery_value is not None:
            bval = np.asarray(inp.battery_value, float)
            cost[self.cSOC.start + last] -= bval
            offset += float(bval @ np.asarray(inp.soc_kwh, float))
        return cost, offset

    def charge_limit(self, gen: np.ndarray, head: np.ndarray, pue: np.ndarray,
                     demand: np.ndarray) -> np.ndarray:
        """``[H, N]`` most the env's battery can charge in an hour (kW, bus side).

        The env charges from local surplus only (rule: ``max(pv + wind - F, 0)``) or,
        with a battery action, within headroom (``max(h + pv + wind - F, 0)``),
        where ``F`` is the facility power before curtailment. ``F`` is at least
        ``F_lb = F0 + PUE_t (G P0 + min(D, G tau_I(c_min)) e_I,min)``: idle power plus the inference
        the env always serves (``min(D, G tau(c))`` at any cap) at the least energy per
        GPU-h of the throttle curve (a linear-fractional function of the cap between
        two points, so its minimum is at a point). Replacing ``F`` by ``F_lb`` gives a
        limit every env trajectory respects.
        """
        p = self.params
        f_lb = facility_floor_kw(self, pue, demand, slice(None))
        room = gen - f_lb + (head if p.battery_action else 0.0)
        return np.maximum(room, 0.0)

    def charge_rows(self, aux: dict) -> tuple | None:
        """Rows ``ch <= c(F_it)`` tying each battery's charge to the site's own load
        (``addRows`` arguments), or None without batteries.

        The env charges at most ``max(g - F, 0)`` with ``g = pv + wind`` (plus headroom
        with a battery action) and ``F`` its facility power before curtailment,
        which is at least the LP's ``F_it = F0 + PUE_t (sum_k w_k e_k + G P0)``. While it
        charges nothing is curtailed and ``F_it`` lies in ``[F_lb, F_max]``
        (:meth:`charge_limit`'s ``F_lb``, ``F_max = F0 + PUE_t G (Pb + Hb)``); ``c`` is the concave
        envelope of ``max(g - F, 0)`` on that interval, the chord from ``(F_lb, g - F_lb)``
        to ``(F_max, max(g - F_max, 0))``, non-negative below ``F_max``: every env
        trajectory satisfies the row. It also tells a planner that a site lets its
        battery charge by drawing less.
        """
        p = self.params
        sites = np.flatnonzero(p.battery_power_kw > 0)
        if not len(sites):
            return None
        exo, pue = aux["exo"], aux["pue"]
        h_len, n, kc = self.H, self.N, self.Kc
        t = np.repeat(np.arange(h_len), len(sites))
        i = np.tile(sites, h_len)
        g = exo[t, i, Exo.PV_KW] + exo[t, i, Exo.WIND_KW]
        if p.battery_action:
            g = g + exo[t, i, Exo.HEADROOM_KW]
        f_lo = facility_floor_kw(self, pue[t, i], exo[t, i, Exo.INFERENCE_GPUS], i)
        f_hi = fleet_facility_kw(p.facility_fixed_kw[i], pue[t, i], p.gpus[i], p.gpu_max_kw[i])
        keep = (g > f_lo) & (f_hi > f_lo)  # otherwise charge_limit already gives 0
        t, i, g, f_lo, f_hi = t[keep], i[keep], g[keep], f_lo[keep], f_hi[keep]
        m = len(t)
        if not m:
            return None
        slope = np.minimum((g - f_lo) / (f_hi - f_lo), 1.0)
        # chord value at F_max: 0 if g < F_max, else g - F_max (slope 1: the line itself)
        rhs = np.where(slope < 1.0, slope * f_hi, g)
        pidx = t * n + i
        idle = fleet_facility_kw(p.facility_fixed_kw[i], pue[t, i], p.gpus[i], p.gpu_idle_kw[i])
        width = 1 + kc
        idx = np.empty((m, width), dtype=np.int32)
        val = np.empty((m, width))
        idx[:, 0] = self.cCH.start + pidx
        val[:, 0] = 1.0
        idx[:, 1:] = self.cW.start + pidx[:, None] * kc + np.arange(kc)[None, :]
        val[:, 1:] = (slope * pue[t, i])[:, None] * self.e_k[i]
        return (np.full(m, -highspy.kHighsInf), rhs - slope * idle,
                (np.arange(m) * width).astype(np.int32), idx.ravel(), val.ravel(), m)

    def initial_cuts(self) -> CutSet:
        """Deadline rows with ``s = -1`` for every site and hour (``ov + u_t >= C[t, t]``)."""
        h_len, n = self.H, self.N
        t = np.repeat(np.arange(h_len), n)
        return CutSet("site", t, np.full_like(t, -1), np.tile(np.arange(n), h_len))

    def rows(self, cuts: CutSet, aux: dict) -> tuple:
        """``Highs.addRows`` arguments (lower, starts, indices, values, count) of ``cuts``."""
        if cuts.kind == "site":
            return self._site_rows(aux["rel"], cuts.t, cuts.site, cuts.s)
        return self._fleet_rows(aux["rel_fleet"], cuts.t, cuts.s)

    def _site_rows(self, rel: np.ndarray, t: np.ndarray, i: np.ndarray, s: np.ndarray):
        """Rows ``ov[t,i] + u[t,i] - u[s,i] >= C_i[t,t] - C_i[s,t]`` as (lower, starts,
        indices, values)."""
        m = len(t)
        rhs = rel[i, t + 1, t] - rel[i, s + 1, t]
        has_s = s >= 0
        nnz = 2 + has_s.astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(nnz)[:-1]])
        idx = np.empty(int(nnz.sum()), dtype=np.int32)
        val = np.empty(len(idx))
        idx[starts] = self.col(self.cOV, t, i)
        val[starts] = 1.0
        idx[starts + 1] = self.col(self.cU, t, i)
        val[starts + 1] = 1.0
        idx[starts[has_s] + 2] = self.col(self.cU, s[has_s], i[has_s])
        val[starts[has_s] + 2] = -1.0
        return rhs, starts.astype(np.int32), idx, val, m

    def _fleet_rows(self, relf: np.ndarray, t: np.ndarray, s: np.ndarray):
        """Rows ``sum_i ov[t,i] + v_t - v_s >= Cf[t,t] - Cf[s,t]``."""
        n = self.N
        m = len(t)
        rhs = relf[t + 1, t] - relf[s + 1, t]
        has_s = s >= 0
        nnz = n + 1 + has_s.astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(nnz)[:-1]])
        idx = np.empty(int(nnz.sum()), dtype=np.int32)
        val = np.ones(len(idx))
        for i in range(n):
            idx[starts + i] = self.col(self.cOV, t, i)
        idx[starts + n] = self.cV.start + t
        idx[starts[has_s] + n + 1] = self.cV.start + s[has_s]
        val[starts[has_s] + n + 1] = -1.0
        return rhs, starts.astype(np.int32), idx, val, m

    def violated(self, xs: np.ndarray, aux: dict) -> list[CutSet]:
        """The most violated deadline row of every site and hour (and of the fleet);
        empty when none is violated."""
        h_len, n = self.H, self.N
        u = xs[self.cU].reshape(h_len, n)
        ov = xs[self.cOV].reshape(h_len, n)
        rel = aux["rel"]  # [N, H+1, H]
        t = np.arange(h_len)
        need = _edf_need(rel, u)
        valid = np.arange(h_len + 1)[:, None] <= t[None, :]
        best = need.argmax(axis=1)  # [N, H] position s + 1
        gap = np.take_along_axis(need, best[:, None, :], axis=1)[:, 0, :] - ov.T
        out = []
        ii, tt = np.nonzero(gap > _CUT_TOL_GPU_H)
        if len(tt):
            out.append(CutSet("site", tt, best[ii, tt] - 1, ii))
        if self.migrate:
            v = xs[self.cV]
            v_pad = np.concatenate([[0.0], v])
            relf = aux["rel_fleet"]
            needf = relf[t + 1, t][None, :] - relf - (v[None, :] - v_pad[:, None])
            needf = np.where(valid, needf, -np.inf)
            bestf = needf.argmax(axis=0)
            gapf = needf[bestf, t] - ov.sum(1)
            tf = np.nonzero(gapf > _CUT_TOL_GPU_H)[0]
            if len(tf):
                out.append(CutSet("fleet", tf, bestf[tf] - 1))
        return out

    def matrix(self, inp: LPInputs) -> sp.csc_matrix:
        """The constraint matrix (without deadline rows) as scipy CSC, for inspection."""
        lp, _ = self.model(inp)
        return sp.csc_matrix(
            (np.asarray(lp.a_matrix_.value_), self._indices, self._indptr),
            shape=(self.n_row, self.n_col),
        )

    # ------------------------------------------------------------------ solution

    def unpack(self, xs: np.ndarray, objective: float, inp: LPInputs, aux: dict,
               solve_s: float, rounds: int) -> LPSolution:
        """Turn a HiGHS primal solution into an :class:`LPSolution`."""
        p = self.params
        h_len, n, kc = self.H, self.N, self.Kc
        exo, pue = aux["exo"], aux["pue"]
        xs = np.maximum(np.asarray(xs, dtype=np.float64), 0.0)

        def pair(sl: slice) -> np.ndarray:
            if sl.stop == sl.start:
                return np.zeros((h_len, n))
            return xs[sl].reshape(h_len, n)

        w = xs[self.cW].reshape(h_len, n, kc)
        busy = (w / self.taus).sum(-1)
        x = pair(self.cX)
        served = pair(self.cS)
        out, recv = pair(self.cOUT), pair(self.cIN)
        g, o, e = pair(self.cG), pair(self.cO), pair(self.cE)
        ch, dis, soc = pair(self.cCH), pair(self.cDIS), pair(self.cSOC)
        queued = pair(self.cB)
        ov = pair(self.cOV)
        r = xs[self.cR].reshape(h_len, self.K)
        routed = np.zeros((h_len, n))
        np.add.at(routed, (slice(None), self.route_from), r)
        routed_in = np.zeros((h_len, n))
        np.add.at(routed_in, (slice(None), self.route_to), r)
        it = it_kw_from_active((w * self.e_k[None]).sum(-1), p.gpus, p.gpu_idle_kw)
        mig_kwh = p.migration_kwh_per_gpu_h * out
        inf_kwh = p.inference_network_kwh_per_gpu_h * routed
        fac = facility_kw(p.facility_fixed_kw, pue, it, mig_kwh + inf_kwh)
        safe = np.where(busy > 0, busy, 1.0)
        capw = np.where(busy > 0, (w / self.taus * self.caps).sum(-1) / safe, 1.0)
        init_transit = np.asarray(inp.transit_gpu_h, float).sum(-1)
        transit_in = np.vstack([init_transit[None], recv[:-1]])
        demand = exo[..., Exo.INFERENCE_GPUS]
        carbon, price = exo[..., Exo.CARBON_G_PER_KWH], exo[..., Exo.PRICE_PER_MWH]
        f = np.zeros((h_len, n, len(OUTPUT_FIELDS)))
        f[..., Out.ARRIVED_GPU_H] = exo[..., Exo.FLEXIBLE_GPU_H]
        f[..., Out.TRANSIT_IN_GPU_H] = transit_in
        f[..., Out.MIGRATED_GPU_H] = out
        f[..., Out.WORK_DONE_GPU_H] = x
        f[..., Out.INFERENCE_DEMAND_GPU_H] = demand
        f[..., Out.INFERENCE_SERVED_GPU_H] = served
        f[..., Out.SLO_GPU_H] = demand - (served - routed_in + routed)
        f[..., Out.DEADLINE_MISS_GPU_H] = _edf_misses(aux["rel"], x + out)
        dt = self.step_h  # back to the env's output units (core, "Step length")
        f[..., Out.OVERDUE_GPU_H] = ov * dt
        f[..., Out.QUEUED_GPU_H] = queued
        f[..., Out.TRANSIT_GPU_H] = recv
        f[..., Out.BUSY_GPUS] = busy / dt
        f[..., Out.CAP] = capw
        f[..., Out.IT_KWH] = it
        f[..., Out.MIGRATION_KWH] = mig_kwh
        f[..., Out.FACILITY_KWH] = fac
        f[..., Out.PV_KWH] = exo[..., Exo.PV_KW]
        f[..., Out.WIND_KWH] = exo[..., Exo.WIND_KW]
        f[..., Out.BATTERY_CHARGE_KWH] = ch
        f[..., Out.BATTERY_DISCHARGE_KWH] = dis
        f[..., Out.SOC_KWH] = soc
        f[..., Out.GRID_IMPORT_KWH] = g
        f[..., Out.EXPORT_KWH] = e
        f[..., Out.OVERDRAW_KWH] = o
        f[..., Out.HEADROOM_KW] = exo[..., Exo.HEADROOM_KW] / dt
        f[..., Out.CARBON_KG] = g * carbon * KG_PER_G
        f[..., Out.COST] = g * price * MWH_PER_KWH
        f[..., Out.HEADROOM_VIOLATION] = (o > _OVERDRAW_TOL_KWH) * dt
        f[..., Out.GPU_RENT_COST], f[..., Out.HOLDING_COST] = gpu_time_cost(
            busy, p.gpu_rent_per_gpu_h, queued + recv, p.holding_cost_per_gpu_h_h)
        f[..., Out.BATTERY_DEGRADATION_COST] = dis * p.battery_degradation_per_kwh
        f[..., Out.TRANSFER_COST] = out * self.transfer_per_gpu_h
        f[..., Out.RESTART_GPU_H] = out * p.restart_overhead_gpu_h_per_gpu_h
        f[..., Out.INFERENCE_ROUTED_GPU_H] = routed
        f[..., Out.INFERENCE_NETWORK_KWH] = inf_kwh
        bk, sf = pair(self.cBK), pair(self.cSF)
        dr_on = dr_event_on(exo[..., Exo.DR_STARTS_IN_H], exo[..., Exo.DR_REMAINING_H])
        f[..., Out.BACKUP_KWH] = bk
        f[..., Out.BACKUP_FUEL_COST], f[..., Out.BACKUP_CARBON_KG] = backup_terms(
            bk, p.backup_fuel_cost_per_kwh, p.backup_carbon_g_per_kwh)
        f[..., Out.CARBON_KG] += f[..., Out.BACKUP_CARBON_KG]
        f[..., Out.DR_EVENT_H] = dr_on * dt
        f[..., Out.DR_SHORTFALL_KWH] = sf
        f[..., Out.DR_PENALTY_COST], f[..., Out.DR_PAYMENT] = dr_terms(
            dr_on, sf, p.dr_penalty_per_kwh, p.dr_payment_per_event_h)
        f[..., Out.DR_COMPLIANT_H] = dr_compliant(dr_on, sf, exo[..., Exo.DR_LIMIT_KW]) * dt
        first = {"work": x[0], "served": served[0], "busy": busy[0], "migrated": out[0],
                 "received": recv[0], "ch": ch[0], "dis": dis[0], "levels": w[0]}
        return LPSolution(objective=float(objective), J=-float(objective) / p.reward_scale,
                          values=f, leftover_gpu_h=queued[-1] + recv[-1], first=first,
                          solve_s=solve_s, rounds=rounds)


def facility_floor_kw(st: LPStructure, pue: np.ndarray, demand: np.ndarray,
                      sites: np.ndarray | slice) -> np.ndarray:
    """``F_lb = F0 + PUE_t (G P0 + min(D, G tau_I(c_min)) e_I,min)`` of ``sites``: the
    least facility power before curtailment of any env trajectory (fixed overhead, idle
    power and the inference the env always serves, at the least energy per GPU-h of the
    inference curve; see :meth:`LPStructure.charge_limit`)."""
    p = st.params
    e_min = st.e_k[:, st.L:].min(axis=1)[sites]
    gpus = p.gpus[sites]
    active = np.minimum(demand, gpus * p.inference_throughput_at(p.cap_min)) * e_min
    return facility_kw(p.facility_fixed_kw[sites], pue,
                       it_kw_from_active(active, gpus, p.gpu_idle_kw[sites]), 0.0)


def _edf_need(rel: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``need[i, s + 1, t] = C_i[t,t] - C_i[s,t] - (u_t - u_s)`` for ``s < t`` (``-inf``
    elsewhere): the right-hand sides of site ``i``'s deadline rows at ``u`` ``[H, N]``."""
    n, _, h_len = rel.shape
    t = np.arange(h_len)
    u_pad = np.vstack([np.zeros((1, n)), u])  # u at s = -1 .. H-1
    diag = rel[:, t + 1, t]  # [N, H]
    need = diag[:, None, :] - rel - (u.T[:, None, :] - u_pad.T[:, :, None])
    valid = np.arange(h_len + 1)[:, None] <= t[None, :]  # s + 1 <= t  <=>  s < t
    return np.where(valid[None], need, -np.inf)


def _edf_misses(rel: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``[H, N]`` GPU-h whose deadline passes in each hour when each site removes
    ``removed`` ``[H, N]`` GPU-h per hour from its own work, earliest deadline first.

    Overdue work is removed first, so ``miss_t = ov_t - ov_{t-1} + min(ov_{t-1}, r_t)``
    with the EDF overdue ``ov`` of the cumulative rows.
    """
    u = np.cumsum(removed, axis=0)
    ov = np.maximum(_edf_need(rel, u).max(axis=1), 0.0).T  # [H, N]
    prev = np.vstack([np.zeros((1, ov.shape[1])), ov[:-1]])
    return np.maximum(ov - prev + np.minimum(prev, removed), 0.0)


def _hour_index(new: LPStructure, old: LPStructure, names: tuple[str, ...], size: int,
                shift: int) -> np.ndarray:
    """For every column (row) of ``new``'s blocks ``names``, laid out hour by hour, the
    index of the same one ``shift`` hours later in ``old`` (its last hour past its end)."""
    out = np.full(size, -1, dtype=np.int64)
    for name in names:
        nb, ob = getattr(new, name), getattr(old, name)
        n_new = nb.stop - nb.start
        if not n_new:
            continue
        per = n_new // new.H
        t, j = np.divmod(np.arange(n_new), per)
        out[nb] = ob.start + np.minimum(t + shift, old.H - 1) * per + j
    if (out < 0).any():  # a block of LPStructure missing from the lists above
        raise LPError(f"WarmStart: LPStructure entries {np.flatnonzero(out < 0)[:5]} are in "
                      "none of the blocks it maps (_COL_BLOCKS / _ROW_BLOCKS)")
    return out


def _match(old_keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """Position of each of ``new_keys`` in ``old_keys``, -1 where it is not there."""
    if not len(old_keys):
        return np.full(len(new_keys), -1)
    order = np.argsort(old_keys, kind="stable")
    pos = np.minimum(np.searchsorted(old_keys[order], new_keys), len(old_keys) - 1)
    return np.where(old_keys[order][pos] == new_keys, order[pos], -1)


def _cut_keys(cuts: list[CutSet], shift: int, base: int) -> np.ndarray:
    """One integer per deadline row: its hour, start hour and site, ``shift`` hours on."""
    keys = [((c.t + shift) * base + c.s + shift + 1) * base
            + (0 if c.site is None else c.site + 1) for c in cuts]
    return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)


def _charge_pairs(st: LPStructure, charge: tuple | None) -> np.ndarray:
    """Pair index ``t N + i`` of every charge row (the first entry of each is ``ch``)."""
    if charge is None:
        return np.zeros(0, dtype=np.int64)
    _, _, starts, idx, _, _ = charge
    return idx[starts].astype(np.int64) - st.cCH.start


def _on_finite_bound(status: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Nonbasic statuses moved to a finite bound (``kZero`` only for free ones)."""
    has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
    out = np.where(has_lo, _LOWER, np.where(has_hi, _UPPER, _ZERO))
    out = np.where((status == _UPPER) & has_hi, _UPPER, out)
    return np.where(status == _BASIC, _BASIC, out).astype(np.int8)


def _nonbasic_codes(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Status of nonbasic variables from their values: at the nearer bound (HiGHS keeps
    a nonbasic variable at a bound)."""
    with np.errstate(invalid="ignore"):  # inf - inf where both bounds are infinite
        upper = np.abs(value - hi) < np.abs(value - lo)
    return _on_finite_bound(np.where(upper, _UPPER, _LOWER), lo, hi)


_banner_silenced = False


def _add_rows(h: highspy.Highs, rows: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Add rows given as ``(lower, upper, starts, indices, values, count)``; returns
    their bounds."""
    lo, hi, starts, idx, val, m = rows
    h.addRows(m, lo, hi, len(idx), starts, idx, val)
    return lo, hi


def _add_cut_rows(h: highspy.Highs, st: LPStructure, cuts: CutSet,
                  aux: dict) -> tuple[np.ndarray, np.ndarray]:
    """Add the deadline rows ``cuts`` (``>=`` rows, :meth:`LPStructure.rows`); returns
    their bounds."""
    rhs, starts, idx, val, m = st.rows(cuts, aux)
    hi = np.full(m, highspy.kHighsInf)
    h.addRows(m, rhs, hi, len(idx), starts, idx, val)
    return rhs, hi


def new_highs() -> highspy.Highs:
    """A silent HiGHS instance. HiGHS prints a banner to the process's standard output
    when the first instance is created, before any option can be set; it is sent to
    ``os.devnull`` so that command output and reports stay clean."""
    global _banner_silenced
    if _banner_silenced:
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_silenced = True
    h.setOptionValue("output_flag", False)
    return h


class Solver:
    """A HiGHS instance for repeated solves of one structure.

    Parameters
    ----------
    structure : LPStructure
    options : dict, optional
        HiGHS options (``{"solver": "simplex"}`` ...); output is always silenced.
    charge_rows : bool
        Add :meth:`LPStructure.charge_rows` (valid for the env; tighter bound).
    warm_start : bool
        Keep each solve's optimal basis (``solution.extra["warm"]``, a
        :class:`WarmStart`) so that a later solve can start from it.
    """

    def __init__(self, structure: LPStructure, options: dict | None = None, *,
                 charge_rows: bool = True, warm_start: bool = False) -> None:
        self.structure = structure
        self.charge_rows = charge_rows
        self.warm_start = warm_start
        self.highs = new_highs()
        for key, value in (options or {}).items():
            self.highs.setOptionValue(key, value)

    def _run(self, cold_retry: bool = False) -> None:
        h = self.highs
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal and cold_retry:
            h.clearSolver()  # trouble from a warm-start basis: solve from scratch
            self._run()
            return
        if status != highspy.HighsModelStatus.kOptimal:
            st = self.structure
            raise LPError(f"HiGHS returned {h.modelStatusToString(status)} for the "
                          f"{st.H}-hour LP ({st.n_col} columns, {h.getNumRow()} rows)")

    def solve(self, inp: LPInputs, seed_cuts: list[CutSet] | None = None,
              warm: WarmStart | None = None) -> LPSolution:
        """Build the model of ``inp``, solve it with lazy deadline rows, unpack it.

        ``seed_cuts`` are deadline rows to add from the start (MPC passes the previous
        hour's rows, shifted); the rows in the final model are in
        ``solution.extra["cuts"]``, the simplex iterations of all rounds in
        ``solution.extra["simplex_iterations"]``. ``warm``: a basis of an earlier solve
        (:meth:`WarmStart.shifted` to this solve's hours) to start the simplex from
        instead of the slack basis; it changes the path to the optimum, not the LP.

        Raises
        ------
        LPError
            When HiGHS does not report an optimal solution, or the deadline rows do not
            settle within the round limit.
        """
        t0 = time.perf_counter()
        st = self.structure
        h = self.highs
        lp, aux = st.model(inp)
        h.passModel(lp)
        row_bounds = [aux["bounds"][2:]]  # lower and upper bounds of every row, in order
        charge = st.charge_rows(aux) if self.charge_rows else None
        if charge is not None:
            row_bounds.append(_add_rows(h, charge))
        batches = [st.initial_cuts(), *(seed_cuts or [])]
        added: list[CutSet] = []
        rounds = iterations = 0
        while batches:
            row_bounds += [_add_cut_rows(h, st, cuts, aux) for cuts in batches]
            added += batches
            start_warm = warm is not None and not rounds
            if start_warm:
                self._set_basis(warm, aux, _charge_pairs(st, charge), added, row_bounds)
            self._run(cold_retry=start_warm)
            rounds += 1
            iterations += h.getInfo().simplex_iteration_count
            xs = np.asarray(h.getSolution().col_value)
            batches = st.violated(xs, aux)
            if rounds >= _MAX_CUT_ROUNDS and batches:
                raise LPError(f"deadline rows still violated after {rounds} rounds")
        objective = h.getInfo().objective_function_value
        sol = st.unpack(xs, objective, inp, aux, time.perf_counter() - t0, rounds)
        sol.extra.update(cuts=added, simplex_iterations=iterations)
        if self.warm_start:
            sol.extra["warm"] = self._basis(aux, _charge_pairs(st, charge), added, row_bounds)
        return sol

    def _basis(self, aux: dict, charge_pairs: np.ndarray, cuts: list[CutSet],
               row_bounds: list[tuple]) -> WarmStart:
        """The optimal basis of the model just solved (nonbasic variables at the bound
        they sit at)."""
        h = self.highs
        sol = h.getSolution()
        col_lo, col_hi = aux["bounds"][:2]
        row_lo, row_hi = (np.concatenate(b) for b in zip(*row_bounds, strict=True))
        col = _nonbasic_codes(np.asarray(sol.col_value), col_lo, col_hi)
        row = _nonbasic_codes(np.asarray(sol.row_value), row_lo, row_hi)
        _, basic = h.getBasicVariables()  # column j as j, row i as -1 - i
        col[basic[basic >= 0]] = _BASIC
        row[-1 - basic[basic < 0]] = _BASIC
        return WarmStart(self.structure, col, row, charge_pairs, cuts)

    def _set_basis(self, warm: WarmStart, aux: dict, charge_pairs: np.ndarray,
                   cuts: list[CutSet], row_bounds: list[tuple]) -> None:
        """Start from ``warm``'s basis moved ``warm.shift`` hours on: every column and
        static row takes the status of its counterpart that many hours later (the last
        hour's for the hours past the old horizon), charge and deadline rows that of
        the same row if the old model had it, else basic; nonbasic statuses sit at a
        finite bound. HiGHS completes the basis (``alien``: the count of basic
        variables may be off and the basis singular)."""
        st, old, shift = self.structure, warm.structure, warm.shift
        if (old.n_col // old.H, old.n_row // old.H) != (st.n_col // st.H, st.n_row // st.H):
            raise ValueError("WarmStart: the basis is of an LP of another structure")
        col_lo, col_hi = aux["bounds"][:2]
        row_lo, row_hi = (np.concatenate(b) for b in zip(*row_bounds, strict=True))
        col = warm.col_status[_hour_index(st, old, _COL_BLOCKS, st.n_col, shift)]
        base = max(old.H, st.H) + shift + st.N + 2
        old_charge = _match(warm.charge_pairs, charge_pairs + shift * st.N)
        old_cut = _match(_cut_keys(warm.cuts, 0, base), _cut_keys(cuts, shift, base))
        at_cut = old.n_row + len(warm.charge_pairs)
        row = np.concatenate([
            warm.row_status[_hour_index(st, old, _ROW_BLOCKS, st.n_row, shift)],
            np.where(old_charge >= 0, warm.row_status[old.n_row + old_charge], _BASIC),
            np.where(old_cut >= 0, warm.row_status[at_cut + old_cut], _BASIC)])
        basis = highspy.HighsBasis()
        basis.col_status = _STATUS[_on_finite_bound(col, col_lo, col_hi)].tolist()
        basis.row_status = _STATUS[_on_finite_bound(row, row_lo, row_hi)].tolist()
        basis.alien = True
        basis.valid = True
        if self.highs.setBasis(basis) == highspy.HighsStatus.kError:
            raise LPError("HiGHS rejected the warm-start basis")


def rule_battery_rows(st: LPStructure, aux: dict, first_col: int) -> tuple[list, np.ndarray]:
    """Binary columns and rows that make the LP's battery follow the env's dispatch rule
    (``env.battery_control: rule``), as a mixed-integer program that is still a
    relaxation of the env.

    Per hour and battery site, binaries ``z`` (the env charges: ``pv + wind >= F``),
    ``y1``, ``y2``, ``y3`` (which term limits the discharge). With ``F_it = PUE_t (sum_k
    w_k e_k + G P0)`` the IT part of the facility power *after* curtailment (never above
    the env's facility power ``F`` before curtailment, which the rule uses):

    - ``ch <= P_b z``, ``dis <= P_b (1 - z)``: the rule never charges and discharges
      together;
    - ``F_it + ch <= pv + wind + M (1 - z)``: charge comes from local surplus only;
    - when discharging, ``dis >= F_it - pv - wind - theta h`` (``y1``), or ``dis = P_b``
      (``y2``), or the battery ends the hour empty (``y3``): the rule discharges
      ``min(F - pv - wind - theta h, P_b, available)`` and ``F >= F_it``;
    - ``y1 + y2 + y3 + z >= 1``.

    ``z`` is fixed at 0 where ``pv + wind`` is below the least facility power the env can
    draw (:meth:`LPStructure.charge_limit`'s ``F_lb``). The big-M constants are
    ``PUE_t G Pmax (+ P_b)``, bounds of the terms they relax.

    Returns
    -------
    (list of addRows argument tuples, integer column indices)
    """
    p = st.params
    h_len, n, kc = st.H, st.N, st.Kc
    exo, pue = aux["exo"], aux["pue"]
    sites = np.flatnonzero(p.battery_power_kw > 0)
    t = np.repeat(np.arange(h_len), len(sites))
    i = np.tile(sites, h_len)
    m = len(t)
    pidx = t * n + i
    cz, cy1, cy2, cy3 = (first_col + 4 * np.arange(m) + k for k in range(4))
    ch, dis, soc = st.cCH.start + pidx, st.cDIS.start + pidx, st.cSOC.start + pidx
    wcols = st.cW.start + pidx[:, None] * kc + np.arange(kc)[None, :]  # [m, Kc]
    we = pue[t, i][:, None] * st.e_k[i]  # [m, Kc]
    gen = exo[t, i, Exo.PV_KW] + exo[t, i, Exo.WIND_KW]
    head = exo[t, i, Exo.HEADROOM_KW]
    pb = p.battery_power_kw[i]
    gmax = fleet_facility_kw(p.facility_fixed_kw[i], pue[t, i], p.gpus[i], p.gpu_max_kw[i])
    idle = fleet_facility_kw(p.facility_fixed_kw[i], pue[t, i], p.gpus[i], p.gpu_idle_kw[i])
    theta = p.battery_discharge_threshold_fraction
    inf = highspy.kHighsInf
    batches = []

    def rows(lo, hi, cols: list[np.ndarray], vals: list[np.ndarray]) -> None:
        c = np.column_stack([np.broadcast_to(x, (m,)) if np.ndim(x) == 1 else x for x in cols])
        v = np.column_stack([np.broadcast_to(np.asarray(x, float), (m,)) if np.ndim(x) <= 1
                             else x for x in vals])
        width = c.shape[1]
        batches.append((np.broadcast_to(np.asarray(lo, float), (m,)).copy(),
                        np.broadcast_to(np.asarray(hi, float), (m,)).copy(),
                        (np.arange(m) * width).astype(np.int32), c.ravel().astype(np.int32),
                        v.ravel(), m))

    ones = np.ones(m)
    rows(-inf, 0.0, [ch, cz], [ones, -pb])
    rows(-inf, pb, [dis, cz], [ones, pb])
    big_a = gmax + pb
    rows(-inf, gen - idle + big_a, [wcols, ch, cz], [we, ones, big_a])
    rows(idle - gen - theta * head - gmax, inf, [dis, wcols, cz, cy1],
         [ones, -we, gmax, -gmax])
    rows(0.0, inf, [dis, cz, cy2], [ones, pb, -pb])
    span = p.soc_max_kwh[i] - p.soc_min_kwh[i]
    rows(-inf, p.soc_min_kwh[i] + span, [soc, cz, cy3], [ones, -span, span])
    rows(1.0, inf, [cy1, cy2, cy3, cz], [ones, ones, ones, ones])
    f_lb = facility_floor_kw(st, pue[t, i], exo[t, i, Exo.INFERENCE_GPUS], i)
    fixed = cz[gen < f_lb]
    return batches, (np.column_stack([cz, cy1, cy2, cy3]).ravel(), fixed)


# Model statuses at which a MIP search may stop with a valid dual bound: optimal within
# the gap, or stopped by the time or node limit (HiGHS reports a node limit as the
# solution limit).
_MIP_STOPS = (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit,
              highspy.HighsModelStatus.kSolutionLimit)


def solve_rule_battery(params: EnvParams, inp: LPInputs, *, time_limit_s: float,
                       mip_rel_gap: float, mip_max_nodes: int | None = None,
                       options: dict | None = None) -> LPSolution:
    """The bound with the env's battery dispatch rule modelled exactly (mixed-integer).

    First the LP (:meth:`Solver.solve`) finds the deadline rows it needs; the MIP adds
    :func:`rule_battery_rows` and keeps those rows (a subset of all deadline rows is a
    relaxation, so the MIP stays a bound). ``J`` is HiGHS's proven dual bound of the MIP
    (valid whenever the search stops, at ``mip_rel_gap``, ``mip_max_nodes`` or
    ``time_limit_s``), never above the LP's; ``values`` are those of the best plan found
    (within the gap). A node limit stops the search at the same point on every run; a
    time limit does not (``extra["mip_status"]`` says which rule stopped it).
    """
    hours = np.asarray(inp.exo).shape[0]
    st = LPStructure(params, hours)
    lp_sol = Solver(st, options).solve(inp)
    if params.battery_action or not (params.battery_power_kw > 0).any():
        return lp_sol
    t0 = time.perf_counter()
    h = new_highs()
    lp, aux = st.model(inp)
    h.passModel(lp)
    charge = st.charge_rows(aux)
    if charge is not None:
        _add_rows(h, charge)
    for cuts in lp_sol.extra["cuts"]:
        _add_cut_rows(h, st, cuts, aux)
    first = h.getNumCol()
    batches, (ints, fixed) = rule_battery_rows(st, aux, first)
    k = len(ints)
    h.addVars(k, np.zeros(k), np.ones(k))
    h.changeColsIntegrality(k, ints.astype(np.int32),
                            np.full(k, highspy.HighsVarType.kInteger))
    if len(fixed):
        h.changeColsBounds(len(fixed), fixed.astype(np.int32), np.zeros(len(fixed)),
                           np.zeros(len(fixed)))
    for rows in batches:
        _add_rows(h, rows)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    if mip_max_nodes is not None:
        h.setOptionValue("mip_max_nodes", int(mip_max_nodes))
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    ok = status in _MIP_STOPS
    dual = info.mip_dual_bound
    if not ok or not np.isfinite(dual):
        raise LPError(f"HiGHS returned {h.modelStatusToString(status)} for the battery-rule "
                      f"MIP ({h.getNumCol()} columns, {h.getNumRow()} rows)")
    # both are lower bounds of the MIP's optimum (the LP is its relaxation)
    bound_obj = max(dual, lp_sol.objective)
    has_plan = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if has_plan:
        xs = np.asarray(h.getSolution().col_value)[: st.n_col]
        sol = st.unpack(xs, info.objective_function_value, inp, aux,
                        lp_sol.solve_s + time.perf_counter() - t0, lp_sol.rounds)
    else:
        sol = lp_sol
    sol.objective = float(bound_obj)
    sol.J = -float(bound_obj) / params.reward_scale
    sol.extra.update(lp_J=lp_sol.J, mip_gap=float(info.mip_gap),
                     mip_status=h.modelStatusToString(status), plan_from_mip=has_plan,
                     mip_nodes=int(info.mip_node_count),
                     solve_s=lp_sol.solve_s + time.perf_counter() - t0)
    sol.solve_s = sol.extra["solve_s"]
    return sol


def solve(params: EnvParams, inp: LPInputs, options: dict | None = None) -> LPSolution:
    """Build and solve the LP of ``inp`` once (see the module docstring)."""
    hours = np.asarray(inp.exo).shape[0]
    return Solver(LPStructure(params, hours), options).solve(inp)
