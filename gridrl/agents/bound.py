"""``lp_bound``: the LP of :mod:`gridrl.agents.lp` with perfect foresight of a whole episode.

It starts from the env's reset state (empty queues, the battery at the env's draw of
its initial charge, ``physics.initial_soc_kwh``), sees the true exogenous rows of every
hour and charges work left at the end and credits the battery's gain in charge exactly
as the env does (``physics.terminal_value_per_gpu_h``, ``physics.battery_value_per_kwh``).
Its optimum ``J`` is an upper bound on the return of any policy on the same episode (the
argument is in :mod:`gridrl.agents.lp`)
and is what the harness reports for it; its KPIs are those of the optimal plan.

With ``battery="rule"`` and a rule-dispatched battery (``env.battery_control: rule``) the
battery rule is modelled with binaries (:func:`gridrl.agents.lp.solve_rule_battery`): a
tighter bound whose ``J`` is the MIP's proven bound and whose KPIs are those of the best
plan found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gridrl.agents.lp import LPInputs, LPSolution, LPStructure, Solver, solve_rule_battery
from gridrl.agents.policy import EpisodeBatch, StepContext
from gridrl.env import core, physics
from gridrl.env.clock import hour_phase
from gridrl.env.kernel import Out, terminal_charge

__all__ = ["BoundOutcome", "LPBound", "LPBoundParams"]


class LPBoundParams(BaseModel):
    """``lp_bound`` parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # HiGHS simplex strategy of the first solve (4 = primal, fastest on these LPs).
    simplex_strategy: int = 4
    # Batteries dispatched by the env's rule (env.battery_control: rule): "relaxed" lets
    # the LP dispatch them freely (fast, looser: it may hold charge the env would spend);
    # "rule" models the rule with binaries (mixed-integer, tight, slower).
    battery: Literal["relaxed", "rule"] = "relaxed"
    # Stopping rules of the "rule" MIP; its proven bound is valid whenever it stops. A
    # node limit stops it at the same point on any machine or load (1: the root's bound
    # after its cuts); where the time limit binds, the bound depends on machine speed.
    # None: no node limit.
    mip_max_nodes: Annotated[int, Field(gt=0)] | None = None
    time_limit_s: Annotated[float, Field(gt=0.0)] = 60.0
    mip_rel_gap: Annotated[float, Field(ge=0.0)] = 1e-3


@dataclass(eq=False)
class BoundOutcome:
    """The optimum of one episode.

    Attributes
    ----------
    J : float
        The bound on the return (env units).
    values : ndarray
        ``[L, N, F]`` the optimal plan in ``core.OUTPUT_FIELDS`` terms.
    leftover_gpu_h : ndarray
        ``[N]`` work left queued or in transit at the end.
    terminal_charge : float
        Charge for that work (weight units, before ``reward.scale``).
    solution : LPSolution
    """

    J: float
    values: np.ndarray
    leftover_gpu_h: np.ndarray
    terminal_charge: float
    solution: LPSolution


class LPBound:
    """Perfect-foresight LP over each whole episode (not stepped by the harness)."""

    name = "lp_bound"
    is_bound = True

    def __init__(self, params: LPBoundParams | None = None) -> None:
        self.params = params or LPBoundParams()
        self._solvers: dict[int, Solver] = {}

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare (structures are cached per episode length)."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Not a closed-loop controller."""
        raise TypeError("lp_bound is not stepped: use solve_episode (the harness does)")

    def solve_episode(self, batch: EpisodeBatch, b: int) -> BoundOutcome:
        """The optimum of episode ``b`` of ``batch``."""
        p = batch.params
        w = batch.windows[b]
        exo = batch.data.exo[w.start : w.start + w.steps]
        options = {"simplex_strategy": self.params.simplex_strategy}
        state = core.reset(p, 1)
        tval = physics.terminal_value_per_gpu_h(p, exo)
        bval = physics.battery_value_per_kwh(p, exo)
        soc0 = physics.initial_soc_kwh(p, [w.start])[0]  # the env's draw for this window
        phase = int(hour_phase(w.start, batch.data.step_minutes))
        inp = LPInputs(exo, state.queue_gpu_h[0], state.transit_gpu_h[0], soc0, tval,
                       battery_value=bval, phase=phase)
        if self.params.battery == "rule":
            sol = solve_rule_battery(p, inp, time_limit_s=self.params.time_limit_s,
                                     mip_rel_gap=self.params.mip_rel_gap,
                                     mip_max_nodes=self.params.mip_max_nodes, options=options)
        else:
            if w.steps not in self._solvers:
                self._solvers[w.steps] = Solver(LPStructure(p, w.steps), options)
            sol = self._solvers[w.steps].solve(inp)
        return BoundOutcome(J=sol.J, values=sol.values, leftover_gpu_h=sol.leftover_gpu_h,
                            terminal_charge=float(terminal_charge(
                                sol.leftover_gpu_h, tval, sol.values[-1, :, Out.SOC_KWH], soc0,
                                bval).sum()), solution=sol)
