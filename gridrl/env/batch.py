"""``BatchSim``: B episodes of one scenario stepped together (shared by the Gymnasium env
and the native VecEnv).

It owns the state (double-buffered so a step never allocates), the data row and end row
of every episode, the running sums of step outputs per episode and site, and the
terminal charge for work left at the end (``core.terminal_value_per_gpu_h``). Episodes
end independently; the caller restarts them with :meth:`begin`.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np

from gridrl.env import core, kernel
from gridrl.env.episodes import Window
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import _SCALE, _W0, _kernel
from gridrl.env.kpis import episode_kpis
from gridrl.env.layout import ObservationBuilder, _fill
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = ["INFO_FIELDS", "BatchSim", "InvalidActionError"]

Backend = Literal["numba", "numpy"]


_F = {name: i for i, name in enumerate(core.OUTPUT_FIELDS)}
# Output columns of the reward terms, in REWARD_TERMS order.
_TERM_COLS = np.array([_F["carbon_kg"], _F["cost"], _F["slo_gpu_h"], _F["overdue_gpu_h"],
                       _F["overdraw_kwh"]])
#: Keys of the per-step info: output fields summed over sites, then weighted reward terms.
INFO_FIELDS = core.OUTPUT_FIELDS + (
    "reward_carbon", "reward_cost", "reward_slo", "reward_overdue", "reward_overdraw",
    "reward_terminal",
)


class InvalidActionError(ValueError):
    """An action with the wrong shape or a NaN."""


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


@numba.njit(cache=True)
def _advance(site, scalar, split, curve, q, z, soc, action, exo, rows, q2, z2, soc2, cap2,
             values, reward, end, sums, returns, tvalue, charge, done, totals,
             calendar, site_exo, obs_rows, inv_scale, group_end, obs):  # pragma: no cover
    # One hour for every episode: the kernel step into (q2, z2, soc2, cap2, values,
    # reward), then the bookkeeping (sums, rows, terminal charge, returns, per-episode
    # totals over sites with weighted reward terms) and the next observations.
    _kernel(site, scalar, split, curve, q, z, soc, action, exo, rows, q2, z2, soc2, cap2,
            values, reward)
    n_b, n_s, n_f = values.shape
    n_k = q2.shape[2]
    inv = 1.0 / scalar[_SCALE]
    last = exo.shape[0] - 1
    any_done = False
    for b in range(n_b):
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
        obs_rows[b] = min(rows[b], last)
    _fill(calendar, site_exo, obs_rows, q2, z2, soc2, cap2, inv_scale, group_end, obs)
    return any_done


class BatchSim:
    """``batch_size`` episodes of a scenario.

    Parameters
    ----------
    params : EnvParams
    data : EnvData
    batch_size : int
    backend : {"numba", "numpy"}
        ``numba`` steps with the compiled kernel (:mod:`gridrl.env.kernel`), ``numpy``
        with the reference ``core.step``; both give the same numbers.

    Attributes
    ----------
    state : EnvState
        Live state (overwritten by the next step: copy what you keep).
    rows : ndarray
        ``[B]`` data row of the hour about to be simulated.
    start, end : ndarray
        ``[B]`` first row and end row (exclusive) of each episode.
    sums : ndarray
        ``[B, N, F]`` step outputs summed over the episode so far.
    returns : ndarray
        ``[B]`` rewards summed over the episode so far.
    """

    def __init__(self, params: EnvParams, data: EnvData, batch_size: int,
                 backend: Backend = "numba") -> None:
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        if tuple(data.site_names) != tuple(params.site_names):
            raise ValueError(
                f"data sites {data.site_names} differ from scenario sites {params.site_names}"
            )
        self.params = params
        self.data = data
        self.backend = backend
        self.batch_size = b = int(batch_size)
        n, s = params.n_sites, params.slack_buckets
        self.n_act = params.n_actions_per_site
        self.packed = kernel.pack(params)
        self.obs = ObservationBuilder(params, data)
        self._bufs = [kernel.StepBuffers.empty(b, n, s), kernel.StepBuffers.empty(b, n, s)]
        self._cur = 0
        init = core.reset(params, b)
        buf = self._bufs[0]
        buf.queue_gpu_h[:] = init.queue_gpu_h
        buf.transit_gpu_h[:] = init.transit_gpu_h
        buf.soc_kwh[:] = init.soc_kwh
        buf.cap[:] = init.cap
        self._states = [self._state_of(self._bufs[0]), self._state_of(self._bufs[1])]
        self.state = self._states[0]
        self._done = np.zeros(b, dtype=np.bool_)
        self.any_done = False
        self.rows = np.zeros(b, dtype=np.int64)
        self.start = np.zeros(b, dtype=np.int64)
        self.end = np.ones(b, dtype=np.int64)
        self.sums = np.zeros((b, n, len(core.OUTPUT_FIELDS)))
        self.returns = np.zeros(b)
        self.start_work = np.zeros((b, n))
        self.terminal_value = np.zeros((b, n))
        self.values = np.zeros((b, n, len(core.OUTPUT_FIELDS)))
        self.reward = np.zeros(b)
        self.terminal_charge = np.zeros(b)  # this hour's charge for work left (at episode ends)
        self.clipped = np.zeros(b, dtype=np.int64)
        self._act = np.zeros((b, n * self.n_act))
        self._act3 = self._act.reshape(b, n, self.n_act)
        self._last_row = data.hours - 1
        self.totals = np.zeros((b, len(INFO_FIELDS)))
        self.obs_buffer = np.zeros((b, self.obs.dim), dtype=np.float32)
        self._obs_rows = np.zeros(b, dtype=np.int64)
        self._t_carbon_price = np.concatenate(
            [np.zeros((1, n, 2)), np.cumsum(data.exo[..., [3, 4]], axis=0)])

    @staticmethod
    def _state_of(buf: kernel.StepBuffers) -> EnvState:
        return EnvState(buf.queue_gpu_h, buf.transit_gpu_h, buf.soc_kwh, buf.cap)

    # ------------------------------------------------------------------ episodes

    def begin(self, envs: np.ndarray | list[int], windows: list[Window]) -> None:
        """Start new episodes in batch rows ``envs`` at ``windows`` (state reset)."""
        p = self.params
        st = self.state
        for b, w in zip(envs, windows, strict=True):
            if w.hours < 1 or w.start < 0 or w.start + w.hours > self.data.hours:
                raise ValueError(f"episode window {w} outside the data rows")
            st.queue_gpu_h[b] = 0.0
            st.transit_gpu_h[b] = 0.0
            st.soc_kwh[b] = p.soc_initial_kwh
            st.cap[b] = 1.0
            self.rows[b] = self.start[b] = w.start
            self.end[b] = w.start + w.hours
            self.sums[b] = 0.0
            self.returns[b] = 0.0
            self.start_work[b] = 0.0
            self.terminal_value[b] = core.terminal_value_per_gpu_h(
                p, self.data.exo[w.start : w.start + w.hours])

    def episode_exo(self, env: int = 0) -> np.ndarray:
        """``[L, N, K]`` exogenous rows of episode ``env`` (a view, do not modify)."""
        return self.data.exo[self.start[env] : self.end[env]]

    # ------------------------------------------------------------------ step

    def set_action(self, action: np.ndarray) -> None:
        """Validate ``action`` ``[B, N * A]`` (NaN raises, out of [-1, 1] is clipped and
        counted in ``clipped``) into the internal action buffer."""
        a = action if action.dtype == np.float64 else action.astype(np.float64)
        bad = _sanitize(a, self._act, self.clipped)
        if bad >= 0:
            b, m = divmod(int(bad), self._act.shape[1])
            site, comp = divmod(m, self.n_act)
            raise InvalidActionError(
                f"action contains NaN at env {b}, index {m} "
                f"({self.params.site_names[site]}.{self.params.action_names[comp]})"
            )

    def advance(self) -> np.ndarray:
        """Simulate the hour at ``rows`` for every episode with the action set last and
        build the next observations; returns ``done`` ``[B]`` (episodes that reached their
        end row; a view, reused).

        Afterwards ``values``, ``reward`` (terminal charge included), ``terminal_charge``,
        ``totals`` (``INFO_FIELDS``) hold this hour's outputs and ``obs_buffer`` the
        observations of the new state (reused: copy what you keep).
        """
        nxt = 1 - self._cur
        buf = self._bufs[nxt]
        st = self.state
        pp = self.packed
        ob = self.obs
        if self.backend == "numba":
            self.any_done = _advance(
                pp.site, pp.scalar, pp.split, pp.curve, st.queue_gpu_h, st.transit_gpu_h,
                st.soc_kwh, self._act3, self.data.exo, self.rows, buf.queue_gpu_h,
                buf.transit_gpu_h, buf.soc_kwh, buf.cap, buf.values, buf.reward, self.end,
                self.sums, self.returns, self.terminal_value, self.terminal_charge,
                self._done, self.totals, ob.calendar, ob.site_exo, self._obs_rows,
                ob._inv_scale, ob._group_end, self.obs_buffer)
        else:
            self._advance_numpy(buf)
        self._cur = nxt
        self.state = self._states[nxt]
        self.values = buf.values
        self.reward = buf.reward
        return self._done

    def _advance_numpy(self, buf: kernel.StepBuffers) -> None:
        """The same as the compiled path, with the numpy reference core."""
        new, out = core.step(self.params, self.state, self._act3, self.data.exo[self.rows])
        buf.queue_gpu_h[:] = new.queue_gpu_h
        buf.transit_gpu_h[:] = new.transit_gpu_h
        buf.soc_kwh[:] = new.soc_kwh
        buf.cap[:] = new.cap
        buf.values[:] = out.values
        buf.reward[:] = out.reward
        self.sums += out.values
        self.rows += 1
        self._done[:] = self.rows >= self.end
        left = new.queue_gpu_h.sum(-1) + new.transit_gpu_h.sum(-1)
        charge = np.where(self._done, (left * self.terminal_value).sum(-1), 0.0)
        self.terminal_charge[:] = charge
        buf.reward[:] -= charge / self.params.reward_scale
        self.returns += buf.reward
        n_f = len(core.OUTPUT_FIELDS)
        self.totals[:, :n_f] = out.values.sum(axis=1)
        terms = self.totals[:, _TERM_COLS] * self.params.reward_weights
        self.totals[:, n_f : n_f + 5] = -terms / self.params.reward_scale
        self.totals[:, n_f + 5] = -charge / self.params.reward_scale
        self.any_done = bool(self._done.any())
        self.obs.build(np.minimum(self.rows, self._last_row), new, self.obs_buffer)

    # ------------------------------------------------------------------ outputs

    def observe(self, out: np.ndarray | None = None) -> np.ndarray:
        """Observations ``[B, dim]`` float32 of the current state and rows, built anew (the
        last data row stands in for a row past the end of the data)."""
        rows = np.minimum(self.rows, self._last_row)
        return self.obs.build(rows, self.state, out)

    def step_info(self, env: int) -> dict[str, float]:
        """This hour of episode ``env``: every output field summed over sites, the
        weighted reward terms (``reward_*``, reward units), the clipped-action count and
        the data row of the hour."""
        info = dict(zip(INFO_FIELDS, self.totals[env].tolist(), strict=True))
        info["action_clipped"] = int(self.clipped[env])
        info["row"] = int(self.rows[env]) - 1
        return info

    def episode_summary(self, env: int) -> dict:
        """KPIs of episode ``env`` (fleet and per site), its return and window."""
        hours = int(self.rows[env] - self.start[env])
        st = self.state
        end_work = st.queue_gpu_h[env].sum(-1) + st.transit_gpu_h[env].sum(-1)
        kpis = episode_kpis(self.sums[env], hours, self.start_work[env], end_work)
        kpis["return"] = float(self.returns[env])
        kpis["terminal_charge"] = float(self.terminal_charge[env])
        per_site = {
            name: episode_kpis(self.sums[env, i], hours, self.start_work[env, i], end_work[i])
            for i, name in enumerate(self.params.site_names)
        }
        return {
            "kpis": kpis,
            "kpis_per_site": per_site,
            "start": str(self.data.index[self.start[env]]),
            "hours": hours,
        }
