"""MPC's translation of its plan into the env's actions, and the env limits it plans in."""

from __future__ import annotations

import numpy as np
import pytest
from agents_helpers import K, make_env, scenario, site, synthetic_exo
from env_helpers import priced_pair

from gridrl.agents.evaluate import evaluate, make_setup
from gridrl.agents.lp import LPInputs, LPStructure, Solver
from gridrl.agents.mpc import MPC, MPCParams, plan_to_action, single_cap
from gridrl.agents.policy import EpisodeBatch, StepContext
from gridrl.env import core, physics
from gridrl.env.params import build_params

F = core.OUTPUT_FIELDS


def _first_hour(p, st, x, hours):
    sol = Solver(LPStructure(p, hours)).solve(LPInputs(
        x, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
        physics.terminal_value_per_gpu_h(p, x)))
    q1 = st.queue_gpu_h[0] + x[0, :, K["flexible_gpu_h"]][:, None] * p.arrival_split
    return sol, q1


def test_work_cap_does_the_plans_work_where_the_mean_cap_falls_short():
    # two throttle curves: the plan runs inference at cap_min and flexible work at the
    # next level; on 10 GPUs the busy-weighted mean cap leaves flexible work undone
    sc = scenario([site("a")], env={"episode_hours": 6})
    p = build_params(sc)
    x = synthetic_exo(1, 6, seed=4)
    x[..., K["headroom_kw"]] = 50.0  # no curtailment: the env runs what it is told
    x[0, 0, K["inference_gpus"]] = 6.0
    st = core.reset(p, 1)
    st.queue_gpu_h[0, 0, 0] = 2.0  # overdue work: the plan runs all of it now
    sol, q1 = _first_hour(p, st, x, 6)
    s = LPStructure(p, 6)
    assert sol.first["work"][0] == pytest.approx(2.0, abs=1e-6)
    done = {}
    for rule in ("work", "mean"):
        cap = single_cap(p, sol.first, s.caps, s.taus, rule)
        a = plan_to_action(p, q1, sol.first, s.caps, s.taus, cap)
        _, out = core.step(p, st, a.reshape(1, 1, -1), x[0][None])
        done[rule] = out.values[0, 0, F.index("work_done_gpu_h")]
        served = out.values[0, 0, F.index("inference_served_gpu_h")]
        assert served == pytest.approx(sol.first["served"][0], rel=1e-6), rule
        assert p.cap_min <= cap[0] <= 1.0
    assert done["work"] == pytest.approx(sol.first["work"][0], rel=1e-5)
    assert done["mean"] < sol.first["work"][0] - 0.01
    # the least cap that fits: a little lower and the GPUs are short
    c = single_cap(p, sol.first, s.caps, s.taus, "work")
    need = (sol.first["served"] / p.inference_throughput_at(c - 1e-3)
            + sol.first["work"] / p.throughput(c - 1e-3))
    assert need[0] > p.gpus[0]


def test_single_cap_is_one_when_the_plan_needs_more_than_the_gpus_give():
    sc = scenario([site("a")])
    p = build_params(sc)
    s = LPStructure(p, 1)
    levels = np.zeros((1, s.Kc))
    levels[0, s.L - 1] = 8.0  # flexible work at the top level
    first = {"work": np.array([8.0]), "served": np.array([5.0]), "levels": levels}
    assert single_cap(p, first, s.caps, s.taus, "work")[0] == 1.0
    idle = {"work": np.zeros(1), "served": np.zeros(1), "levels": np.zeros((1, s.Kc))}
    assert single_cap(p, idle, s.caps, s.taus, "mean")[0] == 1.0
    assert single_cap(p, idle, s.caps, s.taus, "work")[0] == 1.0


