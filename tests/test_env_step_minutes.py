"""Sub-hourly steps (``env.step_minutes``): conservation at every step length, the hourly
model reproduced by 15- and 30-minute steps where that is a property of the model, and
the one place hours become steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from env_helpers import index, network_of, priced_pair, scenario, site, synthetic_exo

from gridrl.env import clock, core, kernel
from gridrl.env.batch import BatchSim
from gridrl.env.clock import ClockError, expand_exo
from gridrl.env.core import EXO_SIGNALS
from gridrl.env.episodes import Window
from gridrl.env.inputs import EnvData
from gridrl.env.kpis import episode_kpis
from gridrl.env.params import build_params
from gridrl.scenario import ScenarioError, load_scenario

BATTERY = {"capacity_kwh": 20.0, "power_kw": 4.0, "round_trip_efficiency": 0.85,
           "soc_min_fraction": 0.1, "soc_max_fraction": 0.9, "soc_initial_fraction": 0.5}
K = {s: i for i, s in enumerate(EXO_SIGNALS)}


def _params(step_minutes: int, n_sites: int = 2, battery_control: str = "rule",
            backup_kw: float = 20.0, battery: dict = BATTERY, priced: bool = False):
    """Sites ``s0..``; ``priced``: GPU rent, holding, battery wear, a demand-response
    programme and energy cost in the reward too."""
    prices = ({"gpu_rent_per_gpu_h": 0.05, "demand_response": {
        "payment_per_event_h": 0.5, "penalty_per_kwh": 0.4}} if priced else {})
    wear = {"degradation_cost_per_kwh": 0.02} if priced else {}
    sites = [site(f"s{i}", pue=1.1 + 0.1 * i, facility_fixed_kw=0.5, battery=battery | wear,
                  backup={"capacity_kw": backup_kw * i}, **prices,
                  workload={"deadline_slack_h_min": 1 + i, "deadline_slack_h_max": 3 + i,
                            "holding_cost_per_gpu_h_h": 0.01 if priced else 0.0})
             for i in range(n_sites)]
    return build_params(scenario(sites=sites, env={
        "step_minutes": step_minutes, "battery_control": battery_control,
        "inference_remote_fraction_max": 0.3}, network=network_of(n_sites),
        reward={"cost_per_unit": 1.0} if priced else None))


def _steps(hourly: np.ndarray, step_minutes: int) -> np.ndarray:
    return expand_exo(index(len(hourly)), hourly, EXO_SIGNALS, step_minutes)[1]


def test_step_minutes_other_than_60_30_15_is_refused_with_its_key(tmp_path):
    with pytest.raises(ClockError, match=r"env\.step_minutes = 45"):
        clock.steps_per_hour(45)
    path = tmp_path / "s.yaml"
    data = scenario().model_dump(mode="json", exclude_none=True)
    data["env"]["step_minutes"] = 20
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"env\.step_minutes"):
        load_scenario(path)


def test_hours_convert_to_steps_in_one_place():
    p60, p15 = _params(60), _params(15)
    assert p15.step_h == 0.25 and p60.step_h == 1.0 and p15.steps_per_hour == 4
    # queue buckets stay hours (deadlines at the ends of hours): a step costs the same
    assert p15.slack_buckets == p60.slack_buckets
    np.testing.assert_array_equal(p15.arrival_split, p60.arrival_split)
    assert p15.accept_hours == p60.accept_hours
    # the link carries a step's worth
    np.testing.assert_allclose(p15.migration_link_gpu_h, p60.migration_link_gpu_h / 4)
    idx = expand_exo(index(3), synthetic_exo(1, 3), EXO_SIGNALS, 15)[0]
    assert len(idx) == 12
    np.testing.assert_array_equal(clock.hour_ends(len(idx), 15), [0, 0, 0, 1] * 3)
    np.testing.assert_array_equal(clock.hour_phase(np.arange(len(idx)), 15), [0, 1, 2, 3] * 3)
    np.testing.assert_array_equal(clock.hour_ends(5, 60), np.ones(5))
    with pytest.raises(ClockError, match="env.episode_hours = 1.1"):
        clock.hours_to_steps(1.1, 15, "env.episode_hours")


@pytest.mark.parametrize("step_minutes", [60, 15])
def test_hours_are_counted_from_the_first_row_whatever_the_stamps(step_minutes):
    """Hourly data stamped at :30 UTC (a UTC+5:30 zone) ages queues like whole hours."""
    p = _params(step_minutes, 1)
    hourly = synthetic_exo(1, 48, seed=2)
    misses, queues = [], []
    for shift_min in (0, 30):
        idx = index(48) + pd.Timedelta(minutes=shift_min)
        data = EnvData.from_arrays(idx, hourly, ["s0"]).at_step(step_minutes)
        sim = BatchSim(p, data, 1)
        sim.begin([0], [Window(0, 24 * p.steps_per_hour)])
        miss_gpu_h = 0.0
        for _ in range(24 * p.steps_per_hour):
            sim.set_action(np.full((1, p.n_actions_per_site), -1.0))  # run nothing
            sim.advance()
            miss_gpu_h += sim.values[0, :, kernel.Out.DEADLINE_MISS_GPU_H].sum()
        misses.append(miss_gpu_h)
        queues.append(sim.state.queue_gpu_h.copy())
    assert misses[0] > 1.0  # nothing ran: work missed its deadlines
    assert misses[1] == pytest.approx(misses[0], rel=1e-12)
    np.testing.assert_allclose(queues[1], queues[0], rtol=1e-12)


def test_the_initial_charge_is_drawn_by_the_start_hour():
    from gridrl.env import physics

    p60, p15 = (build_params(_bound_scenario(m, "rule")) for m in (60, 15))
    starts_h = np.array([0, 5, 17])
    soc60 = physics.initial_soc_kwh(p60, starts_h)
    np.testing.assert_array_equal(physics.initial_soc_kwh(p15, 4 * starts_h), soc60)
    assert len(np.unique(soc60.sum(1))) == len(starts_h)  # drawn, not a constant


def test_hourly_signals_become_step_signals_by_the_recorded_method():
    hourly = synthetic_exo(2, 48, seed=4)
    idx, steps = expand_exo(index(48), hourly, EXO_SIGNALS, 15)
    assert len(idx) == 4 * 48 and (np.diff(idx.asi8) == 15 * 60 * 10**9).all()
    by_hour = steps.reshape(48, 4, 2, -1)
    for name, method in clock.EXPANSION.items():
        col = by_hour[..., K[name]]
        if method == "held":
            np.testing.assert_array_equal(col, np.repeat(hourly[:, None, :, K[name]], 4, 1))
        elif method == "split":  # the hour's arrivals over its steps, none lost
            np.testing.assert_allclose(col.sum(1), hourly[..., K[name]], rtol=1e-15)
    # event windows: on in every step of an event hour, hours count down by the step
    on_h = kernel.event_on(hourly[..., K["dr_starts_in_h"]], hourly[..., K["dr_remaining_h"]])
    on_s = kernel.event_on(by_hour[..., K["dr_starts_in_h"]], by_hour[..., K["dr_remaining_h"]])
    np.testing.assert_array_equal(on_s, np.repeat(on_h[:, None], 4, 1))
    last = by_hour[:, 3, :, K["dr_remaining_h"]]  # the hour's last quarter
    np.testing.assert_allclose(last[on_h > 0], hourly[..., K["dr_remaining_h"]][on_h > 0]
                               - 0.75)
    ahead = (on_h == 0) & (hourly[..., K["dr_remaining_h"]] > 0)
    np.testing.assert_allclose(by_hour[:, 3, :, K["dr_starts_in_h"]][ahead],
                               hourly[..., K["dr_starts_in_h"]][ahead] - 0.75)
    data = EnvData.from_arrays(index(48), hourly, ["s0", "s1"]).at_step(30)
    assert data.steps == 96 and data.hours == 48.0 and data.step_minutes == 30
    assert data.provenance[-1]["methods"]["pv_kw"] == "held"
    assert data.provenance[-1]["methods"]["flexible_gpu_h"] == "split"


@pytest.mark.parametrize("step_minutes", [60, 30, 15])
@pytest.mark.parametrize("battery_control", ["rule", "setpoint"])
def test_energy_work_and_charge_are_conserved_at_every_step_length(step_minutes,
                                                                   battery_control):
    p = _params(step_minutes, 3, battery_control)
    pp = kernel.pack(p)
    rng = np.random.default_rng(step_minutes)
    hourly = synthetic_exo(3, 36, seed=step_minutes)
    hourly[..., K["headroom_kw"]] *= rng.choice([0.0, 0.3, 1.0, 5.0], size=hourly.shape[:2])
    hourly[..., K["flexible_gpu_h"]] *= rng.choice([0.0, 1.0, 4.0], size=hourly.shape[:2])
    hourly[..., K["outage_remaining_h"]] = hourly[..., K["headroom_kw"]] == 0.0
    exo = _steps(hourly, step_minutes)
    batch, dt = 3, p.step_h
    state = ref = core.reset(p, batch)
    held0 = state.work_gpu_h().sum(1)
    moved = np.zeros(batch)
    k = p.steps_per_hour
    for t in range(len(exo)):
        x = np.broadcast_to(exo[t], (batch, *exo[t].shape)).copy()
        act = rng.uniform(-1, 1, (batch, 3, p.n_actions_per_site))
        ends = (t + 1) % k == 0
        new, out = core.step(p, state, act, x, ends)
        ref, out_k = kernel.step(pp, ref, act, x, ends)
        for name in ("queue_gpu_h", "transit_gpu_h", "soc_kwh", "cap"):
            np.testing.assert_allclose(getattr(ref, name), getattr(new, name), rtol=1e-9,
                                       atol=1e-9)
        if not ends:  # no deadline passes inside an hour
            assert (out["deadline_miss_gpu_h"] == 0.0).all()
        np.testing.assert_allclose(out_k.values, out.values, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out_k.reward, out.reward, rtol=1e-9, atol=1e-9)
        # work: held + arrived + restart - done (fleet)
        moved += (out["arrived_gpu_h"] + out["restart_gpu_h"] - out["work_done_gpu_h"]).sum(1)
        np.testing.assert_allclose(new.work_gpu_h().sum(1), held0 + moved, rtol=1e-10,
                                   atol=1e-9)
        # energy balance of the step, in kWh = kW x step_h
        lhs = out["facility_kwh"] + out["battery_charge_kwh"] + out["export_kwh"]
        rhs = (out["grid_import_kwh"] + out["pv_kwh"] + out["wind_kwh"]
               + out["battery_discharge_kwh"] + out["backup_kwh"])
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(out["pv_kwh"], x[..., K["pv_kw"]] * dt, rtol=1e-15)
        pue = p.pue + p.pue_temp_slope_per_c * np.maximum(x[..., K["temp_c"]]
                                                          - p.pue_temp_threshold_c, 0)
        assert (out["facility_kwh"] >= (p.facility_fixed_kw + pue * p.gpus * p.gpu_idle_kw)
                * dt - 1e-9).all()
        # battery: the charge moves by the flows, within its power for the step
        np.testing.assert_allclose(new.soc_kwh, state.soc_kwh + p.battery_eta
                                   * out["battery_charge_kwh"] - out["battery_discharge_kwh"]
                                   / p.battery_eta, atol=1e-9)
        assert (out["battery_charge_kwh"] <= p.battery_power_kw * dt + 1e-9).all()
        assert (out["battery_discharge_kwh"] <= p.battery_power_kw * dt + 1e-9).all()
        assert (new.soc_kwh >= p.soc_min_kwh - 1e-9).all()
        assert (new.soc_kwh <= p.soc_max_kwh + 1e-9).all()
        # headroom is a power: import above head x dt is overdraw
        np.testing.assert_allclose(out["overdraw_kwh"], np.maximum(
            out["grid_import_kwh"] - x[..., K["headroom_kw"]] * dt, 0), atol=1e-8)
        assert (out["busy_gpus"] <= p.gpus + 1e-9).all()
        assert (out["backup_kwh"] <= p.backup_capacity_kw * dt + 1e-9).all()
        state = new


# KPIs a sub-hourly run must reproduce: flows summed over the hour, and deadline misses
# (deadlines fall at the ends of hours). Not in the list, and legitimately different
# when work waits: overdue and holding integrate a stock over the hour (work arriving
# through the hour waits less of it in finer steps; overdue work is counted from the
# hour's last step).
FLOW_KPIS = ("energy_kwh", "it_energy_kwh", "grid_import_kwh", "export_kwh", "carbon_kg",
             "cost", "gpu_rent_cost", "battery_degradation_cost", "renewable_share",
             "useful_gpu_h", "work_done_gpu_h", "arrived_gpu_h", "slo_violation_gpu_h",
             "deadline_miss_gpu_h",
             "inference_demand_gpu_h", "headroom_violation_h", "overdraw_kwh",
             "curtailed_kwh", "mean_cap", "leftover_gpu_h", "work_lost_gpu_h",
             "inference_routed_gpu_h", "backup_kwh", "backup_fuel_cost", "dr_event_h",
             "dr_compliant_h", "dr_shortfall_kwh", "dr_payment", "dr_penalty_cost",
             "hours")


def _run_held(p, hourly, run, cap, battery, step_minutes, hours):
    """Episode of ``hours`` with one action held all along; KPIs and the return."""
    exo = _steps(hourly, step_minutes)
    n = hourly.shape[1]
    act = core.normalise_action(p, np.full(n, run), np.full(n, cap), np.zeros(n),
                                np.zeros(n), np.full(n, battery) if p.battery_action else None)
    state = core.reset(p, 1)
    sums = np.zeros((n, len(core.OUTPUT_FIELDS)))
    ret = 0.0
    k = p.steps_per_hour
    for t in range(hours * k):
        state, out = core.step(p, state, act[None], exo[t][None], (t + 1) % k == 0)
        sums += out.values[0]
        ret += float(out.reward[0])
    kpis = episode_kpis(sums, hours, 0.0, state.work_gpu_h().sum(), p.step_h)
    return kpis, ret


@pytest.mark.parametrize("step_minutes", [30, 15])
@pytest.mark.parametrize("battery_control", ["rule", "setpoint"])
@pytest.mark.parametrize("cap", [1.0, 0.75, 0.6])
def test_sub_hourly_runs_reproduce_the_hourly_run(step_minutes, battery_control, cap):
    """With signals held over each hour and one action held all episode, 30- and
    15-minute steps give the hourly KPIs to 1e-9, for run-everything (with room on the
    grid and GPUs: every step's work runs within its step, as every hour's does in the
    hourly run) and run-nothing (any grid: outages, curtailment, demand-response events,
    batteries at their limits). Both are properties of the model: energy and work are
    kW x step_h and GPUs x step_h, and per-step battery limits add up to the hour's.
    The dispatch rule never discharges beyond the load nor charges beyond the surplus, so
    its battery may reach its limits inside an hour; a setpoint may (exporting in the
    first steps of the hour and importing once the battery is empty, which an hourly
    step nets out), so the setpoint runs use a battery whose charge stays inside its
    limits.

    Other actions legitimately differ: a share of the queue ``run < 1`` is taken four
    times an hour (compounding), work left waiting is taken earliest deadline first at
    each step, and migration sends its share per step; holding and overdue integrate the
    queue over the hour, which fills through the hour as work arrives (``FLOW_KPIS``).
    """
    hours = 48
    hourly = synthetic_exo(2, hours, seed=11)
    battery = BATTERY if battery_control == "rule" else BATTERY | {"capacity_kwh": 1000.0}
    p60 = _params(60, 2, battery_control, battery=battery, priced=True)
    ps = _params(step_minutes, 2, battery_control, battery=battery, priced=True)
    roomy = hourly.copy()
    roomy[..., K["headroom_kw"]] = 1e4  # no curtailment: every hour's work runs in it
    roomy[..., K["outage_remaining_h"]] = 0.0
    roomy[..., K["flexible_gpu_h"]] *= 0.5
    roomy[..., K["dr_limit_kw"]] = 0.5  # low event levels: a charging battery misses them
    cases = [(roomy, 1.0), (hourly, 0.0)]
    for exo, run in cases:
        for batt in (-0.7, 0.4):
            k60, r60 = _run_held(p60, exo, run, cap, batt, 60, hours)
            ks, rs = _run_held(ps, exo, run, cap, batt, step_minutes, hours)
            for name in FLOW_KPIS:
                np.testing.assert_allclose(ks[name], k60[name], rtol=1e-9, atol=1e-9,
                                           err_msg=f"{name}, run {run}")
            if run == 1.0:  # nothing waits: holding, overdue and the return agree too
                assert k60["holding_cost"] == pytest.approx(0.0, abs=1e-9)
                np.testing.assert_allclose(ks["holding_cost"], k60["holding_cost"], atol=1e-9)
                np.testing.assert_allclose(rs, r60, rtol=1e-9, atol=1e-9)
    # the cases test what they claim: work ran, events, curtailment and misses happened
    k60, _ = _run_held(p60, roomy, 1.0, cap, 0.4, 60, hours)
    assert k60["work_done_gpu_h"] > 10 and k60["leftover_gpu_h"] < 1e-9
    assert k60["gpu_rent_cost"] > 0 and k60["dr_payment"] > 0
    if battery_control == "setpoint":  # charging in events: import above the level
        assert k60["dr_penalty_cost"] > 0
    assert _run_held(p60, roomy, 1.0, cap, -0.7, 60, hours)[0]["battery_degradation_cost"] > 0
    k60, _ = _run_held(p60, hourly, 0.0, cap, -0.7, 60, hours)
    assert k60["dr_event_h"] > 0 and k60["curtailed_kwh"] + k60["overdraw_kwh"] > 0
    assert k60["deadline_miss_gpu_h"] > 10
    assert k60["holding_cost"] > 0  # waiting work is held at a price


# --------------------------------------------------------------------------- the LP


@pytest.mark.parametrize("step_minutes", [60, 30, 15])
def test_forecast_view_reads_an_exact_cube_exactly_at_every_phase(step_minutes):
    """An exact hourly cube (P50 = the true hour ahead) read through the step rows gives
    the true step rows at every phase of the hour and every step ahead."""
    from types import SimpleNamespace

    from gridrl.agents.policy import ForecastView

    hours = 48
    hourly = synthetic_exo(1, hours, seed=3)
    horizons_h = [1, 2, 3]
    signals = ["carbon_g_per_kwh", "price_per_mwh"]
    vals = np.zeros((hours, 1, len(signals), len(horizons_h), 3))
    for j, h in enumerate(horizons_h):
        ahead = np.minimum(np.arange(hours) + h, hours - 1)
        for s, name in enumerate(signals):
            vals[:, 0, s, j, :] = hourly[ahead, 0, K[name]][:, None]
    cube = SimpleNamespace(values=vals, index=index(hours), sites=["s0"], signals=signals,
                           horizons_h=horizons_h, quantiles=[0.1, 0.5, 0.9],
                           provenance={}, mode="exact")
    data = EnvData.from_arrays(index(hours), hourly, ["s0"], cube).at_step(step_minutes)
    k = 60 // step_minutes
    steps = 3 * k + 1
    rows = np.arange(4 * k, 6 * k)  # every phase of two hours
    p50 = ForecastView(data, "exact").p50(rows, steps)[:, :, 0]
    truth = data.exo[rows[:, None] + np.arange(steps)[None], 0]
    for name in signals:
        np.testing.assert_array_equal(p50[..., K[name]], truth[..., K[name]])


def _tiny_lp_case(step_minutes: int, full_model: bool):
    """The brute-force case of ``test_agents_lp`` at ``step_minutes``: one site, three
    hours, 10 GPU-h due within two hours, carbon 300 / 100 / 130-200 g/kWh."""
    from test_agents_lp import _tiny_brute_force_case

    sc, x = _tiny_brute_force_case(0.0, 0.0, full_model)
    sc = sc.model_copy(update={"env": sc.env.model_copy(update={"step_minutes": step_minutes})})
    return sc, x


@pytest.mark.parametrize("full_model", [False, True])
def test_lp_equals_brute_force_at_15_minutes(full_model):
    """Every sequence of the three-level grid held for each hour (729) run through the
    15-minute env: the best return equals the 15-minute LP, which equals the hourly LP
    (nothing in the case is priced inside the hour: no holding, no rent)."""
    import itertools

    from gridrl.agents.lp import LPInputs, LPStructure, Solver
    from gridrl.env import physics
    from gridrl.env.batch import BatchSim
    from gridrl.env.episodes import Window

    sc60, x = _tiny_lp_case(60, full_model)
    sc15, _ = _tiny_lp_case(15, full_model)
    p60, p15 = build_params(sc60), build_params(sc15)
    data = EnvData.from_arrays(index(3), x, ["a"]).at_step(15)

    def lp(p, exo):
        st = core.reset(p, 1)
        return Solver(LPStructure(p, len(exo))).solve(LPInputs(
            exo, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
            physics.terminal_value_per_gpu_h(p, exo)))

    sol15, sol60 = lp(p15, data.exo), lp(p60, x)
    assert sol15.J == pytest.approx(sol60.J, rel=1e-9, abs=1e-9)
    levels = np.array([-1.0, 0.0, 1.0])
    per_hour = [(r, c) for r in levels for c in levels]
    seqs = list(itertools.product(per_hour, repeat=3))
    sim = BatchSim(p15, data, len(seqs))
    sim.begin(list(range(len(seqs))), [Window(0, 12)] * len(seqs))
    for t in range(12):
        a = np.zeros((len(seqs), 4))
        a[:, 0] = [s[t // 4][0] for s in seqs]
        a[:, 1] = [s[t // 4][1] for s in seqs]
        a[:, 3] = -1.0
        sim.set_action(a)
        sim.advance()
    assert sol15.J == pytest.approx(sim.returns.max(), rel=1e-9, abs=1e-9)
    # the plan's KPIs are in the env's units: 10 GPU-h done over the three hours
    done = sol15.values[..., kernel.Out.WORK_DONE_GPU_H].sum()
    assert done == pytest.approx(10.0, abs=1e-9)


@pytest.mark.parametrize("start", [1, 2, 3])
def test_the_priced_lp_bounds_brute_force_from_mid_hour_at_15_minutes(start):
    """Rent, holding, energy cost and a demand-response event (announced, in the last
    hour, level 3 kW) priced, the episode starting ``start`` steps into its hour (the
    LP's ``phase``): the 15-minute LP is at least the best of the 729 hour-held grid
    sequences, and close to it (it may also act per step). An LP that charged holding
    per hour at each step falls below them."""
    import itertools

    from test_agents_lp import _tiny_brute_force_case

    from gridrl.agents.lp import LPInputs, LPStructure, Solver
    from gridrl.env import physics
    from gridrl.env.batch import BatchSim
    from gridrl.env.episodes import Window

    sc, x = _tiny_brute_force_case(0.05, 0.05, True)
    raw = sc.model_dump(mode="json")
    raw["sites"][0]["demand_response"] = {"payment_per_event_h": 0.5, "penalty_per_kwh": 0.4}
    raw["env"]["step_minutes"] = 15
    raw["reward"]["cost_per_unit"] = 1.0
    p = build_params(type(sc).model_validate(raw))
    x[:, 0, K["dr_starts_in_h"]] = [2.0, 1.0, 0.0]
    x[:, 0, K["dr_remaining_h"]] = 1.0
    x[:, 0, K["dr_limit_kw"]] = 3.0
    data = EnvData.from_arrays(index(3), x, ["a"]).at_step(15)
    exo, st = data.exo[start:], core.reset(p, 1)
    lp_j = Solver(LPStructure(p, len(exo))).solve(LPInputs(
        exo, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
        physics.terminal_value_per_gpu_h(p, exo), phase=start)).J
    levels = (-1.0, 0.0, 1.0)
    seqs = np.array(list(itertools.product(itertools.product(levels, levels), repeat=3)))
    sim = BatchSim(p, data, len(seqs))
    sim.begin(list(range(len(seqs))), [Window(start, len(exo))] * len(seqs))
    for t in range(start, data.steps):
        a = np.zeros((len(seqs), 4))
        a[:, :2] = seqs[:, t // 4]  # run share and cap held for each hour
        a[:, 3] = -1.0
        sim.set_action(a)
        sim.advance()
    best = sim.returns.max()
    # holding, event payment and penalty are in play
    assert sim.sums[..., kernel.Out.HOLDING_COST].max() > 0.0
    assert sim.sums[..., kernel.Out.DR_PENALTY_COST].max() > 0.0
    assert sim.sums[sim.returns.argmax(), 0, kernel.Out.DR_PAYMENT] > 0.0
    assert lp_j >= best - 1e-9
    assert lp_j - best < 0.01  # per-step, mixed-cap plans gain a little (returns ~0.6-1.8)


def test_the_lp_refuses_a_phase_outside_the_hour():
    from gridrl.agents.lp import LPInputs, LPStructure, Solver
    from gridrl.env import physics

    sc, x = _tiny_lp_case(15, False)
    p = build_params(sc)
    exo = EnvData.from_arrays(index(3), x, ["a"]).at_step(15).exo
    st = core.reset(p, 1)
    for phase in (4, -1):
        with pytest.raises(ClockError, match=rf"LPInputs.phase = {phase}: expected 0 .. 3"):
            Solver(LPStructure(p, len(exo))).solve(LPInputs(
                exo, st.queue_gpu_h[0], st.transit_gpu_h[0], st.soc_kwh[0],
                physics.terminal_value_per_gpu_h(p, exo), phase=phase))


def _bound_scenario(step_minutes: int, battery_control: str):
    """The two priced sites of ``test_agents_bound`` (holding at both, standby sets,
    migration and inference routing) over 12 hours at ``step_minutes``."""
    return scenario(**priced_pair("s1"), env={
        "episode_hours": 12, "battery_control": battery_control,
        "inference_remote_fraction_max": 0.3, "step_minutes": step_minutes})


@pytest.mark.parametrize("battery_control", ["setpoint", "rule"])
def test_the_lp_is_still_a_bound_at_15_minutes(battery_control):
    """No policy beats the 15-minute LP on random episodes: heuristics, MPC and 128
    random action sequences per episode, on the 15-minute env."""
    from agents_helpers import bound_and_random_returns

    from gridrl.agents.evaluate import evaluate, make_setup, select_windows
    from gridrl.agents.registry import make_policy

    sc = _bound_scenario(15, battery_control)
    exo = synthetic_exo(2, 24 * 14, seed=1)
    exo[..., K["flexible_gpu_h"]] *= 1.5
    exo[::4, 1, K["inference_gpus"]] = 9.5
    setup = make_setup(sc, data=EnvData.from_arrays(index(24 * 14), exo, ["a", "s1"]))
    assert setup.data.step_minutes == 15
    tol = 1e-7
    bound = evaluate("lp_bound", setup, episodes=3, seed=3)
    for name in ("run_now", "headroom_guard", "dr_cap", "carbon_aware"):
        table = evaluate(make_policy(name), setup, episodes=3, seed=3)
        assert (table["J"].to_numpy() <= bound["J"].to_numpy()
                + tol * np.abs(bound["J"].to_numpy())).all(), name
    mpc = evaluate(make_policy("mpc", horizon_h=4), setup, episodes=1, seed=3)
    assert mpc["J"].iloc[0] <= bound["J"].iloc[0] + tol * abs(bound["J"].iloc[0])
    rng = np.random.default_rng(0)
    for w in select_windows(setup.windows, 2, seed=11):
        assert w.steps == 48
        bound_j, returns = bound_and_random_returns(setup.params, setup.data, w, 128, rng)
        assert returns.max() <= bound_j + tol * abs(bound_j)


def test_carbon_aware_decides_alike_at_15_and_60_minutes_on_hourly_inputs():
    """Hourly-constant inputs: the window reaches the same deadlines (slack buckets are
    hours) at both step lengths, so the same work runs in the same hours. (Overdue work
    waits one step before it runs: a quarter hour at 15 minutes, so J differs by the
    overdue term.)"""
    from gridrl.agents.evaluate import evaluate, make_setup
    from gridrl.agents.registry import make_policy

    exo = synthetic_exo(2, 24 * 14, seed=1)
    exo[..., K["flexible_gpu_h"]] *= 1.5
    kpis = {}
    for step_minutes in (60, 15):
        setup = make_setup(_bound_scenario(step_minutes, "setpoint"),
                           data=EnvData.from_arrays(index(24 * 14), exo, ["a", "s1"]))
        kpis[step_minutes] = evaluate(make_policy("carbon_aware"), setup, episodes=4,
                                      seed=3).select_dtypes("number").mean()
    for kpi, rel in (("work_done_gpu_h", 1e-9), ("carbon_kg", 1e-3),
                     ("energy_kwh", 1e-3), ("deadline_miss_gpu_h", 1e-2)):
        assert kpis[15][kpi] == pytest.approx(kpis[60][kpi], rel=rel), kpi


# --------------------------------------------------------------------------- deployment


def test_bundles_record_the_step_and_the_slurm_loop_runs_at_it(tmp_path):
    """A policy trained at 15-minute steps exports ``step_minutes: 15``; the Slurm adapter
    refuses a SITES.yaml whose decision interval is not that step, names the key, and
    accepts 900 s."""
    from export_helpers import fixed_action_policy_dir, geo_env_data

    from gridrl.env.gym_env import GridEnv
    from gridrl.export.bundle import export_bundle
    from gridrl.export.runtime import PolicyRuntime
    from gridrl.integrations.replay import ReplayError, prepare
    from gridrl.integrations.slurm import SlurmAdapter
    from gridrl.integrations.slurm_sites import SitesConfig, SitesConfigError

    sc, data = geo_env_data(2)
    sc15 = sc.model_copy(update={"env": sc.env.model_copy(update={"step_minutes": 15})})
    env = GridEnv(sc15, data=data)
    assert env.data.step_minutes == 15 and env.unwrapped.sim.params.step_h == 0.25
    export_bundle(fixed_action_policy_dir(tmp_path / "p", env, np.zeros(8)), tmp_path / "b")
    runtime = PolicyRuntime(tmp_path / "b")
    assert runtime.manifest.step_minutes == 15
    sites = [{"name": n, "partitions": [f"p{i}"], "gpus": 8}
             for i, n in enumerate(runtime.sites)]
    hourly = SitesConfig.model_validate({"sites": sites, "decision_interval_s": 3600})
    with pytest.raises(SitesConfigError, match=r"decision_interval_s = 3600 s.*every 15 min"):
        SlurmAdapter(runtime, hourly, dry_run=True)
    quarter = SitesConfig.model_validate({"sites": sites, "decision_interval_s": 900})
    assert SlurmAdapter(runtime, quarter, dry_run=True).cfg.decision_interval_s == 900
    # the job-level replay steps hours: it refuses the bundle rather than replay it hourly
    with pytest.raises(ReplayError, match=r"step_minutes = 15.*hourly steps only"):
        prepare(tmp_path / "b", tmp_path / "pods.csv")
