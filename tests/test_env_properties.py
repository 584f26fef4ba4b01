"""Property tests of the simulation core (hypothesis): conservation, balances, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from env_helpers import network_of, scenario, site, synthetic_exo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridrl.env import core, kernel, physics
from gridrl.env.params import build_params

BATTERY = {"capacity_kwh": 20.0, "power_kw": 4.0, "round_trip_efficiency": 0.85,
           "soc_min_fraction": 0.1, "soc_max_fraction": 0.9, "soc_initial_fraction": 0.5}


def _params(n_sites: int, battery: bool, battery_control: str, threshold: float, pue_slope: float,
            backup_kw: float = 0.0):
    sites = [site(f"s{i}", pue=1.0 + 0.2 * i, facility_fixed_kw=0.4 * i,
                  pue_temp_slope_per_c=pue_slope,
                  battery=BATTERY if battery else {}, backup={"capacity_kw": backup_kw * i},
                  workload={"deadline_slack_h_min": i, "deadline_slack_h_max": 3 + 2 * i})
             for i in range(n_sites)]
    return build_params(scenario(sites=sites, env={
        "battery_control": battery_control, "battery_discharge_threshold_fraction": threshold,
        "inference_remote_fraction_max": 0.3}, network=network_of(n_sites)))


cases = st.fixed_dictionaries({
    "n_sites": st.integers(1, 3),
    "batch": st.integers(1, 3),
    "battery": st.booleans(),
    "battery_control": st.sampled_from(["rule", "setpoint", "residual"]),
    "threshold": st.sampled_from([0.0, 0.5, 1.0]),
    "pue_slope": st.sampled_from([0.0, 0.01]),
    "seed": st.integers(0, 2**31 - 1),
    "hours": st.integers(1, 30),
    "backup_kw": st.sampled_from([0.0, 2.0, 40.0]),  # site i has i x this
})


def _rollout(c):
    p = _params(c["n_sites"], c["battery"], c["battery_control"], c["threshold"], c["pue_slope"],
                c["backup_kw"])
    rng = np.random.default_rng(c["seed"])
    exo = synthetic_exo(c["n_sites"], 48, seed=c["seed"])
    # stress: deep outages, huge arrivals, tight headroom
    exo[..., 2] *= rng.choice([0.0, 0.3, 1.0, 5.0], size=exo.shape[:2])
    exo[..., 6] *= rng.choice([0.0, 1.0, 4.0], size=exo.shape[:2])
    rows = rng.integers(0, 48, (c["hours"], c["batch"]))
    acts = rng.uniform(-1, 1, (c["hours"], c["batch"], c["n_sites"], p.n_actions_per_site))
    acts[rng.random(acts.shape) < 0.2] = rng.choice([-1.0, 1.0])  # the bounds themselves
    return p, exo, rows, acts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_invariants_hold_every_hour(c):
    p, exo, rows, acts = _rollout(c)
    state = core.reset(p, c["batch"])
    tol = 1e-9
    held0 = state.work_gpu_h().sum(axis=1)
    arrived = np.zeros(c["batch"])
    done = np.zeros(c["batch"])
    restart = np.zeros(c["batch"])
    for t in range(c["hours"]):
        x = exo[rows[t]]
        new, out = core.step(p, state, acts[t], x)
        assert np.isfinite(out.values).all() and np.isfinite(out.reward).all()
        # no negative queues
        assert (new.queue_gpu_h >= 0).all() and (new.transit_gpu_h >= 0).all()
        # work conserved (fleet: migration moves work between sites and adds its restart
        # overhead at the destination)
        arrived += out["arrived_gpu_h"].sum(1)
        done += out["work_done_gpu_h"].sum(1)
        restart += out["restart_gpu_h"].sum(1)
        held = new.work_gpu_h().sum(axis=1)
        np.testing.assert_allclose(held0 + arrived + restart - done, held, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(out["restart_gpu_h"], out["migrated_gpu_h"]
                                   * p.restart_overhead_gpu_h_per_gpu_h, rtol=1e-12, atol=0)
        np.testing.assert_allclose(
            out["transit_gpu_h"].sum(1),
            new.transit_gpu_h.sum((1, 2)), rtol=1e-10, atol=1e-9)
        # the link and the destinations limit migration
        assert (out["migrated_gpu_h"] <= p.migration_link_gpu_h + 1e-9).all()
        arriving = new.transit_gpu_h.sum(-1)
        assert (arriving <= p.gpus * p.accept_hours + 1e-9).all()
        # a flat price per GB: GB per GPU-h x price x GPU-h sent
        np.testing.assert_allclose(out["transfer_cost"], p.migration_gb_per_gpu_h
                                   * p.transfer_cost_per_gb.max() * out["migrated_gpu_h"],
                                   rtol=1e-10, atol=1e-12)
        # inference routed within its share, and none lost or made up
        assert (out["inference_routed_gpu_h"]
                <= p.inference_remote_fraction_max * x[..., 5] + 1e-9).all()
        np.testing.assert_allclose(
            out["inference_demand_gpu_h"].sum(1) - out["inference_served_gpu_h"].sum(1),
            out["slo_gpu_h"].sum(1), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(held, out["queued_gpu_h"].sum(1) + out["transit_gpu_h"].sum(1),
                                   rtol=1e-10, atol=1e-9)
        # energy balance at every site
        lhs = out["facility_kwh"] + out["battery_charge_kwh"] + out["export_kwh"]
        rhs = (out["grid_import_kwh"] + out["pv_kwh"] + out["wind_kwh"]
               + out["battery_discharge_kwh"] + out["backup_kwh"])
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-9)
        # backup: emergency use only (outage hours, import at headroom), within capacity,
        # before any overdraw in an outage; its carbon is counted
        bk = out["backup_kwh"]
        assert (bk <= p.backup_capacity_kw + tol).all()
        outage = kernel.outage_on(x[..., 11], x[..., 12]) > 0
        assert (bk[~outage] == 0.0).all()
        ran = bk > 1e-9
        assert (out["grid_import_kwh"][ran] >= x[..., 2][ran] - 1e-8).all()
        short = (out["overdraw_kwh"] > 1e-9) & outage
        assert (np.abs(bk - p.backup_capacity_kw)[short] < 1e-9).all()
        np.testing.assert_allclose(out["backup_carbon_kg"],
                                   bk * p.backup_carbon_g_per_kwh / 1000.0, atol=1e-12)
        # demand response: shortfall only in event hours, and it is the import above
        # the level
        on = (x[..., kernel.Exo.DR_STARTS_IN_H] == 0) & (x[..., kernel.Exo.DR_REMAINING_H] > 0)
        np.testing.assert_array_equal(out["dr_event_h"] > 0, on)
        np.testing.assert_allclose(out["dr_shortfall_kwh"], on * np.maximum(
            out["grid_import_kwh"] - x[..., kernel.Exo.DR_LIMIT_KW], 0.0), atol=1e-9)
        np.testing.assert_allclose(
            out["facility_kwh"],
            p.facility_fixed_kw + np.maximum(p.pue + p.pue_temp_slope_per_c * np.maximum(
                x[..., 7] - p.pue_temp_threshold_c, 0), 0) * out["it_kwh"]
            + out["migration_kwh"] + out["inference_network_kwh"], rtol=1e-10)
        # SoC in bounds and consistent with the flows
        assert (new.soc_kwh >= p.soc_min_kwh - tol).all()
        assert (new.soc_kwh <= p.soc_max_kwh + tol).all()
        np.testing.assert_allclose(
            new.soc_kwh, state.soc_kwh + p.battery_eta * out["battery_charge_kwh"]
            - out["battery_discharge_kwh"] / p.battery_eta, atol=1e-9)
        # import above headroom is curtailed away or counted as overdraw
        head = x[..., 2]
        np.testing.assert_allclose(out["overdraw_kwh"],
                                   np.maximum(out["grid_import_kwh"] - head, 0), atol=1e-8)
        od = out["overdraw_kwh"] > 1e-9
        # overdraw only once curtailment is exhausted: no work left running
        assert (out["work_done_gpu_h"][od] < 1e-9).all()
        assert (out["inference_served_gpu_h"][od] < 1e-9).all()
        assert ((out["headroom_violation"] > 0) == (out["overdraw_kwh"] > 0)).all()
        # curtailment only when import would exceed headroom, and then down to it
        cut = out["curtailed_kwh"] > 1e-9
        np.testing.assert_allclose(out["grid_import_kwh"][cut],
                                   head[cut] + out["overdraw_kwh"][cut], atol=1e-8)
        # caps and GPUs within limits; inference never exceeds demand
        assert (out["cap"] >= p.cap_min - tol).all() and (out["cap"] <= 1 + tol).all()
        assert (out["busy_gpus"] <= p.gpus + 1e-9).all() and (out["busy_gpus"] >= -1e-9).all()
        assert (out["slo_gpu_h"] >= -1e-12).all()
        state = new


@settings(max_examples=40, deadline=None)
@given(cases)
def test_kernel_matches_the_numpy_reference(c):
    p, exo, rows, acts = _rollout(c)
    pp = kernel.pack(p)
    a = b = core.reset(p, c["batch"])
    for t in range(c["hours"]):
        a, out_a = core.step(p, a, acts[t], exo[rows[t]])
        b, out_b = kernel.step(pp, b, acts[t], exo[rows[t]])
        np.testing.assert_allclose(out_b.values, out_a.values, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out_b.reward, out_a.reward, rtol=1e-9, atol=1e-9)
        for name in ("queue_gpu_h", "transit_gpu_h", "soc_kwh", "cap"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(cases)
def test_outages_behave_as_documented(c):
    """Headroom 0: nothing is imported except what local generation, battery and
    curtailment cannot remove, which is overdraw; that is at most the idle floor plus
    migration energy."""
    p, exo, rows, acts = _rollout(c)
    exo[..., 2] = 0.0
    exo[..., 11], exo[..., 12] = 0.0, 1.0  # every hour an outage without notice
    state = core.reset(p, c["batch"])
    for t in range(c["hours"]):
        x = exo[rows[t]]
        state, out = core.step(p, state, acts[t], x)
        np.testing.assert_allclose(out["grid_import_kwh"], out["overdraw_kwh"], atol=1e-9)
        pue = p.pue + p.pue_temp_slope_per_c * np.maximum(x[..., 7] - p.pue_temp_threshold_c, 0)
        floor = p.facility_fixed_kw + pue * p.gpus * p.gpu_idle_kw + out["migration_kwh"]
        assert (out["overdraw_kwh"] <= np.maximum(floor - p.backup_capacity_kw, 0) + 1e-9).all()
        covered = (x[..., 0] + x[..., 1] + out["battery_discharge_kwh"] + out["backup_kwh"]
                   >= floor + 1e-9)
        assert (out["overdraw_kwh"][covered] < 1e-9).all()


@pytest.mark.parametrize("n_sites", [1, 2, 5])
def test_batch_equals_single_episodes(n_sites):
    p = _params(n_sites, True, "rule", 0.0, 0.01)
    rng = np.random.default_rng(3)
    exo = synthetic_exo(n_sites, 48, seed=3)
    b = 4
    rows = rng.integers(0, 48, (20, b))
    acts = rng.uniform(-1.2, 1.2, (20, b, n_sites, 4)).clip(-1, 1)
    batch = core.reset(p, b)
    singles = [core.reset(p, 1) for _ in range(b)]
    for t in range(20):
        batch, out = core.step(p, batch, acts[t], exo[rows[t]])
        for j in range(b):
            singles[j], o = core.step(p, singles[j], acts[t, j : j + 1], exo[rows[t, j : j + 1]])
            np.testing.assert_allclose(out.values[j], o.values[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(batch.queue_gpu_h[j], singles[j].queue_gpu_h[0],
                                       rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(cases)
def test_residual_battery_action_zero_is_the_rule(c):
    """battery_control residual with battery action 0 gives exactly the rule's step."""
    c = {**c, "battery": True}
    p_rule = _params(c["n_sites"], True, "rule", c["threshold"], c["pue_slope"])
    p_res = _params(c["n_sites"], True, "residual", c["threshold"], c["pue_slope"])
    _, exo, rows, acts = _rollout({**c, "battery_control": "residual"})
    a = b = core.reset(p_rule, c["batch"])
    for t in range(c["hours"]):
        a, out_a = core.step(p_rule, a, acts[t, ..., :4], exo[rows[t]])
        zero = acts[t].copy()
        zero[..., 4] = 0.0
        b, out_b = core.step(p_res, b, zero, exo[rows[t]])
        np.testing.assert_array_equal(out_b.values, out_a.values)


