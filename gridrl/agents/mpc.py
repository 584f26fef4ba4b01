"""``mpc``: receding-horizon linear program on the median forecasts, re-solved every step.

Each step, for each episode, the LP of :mod:`gridrl.agents.lp` is solved over the next
``horizon_h`` hours (as many steps, :mod:`gridrl.env.clock`; fewer near the episode end)
from the current core state, with the observed signals for this step and the P50
forecasts (:class:`ForecastView`) after it. Its first-step decision is turned into the
environment's action:

- ``migrate``: the LP's work sent away over the queue the hour starts from;
- ``route``: destinations weighted like the LP's work received (softmax logits
  ``log(share)``, clipped to the action range);
- ``run``: the LP's flexible work over the queue left after migration;
- ``cap``: the env has one cap per site where the LP mixes levels apart for inference
  and flexible work: the busy-GPU-weighted mean cap of the mix, raised to the least cap
  at which the site's GPUs do the plan's inference and flexible work
  (:func:`single_cap`; the mean alone may leave planned work undone);
- ``battery`` (with a battery action): the LP's charge minus discharge as the wanted
  setpoint (``StepContext.set_battery``).

Work left at the end of a horizon that stops before the episode ends is valued like the
env's terminal charge (uncapped energy, rent and holding at the horizon's mean carbon
and price), and charge the battery gained like the env's terminal credit; when the
horizon reaches the episode end the env's own terminal charge and credit are used (their
mean over the episode: observed hours so far, forecasts for the rest). Work still overdue after
the horizon costs ``overdue_carry_h`` more hours of the overdue weight.

The LP plans within the env's share of a queue that may leave a site in one step
(``LPStructure(migration_share_rows=True)``): without it the plan sends a whole queue at
once, the env only ``max_migration_fraction`` of it, and the plan's next hours assume
work gone that is still there.

Demand-response events are the announced ones (``ForecastView``), planned
``dr_margin_fraction`` below their level (forecast error margin).

``run`` is raised to at least the work that is due (overdue, and slack 0 over the steps
left in the hour): the LP removes the most urgent work first whether it runs or moves
it, while the env moves a share of every bucket.

Each step's LP is solved from scratch by default. With ``warm_start`` the simplex
starts from the previous step's optimal basis moved one step on
(:class:`~gridrl.agents.lp.WarmStart`): the same LP and optimum in about a tenth of the
iterations (``benchmarks/mpc_speed.py``). The LPs have many equally good plans (when
to charge a battery from free surplus, where to send work, which cap levels to mix),
and the simplex may settle on another of them from another start, so a warm-started
MPC does not repeat the decisions of the default one.
"""

from __future__ import annotations

import time
import warnings
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gridrl.agents.lp import LPError, LPInputs, LPStructure, Solver, WarmStart
from gridrl.agents.policy import EpisodeBatch, StepContext, actions_from
from gridrl.env import physics
from gridrl.env.clock import hour_phase, hours_to_steps
from gridrl.env.kernel import Exo
from gridrl.env.params import EnvParams

__all__ = ["MPC", "MPCParams", "plan_to_action", "single_cap"]

# Work (GPU-h) below this counts as none when turning the plan into shares.
_TINY_GPU_H = 1e-9
# Relative slack on the site's GPUs when testing whether the plan's work fits a cap
# (the LP's solution is within its feasibility tolerance).
_FIT_TOL = 1e-7
# Bisection steps for the cap: (1 - cap_min) / 2^40 is far below any curve's resolution.
_BISECT_STEPS = 40


class MPCParams(BaseModel):
    """``mpc`` parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Planning horizon (h); forecasts beyond the cube's longest horizon are held flat.
    horizon_h: Annotated[int, Field(ge=1)] = 36
    # Hours of overdue weight charged per GPU-h still overdue after the horizon.
    overdue_carry_h: Annotated[float, Field(ge=0.0)] = 1.0
    # HiGHS simplex strategy (4 = primal, fastest on these LPs) and presolve (the
    # hourly LPs are small: presolve costs more than it saves).
    simplex_strategy: Annotated[int, Field(ge=0, le=4)] = 4
    presolve: bool = False
    # Start each step's simplex from the previous step's optimal basis, one step on
    # (lp.WarmStart): the same LP and optimum in far fewer iterations, but where several
    # plans are equally good (battery timing, destinations, cap mixes) the simplex may
    # end at another of them than from scratch, so decisions and KPIs differ slightly.
    warm_start: bool = False
    # Tie battery charge to the site's own load in the plan (LPStructure.charge_rows).
    charge_rows: bool = False
    # Plan within the env's share of a queue that may leave in one step
    # (``LPStructure(migration_share_rows=...)``); the bound's LP has no such limit.
    migration_share_rows: bool = True
    # The site's one cap from the plan's level mix (:func:`single_cap`): "work" the
    # least cap at which the GPUs do the plan's inference and flexible work, "mean" the
    # busy-GPU-weighted mean of the mix.
    cap_rule: Literal["work", "mean"] = "work"
    # Plan demand-response events this share below their level: the next hours' load and
    # generation are forecasts, and a shortfall is charged per kWh.
    dr_margin_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.02


def continuation_value(params: EnvParams, exo_plan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``([N], [N])`` values after a horizon that stops before the episode ends: of one
    GPU-h left (the env's terminal charge formula, ``physics.terminal_values``: uncapped
    marginal energy, rent and holding) and of one kWh gained in the battery
    (``physics.battery_values``), at the plan's mean carbon and price (weight units),
    whatever ``env.terminal_*_valuation`` says (the work still has to run, the charge
    is still there)."""
    mean = exo_plan[..., [Exo.CARBON_G_PER_KWH, Exo.PRICE_PER_MWH]].mean(axis=0)  # [N, 2]
    return (physics.terminal_values(params, mean[:, 0], mean[:, 1]),
            physics.battery_values(params, mean[:, 0], mean[:, 1]))


