"""Hand-computed checks of the simulation core on tiny one- and two-site scenarios."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from env_helpers import BOARD_ONLY, ONE_CURVE, THROTTLE, scenario, site

from gridrl.env import core, kernel
from gridrl.env.core import EXO_SIGNALS
from gridrl.env.params import build_params
from gridrl.scenario import ScenarioError

K = {s: i for i, s in enumerate(EXO_SIGNALS)}


def exo(n_sites: int, hours: int, **signals) -> np.ndarray:
    """``[T, N, K]`` with big headroom, 400 g/kWh and 100/MWh unless given."""
    x = np.zeros((hours, n_sites, len(EXO_SIGNALS)))
    x[..., K["headroom_kw"]] = 1000.0
    x[..., K["carbon_g_per_kwh"]] = 400.0
    x[..., K["price_per_mwh"]] = 100.0
    x[..., K["temp_c"]] = 10.0
    for name, value in signals.items():
        x[..., K[name]] = np.broadcast_to(np.asarray(value, dtype=float).reshape(
            (hours, -1) if np.ndim(value) else ()), (hours, n_sites)) if np.ndim(value) else value
    return x


def act(n_sites: int, run=1.0, cap=1.0, route=0.0, migrate=0.0, cap_min=0.6, max_mig=0.5):
    """Normalised action ``[1, N, 4]`` from physical values (scalars or per-site)."""
    a = np.zeros((1, n_sites, 4))
    a[..., 0] = 2 * np.asarray(run) - 1
    a[..., 1] = 2 * (np.asarray(cap) - cap_min) / (1 - cap_min) - 1
    a[..., 2] = route
    a[..., 3] = 2 * np.asarray(migrate) / max_mig - 1
    return a


def run_episode(params, x, actions):
    state = core.reset(params, 1)
    outs = []
    for t, a in enumerate(actions):
        state, out = core.step(params, state, a, x[t][None])
        outs.append(out)
    return state, outs


def test_deferring_into_pv_surplus_lowers_import_and_carbon_exactly():
    # 10 GPUs, idle 0.1 kW, busy 1 kW, PUE 1. 5 GPU-h arrive at hour 0 (slack 2..4 h);
    # 20 kW of PV in hour 1 only.
    p = build_params(scenario(1))
    arrivals = np.array([5.0, 0.0, 0.0])
    x = exo(1, 3, pv_kw=np.array([0.0, 20.0, 0.0]), flexible_gpu_h=arrivals)
    _, now = run_episode(p, x, [act(1, run=1), act(1, run=1), act(1, run=1)])
    _, later = run_episode(p, x, [act(1, run=0), act(1, run=1), act(1, run=1)])
    imp_now = sum(o["grid_import_kwh"].sum() for o in now)
    imp_later = sum(o["grid_import_kwh"].sum() for o in later)
    # run now: hour 0 = 5 busy x 1 kW + 5 idle x 0.1 kW = 5.5 kW; hours 1, 2: idle 1 kW
    # (hour 1 covered by PV). Deferred: hour 0 idle 1 kW, hour 1 5.5 kW under PV.
    assert imp_now == pytest.approx(5.5 + 0.0 + 1.0)
    assert imp_later == pytest.approx(1.0 + 0.0 + 1.0)
    saved_kwh = 5.0 * (1.0 - 0.1)  # GPU-h moved x (busy - idle) kW x PUE 1
    assert imp_now - imp_later == pytest.approx(saved_kwh)
    carbon_now = sum(o["carbon_kg"].sum() for o in now)
    carbon_later = sum(o["carbon_kg"].sum() for o in later)
    assert carbon_now - carbon_later == pytest.approx(saved_kwh * 0.4)
    # same work done, nothing overdue
    assert sum(o["work_done_gpu_h"].sum() for o in later) == pytest.approx(5.0)
    assert all(o["overdue_gpu_h"].sum() == 0 for o in later)


@pytest.mark.parametrize("cap,tau", [(1.0, 1.0), (0.8, 0.95), (0.7, 0.9), (0.6, 0.85)])
@pytest.mark.parametrize("pue", [1.0, 1.3])
def test_throttling_changes_energy_per_gpu_hour_as_the_curve_says(cap, tau, pue):
    # All 10 GPUs busy on a deep queue: work = 10 tau(c) GPU-h, IT = 10 (0.8 c + 0.2) kW
    # (the cap limits the 0.8 kW board, not the 0.2 kW host share).
    sc = scenario(sites=[site("a", pue=pue, workload={"deadline_slack_h_min": 6,
                                                     "deadline_slack_h_max": 6})])
    p = build_params(sc)
    x = exo(1, 1, flexible_gpu_h=50.0)
    _, (out,) = run_episode(p, x, [act(1, run=1, cap=cap)])
    work = out["work_done_gpu_h"].item()
    assert work == pytest.approx(10 * tau)
    assert out["facility_kwh"].item() / work == pytest.approx(pue * (0.8 * cap + 0.2) / tau)
    assert out["cap"].item() == pytest.approx(cap)


def test_migration_arrives_one_step_later_and_charges_energy_at_the_source():
    sc = scenario(2, env={"max_migration_fraction": 0.5},
                  network={"checkpoint_gb_per_gpu_h": 1.0, "transfer_kwh_per_gb": 0.5,
                           "restart_overhead_gpu_h_per_gpu_h": 0.0})
    p = build_params(sc)
    arrivals = np.zeros((3, 2))
    arrivals[0, 0] = 4.0
    x = exo(2, 3, flexible_gpu_h=arrivals)
    a0 = act(2, run=0, migrate=[0.5, 0.0])
    state, out0 = core.step(p, core.reset(p, 1), a0, x[0][None])
    # half of site 0's 4 GPU-h leave; site 1 gets nothing yet
    assert out0["migrated_gpu_h"][0].tolist() == pytest.approx([2.0, 0.0])
    assert out0["migration_kwh"][0].tolist() == pytest.approx([1.0, 0.0])
    # facility = idle 1 kW + migration 1 kWh at the source
    assert out0["facility_kwh"][0].tolist() == pytest.approx([2.0, 1.0])
    assert out0["transit_gpu_h"][0].tolist() == pytest.approx([0.0, 2.0])
    assert state.queue_gpu_h[0, 1].sum() == 0.0
    # slack 2..4 h split in thirds, aged one hour while in transit
    assert state.transit_gpu_h[0, 1, 1 + 1 : 1 + 4].tolist() == pytest.approx([2 / 3] * 3)
    state, out1 = core.step(p, state, act(2, run=0), x[1][None])
    assert out1["transit_in_gpu_h"][0].tolist() == pytest.approx([0.0, 2.0])
    assert state.queue_gpu_h[0, 1, 1:4].tolist() == pytest.approx([2 / 3] * 3)
    # run everything at site 1 in the next hour
    state, out2 = core.step(p, state, act(2, run=1), x[2][None])
    assert out2["work_done_gpu_h"][0].tolist() == pytest.approx([2.0, 2.0])
    assert state.work_gpu_h().sum() == pytest.approx(0.0)


def test_route_softmax_splits_migrating_work_over_other_sites():
    p = build_params(scenario(3, env={"route_logit_scale": 1.0}))
    arrivals = np.zeros((1, 3))
    arrivals[0, 0] = 6.0
    x = exo(3, 1, flexible_gpu_h=arrivals)
    route = np.array([1.0, 0.0, np.log(2.0)])  # logits: destinations 1 and 2 weigh 1 : 2
    state, out = core.step(p, core.reset(p, 1), act(3, run=0, route=route, migrate=0.5),
                           x[0][None])
    grow = 1.0 + p.restart_overhead_gpu_h_per_gpu_h  # the restart overhead travels along
    assert out["transit_gpu_h"][0].tolist() == pytest.approx([0.0, grow, 2.0 * grow])


def test_missed_deadline_becomes_overdue_and_is_penalised_until_it_runs():
    sc = scenario(sites=[site("a", workload={"deadline_slack_h_min": 2,
                                            "deadline_slack_h_max": 2})],
                  reward={"overdue_per_gpu_h": 5.0, "carbon_per_kg": 0.0, "cost_per_unit": 0.0})
    p = build_params(sc)
    arrivals = np.zeros(6)
    arrivals[0] = 3.0
    x = exo(1, 6, flexible_gpu_h=arrivals)
    runs = [0, 0, 0, 0, 1, 1]
    _, outs = run_episode(p, x, [act(1, run=r) for r in runs])
    overdue = [o["overdue_gpu_h"].item() for o in outs]
    miss = [o["deadline_miss_gpu_h"].item() for o in outs]
    rewards = [o.reward.item() for o in outs]
    # may run in hours 0, 1, 2; overdue from the end of hour 2 until it runs in hour 4
    assert overdue == pytest.approx([0, 0, 3, 3, 0, 0])
    assert miss == pytest.approx([0, 0, 3, 0, 0, 0])
    assert rewards == pytest.approx([0, 0, -15, -15, 0, 0])
    assert outs[4]["work_done_gpu_h"].item() == pytest.approx(3.0)


def test_earliest_deadline_first():
    sc = scenario(sites=[site("a", workload={"deadline_slack_h_min": 0,
                                            "deadline_slack_h_max": 3})])
    p = build_params(sc)
    x = exo(1, 1, flexible_gpu_h=8.0)
    state, out = core.step(p, core.reset(p, 1), act(1, run=0.5), x[0][None])
    # 2 GPU-h per slack 0..3; running 4 takes slack 0 and 1 entirely
    assert out["work_done_gpu_h"].item() == pytest.approx(4.0)
    assert out["deadline_miss_gpu_h"].item() == 0.0
    assert state.queue_gpu_h[0, 0].tolist()[:4] == pytest.approx([0, 0, 2, 2])


def test_curtailment_caps_first_then_pauses_then_sheds():
    p = build_params(scenario(sites=[site("a", **BOARD_ONLY)], throttle=ONE_CURVE))
    # 10 GPUs: 4 busy with inference, 6 with flexible work at cap 1 -> 10 kW.
    base = dict(inference_gpus=4.0, flexible_gpu_h=20.0)
    # at cap 0.6: inference 4 GPU-h needs 4/0.85 GPUs, flexible fills the rest: 10 x 0.6 = 6 kW
    for head, want in [(8.0, "cap"), (5.0, "pause"), (2.0, "shed"), (0.0, "overdraw")]:
        x = exo(1, 1, headroom_kw=head, **base)
        _, out = core.step(p, core.reset(p, 1), act(1, run=1, cap=1.0), x[0][None])
        imp = out["grid_import_kwh"].item()
        if want == "cap":
            # share phi of GPUs to cap_min removes exactly 2 kW of the 4 kW it can
            assert imp == pytest.approx(8.0)
            assert out["cap"].item() == pytest.approx(1.0 - 0.5 * 0.4)
            assert out["paused_gpu_h"].item() == 0.0
        elif want == "pause":
            assert imp == pytest.approx(5.0)
            assert out["cap"].item() == pytest.approx(0.6)
            assert out["paused_gpu_h"].item() > 0 and out["shed_gpu_h"].item() == 0
            assert out["slo_gpu_h"].item() == 0.0
        elif want == "shed":
            assert imp == pytest.approx(2.0)
            assert out["work_done_gpu_h"].item() == 0.0
            # 1 kW idle floor; each shed GPU-h saves (0.6 - 0.1)/0.85 kW
            assert out["slo_gpu_h"].item() == pytest.approx(4.0 - (2.0 - 1.0) * 0.85 / 0.5)
        else:
            assert out["inference_served_gpu_h"].item() == 0.0
            assert out["overdraw_kwh"].item() == pytest.approx(1.0)  # idle power
            assert out["slo_gpu_h"].item() == pytest.approx(4.0)
        assert out["overdraw_kwh"].item() == pytest.approx(max(imp - head, 0.0))


def test_outage_battery_carries_what_it_can():
    sc = scenario(throttle=ONE_CURVE, sites=[site("a", **BOARD_ONLY, battery={
                                           "capacity_kwh": 10.0, "power_kw": 3.0,
                                           "round_trip_efficiency": 0.81,
                                           "soc_min_fraction": 0.0, "soc_max_fraction": 1.0,
                                           "soc_initial_fraction": 0.5})])
    p = build_params(sc)
    x = exo(1, 1, headroom_kw=0.0, inference_gpus=6.0, pv_kw=0.5)
    state, out = core.step(p, core.reset(p, 1), act(1, run=1, cap=1.0), x[0][None])
    # battery discharges its 3 kW limit; PV 0.5; 3.5 kW carry idle 1 kW + inference
    assert out["battery_discharge_kwh"].item() == pytest.approx(3.0)
    assert out["grid_import_kwh"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["overdraw_kwh"].item() == 0.0
    assert state.soc_kwh.item() == pytest.approx(5.0 - 3.0 / 0.9)
    served = out["inference_served_gpu_h"].item()
    assert 0 < served < 6.0
    # 2.5 kW above the idle floor at cap_min: served GPU-h x (0.6 - 0.1)/0.85
    assert served * 0.5 / 0.85 == pytest.approx(2.5)


def test_battery_rule_charges_from_surplus_with_efficiency():
    sc = scenario(sites=[site("a", battery={"capacity_kwh": 10.0, "power_kw": 4.0,
                                           "round_trip_efficiency": 0.64,
                                           "soc_min_fraction": 0.1, "soc_max_fraction": 0.9,
                                           "soc_initial_fraction": 0.5})])
    p = build_params(sc)
    x = exo(1, 2, pv_kw=np.array([3.0, 0.0]))
    state, out = core.step(p, core.reset(p, 1), act(1, run=0), x[0][None])
    assert out["battery_charge_kwh"].item() == pytest.approx(2.0)  # 3 kW PV - 1 kW idle
    assert state.soc_kwh.item() == pytest.approx(5.0 + 0.8 * 2.0)
    state, out = core.step(p, state, act(1, run=0), x[1][None])
    assert out["battery_discharge_kwh"].item() == pytest.approx(1.0)
    assert state.soc_kwh.item() == pytest.approx(6.6 - 1.0 / 0.8)


def test_bad_scenarios_raise_clear_errors():
    with pytest.raises(ScenarioError, match="observation_slack_edges_h"):
        build_params(scenario(1, env={"observation_slack_edges_h": [4, 2]}))
    with pytest.raises(ScenarioError, match="below its idle power"):
        build_params(scenario(sites=[site("a", gpu_board_idle_kw=0.7)]))
    with pytest.raises(ScenarioError, match="throttle curve's first point"):
        build_params(scenario(1, env={"cap_min_fraction": 0.3}))
    with pytest.raises(ScenarioError, match=r"network.latency_ms = 4000000.0: expected less"):
        build_params(scenario(2, network={"latency_ms": 4e6}))
    with pytest.raises(ScenarioError, match=r"transfer_cost_regions: .*missing \['s1'\]"):
        build_params(scenario(2, network={"transfer_cost_regions": {"s0": "us-east-1"}}))
    with pytest.raises(ScenarioError, match="route_logit_scale"):
        build_params(scenario(2, env={"route_logit_scale": 1000.0}))


def test_queue_grows_to_the_longest_deadline_slack():
    p = build_params(scenario(sites=[site("a", workload={"deadline_slack_h_max": 30})]))
    assert p.slack_buckets == 31  # env.slack_buckets = 8 is a minimum
    assert p.arrival_split[0, 1 + 30] > 0 and p.arrival_split.sum() == pytest.approx(1.0)


def test_normalise_action_inverts_physical_action():
    p = build_params(scenario(3, env={"battery_control": "residual"},
                              sites=[site(f"s{i}", battery={"capacity_kwh": 10.0,
                                                             "power_kw": 2.0 + i})
                                     for i in range(3)]))
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (4, 3, 5))
    phys = core.physical_action(p, a)
    back = core.normalise_action(p, phys.run, phys.cap, phys.route_logit, phys.migrate,
                                 phys.battery_kw)
    np.testing.assert_allclose(back, a, atol=1e-12)
    with pytest.raises(ValueError, match="battery_kw"):
        core.normalise_action(p, phys.run, phys.cap, phys.route_logit, phys.migrate)


# --------------------------------------------------------------------------- network


def _two_sites(**network):
    return build_params(scenario(2, env={"max_migration_fraction": 1.0},
                                 network={"latency_ms": 0.0, **network}))


def test_the_link_limits_the_work_sent_in_an_hour():
    # 1 Gbps x 0.5 x 3600 s = 225 GB an hour; 100 GB per GPU-h: 2.25 GPU-h
    p = _two_sites(bandwidth_gbps=1.0, link_share_fraction=0.5, checkpoint_gb_per_gpu_h=100.0)
    assert p.migration_link_gpu_h.tolist() == pytest.approx([2.25, 2.25])
    arrivals = np.array([[9.0, 0.0]])
    _, out = core.step(p, core.reset(p, 1), act(2, run=0, migrate=[1.0, 0.0], max_mig=1.0),
                       exo(2, 1, flexible_gpu_h=arrivals)[0][None])
    assert out["migrated_gpu_h"][0].tolist() == pytest.approx([2.25, 0.0])
    assert out["migration_kwh"][0, 0] == pytest.approx(2.25 * 100.0 * p.scenario.network
                                                       .transfer_kwh_per_gb)
    assert out["transfer_cost"][0, 0] == pytest.approx(2.25 * 100.0 * 0.02)


def test_a_destination_accepts_only_what_it_can_run_within_the_slack():
    # site 1 (10 GPUs) already holds 30 GPU-h; 200 GPU-h with slack 2..4 h arrive with
    # 3 h left on average: it can run 10 x 3 - 30 = 0 more, so nothing moves
    p = _two_sites(checkpoint_gb_per_gpu_h=0.0, restart_overhead_gpu_h_per_gpu_h=0.0)
    state = core.reset(p, 1)
    state.queue_gpu_h[0, 1, 5] = 30.0
    arrivals = np.array([[200.0, 0.0]])
    new, out = core.step(p, state, act(2, run=0, migrate=[1.0, 0.0], max_mig=1.0),
                         exo(2, 1, flexible_gpu_h=arrivals)[0][None])
    assert out["migrated_gpu_h"][0, 0] == pytest.approx(0.0)
    assert new.queue_gpu_h[0, 0].sum() == pytest.approx(200.0)
    # with 10 GPU-h queued there it takes 30 - 10 = 20 GPU-h of the 200
    state.queue_gpu_h[0, 1, 5] = 10.0
    new, out = core.step(p, state, act(2, run=0, migrate=[1.0, 0.0], max_mig=1.0),
                         exo(2, 1, flexible_gpu_h=arrivals)[0][None])
    assert out["migrated_gpu_h"][0, 0] == pytest.approx(20.0)
    assert new.transit_gpu_h[0, 1].sum() == pytest.approx(20.0)
    assert new.queue_gpu_h[0, 0].sum() == pytest.approx(180.0)


def test_the_restart_overhead_is_work_added_at_the_destination():
    p = _two_sites(restart_overhead_gpu_h_per_gpu_h=0.25)
    arrivals = np.array([[4.0, 0.0]])
    new, out = core.step(p, core.reset(p, 1), act(2, run=0, migrate=[1.0, 0.0], max_mig=1.0),
                         exo(2, 1, flexible_gpu_h=arrivals)[0][None])
    assert out["migrated_gpu_h"][0, 0] == pytest.approx(4.0)
    assert out["restart_gpu_h"][0, 0] == pytest.approx(1.0)
    assert new.transit_gpu_h[0, 1].sum() == pytest.approx(5.0)


def test_transfer_prices_come_from_the_region_matrix(shared_data):
    sc = scenario(2, network={"transfer_cost_regions": {"s0": "ap-southeast-1",
                                                        "s1": "us-east-1"}})
    p = build_params(sc)
    # rows are the source: out of Singapore 0.09 USD/GB, out of N. Virginia 0.02
    assert p.transfer_cost_per_gb.tolist() == [[0.0, 0.09], [0.02, 0.0]]


def test_sites_in_one_region_pay_the_cross_zone_price(shared_data):
    regions = {"s0": "us-east-1", "s1": "us-east-1", "s2": "ap-southeast-1"}
    with pytest.raises(ScenarioError, match=r"'s0' and 's1' are both in 'us-east-1'.*"
                                            r"transfer_cost_intra_region_per_gb"):
        build_params(scenario(3, network={"transfer_cost_regions": regions}))
    p = build_params(scenario(3, network={"transfer_cost_regions": regions,
                                          "transfer_cost_intra_region_per_gb": 0.02}))
    assert p.transfer_cost_per_gb.tolist() == [[0.0, 0.02, 0.02], [0.02, 0.0, 0.02],
                                               [0.09, 0.09, 0.0]]


@pytest.mark.parametrize(("network", "env", "expect"), [
    ({"coordinates_deg": {"s0": (0.0, 0.0), "s9": (0.0, 1.0)}}, {},
     r"network.coordinates_deg: unknown site\(s\) \['s9'\]; expected .*\['s0', 's1'\]"),
    ({"transfer_cost_regions": {"s0": "us-east-1", "s1": "us-west-1", "x": "us-east-1"}}, {},
     r"network.transfer_cost_regions: unknown site\(s\) \['x'\]"),
    ({"coordinates_deg": {"s0": (0.0, 0.0)}}, {"inference_remote_fraction_max": 0.2},
     r"network.coordinates_deg: expected .* for every site .*missing \['s1'\]"),
    ({"coordinates_deg": {"s0": (95.0, 0.0), "s1": (0.0, 1.0)}}, {},
     r"network.coordinates_deg.s0: \[95.0, 0.0\] .*latitude in \[-90, 90\]"),
    ({"coordinates_deg": {"s0": (0.0, 0.0), "s1": (0.0, 200.0)}}, {},
     r"network.coordinates_deg.s1: .*longitude in \[-180, 180\]"),
])
def test_bad_network_keys_are_refused_naming_the_key(network, env, expect):
    with pytest.raises((ScenarioError, ValueError), match=expect):
        build_params(scenario(2, network=network, env=env))


def test_inference_beyond_a_sites_capacity_overflows_to_sites_in_reach():
    sc = scenario(3, env={"inference_remote_fraction_max": 0.5},
                  network={"coordinates_deg": {"s0": (0.0, 0.0), "s1": (0.0, 1.0),
                                               "s2": (0.0, 90.0)},
                           "inference_kwh_per_gpu_h": 0.1})
    p = build_params(sc)
    # s1 is ~111 km away (RTT 3 x 2 x 111 / c = 2.2 ms), s2 10,000 km (200 ms): out of reach
    assert p.inference_routable[0].tolist() == [0.0, 1.0, 0.0]
    demand = np.array([[16.0, 2.0, 0.0]])  # 10 GPUs each, uncapped
    x = exo(3, 1, inference_gpus=demand)
    _, out = core.step(p, core.reset(p, 1), act(3, run=0), x[0][None])
    # s0 cannot serve 6 of its 16; up to 8 may go, s1 has 8 spare: all 6 go
    assert out["inference_routed_gpu_h"][0].tolist() == pytest.approx([6.0, 0.0, 0.0])
    assert out["inference_served_gpu_h"][0].tolist() == pytest.approx([10.0, 8.0, 0.0])
    assert out["slo_gpu_h"][0].sum() == pytest.approx(0.0)
    assert out["inference_network_kwh"][0, 0] == pytest.approx(0.6)


def test_kernel_prices_each_link_like_the_oracle():
    """A price per pair (not one per source) takes the kernel's per-pair path."""
    p = build_params(scenario(3, env={"max_migration_fraction": 1.0,
                                      "inference_remote_fraction_max": 0.5},
                              network={"coordinates_deg": {"s0": (0.0, 0.0), "s1": (0.0, 1.0),
                                                           "s2": (0.0, 2.0)}}))
    price = np.array([[0.0, 0.01, 0.09], [0.02, 0.0, 0.05], [0.1, 0.03, 0.0]])
    p = dataclasses.replace(p, transfer_cost_per_gb=price)
    assert kernel.pack(p).scalar[kernel._PAIRWISE] == 1.0
    rng = np.random.default_rng(3)
    state = core.reset(p, 4)
    state.queue_gpu_h[:] = rng.exponential(20.0, state.queue_gpu_h.shape)
    x = exo(3, 4, inference_gpus=rng.uniform(0, 14, (4, 3)),
            flexible_gpu_h=rng.uniform(0, 30, (4, 3)))
    a = rng.uniform(-1, 1, (4, 3, 4))
    want_state, want = core.step(p, state, a, x)
    got_state, got = kernel.step(p, state, a, x)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_state.transit_gpu_h, want_state.transit_gpu_h, rtol=1e-9,
                               atol=1e-9)
    assert want["transfer_cost"].sum() > 0 and want["inference_routed_gpu_h"].sum() > 0