@settings(max_examples=30, deadline=None)
@given(cases, st.sampled_from(["setpoint", "residual"]))
def test_encoded_battery_setpoints_are_what_the_battery_is_asked_for(c, control):
    """encode_battery_kw: the battery moves the wanted power whenever the limits allow
    it (power, state of charge, charging within headroom), from any rule setpoint."""
    p = _params(c["n_sites"], True, control, c["threshold"], c["pue_slope"])
    _, exo, rows, acts = _rollout({**c, "battery": True, "battery_control": control})
    rng = np.random.default_rng(c["seed"])
    state = core.reset(p, c["batch"])
    for t in range(c["hours"]):
        x = exo[rows[t]]
        want = rng.uniform(-1.0, 1.0, (c["batch"], c["n_sites"])) * p.battery_power_kw
        a = physics.encode_battery_kw(p, state, acts[t], x, want)
        new, out = core.step(p, state, a, x)
        fac = out["facility_kwh"] + out["curtailed_kwh"]
        room = np.maximum(p.soc_max_kwh - state.soc_kwh, 0.0) / p.battery_eta
        avail = np.maximum(state.soc_kwh - p.soc_min_kwh, 0.0) * p.battery_eta
        gen = x[..., 0] + x[..., 1]
        ch = np.minimum(np.minimum(np.maximum(want, 0.0), np.maximum(x[..., 2] + gen - fac, 0.0)),
                        room)
        dis = np.minimum(np.maximum(-want, 0.0), avail)
        np.testing.assert_allclose(out["battery_charge_kwh"], ch, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["battery_discharge_kwh"], dis, rtol=1e-9, atol=1e-9)
        rule = physics.encode_battery_kw(p, state, acts[t], x)  # None: the rule
        _, out_rule = core.step(p, state, rule, x)
        want_rule = physics.rule_battery_kw(p, fac, gen, x[..., 2])
        np.testing.assert_allclose(out_rule["battery_charge_kwh"],
                                   np.minimum(np.minimum(np.maximum(want_rule, 0.0),
                                                         p.battery_power_kw), room), atol=1e-9)
        state = new