def single_cap(params: EnvParams, first: dict, caps: np.ndarray, taus: np.ndarray,
               rule: str = "work") -> np.ndarray:
    """``[N]`` the one cap per site that carries out the plan's first hour.

    The LP mixes cap levels apart for inference and flexible work; the env runs both at
    one cap, serving inference first. ``"mean"``: the busy-GPU-weighted mean cap of the
    mix (1 when idle). ``"work"``: that mean, raised to the least cap at which the
    plan's inference ``s`` and flexible work ``x`` fit on the site's GPUs, ``s /
    tau_I(c) + x / tau_X(c) <= G`` (decreasing in ``c``: found by bisection; 1 if even
    that is short). With one curve for both kinds the plan's work fits at its mean cap
    (the curve is concave), so both rules agree; with two, the mean may leave work
    undone that the plan did.
    """
    p = params
    gpus = first["levels"] / taus  # [N, Kc] busy GPUs per work column
    busy = gpus.sum(-1)
    mean = np.divide((gpus * caps).sum(-1), busy, out=np.ones(p.n_sites),
                     where=busy > _TINY_GPU_H)
    if rule == "mean":
        return mean

    def fits(c: np.ndarray) -> np.ndarray:
        need = (first["served"] / p.inference_throughput_at(c)
                + first["work"] / p.throughput(c))  # busy GPU-h of the step
        return need <= p.gpus * p.step_h * (1.0 + _FIT_TOL)

    lo = np.full(p.n_sites, p.cap_min)
    hi = np.ones(p.n_sites)
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        ok = fits(mid)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return np.maximum(mean, np.where(fits(lo), lo, hi))


def plan_to_action(params: EnvParams, q1: np.ndarray, first: dict, caps: np.ndarray,
                   taus: np.ndarray, cap: np.ndarray | None = None,
                   steps_left: int = 1) -> np.ndarray:
    """The env action ``[1, N * A]`` that carries out an LP's first hour, without its
    battery setpoint (``first["ch"] - first["dis"]``, set by ``StepContext.set_battery``).

    Parameters
    ----------
    q1 : ndarray
        ``[N, S + 1]`` queue the hour starts from (queued + transit + arrivals).
    first : dict
        ``LPSolution.first``.
    caps, taus : ndarray
        The cap and throughput of each of the LP's work columns.
    cap : ndarray, optional
        ``[N]`` the sites' caps; default :func:`single_cap` with the "work" rule.
    steps_left : int
        Steps of the hour from this one on: this hour's slack-0 work is spread over them.
    """
    p = params
    n = p.n_sites
    total = q1.sum(-1)
    sent = first["migrated"]
    migrate = np.divide(sent, total, out=np.zeros(n), where=total > _TINY_GPU_H)
    migrate = np.minimum(migrate, p.max_migration_fraction)
    left = total * (1.0 - migrate)
    run = np.divide(first["work"], left, out=np.zeros(n), where=left > _TINY_GPU_H)
    # The LP removes the most urgent work first whether it runs or moves it; the env
    # moves a share of every bucket. Running at least what is due (overdue and slack 0,
    # taken first by EDF) keeps the plan's deadlines.
    due = (q1[:, 0] + q1[:, 1] / steps_left) * (1.0 - migrate)
    run = np.maximum(run, np.divide(due, left, out=np.zeros(n), where=left > _TINY_GPU_H))
    recv = first["received"]
    route = np.zeros(n)
    if recv.sum() > _TINY_GPU_H:
        share = recv / recv.sum()
        with np.errstate(divide="ignore"):
            route = 1.0 + np.log(share / share.max()) / p.route_logit_scale
        route = np.clip(route, -1.0, 1.0)
    if cap is None:
        cap = single_cap(p, first, caps, taus)
    return actions_from(p, run[None], cap[None], route=route[None], migrate=migrate[None])


