"""Announced grid events: demand-response events (seeded and from files), outages with
notice, what a site sees of them, and MPC complying with an event announced an hour
ahead on congested1_dr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridrl.agents.evaluate import evaluate_detailed, make_setup
from gridrl.agents.registry import make_policy
from gridrl.agents.train import env_inputs
from gridrl.data.sources.events import (
    DemandResponseError,
    GridEvent,
    announced_view,
    drawn_dr_events,
    read_dr_events,
)
from gridrl.data.sources.grid import outage_events
from gridrl.data.sources.rng import stream_rng
from gridrl.env import physics
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import Exo, Out
from gridrl.scenario import DemandResponseConfig, EventProcess, load_scenario

CONGESTED_DR = Path(__file__).resolve().parents[1] / "envs" / "congested1_dr.yaml"
INDEX = pd.date_range("2021-07-01", periods=24 * 10, freq="h", tz="UTC")


def test_announced_view_shows_the_next_event_from_its_announcement():
    # announced at 2 for [5, 8), level 3; an outage without notice over [10, 12)
    dr = announced_view([GridEvent(2, 5, 8, 3.0)], 12)
    np.testing.assert_array_equal(dr[:, 0], [0, 0, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dr[:, 1], [0, 0, 3, 3, 3, 3, 2, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(dr[:, 2], [0, 0, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0])
    out = announced_view([GridEvent(10, 10, 12, end_known=False)], 12)
    np.testing.assert_array_equal(out[:, 1], [0] * 10 + [1, 1])  # its end is not announced
    # two known events: the earlier start is shown until it ends, then the later one
    both = announced_view([GridEvent(0, 6, 8, 5.0), GridEvent(1, 3, 4, 2.0)], 10)
    np.testing.assert_array_equal(both[:, 2], [5, 2, 2, 2, 5, 5, 5, 5, 0, 0])


def test_planner_sees_only_what_is_announced():
    exo = np.zeros((1, 1, len(Exo)))
    exo[0, 0, [Exo.DR_STARTS_IN_H, Exo.DR_REMAINING_H, Exo.DR_LIMIT_KW]] = [1, 3, 50.0]
    exo[0, 0, [Exo.OUTAGE_STARTS_IN_H, Exo.OUTAGE_REMAINING_H]] = [2, 2]
    plan = np.zeros((1, 6, 1, len(Exo)))
    plan[..., Exo.HEADROOM_KW] = 100.0
    plan[:, 5, 0, Exo.DR_REMAINING_H] = 9.0  # a later event the plan rows must not show
    got = physics.announced_events(exo, plan)[0, :, 0]
    on = (got[:, Exo.DR_STARTS_IN_H] == 0) & (got[:, Exo.DR_REMAINING_H] > 0)
    np.testing.assert_array_equal(on, [False, True, True, True, False, False])
    np.testing.assert_array_equal(got[:, Exo.DR_LIMIT_KW], [50, 50, 50, 50, 0, 0])
    np.testing.assert_array_equal(got[:, Exo.HEADROOM_KW], [100, 100, 0, 0, 100, 100])


def test_drawn_events_are_seeded_inside_their_window_and_never_overlap():
    cfg = DemandResponseConfig(rate_per_year=300.0, limit_kw=40.0, start_hour_local_min=13,
                               start_hour_local_max=16, notice_h=[24, 0],
                               notice_shares=[0.5, 0.5])
    drawn = drawn_dr_events(cfg, INDEX, -5.0, stream_rng(1, "s", "demand_response"))
    a = drawn.events
    b = drawn_dr_events(cfg, INDEX, -5.0, stream_rng(1, "s", "demand_response")).events
    assert a == b and len(a) > 2
    # 300 a year over 10 days draws ~8: at this rate some overlap and are counted
    assert drawn.dropped_overlap > 0
    assert drawn == drawn_dr_events(cfg, INDEX, -5.0, stream_rng(1, "s", "demand_response"))
    local_hour = (np.array([e.start for e in a]) - 5) % 24
    assert ((local_hour >= 13) & (local_hour <= 16)).all()
    assert all(e1.end <= e2.start for e1, e2 in zip(a, a[1:], strict=False))
    assert {e.start - e.announced for e in a} <= {0, 24}
    assert all(2 <= e.end - e.start <= 4 and e.limit_kw == 40.0 for e in a)


def test_outages_with_notice_are_announced_and_the_rest_are_not():
    proc = EventProcess(rate_per_year=400.0, mean_duration_h=3.0, planned_fraction=0.5,
                        planned_notice_h=48)
    n = 24 * 60
    covered, events = outage_events(proc, n, stream_rng(2, "s", "outage"),
                                     stream_rng(2, "s", "outage_notice"))
    planned = [e for e in events if e.end_known]
    assert planned and len(planned) < len(events)
    assert all(e.start - e.announced == 48 for e in planned)
    assert all(e.start == e.announced for e in events if not e.end_known)
    hours = np.zeros(n, dtype=bool)
    for e in events:
        hours[e.start:e.end] = True
    np.testing.assert_array_equal(hours, covered)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "events.csv"
    path.write_text(text)
    return path


def test_event_file_gives_limits_and_shed_requests(tmp_path):
    path = _write(tmp_path, (
        "dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw,dr_shed_kw,dr_baseline_kw\n"
        "a,2021-07-02T15:00:00Z,2021-07-02T18:00:00Z,24,1500,,\n"
        "b,2021-07-03T14:00:00+00:00,2021-07-03T16:00:00+00:00,1,,500,2600\n"))
    a, b = read_dr_events(path, INDEX)
    assert (a.announced, a.start, a.end, a.limit_kw) == (15, 39, 42, 1500.0)
    assert (b.announced, b.start, b.end, b.limit_kw) == (61, 62, 64, 2100.0)


@pytest.mark.parametrize("text, expect", [
    ("dr_event_id,dr_start,dr_end,dr_limit_kw\na,2021-07-02T15:00Z,2021-07-02T18:00Z,1\n",
     "missing column(s) ['dr_notice_h']"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw\n"
     "a,2021-07-02T15:30Z,2021-07-02T18:00Z,1,5\n", "row 2, column 'dr_start'"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw\n"
     "a,2021-07-02 15:00,2021-07-02 18:00,1,5\n", "with a UTC offset"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw\n"
     "a,2021-07-02T15:00Z,2021-07-02T15:00Z,1,5\n", "row 2: dr_end"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw\n"
     "a,2021-07-02T15:00Z,2021-07-02T18:00Z,1,5\nb,2021-07-02T17:00Z,2021-07-02T19:00Z,1,5\n",
     "rows 2 and 3 overlap"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_limit_kw\n"
     "a,2021-07-02T15:00Z,2021-07-02T18:00Z,-1,5\n", "row 2, column 'dr_notice_h'"),
    ("dr_event_id,dr_start,dr_end,dr_notice_h,dr_shed_kw\n"
     "a,2021-07-02T15:00Z,2021-07-02T18:00Z,1,5\n", "'dr_shed_kw' with 'dr_baseline_kw'"),
])
def test_bad_event_files_are_refused_naming_the_place(tmp_path, text, expect):
    path = _write(tmp_path, text)
    with pytest.raises(DemandResponseError) as err:
        read_dr_events(path, INDEX)
    assert expect in str(err.value) and "events.csv" in str(err.value)


@pytest.fixture(scope="module")
def congested_dr():
    sc = load_scenario(CONGESTED_DR)
    # persistence forecasts: the planner learns of events only when they are announced
    return sc, env_inputs(CONGESTED_DR, "persistence", None)


def test_mpc_complies_with_an_event_announced_an_hour_ahead(congested_dr):
    sc, data = congested_dr
    setup = make_setup(sc, data=data)
    week = setup.windows.fixed[6]  # late June: hot afternoons
    start = week.start + 2 * 24 + 19  # 15:00 local (UTC-5) on the third day
    level_kw = sc.sites[0].demand_response.limit_kw  # the programme's level
    exo = data.exo.copy()
    view = announced_view([GridEvent(start - 1, start, start + 3, level_kw)], len(exo))
    exo[:, 0, Exo.DR_STARTS_IN_H:Exo.DR_LIMIT_KW + 1] = view
    with_event = EnvData.from_arrays(data.index, exo, data.site_names, data.forecast)
    setup = make_setup(sc, data=with_event)
    window = slice(start - week.start, start - week.start + 3)
    traces = {}
    for name in ("run_now", "dr_cap", "mpc"):
        res = evaluate_detailed(make_policy(name), setup, starts=[week.start],
                                trace_episodes=(0,))
        traces[name] = res.traces[0].values[window, 0]
    # the event binds: run as usual, the site imports above the level
    assert (traces["run_now"][:, Out.GRID_IMPORT_KWH] > level_kw + 100.0).all()
    mpc = traces["mpc"]
    assert (mpc[:, Out.DR_EVENT_H] == 1.0).all()
    assert (mpc[:, Out.GRID_IMPORT_KWH] <= level_kw + 1e-6).all(), mpc[:, Out.GRID_IMPORT_KWH]
    assert (mpc[:, Out.DR_SHORTFALL_KWH] <= 1e-6).all()
    # the rule that caps to the level while the event lasts complies too
    assert (traces["dr_cap"][:, Out.DR_SHORTFALL_KWH] <= 1e-6).all()


def test_backup_that_starts_after_the_ups_runs_out_is_refused():
    from env_helpers import scenario, site

    from gridrl.scenario import ScenarioError

    with pytest.raises((ScenarioError, ValueError)) as err:
        scenario(sites=[site("a", backup={"capacity_kw": 5.0, "start_s": 600.0,
                                          "ups_ride_through_s": 300.0})])
    assert "ups_ride_through_s" in str(err.value) and "backup" in str(err.value)


def test_standby_sets_run_only_in_outage_hours():
    """Headroom 0 without an outage (a saturated feeder) is curtailed, not carried by the
    sets; the same hour flagged as an outage is carried by them (oracle and kernel)."""
    from env_helpers import scenario, site, synthetic_exo

    from gridrl.env import core, kernel
    from gridrl.env.params import build_params

    p = build_params(scenario(sites=[site("a", backup={"capacity_kw": 50.0})]))
    x = synthetic_exo(1, 2, seed=3)
    x[..., Exo.HEADROOM_KW] = 0.0
    x[..., Exo.OUTAGE_STARTS_IN_H] = 0.0
    x[..., Exo.OUTAGE_REMAINING_H] = [[0.0], [1.0]]  # hour 0 saturated, hour 1 an outage
    x[..., Exo.PV_KW] = x[..., Exo.WIND_KW] = 0.0
    act = np.ones((1, 1, p.n_actions_per_site))
    act[..., 3] = -1.0
    for stepper in (core.step, kernel.step):
        outs = [stepper(p, core.reset(p, 1), act, x[t][None])[1].values[0, 0] for t in (0, 1)]
        saturated, outage = outs
        assert saturated[Out.BACKUP_KWH] == 0.0
        assert saturated[Out.CURTAILED_KWH] > 0.0
        assert outage[Out.BACKUP_KWH] > 0.0
        assert outage[Out.BACKUP_KWH] == pytest.approx(outage[Out.FACILITY_KWH])
        assert outage[Out.BACKUP_FUEL_COST] == pytest.approx(
            outage[Out.BACKUP_KWH] * p.backup_fuel_cost_per_kwh[0])


@pytest.mark.parametrize("name", ["geo3", "congested1", "congested1_dr", "multiregion"])
def test_shipped_data_centers_carry_their_peak_load_on_standby_sets(shared_data, name):
    """Every shipped data center's sets are rated at or above its peak facility load:
    every GPU busy uncapped at the PUE of the year's hottest hour, plus the fixed
    overhead."""
    from gridrl.env.params import build_params

    path = CONGESTED_DR.parent / f"{name}.yaml"
    p = build_params(load_scenario(path))
    temp_c = env_inputs(path, "persistence", None).exo[..., Exo.TEMP_C].max(0)
    pue = p.pue + p.pue_temp_slope_per_c * np.maximum(temp_c - p.pue_temp_threshold_c, 0.0)
    busy_kw = p.gpu_board_max_kw + p.host_busy_kw_per_gpu
    peak_kw = p.facility_fixed_kw + pue * p.gpus * busy_kw
    assert (p.backup_capacity_kw >= peak_kw).all(), (p.backup_capacity_kw, peak_kw)
    rounding_kw = 200.0  # ratings are rounded up to 100 kW; the same sets at every site
    assert (p.backup_capacity_kw < peak_kw + rounding_kw).all()  # not grossly oversized


def _run_now_year(sc, data) -> np.ndarray:
    """``[T, N, outputs]`` of a year run as it comes (every queued GPU-h requested,
    uncapped, nothing migrated), compiled kernel."""
    from gridrl.env import core, kernel
    from gridrl.env.kernel import Act
    from gridrl.env.params import build_params

    p = build_params(sc)
    pp = kernel.pack(p)
    act = np.zeros((1, p.n_sites, p.n_actions_per_site))
    act[..., Act.RUN] = act[..., Act.CAP] = 1.0
    act[..., Act.MIGRATE] = -1.0
    state = core.reset(p, 1)
    values = []
    for x in data.exo:
        state, out = kernel.step(pp, state, act, x[None])
        values.append(out.values[0])
    return np.asarray(values)


def test_ignoring_demand_response_events_never_pays(congested_dr):
    """congested1_dr's terms: the payment is the cited capacity price over the event
    hours the draw expects, and the penalty on the committed shed exceeds the payment,
    so a site that runs through every event pays more in penalties than it is paid."""
    sc, data = congested_dr
    dr = sc.sites[0].demand_response
    expected_h = dr.rate_per_year * (dr.duration_h_min + dr.duration_h_max) / 2
    assert expected_h == 72.0
    committed_kw = 4643.0 - dr.limit_kw  # the source's mean import (training weeks) less the level
    capacity_per_mw_year = 269.92 * 365  # PJM 2025/26, USD/MW-day (the source)
    assert dr.payment_per_event_h * expected_h == pytest.approx(
        committed_kw / 1000.0 * capacity_per_mw_year, rel=0.01)
    assert dr.penalty_per_kwh > dr.payment_per_event_h / committed_kw
    v = _run_now_year(sc, data)[:, 0]
    on = v[:, Out.DR_EVENT_H] > 0
    assert on.sum() > 0
    # a site running as usual imports above the level by more, on average over the
    # year's event hours, than the payment buys
    assert v[on, Out.DR_SHORTFALL_KWH].mean() * dr.penalty_per_kwh > dr.payment_per_event_h
    assert v[:, Out.DR_PENALTY_COST].sum() > v[:, Out.DR_PAYMENT].sum()


def test_drawn_events_need_their_level():
    with pytest.raises(ValueError) as err:
        DemandResponseConfig(rate_per_year=12.0)
    assert "limit_kw" in str(err.value) and "rate_per_year" in str(err.value)
    assert DemandResponseConfig(file="events.csv").limit_kw is None  # a file gives levels