def test_mpc_plans_within_the_envs_migration_share():
    # site a is dear and dirty, b cheap and clean: the relaxed LP sends all of a's
    # queue at once, the env at most max_migration_fraction of it an hour
    sc = scenario([site("a"), site("b")], env={"episode_hours": 8})
    p = build_params(sc)
    hours = 8
    x = synthetic_exo(2, hours, seed=1)
    x[..., K["headroom_kw"]] = 50.0
    x[:, 0, K["price_per_mwh"]] = 400.0
    x[:, 0, K["carbon_g_per_kwh"]] = 900.0
    x[:, 1, K["price_per_mwh"]] = 20.0
    x[:, 1, K["carbon_g_per_kwh"]] = 50.0
    st = core.reset(p, 1)
    st.queue_gpu_h[0, 0, 5] = 2.0
    inp = LPInputs(x, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
                   physics.terminal_value_per_gpu_h(p, x))
    relaxed = Solver(LPStructure(p, hours)).solve(inp)
    within = Solver(LPStructure(p, hours, migration_share_rows=True)).solve(inp)
    f_max = p.max_migration_fraction

    def available(v):
        start = np.asarray(inp.queue_gpu_h).sum(-1) + np.asarray(inp.transit_gpu_h).sum(-1)
        before = np.vstack([start[None], v[:-1, :, F.index("queued_gpu_h")]
                            + v[:-1, :, F.index("transit_gpu_h")]])
        return before + v[..., F.index("arrived_gpu_h")]

    mig = relaxed.values[..., F.index("migrated_gpu_h")]
    assert (mig > f_max * available(relaxed.values) + 1e-3).any()
    mig = within.values[..., F.index("migrated_gpu_h")]
    assert (mig <= f_max * available(within.values) + 1e-6).all()
    assert mig.sum() > 0.5  # it still migrates, within the share
    assert within.J <= relaxed.J + 1e-6  # the bound's LP is a relaxation of MPC's
    assert MPCParams().migration_share_rows


def _three_sites(hours: int):
    """The bound tests' priced pair and a third site with a battery: migration, routing,
    two batteries as an action, binding headroom and outages; ``hours`` of signals."""
    pair = priced_pair()
    third = site("c", battery={"capacity_kwh": 8.0, "power_kw": 3.0})
    coords = {**pair["network"]["coordinates_deg"], "c": (1.0, 0.0)}
    sc = scenario([*pair["sites"], third], network={**pair["network"], "coordinates_deg": coords},
                  env={"episode_hours": 24, "battery_control": "residual",
                       "inference_remote_fraction_max": 0.3})
    x = synthetic_exo(3, hours, seed=2)
    x[..., K["flexible_gpu_h"]] *= 1.5  # enough work for deadlines to bind
    return sc, x


class _Twins:
    """Plays ``lead``'s actions; ``shadow`` decides on the same steps (its actions are
    dropped), so both solve the same LP at every step."""

    name = "twins"

    def __init__(self, lead: MPC, shadow: MPC) -> None:
        self.lead, self.shadow = lead, shadow

    def reset(self, batch: EpisodeBatch) -> None:
        self.lead.reset(batch)
        self.shadow.reset(batch)

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        self.shadow.act(obs, ctx)
        return self.lead.act(obs, ctx)


def test_warm_start_reaches_the_optimum_of_the_lp_solved_from_scratch_every_step():
    # two episodes on three sites: every step's LP solved from the previous step's basis
    # one hour on has the optimum of the same LP solved from scratch, in far fewer
    # simplex iterations (the plan may be another of equally good ones)
    sc, x = _three_sites(24 * 14)
    setup = make_setup(make_env(sc, x, period="test"), period="test")
    warm = MPC(MPCParams(horizon_h=12, warm_start=True))
    cold = MPC(MPCParams(horizon_h=12))
    evaluate(_Twins(warm, cold), setup, episodes=2, seed=1)
    assert warm.failures == cold.failures == 0
    assert len(warm.plan_objectives) == len(cold.plan_objectives) == 2 * 24
    np.testing.assert_allclose(warm.plan_objectives, cold.plan_objectives, rtol=1e-9)
    assert sum(warm.simplex_iterations) < 0.5 * sum(cold.simplex_iterations)
    assert not MPCParams().warm_start  # the default keeps the plans solved from scratch


def test_warm_start_from_its_own_basis_needs_no_iteration():
    # the same LP again from its optimal basis (shifted by 0 hours): every column and
    # row keeps its status, so HiGHS starts at the optimum
    sc, x = _three_sites(24)
    p = build_params(sc)
    st = core.reset(p, 1)
    inp = LPInputs(x[:12], st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
                   physics.terminal_value_per_gpu_h(p, x[:12]))
    solver = Solver(LPStructure(p, 12, migration_share_rows=True), warm_start=True)
    first = solver.solve(inp)
    again = solver.solve(inp, first.extra["cuts"][1:], first.extra["warm"])
    assert first.extra["simplex_iterations"] > 0
    assert again.extra["simplex_iterations"] == 0
    assert again.objective == first.objective
    np.testing.assert_array_equal(again.values, first.values)