def test_initial_charge_is_drawn_per_episode_within_its_range_and_seeded():
    ranged = {**BATTERY, "soc_initial_fraction_range": [0.2, 0.8]}
    p = build_params(scenario(sites=[site("a", battery=ranged), site("b", battery=BATTERY)]))
    starts = np.arange(0, 24 * 60, 24)
    soc = physics.initial_soc_kwh(p, starts)
    assert soc.shape == (len(starts), 2)
    assert (soc[:, 0] >= 0.2 * 20.0).all() and (soc[:, 0] <= 0.8 * 20.0).all()
    assert soc[:, 0].std() > 1.0  # drawn, not fixed: uniform on 12 kWh has std 3.5
    np.testing.assert_array_equal(soc[:, 1], 0.5 * 20.0)  # no range: the fixed fraction
    np.testing.assert_array_equal(physics.initial_soc_kwh(p, starts), soc)  # seeded


def test_an_initial_charge_range_outside_the_limits_is_refused():
    bad = {**BATTERY, "soc_initial_fraction_range": [0.05, 0.8]}
    with pytest.raises(ValueError, match="soc_initial_fraction_range"):
        scenario(sites=[site("a", battery=bad)])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_gpu_time_and_battery_wear_are_priced_as_documented(c):
    """Rent = busy GPUs x price, holding = work held at the end of the hour x price, wear
    = kWh discharged x price, every hour, and the reward carries them."""
    p = _params(c["n_sites"], True, c["battery_control"], c["threshold"], c["pue_slope"])
    raw = p.scenario.model_dump(mode="json")
    for i, s in enumerate(raw["sites"]):
        s["gpu_rent_per_gpu_h"] = 2.0 + i
        s["workload"]["holding_cost_per_gpu_h_h"] = 0.01 * (i + 1)
        s["battery"]["degradation_cost_per_kwh"] = 0.03
    p = build_params(type(p.scenario).model_validate(raw))
    _, exo, rows, acts = _rollout(c)
    state = core.reset(p, c["batch"])
    for t in range(c["hours"]):
        state, out = core.step(p, state, acts[t], exo[rows[t]])
        held = state.work_gpu_h()
        np.testing.assert_allclose(out["gpu_rent_cost"], out["busy_gpus"] * p.gpu_rent_per_gpu_h)
        np.testing.assert_allclose(out["holding_cost"], held * p.holding_cost_per_gpu_h_h)
        np.testing.assert_allclose(out["battery_degradation_cost"],
                                   out["battery_discharge_kwh"] * 0.03)
        money = (out["cost"] + out["gpu_rent_cost"] + out["holding_cost"]
                 + out["battery_degradation_cost"] + out["transfer_cost"])
        other = (p.reward_weights[0] * out["carbon_kg"] + p.reward_weights[2] * out["slo_gpu_h"]
                 + p.reward_weights[3] * out["overdue_gpu_h"]
                 + p.reward_weights[4] * out["overdraw_kwh"])
        np.testing.assert_allclose(
            out.reward, -(p.reward_weights[1] * money + other).sum(-1) / p.reward_scale)
