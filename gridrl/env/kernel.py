"""Compiled step: the equations of :mod:`gridrl.env.core`, fused into one numba kernel.

``core.step`` is the readable reference (numpy, one array operation per equation). At
small batch sizes its cost is the per-call overhead of some 150 numpy operations, so the
environments step through this kernel instead: the same equations in the same order,
compiled, writing into preallocated arrays. Tests check that both give the same numbers.

Every compiled function of the environment lives in this file (the step, the
observation fill of :mod:`gridrl.env.layout` and the batched step with bookkeeping of
:mod:`gridrl.env.batch`): numba's on-disk cache of a function is invalidated when its own
file changes, not when a function it calls from another file does, so a kernel split
over files could run stale code after an upgrade.

Parameters are packed once per scenario (:class:`PackedParams`) so a call passes few
arguments: numba's argument checking costs per argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from gridrl.env.core import (
    _REWARD_IDX,
    EXO_SIGNALS,
    KG_PER_G,
    MWH_PER_KWH,
    OUTPUT_FIELDS,
    StepOutputs,
)
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = ["FAST_MATH", "PackedParams", "StepBuffers", "pack", "step", "step_into"]

#: LLVM may reassociate sums (vectorised reductions), fuse multiply-adds and use
#: reciprocals; results differ from the numpy reference in the last bits only. NaN and
#: infinity semantics are kept (inputs are validated, not assumed finite).
FAST_MATH = {"reassoc", "nsz", "arcp", "contract"}

# Columns of PackedParams.site
_GPUS, _IDLE, _PMAX, _PUE, _SLOPE, _T0, _BPOW, _ETA, _SOCMIN, _SOCMAX, _BSPAN = range(11)
# Entries of PackedParams.scalar
_CAPMIN, _TAUMIN, _KAPPA, _MMAX, _BETA, _BACT, _THETA, _W0 = range(8)
_SCALE = _W0 + 5
# scalar[_BACT]: how the battery is dispatched
_BATTERY_MODE = {"rule": 0.0, "setpoint": 1.0, "residual": 2.0}
_N_OUT = len(OUTPUT_FIELDS)
_TERM_COLS = _REWARD_IDX  # output columns of the reward terms, in REWARD_TERMS order
if len(EXO_SIGNALS) != 8 or len(OUTPUT_FIELDS) != 31:  # the kernel indexes them by position
    raise ImportError("kernel field positions are out of date")


@dataclass(frozen=True, eq=False)
class PackedParams:
    """``EnvParams`` as four arrays: per-site ``[N, 11]``, scalars, arrival split, curve."""

    site: np.ndarray
    scalar: np.ndarray
    split: np.ndarray
    curve: np.ndarray  # [2, P]: cap points, throughput points


def pack(params: EnvParams) -> PackedParams:
    """Pack parameters for the kernel."""
    p = params
    site = np.stack(
        [p.gpus, p.gpu_idle_kw, p.gpu_max_kw, p.pue, p.pue_temp_slope_per_c,
         p.pue_temp_threshold_c, p.battery_power_kw, p.battery_eta, p.soc_min_kwh,
         p.soc_max_kwh, p.battery_action_span_kw],
        axis=1,
    )
    scalar = np.concatenate(
        [
            [p.cap_min, p.tau_min, p.migration_kwh_per_gpu_h,
             p.max_migration_fraction if p.n_sites > 1 else 0.0, p.route_logit_scale,
             _BATTERY_MODE[p.battery_control], p.battery_discharge_threshold_fraction],
            p.reward_weights,
            [p.reward_scale],
        ]
    )
    curve = np.stack([p.throttle_cap, p.throttle_throughput])
    return PackedParams(np.ascontiguousarray(site), scalar, np.ascontiguousarray(p.arrival_split),
                        np.ascontiguousarray(curve))


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


@numba.njit(cache=True, fastmath=FAST_MATH)
def _step_env(b, site, scalar, split, curve, queue, transit, soc_in, action, exo, rows,
              q_out, z_out, soc_out, cap_out, values, reward, q2, moved, acc, e, inv_den,
              mu_s, total_s):  # pragma: no cover - compiled
    # One episode (batch row b) of the step; q2 ... total_s are scratch arrays.
    n_s, n_k = queue.shape[1], queue.shape[2]
    cap_min = scalar[_CAPMIN]
    tau_min = scalar[_TAUMIN]
    kappa = scalar[_KAPPA]
    m_max = scalar[_MMAX]
    beta = scalar[_BETA]
    b_act = scalar[_BACT] > 0.5
    b_res = scalar[_BACT] > 1.5
    theta = scalar[_THETA]
    xp = curve[0]
    fp = curve[1]
    multi = n_s > 1
    # route weights (softmax without the source)
    mx = -np.inf
    for i in range(n_s):
        lg = action[b, i, 2] * beta
        if lg > mx:
            mx = lg
    esum = 0.0
    for i in range(n_s):
        e[i] = np.exp(action[b, i, 2] * beta - mx)
        esum += e[i]
    for i in range(n_s):
        inv_den[i] = 1.0 / (esum - e[i]) if multi else 0.0
    # 1.-2. arrivals, transit in, migration out
    for k in range(n_k):
        acc[k] = 0.0
    for i in range(n_s):
        arr = exo[rows[b], i, 6]
        m = (action[b, i, 3] + 1.0) * 0.5 * m_max
        w = inv_den[i]
        tin = 0.0
        mu = 0.0
        tot = 0.0
        for k in range(n_k):
            zk = transit[b, i, k]
            tin += zk
            q1 = queue[b, i, k] + zk + arr * split[i, k]
            mv = m * q1
            moved[i, k] = mv
            q2k = q1 - mv
            q2[i, k] = q2k
            mu += mv
            tot += q2k
            acc[k] += mv * w
        values[b, i, 1] = tin
        mu_s[i] = mu
        total_s[i] = tot
    for i in range(n_s):
        # transit to i, aged on the way (step 9)
        ei = e[i]
        w = inv_den[i]
        ztot = 0.0
        if multi:
            zk1 = ei * (acc[1] - moved[i, 1] * w)
            z0 = ei * (acc[0] - moved[i, 0] * w) + zk1
            z_out[b, i, 0] = z0
            ztot = z0
            for k in range(1, n_k - 1):
                zk = ei * (acc[k + 1] - moved[i, k + 1] * w)
                z_out[b, i, k] = zk
                ztot += zk
            z_out[b, i, n_k - 1] = 0.0
        else:
            zk1 = 0.0
            for k in range(n_k):
                z_out[b, i, k] = 0.0
        gpus = site[i, _GPUS]
        p_idle = site[i, _IDLE]
        p_max = site[i, _PMAX]
        pv = exo[rows[b], i, 0]
        wind = exo[rows[b], i, 1]
        head = exo[rows[b], i, 2]
        demand = exo[rows[b], i, 5]
        temp = exo[rows[b], i, 7]
        mu = mu_s[i]
        total = total_s[i]
        e_mig = kappa * mu
        # 3.-4. request and dispatch
        request = (action[b, i, 0] + 1.0) * 0.5 * total
        cap = cap_min + (action[b, i, 1] + 1.0) * 0.5 * (1.0 - cap_min)
        tau = _interp(cap, xp, fp)
        gtau = gpus * tau
        inf = min(demand, gtau)
        flex = min(request, gtau - inf)
        busy = (inf + flex) / tau
        it = busy * (cap * p_max - p_idle) + gpus * p_idle
        pue = site[i, _PUE] + site[i, _SLOPE] * max(temp - site[i, _T0], 0.0)
        fac = pue * it + e_mig
        # 5. battery
        gen = pv + wind
        eta = site[i, _ETA]
        bpow = site[i, _BPOW]
        soc = soc_in[b, i]
        if b_act:
            pb = action[b, i, 4] * site[i, _BSPAN]
            if b_res:
                rule = max(gen - fac, 0.0) - max(fac - gen - theta * head, 0.0)
                pb += min(max(rule, -bpow), bpow)
            ch_want = min(max(pb, 0.0), max(head + gen - fac, 0.0))
            dis_want = max(-pb, 0.0)
        else:
            ch_want = max(gen - fac, 0.0)
            dis_want = max(fac - gen - theta * head, 0.0)
        ch = min(min(ch_want, bpow), max(site[i, _SOCMAX] - soc, 0.0) / eta)
        dis = min(min(dis_want, bpow), max(soc - site[i, _SOCMIN], 0.0) * eta)
        excess0 = max(fac - gen + ch - dis - head, 0.0)
        # 6a. share phi of GPUs to cap_min
        gtau_m = gpus * tau_min
        inf_m = min(demand, gtau_m)
        flex_m = min(request, gtau_m - inf_m)
        busy_m = (inf_m + flex_m) / tau_min
        it_m = busy_m * (cap_min * p_max - p_idle) + gpus * p_idle
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
        # 6b.-c. pause flexible work, shed inference
        cap_s = cap_min if full else cap
        tau_s = tau_min if full else tau
        kw_per = (cap_s * p_max - p_idle) / tau_s
        kk = pue * kw_per
        inv_k = 1.0 / kk if kk > 0.0 else 0.0
        x = min(flex1, excess1 * inv_k)
        excess2 = 0.0 if x < flex1 else max(excess1 - x * kk, 0.0)
        y = min(inf1, excess2 * inv_k)
        excess3 = 0.0 if y < inf1 else max(excess2 - y * kk, 0.0)
        stopped = x + y
        flex2 = flex1 - x
        inf2 = inf1 - y
        busy2 = busy1 - stopped / tau_s
        it2 = it1 - stopped * kw_per
        fac2 = pue * it2 + e_mig
        # 7. grid
        net = fac2 - gen + ch - dis
        grid = max(net, 0.0)
        export = max(-net, 0.0)
        # 8. earliest deadline first, 9. ageing (overdue and slack 0 merge)
        q0 = q2[i, 0]
        t0 = min(q0, max(flex2, 0.0))
        q1b = q2[i, 1]
        cum = q0 + q1b
        t1 = min(q1b, max(flex2 - q0, 0.0))
        done = t0 + t1
        q3_1 = q1b - t1
        qo0 = (q0 - t0) + q3_1
        q_out[b, i, 0] = qo0
        queued = qo0
        k = 2
        while k < n_k and cum < flex2:  # buckets the work done reaches
            qk = q2[i, k]
            take = min(qk, flex2 - cum)
            cum += qk
            done += take
            q3 = qk - take
            q_out[b, i, k - 1] = q3
            queued += q3
            k += 1
        for k2 in range(k, n_k):  # the rest waits: aged copy
            qk = q2[i, k2]
            q_out[b, i, k2 - 1] = qk
            queued += qk
        q_out[b, i, n_k - 1] = 0.0
        soc_next = soc + eta * ch - dis / eta
        soc_out[b, i] = soc_next
        cap_out[b, i] = cap_eff
        v = values[b, i]
        v[0] = exo[rows[b], i, 6]
        v[2] = mu
        v[3] = done
        v[4] = demand
        v[5] = inf2
        v[6] = demand - inf2
        v[7] = q3_1 + zk1
        v[8] = q_out[b, i, 0] + z_out[b, i, 0]
        v[9] = queued
        v[10] = ztot
        v[11] = busy2
        v[12] = cap_eff
        v[13] = it2
        v[14] = e_mig
        v[15] = fac2
        v[16] = pv
        v[17] = wind
        v[18] = ch
        v[19] = dis
        v[20] = soc_next
        v[21] = grid
        v[22] = export
        v[23] = excess3
        v[24] = fac - fac2
        v[25] = x
        v[26] = y
        v[27] = head
        v[28] = grid * exo[rows[b], i, 3] * KG_PER_G
        v[29] = grid * exo[rows[b], i, 4] * MWH_PER_KWH
        v[30] = 1.0 if excess3 > 0.0 else 0.0
    # 11. reward
    r = 0.0
    for i in range(n_s):
        r += (scalar[_W0] * values[b, i, 28] + scalar[_W0 + 1] * values[b, i, 29]
              + scalar[_W0 + 2] * values[b, i, 6] + scalar[_W0 + 3] * values[b, i, 8]
              + scalar[_W0 + 4] * values[b, i, 23])
    reward[b] = -r / scalar[_SCALE]


@numba.njit(cache=True, fastmath=FAST_MATH)
def _scratch(n_s, n_k):  # pragma: no cover - compiled
    return (np.empty((n_s, n_k)), np.empty((n_s, n_k)), np.empty(n_k), np.empty(n_s),
            np.empty(n_s), np.empty(n_s), np.empty(n_s))


@numba.njit(cache=True, fastmath=FAST_MATH)
def _kernel(site, scalar, split, curve, queue, transit, soc_in, action, exo, rows,
            q_out, z_out, soc_out, cap_out, values, reward):  # pragma: no cover - compiled
    # exo is [T, N, K]; episode b reads row rows[b].
    n_b, n_s, n_k = queue.shape
    q2, moved, acc, e, inv_den, mu_s, total_s = _scratch(n_s, n_k)
    for b in range(n_b):
        _step_env(b, site, scalar, split, curve, queue, transit, soc_in, action, exo, rows,
                  q_out, z_out, soc_out, cap_out, values, reward, q2, moved, acc, e, inv_den,
                  mu_s, total_s)


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
              out: StepBuffers) -> None:
    """Advance ``B`` episodes by one hour, writing into ``out``.

    ``action`` ``[B, N, A]`` must be float64, finite and inside [-1, 1]; ``exo_t``
    ``[B, N, 8]`` float64. ``out`` may hold ``state``'s own arrays (an in-place update:
    the kernel reads all of an episode's state before writing it).
    """
    rows = np.arange(exo_t.shape[0])
    _kernel(pp.site, pp.scalar, pp.split, pp.curve, state.queue_gpu_h, state.transit_gpu_h,
            state.soc_kwh, action, exo_t, rows, out.queue_gpu_h, out.transit_gpu_h,
            out.soc_kwh, out.cap, out.values, out.reward)


def step(params: EnvParams | PackedParams, state: EnvState, action: np.ndarray,
         exo_t: np.ndarray) -> tuple[EnvState, StepOutputs]:
    """Same contract as :func:`gridrl.env.core.step`, computed by the compiled kernel."""
    pp = params if isinstance(params, PackedParams) else pack(params)
    b, n, k = state.queue_gpu_h.shape
    out = StepBuffers.empty(b, n, k - 1)
    step_into(pp, state, np.ascontiguousarray(action, dtype=np.float64),
              np.ascontiguousarray(exo_t, dtype=np.float64), out)
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
def _advance(site, scalar, split, curve, q, z, soc, action, exo, rows, q2, z2, soc2, cap2,
             values, reward, end, sums, returns, tvalue, charge, done, totals,
             calendar, site_exo, inv_scale, group_end, obs):  # pragma: no cover
    # One hour for every episode, one episode at a time (its arrays stay in cache): the
    # kernel step into (q2, z2, soc2, cap2, values, reward), the bookkeeping (sums, rows,
    # terminal charge, returns, totals over sites with weighted reward terms) and the
    # observation of the new state.
    n_b, n_s, n_f = values.shape
    n_k = q2.shape[2]
    inv = 1.0 / scalar[_SCALE]
    last = exo.shape[0] - 1
    any_done = False
    s_q2, s_moved, s_acc, s_e, s_inv_den, s_mu, s_total = _scratch(n_s, n_k)
    for b in range(n_b):
        _step_env(b, site, scalar, split, curve, q, z, soc, action, exo, rows, q2, z2, soc2,
                  cap2, values, reward, s_q2, s_moved, s_acc, s_e, s_inv_den, s_mu, s_total)
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
                c += left * tvalue[b, i]
            reward[b] -= c * inv
        else:
            done[b] = False
        charge[b] = c
        returns[b] += reward[b]
        for j in range(5):
            totals[b, n_f + j] = -scalar[_W0 + j] * totals[b, _TERM_COLS[j]] * inv
        totals[b, n_f + 5] = -c * inv
        _fill_env(b, calendar, site_exo, min(rows[b], last), q2, z2, soc2, cap2, inv_scale,
                  group_end, obs)
    return any_done
