"""The LP of the environment: brute force through the real env, lazy deadline rows,
and the plan's bookkeeping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from agents_helpers import K, index, scenario, site, synthetic_exo
from env_helpers import BOARD_ONLY

from gridrl.agents.lp import LPInputs, LPStructure, Solver, release_table
from gridrl.env import core, physics
from gridrl.env.batch import BatchSim
from gridrl.env.episodes import Window
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import Out
from gridrl.env.kpis import episode_kpis
from gridrl.env.params import REWARD_TERMS, build_params


def _inputs(params, exo):
    state = core.reset(params, 1)
    return LPInputs(exo, state.queue_gpu_h[0], state.transit_gpu_h[0], state.soc_kwh[0],
                    physics.terminal_value_per_gpu_h(params, exo))


def _tiny_brute_force_case(rent_per_gpu_h: float = 0.0, holding_per_gpu_h_h: float = 0.0,
                           full_model: bool = False):
    """One site, three hours, one job. Chosen so that the LP optimum is an env action on
    a three-level grid (run 0 / 0.5 / 1, cap 0.5 / 0.75 / 1):

    - 10 GPUs, idle 0.1 kW, busy 1 kW uncapped; throttle curve (0.5 -> 0.7), (1 -> 1):
      energy per GPU-h of work is 0.571 kWh at cap 0.5 and 0.9 kWh at cap 1;
    - 10 GPU-h arrive at hour 0 with 2 h slack (due by hour 2); inference needs 2 GPUs
      in hour 1; carbon 300, 100, 200 g/kWh; price 0; no battery, PV or limits.

    At cap 0.5 a site does 7 GPU-h an hour. The cheapest plan fills hour 1 at cap 0.5
    (2 inference + 5 flexible) and does the other 5 in hour 2 at cap 0.5: moving one GPU
    of hour 1 to cap 1 costs 1.67 kWh per extra GPU-h at 100 g (0.167 kg), more than
    running it in hour 2 at cap 0.5 (0.571 kWh at 200 g = 0.114 kg), and hour 0 is
    dearer still. The env does exactly that with run 0 then run 1 at cap 0.5 twice:
    every LP choice (caps mixed per GPU, any dispatch order) that could beat an env
    action is dominated here, so the LP bound must equal the best grid sequence.
    """
    two_point = {"cap_fraction": [0.5, 1.0], "throughput_fraction": [0.7, 1.0],
                 "source": "two-point test curve"}
    # the full model: host share (0.2 kW busy, 0.03 idle per GPU), 0.5 kW fixed facility
    # overhead, inference on its own curve (0.5 -> 0.8 at 0.4 of the board); capping
    # still costs least energy per GPU-h for both kinds of work
    power = ({"facility_fixed_kw": 0.5} if full_model else BOARD_ONLY)
    inference = ({"cap_fraction": [0.5, 1.0], "throughput_fraction": [0.8, 1.0],
                  "power_fraction": [0.4, 0.75], "source": "two-point test curve"}
                 if full_model else two_point)
    sc = scenario(
        [site("a", **power, gpu_rent_per_gpu_h=rent_per_gpu_h,
              workload={"deadline_slack_h_min": 2, "deadline_slack_h_max": 2,
                        "holding_cost_per_gpu_h_h": holding_per_gpu_h_h})],
        throttle={"training": two_point, "inference": inference},
        env={"episode_hours": 3, "slack_buckets": 3, "observation_slack_edges_h": [1],
             "forecast_horizons_h": [1]},
        reward={"carbon_per_kg": 1.0, "cost_per_unit": 0.0, "slo_per_gpu_h": 10.0,
                "overdue_per_gpu_h": 10.0, "overdraw_per_kwh": 10.0, "scale": 1.0},
        test=("2021-01-01", "2021-01-01"),
    )
    x = np.zeros((3, 1, len(K)))
    x[..., K["headroom_kw"]] = 100.0
    # full model: hour 1's 5.25 GPU-h at cap 0.5 (2 inference GPU-h take 2.5 GPUs) and
    # the rest in hour 2 at cap 0.5 (0.714 kWh x 130 g) beat raising hour 1's caps (the
    # cheapest, inference at cap 1 to free GPUs for flexible work: 1 kWh x 100 g)
    x[:, 0, K["carbon_g_per_kwh"]] = [300.0, 100.0, 130.0 if full_model else 200.0]
    x[0, 0, K["flexible_gpu_h"]] = 10.0
    x[1, 0, K["inference_gpus"]] = 2.0
    return sc, x


@pytest.mark.parametrize("rent, holding, full_model", [(0.0, 0.0, False), (0.01, 0.01, False),
                                                       (0.0, 0.0, True), (0.01, 0.01, True)])
def test_lp_bound_equals_brute_force_through_the_env(rent, holding, full_model):
    """With GPU time priced too (rent 0.01 per busy GPU-hour adds 0.004 per GPU-h at cap
    0.5 over cap 1; holding 0.01 per GPU-h-hour is less than any saving above), the same
    plan is best and the LP still equals the best env sequence; so it does with the host
    share, the fixed facility overhead and a separate inference curve."""
    sc, x = _tiny_brute_force_case(rent, holding, full_model)
    params = build_params(sc)
    sol = Solver(LPStructure(params, 3)).solve(_inputs(params, x))
    data = EnvData.from_arrays(index(3), x, ["a"])
    levels = np.array([-1.0, 0.0, 1.0])  # run 0/0.5/1 and cap 0.5/0.75/1
    per_hour = [(r, c) for r in levels for c in levels]
    seqs = list(itertools.product(per_hour, repeat=3))  # 729 action sequences
    sim = BatchSim(params, data, len(seqs))
    sim.begin(list(range(len(seqs))), [Window(0, 3)] * len(seqs))
    for t in range(3):
        a = np.zeros((len(seqs), 4))
        a[:, 0] = [s[t][0] for s in seqs]
        a[:, 1] = [s[t][1] for s in seqs]
        a[:, 3] = -1.0
        sim.set_action(a)
        sim.advance()
    best = sim.returns.max()
    assert sol.J == pytest.approx(best, rel=1e-9, abs=1e-9)
    # the best sequences run nothing in hour 0 and cap 0.5 in hours 1 and 2
    for k in np.flatnonzero(sim.returns >= best - 1e-9):
        assert seqs[k][0][0] == -1.0 and seqs[k][1][1] == -1.0 and seqs[k][2][1] == -1.0
    # the LP's plan: 5 GPU-h (5.25 in the full model) in hour 1 and the rest in hour 2,
    # all at cap 0.5
    first = 5.25 if full_model else 5.0
    assert sol.values[:, 0, core.OUTPUT_FIELDS.index("work_done_gpu_h")] == pytest.approx(
        [0.0, first, 10.0 - first], abs=1e-9)


def test_lazy_deadline_rows_reach_the_optimum_of_all_rows():
    sc = scenario([site("a"), site("b", battery={"capacity_kwh": 10.0, "power_kw": 3.0})],
                  env={"episode_hours": 24})
    params = build_params(sc)
    x = synthetic_exo(2, 24, seed=3)
    x[..., K["flexible_gpu_h"]] *= 2.0  # a full queue: deadlines bind
    x[5:9, :, K["headroom_kw"]] = 0.0  # a long outage pushes work late
    inp = _inputs(params, x)
    st = LPStructure(params, 24)
    lazy = Solver(st).solve(inp)
    # every (t, s) row of every site and the fleet, from the start
    t, s = np.nonzero(np.arange(24)[:, None] > np.arange(-1, 23)[None, :])
    s = s - 1
    from gridrl.agents.lp import CutSet

    all_rows = [CutSet("site", np.repeat(t, 2), np.repeat(s, 2), np.tile([0, 1], len(t))),
                CutSet("fleet", t, s)]
    full = Solver(st).solve(inp, all_rows)
    assert full.rounds == 1
    assert lazy.rounds > 1  # the test exercises the lazy rows
    assert lazy.objective == pytest.approx(full.objective, rel=1e-9)


def test_deadline_rows_are_the_edf_backlog():
    """The cumulative rows' maximum equals the overdue work of an explicit EDF queue
    (the env's buckets and ageing) for random arrivals and removals."""
    from gridrl.agents.lp import _edf_need

    sc = scenario([site("a", workload={"deadline_slack_h_min": 0, "deadline_slack_h_max": 5})])
    params = build_params(sc)
    rng = np.random.default_rng(0)
    hours, n_b = 30, params.slack_buckets + 1
    split = params.arrival_split[0]
    for _ in range(20):
        arr = rng.uniform(0, 4, hours) * (rng.random(hours) < 0.7)
        q = np.zeros(n_b)
        removed, overdue = np.zeros(hours), np.zeros(hours)
        for t in range(hours):
            q = q + arr[t] * split
            r = min(rng.uniform(0, 4), q.sum())
            take = np.minimum(q, np.maximum(r - (np.cumsum(q) - q), 0.0))  # EDF
            q = q - take
            removed[t] = r
            q = np.concatenate([[q[0] + q[1]], q[2:], [0.0]])  # ageing
            overdue[t] = q[0]
        rel = release_table(params, arr[:, None], np.zeros((1, n_b)), np.zeros((1, n_b)))
        u = np.cumsum(removed)[:, None]
        ov = np.maximum(_edf_need(rel, u).max(axis=1), 0.0)[0]
        assert ov == pytest.approx(overdue, abs=1e-9)


def test_plan_values_reproduce_the_objective_and_conserve_work():
    """Every reward term, GPU rent, holding, backup fuel and demand response included, as
    the plan reports it."""
    sc = scenario([site("a", battery={"capacity_kwh": 8.0, "power_kw": 2.0},
                        gpu_rent_per_gpu_h=0.05,
                        workload={"deadline_slack_h_min": 2, "deadline_slack_h_max": 4,
                                  "holding_cost_per_gpu_h_h": 0.01}),
                   site("b", backup={"capacity_kw": 1.0},
                        demand_response={"payment_per_event_h": 2.0,
                                         "penalty_per_kwh": 0.05})],
                  reward={"cost_per_unit": 1.0})
    params = build_params(sc)
    x = synthetic_exo(2, 24, seed=5)
    x[..., 1, K["dr_limit_kw"]] = 0.0  # an event at a dark hour: only shortfall or fuel
    x[14:17, 1, [K["pv_kw"], K["wind_kw"]]] = 0.0
    x[1:4, 1, K["headroom_kw"]] = 0.0  # a night outage the sets carry
    x[1:4, 1, K["outage_starts_in_h"]], x[1:4, 1, K["outage_remaining_h"]] = 0.0, 1.0
    sol = Solver(LPStructure(params, 24)).solve(_inputs(params, x))
    v = sol.values
    terms = v[..., [core.OUTPUT_FIELDS.index(f) for f in REWARD_TERMS]]
    for name in ("gpu_rent_cost", "holding_cost", "backup_fuel_cost", "dr_penalty_cost",
                 "dr_payment"):
        assert terms[..., REWARD_TERMS.index(name)].sum() > 0, name
    tval = physics.terminal_value_per_gpu_h(params, x)
    cost = (terms.sum((0, 1)) @ params.reward_weights) + sol.leftover_gpu_h @ tval
    assert -cost / params.reward_scale == pytest.approx(sol.J, rel=1e-7)
    kpis = episode_kpis(v.sum(0), 24, 0.0, sol.leftover_gpu_h)
    assert kpis["work_lost_gpu_h"] == pytest.approx(0.0, abs=1e-6)
    # energy balance per hour: facility + charge + export = import + pv + wind + discharge
    f = {name: v[..., i] for i, name in enumerate(core.OUTPUT_FIELDS)}
    lhs = f["facility_kwh"] + f["battery_charge_kwh"] + f["export_kwh"]
    rhs = (f["grid_import_kwh"] + f["pv_kwh"] + f["wind_kwh"] + f["battery_discharge_kwh"]
           + f["backup_kwh"])
    assert lhs == pytest.approx(rhs, abs=1e-6)
    assert (f["busy_gpus"] <= params.gpus + 1e-6).all()


def _network_case(**network):
    sc = scenario([site("a"), site("b")], env={"inference_remote_fraction_max": 0.2,
                                               "max_migration_fraction": 1.0},
                  network={"coordinates_deg": {"a": (0.0, 0.0), "b": (0.0, 1.0)},
                           "latency_ms": 0.0, **network})
    params = build_params(sc)
    x = np.zeros((6, 2, len(K)))
    x[..., K["headroom_kw"]] = 100.0
    x[..., K["carbon_g_per_kwh"]] = [100.0, 900.0]  # b is dirty: work and inference move
    x[..., K["price_per_mwh"]] = 50.0
    return params, x


def test_the_lp_routes_only_overflow_inference_within_its_share():
    params, x = _network_case(inference_kwh_per_gpu_h=0.05)
    # b (10 GPUs, 8 GPU-h of inference an hour at cap 0.5 on the inference curve) is
    # asked for 9.5 GPUs: it may route min(0.2 x 9.5, 9.5 - 8) = 1.5 GPU-h, and does
    # (a is clean)
    x[..., 1, K["inference_gpus"]] = 9.5
    x[..., 0, K["inference_gpus"]] = 2.0
    sol = Solver(LPStructure(params, 6)).solve(_inputs(params, x))
    v = sol.values
    routed = v[:, 1, Out.INFERENCE_ROUTED_GPU_H]
    assert routed == pytest.approx(np.full(6, 1.5), abs=1e-9)
    assert v[:, 1, Out.INFERENCE_NETWORK_KWH] == pytest.approx(0.05 * routed)
    # a site that never overflows routes nothing, however dirty its power
    x[..., 1, K["inference_gpus"]] = 5.0
    sol = Solver(LPStructure(params, 6)).solve(_inputs(params, x))
    assert sol.values[..., Out.INFERENCE_ROUTED_GPU_H].sum() == pytest.approx(0.0, abs=1e-9)
    x[..., 1, K["inference_gpus"]] = 9.5
    # out of reach: nothing moves
    far = build_params(params.scenario.model_copy(update={"network": params.scenario.network
                       .model_copy(update={"coordinates_deg": {"a": (0.0, 0.0),
                                                               "b": (0.0, 90.0)}})}))
    sol = Solver(LPStructure(far, 6)).solve(_inputs(far, x))
    assert sol.values[..., Out.INFERENCE_ROUTED_GPU_H].sum() == pytest.approx(0.0)


def test_the_lp_sends_no_more_than_the_link_carries_and_pays_the_restart():
    # 1000 GB per GPU-h over 10 Gbps x 0.5: 2.25 GPU-h an hour
    params, x = _network_case(checkpoint_gb_per_gpu_h=1000.0, transfer_cost_per_gb=0.0,
                              transfer_kwh_per_gb=1e-5, restart_overhead_gpu_h_per_gpu_h=0.1)
    x[0, 1, K["flexible_gpu_h"]] = 40.0
    sol = Solver(LPStructure(params, 6)).solve(_inputs(params, x))
    v = sol.values
    sent = v[:, 1, Out.MIGRATED_GPU_H]
    assert sent.max() == pytest.approx(2.25, rel=1e-9)  # the link binds
    assert (sent <= 2.25 + 1e-9).all()
    assert v[:, 0, Out.TRANSIT_GPU_H].sum() == pytest.approx(1.1 * sent.sum())
    kpis = episode_kpis(v.sum(0), 6, 0.0, sol.leftover_gpu_h)
    assert kpis["work_lost_gpu_h"] == pytest.approx(0.0, abs=1e-6)
    assert kpis["restart_gpu_h"] == pytest.approx(0.1 * sent.sum())