def test_host_share_fixed_overhead_and_inference_curve_by_hand():
    # 10 GPUs: board idle 0.07 + host idle 0.03 = 0.1 kW idle; busy board 0.8 kW x power
    # fraction + host 0.2 kW; facility 2 kW fixed + PUE 1.2 x IT.
    sc = scenario(sites=[site("a", pue=1.2, facility_fixed_kw=2.0)])
    p = build_params(sc)
    x = exo(1, 1, inference_gpus=4.0, flexible_gpu_h=20.0, headroom_kw=100.0)
    _, out = core.step(p, core.reset(p, 1), act(1, run=1, cap=0.7), x[0][None])
    # cap 0.7: inference tau 0.93, power 0.65; training tau 0.9, power 0.7
    busy_inf = 4.0 / 0.93
    flex = (10 - busy_inf) * 0.9
    assert out["inference_served_gpu_h"].item() == pytest.approx(4.0)
    assert out["work_done_gpu_h"].item() == pytest.approx(flex)
    assert out["busy_gpus"].item() == pytest.approx(10.0)
    it = busy_inf * (0.65 * 0.8 + 0.2) + (10 - busy_inf) * (0.7 * 0.8 + 0.2)
    assert out["it_kwh"].item() == pytest.approx(it)
    assert out["facility_kwh"].item() == pytest.approx(2.0 + 1.2 * it)
    # idle: the fixed overhead and the idle floor remain
    _, idle = core.step(p, core.reset(p, 1), act(1, run=0, cap=0.7),
                        exo(1, 1, headroom_kw=100.0)[0][None])
    assert idle["facility_kwh"].item() == pytest.approx(2.0 + 1.2 * 10 * 0.1)


def test_old_power_keys_and_single_curve_are_refused_by_name():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="gpu_board_max_kw"):
        scenario(sites=[site("a", gpu_idle_kw=0.1, gpu_max_kw=0.7)])
    with pytest.raises(pydantic.ValidationError, match="throttle.training"):
        scenario(1, throttle=THROTTLE["training"])
    with pytest.raises(pydantic.ValidationError, match="power_fraction"):
        scenario(1, throttle={"training": THROTTLE["training"],
                              "inference": {**THROTTLE["inference"],
                                            "power_fraction": [0.5, 0.8, 0.75]}})
