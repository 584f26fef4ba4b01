"""``BatchSim``: B episodes of one scenario stepped together (shared by the Gymnasium env
and the native VecEnv).

It owns the state (updated in place, so a step never allocates), the data row and end row
of every episode, the running sums of step outputs per episode and site, and the
terminal charge for work left at the end (``physics.terminal_value_per_gpu_h``) less the
credit for charge the battery gained (``physics.battery_value_per_kwh``; each episode
starts at ``physics.initial_soc_kwh``). Episodes
end independently; the caller restarts them with :meth:`begin`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from gridrl.env import core, kernel, physics
from gridrl.env.clock import hour_ends
from gridrl.env.episodes import Window
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import OUTPUT_FIELDS, Exo, _advance, _sanitize
from gridrl.env.kpis import kpi_arrays
from gridrl.env.layout import ObservationBuilder
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState
from gridrl.errors import GridrlError

__all__ = ["INFO_FIELDS", "BatchSim", "InvalidActionError", "InvalidBackendError"]

#: How episodes are stepped: the compiled kernel (the only production path; the numpy
#: ``core.step`` is a test oracle).
Backend = Literal["numba"]


#: Keys of the per-step info: output fields summed over sites, then weighted reward terms.
INFO_FIELDS = OUTPUT_FIELDS + (
    "reward_carbon", "reward_cost", "reward_slo", "reward_overdue", "reward_overdraw",
    "reward_gpu_rent", "reward_holding", "reward_degradation", "reward_transfer",
    "reward_backup_fuel", "reward_dr_penalty", "reward_dr_payment", "reward_terminal",
)


class InvalidActionError(GridrlError, ValueError):
    """An action with the wrong shape or a NaN."""


class InvalidBackendError(GridrlError, ValueError):
    """A stepping backend other than the compiled kernel."""


class BatchSim:
    """``batch_size`` episodes of a scenario.

    Parameters
    ----------
    params : EnvParams
    data : EnvData
    batch_size : int
    backend : {"numba"}
        Steps with the compiled kernel (:mod:`gridrl.env.kernel`). ``"numpy"`` is
        refused: the numpy ``core.step`` is a test oracle.

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
        if backend != "numba":
            raise InvalidBackendError(
                f"backend must be 'numba', got {backend!r} (the numpy core.step is a test "
                "oracle; every environment steps the compiled kernel)")
        if tuple(data.site_names) != tuple(params.site_names):
            raise ValueError(
                f"data sites {data.site_names} differ from scenario sites {params.site_names}"
            )
        if data.steps > 1 and data.step_minutes != params.scenario.env.step_minutes:
            raise ValueError(
                f"data rows are {data.step_minutes} minutes apart, the scenario's "
                f"env.step_minutes is {params.scenario.env.step_minutes}: expand hourly "
                "rows with EnvData.at_step")
        self.params = params
        self.data = data
        self.backend = backend
        self.batch_size = b = int(batch_size)
        n, s = params.n_sites, params.slack_buckets
        self.n_act = params.n_actions_per_site
        self.packed = kernel.pack(params)
        self.obs = ObservationBuilder(params, data)
        # One buffer: the kernel updates the state in place (it reads all of an episode's
        # queues before writing them), which halves the memory traffic of a step.
        self._buf = buf = kernel.StepBuffers.empty(b, n, s)
        init = core.reset(params, b)
        buf.queue_gpu_h[:] = init.queue_gpu_h
        buf.transit_gpu_h[:] = init.transit_gpu_h
        buf.soc_kwh[:] = init.soc_kwh
        buf.cap[:] = init.cap
        buf.values[:] = 0.0
        buf.reward[:] = 0.0
        self.state = self._state_of(buf)
        self.values = buf.values
        self.reward = buf.reward
        self._done = np.zeros(b, dtype=np.bool_)
        self.any_done = False
        self.rows = np.zeros(b, dtype=np.int64)
        self.start = np.zeros(b, dtype=np.int64)
        self.end = np.ones(b, dtype=np.int64)
        self.sums = np.zeros((b, n, len(OUTPUT_FIELDS)))
        self.returns = np.zeros(b)
        self.start_work = np.zeros((b, n))
        self.terminal_value = np.zeros((b, n))
        self.soc_start = np.zeros((b, n))  # battery charge at the start of each episode
        self.battery_value = np.zeros((b, n))  # credit per kWh gained at the end
        # this hour's charge for work left less the battery's gain (at episode ends)
        self.terminal_charge = np.zeros(b)
        self.clipped = np.zeros(b, dtype=np.int64)
        self._act = np.zeros((b, n * self.n_act))
        self._act3 = self._act.reshape(b, n, self.n_act)
        self._last_row = data.steps - 1
        self._ends = hour_ends(data.steps, data.step_minutes)  # rows whose step ends an hour
        self.totals = np.zeros((b, len(INFO_FIELDS)))
        self.obs_buffer = np.zeros((b, self.obs.dim), dtype=np.float32)
        self._t_carbon_price = np.concatenate(
            [np.zeros((1, n, 2)),
             np.cumsum(data.exo[..., [Exo.CARBON_G_PER_KWH, Exo.PRICE_PER_MWH]], axis=0)])

    @staticmethod
    def _state_of(buf: kernel.StepBuffers) -> EnvState:
        return EnvState(buf.queue_gpu_h, buf.transit_gpu_h, buf.soc_kwh, buf.cap)

    # ------------------------------------------------------------------ episodes

    def begin(self, envs: np.ndarray | list[int], windows: list[Window]) -> None:
        """Start new episodes in batch rows ``envs`` at ``windows`` (state reset)."""
        p = self.params
        envs = np.asarray(envs, dtype=np.int64)
        start = np.array([w.start for w in windows], dtype=np.int64)
        hours = np.array([w.steps for w in windows], dtype=np.int64)
        if envs.shape != start.shape:
            raise ValueError("one window per env expected")
        if ((hours < 1) | (start < 0) | (start + hours > self.data.steps)).any():
            raise ValueError(f"episode windows outside the data rows: {windows}")
        st = self.state
        st.queue_gpu_h[envs] = 0.0
        st.transit_gpu_h[envs] = 0.0
        st.soc_kwh[envs] = self.soc_start[envs] = physics.initial_soc_kwh(p, start)
        st.cap[envs] = 1.0
        self.rows[envs] = start
        self.start[envs] = start
        self.end[envs] = start + hours
        self.sums[envs] = 0.0
        self.returns[envs] = 0.0
        self.start_work[envs] = 0.0
        self.terminal_value[envs], self.battery_value[envs] = self._terminal_values(start, hours)

    def _terminal_values(self, start: np.ndarray,
                         hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``physics.terminal_value_per_gpu_h`` and ``physics.battery_value_per_kwh`` of
        windows, from running sums (O(1) each)."""
        p = self.params
        env = p.scenario.env
        csum = self._t_carbon_price
        mean = (csum[start + hours] - csum[start]) / hours[:, None, None]  # [E, N, 2]
        zero = np.zeros((len(start), p.n_sites))
        work = (zero if env.terminal_queue_valuation == "none"
                else physics.terminal_values(p, mean[..., 0], mean[..., 1]))
        charge = (zero if env.terminal_battery_valuation == "none"
                  else physics.battery_values(p, mean[..., 0], mean[..., 1]))
        return work, charge

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
        buf = self._buf
        st = self.state
        pp = self.packed
        ob = self.obs
        self.any_done = _advance(
            pp.site, pp.scalar, pp.split, pp.curve, pp.pair, st.queue_gpu_h, st.transit_gpu_h,
            st.soc_kwh, self._act3, self.data.exo, self.rows, self._ends, buf.queue_gpu_h,
            buf.transit_gpu_h, buf.soc_kwh, buf.cap, buf.values, buf.reward, self.end,
            self.sums, self.returns, self.terminal_value, self.soc_start, self.battery_value,
            self.terminal_charge,
            self._done, self.totals, ob.calendar, ob.site_exo, ob._inv_scale,
            ob._group_end, self.obs_buffer)
        return self._done

    # ------------------------------------------------------------------ outputs

    def observe(self, out: np.ndarray | None = None) -> np.ndarray:
        """Observations ``[B, dim]`` float32 of the current state and rows, built anew (the
        last data row stands in for a row past the end of the data)."""
        rows = np.minimum(self.rows, self._last_row)
        return self.obs.build(rows, self.state, out)

    def observe_envs(self, envs: np.ndarray) -> np.ndarray:
        """Observations ``[E, dim]`` of the episodes in batch rows ``envs`` only."""
        envs = np.asarray(envs, dtype=np.int64)
        rows = np.minimum(self.rows[envs], self._last_row)
        return self.obs.build(rows, self.state.select(envs))

    def step_info(self, env: int) -> dict[str, float]:
        """This hour of episode ``env``: every output field summed over sites, the
        weighted reward terms (``reward_*``, reward units), the clipped-action count and
        the data row of the hour."""
        info = dict(zip(INFO_FIELDS, self.totals[env].tolist(), strict=True))
        info["action_clipped"] = int(self.clipped[env])
        info["row"] = int(self.rows[env]) - 1
        return info

    def episode_summaries(self, envs: np.ndarray | list[int]) -> list[dict]:
        """KPIs (fleet and per site, :mod:`gridrl.env.kpis`), return, terminal charge and
        window of the episodes in batch rows ``envs`` (computed together)."""
        envs = np.asarray(envs, dtype=np.int64)
        if envs.size == 0:
            return []
        step_h = self.params.step_h
        hours = (self.rows[envs] - self.start[envs]).astype(np.float64) * step_h
        st = self.state
        end_work = st.queue_gpu_h[envs].sum(-1) + st.transit_gpu_h[envs].sum(-1)  # [E, N]
        sums = self.sums[envs]  # [E, N, F]
        n = self.params.n_sites
        fleet = kpi_arrays(sums.sum(axis=1), hours, self.start_work[envs].sum(-1),
                           end_work.sum(-1), n, step_h)
        fleet["return"] = self.returns[envs]
        fleet["terminal_charge"] = self.terminal_charge[envs]
        sites = kpi_arrays(sums, hours[:, None], self.start_work[envs], end_work, 1, step_h)
        f_names = list(fleet)
        f_rows = np.stack([np.broadcast_to(fleet[k], envs.shape) for k in f_names], -1).tolist()
        s_names = list(sites)
        s_rows = np.stack([sites[k] for k in s_names], -1).tolist()  # [E, N, K]
        names = self.params.site_names
        index = self.data.index
        out = []
        for j, b in enumerate(envs.tolist()):
            out.append({
                "kpis": dict(zip(f_names, f_rows[j], strict=True)),
                "kpis_per_site": {
                    name: dict(zip(s_names, s_rows[j][i], strict=True))
                    for i, name in enumerate(names)
                },
                "start": str(index[self.start[b]]),
                "hours": int(hours[j]) if hours[j].is_integer() else float(hours[j]),
            })
        return out

    def episode_summary(self, env: int) -> dict:
        """KPIs of episode ``env`` (see :meth:`episode_summaries`)."""
        return self.episode_summaries([env])[0]