class MPC:
    """Receding-horizon LP controller (see the module docstring)."""

    name = "mpc"
    is_bound = False

    def __init__(self, params: MPCParams | None = None) -> None:
        self.params = params or MPCParams()
        self._solvers: dict[int, Solver] = {}
        self._cuts: dict[int, list] = {}
        self._warm: dict[int, WarmStart] = {}
        self.solve_times: list[float] = []
        # per solve: the plan's optimum (weight units) and the simplex iterations
        self.plan_objectives: list[float] = []
        self.simplex_iterations: list[int] = []
        self.failures = 0  # steps whose LP failed (status quo played instead)

    def reset(self, batch: EpisodeBatch) -> None:
        """Keep one LP structure per horizon length for the batch's scenario."""
        self._batch = batch
        self._solvers = {}
        self._cuts = {}
        self._warm = {}
        self.solve_times = []
        self.plan_objectives = []
        self.simplex_iterations = []
        self.failures = 0

    def _solver(self, params: EnvParams, steps: int) -> Solver:
        if steps not in self._solvers:
            self._solvers[steps] = Solver(LPStructure(
                params, steps, migration_share_rows=self.params.migration_share_rows), {
                "simplex_strategy": self.params.simplex_strategy,
                "presolve": "on" if self.params.presolve else "off"},
                charge_rows=self.params.charge_rows, warm_start=self.params.warm_start)
        return self._solvers[steps]

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Solve each episode's LP from its state and carry out the first step."""
        p = ctx.params
        batch = ctx.batch
        remaining = ctx.remaining  # steps
        horizon_steps = hours_to_steps(self.params.horizon_h, batch.data.step_minutes,
                                       "mpc horizon_h")
        horizon = int(min(horizon_steps, remaining.max()))
        fc = ctx.forecast_steps(horizon)  # [B, H, N, K]
        q1 = ctx.queue_after_arrivals()
        st = ctx.state
        phases = hour_phase(ctx.rows, batch.data.step_minutes)
        carry = np.full(p.n_sites, p.reward_weights[3] * self.params.overdue_carry_h)
        out = np.empty((len(ctx.rows), p.n_sites * p.n_actions_per_site))
        battery_kw = np.full((len(ctx.rows), p.n_sites), np.nan)  # NaN: the rule
        for b in range(len(ctx.rows)):
            steps = int(min(horizon, remaining[b]))
            plan = fc[b, :steps].copy()
            plan[..., Exo.DR_LIMIT_KW] *= 1.0 - self.params.dr_margin_fraction
            if steps == remaining[b]:
                seen = batch.data.exo[batch.starts[b] : ctx.rows[b]]
                episode = np.concatenate([seen, plan])
                tval = physics.terminal_value_per_gpu_h(p, episode)
                bval = physics.battery_value_per_kwh(p, episode)
            else:
                tval, bval = continuation_value(p, plan)
            solver = self._solver(p, steps)
            t0 = time.perf_counter()
            # last step's deadline rows, one step on, are likely needed again
            seed = [c for c in (x.shifted(1, steps) for x in self._cuts.get(b, [])) if c]
            warm = self._warm[b].shifted(1) if b in self._warm else None
            try:
                sol = solver.solve(LPInputs(plan, st.queue_gpu_h[b], st.transit_gpu_h[b],
                                            st.soc_kwh[b], tval, carry, battery_value=bval,
                                            phase=int(phases[b])), seed, warm)
            except LPError as exc:
                # numerical trouble in one step must not end an evaluation: fall back to
                # the status quo for this hour and say so
                self.failures += 1
                warnings.warn(f"mpc: {exc}; running the queue uncapped this hour",
                              RuntimeWarning, stacklevel=2)
                self._cuts.pop(b, None)
                self._warm.pop(b, None)
                ones = np.ones((1, p.n_sites))
                out[b] = actions_from(p, ones, ones)[0]
                continue
            self._cuts[b] = sol.extra["cuts"]
            if "warm" in sol.extra:
                self._warm[b] = sol.extra["warm"]
            self.solve_times.append(time.perf_counter() - t0)
            self.plan_objectives.append(sol.objective)
            self.simplex_iterations.append(sol.extra["simplex_iterations"])
            st_lp = solver.structure
            cap = single_cap(p, sol.first, st_lp.caps, st_lp.taus, self.params.cap_rule)
            out[b] = plan_to_action(p, q1[b], sol.first, st_lp.caps, st_lp.taus, cap,
                                    int(p.steps_per_hour - phases[b]))[0]
            battery_kw[b] = (sol.first["ch"] - sol.first["dis"]) / p.step_h  # kWh -> kW
        return ctx.set_battery(out, battery_kw)
