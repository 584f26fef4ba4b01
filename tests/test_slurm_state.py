"""The Slurm adapter's own records and tick logic, without a cluster: records checked
against the queue, decisions that stand for one step, the safe default, the state folder's
safety, and the checks of signal inputs."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest
import yaml
from slurm_helpers import NOW
from slurm_helpers import pending_job as _job

from gridrl.export.manifest import ObservationField
from gridrl.integrations.slurm_observation import ObservationError, raw_observation
from gridrl.integrations.slurm_plan import (
    commands_for,
    managed_jobs,
    plan_decisions,
    reconcile,
    record_for,
    safe_plans,
)
from gridrl.integrations.slurm_sites import SitesConfig, SitesConfigError, load_sites
from gridrl.integrations.slurm_state import AdapterState, JobRecord, StateError, job_key

HOUR_S = 3600.0


def _cfg(**kw) -> SitesConfig:
    base = {
        "sites": [
            {"name": "a", "partitions": ["pa"], "gpus": 8},
            {"name": "b", "partitions": ["pb"], "gpus": 8},
        ]
    }
    base.update(kw)
    return SitesConfig.model_validate(base)


def _decisions(run_a=1.0, migrate_a=0.0, migrate_b=0.0, cap=0.8):
    return [
        {"site": s, "run_share": r, "power_cap_fraction": cap, "route_weight": 0.5,
         "migrate_share": m}
        for s, r, m in (("a", run_a, migrate_a), ("b", 1.0, migrate_b))
    ]  # fmt: skip


def _tick(jobs, records, cfg, now_s, decisions):
    """One adapter tick as pure logic: plans, commands and the records after them."""
    records, notes = reconcile(records, jobs, cfg, now_s)
    managed = managed_jobs(jobs, cfg, now_s, records)
    by_id = {m.job.job_id: m for m in managed}
    plans = plan_decisions(managed, decisions, cfg)
    after = dict(records)
    for p in plans:
        p.commands = commands_for(p, by_id[p.job_id], cfg)
        rec = record_for(p, by_id[p.job_id], cfg, now_s)
        if rec is not None:
            after[rec.key] = rec
    return plans, after, notes


def _as_slurm_shows(jobs, plans, cfg, now_s):
    """The jobs as squeue shows them once the plans' commands ran."""
    by_id = {p.job_id: p for p in plans}
    out = []
    for j in jobs:
        p = by_id.get(j.job_id)
        if p is None or p.action in ("wait", "keep"):
            out.append(j)
            continue
        if p.action in ("defer", "move"):
            hold = cfg.defer_mode == "hold"
            j = replace(
                j,
                partition=p.partition,
                reason="JobHeldUser" if hold else "BeginTime",
                eligible_time=j.eligible_time if hold else now_s + cfg.decision_interval_s + 1,
            )
        else:
            j = replace(j, reason="Priority", eligible_time=min(j.eligible_time, now_s))
        out.append(replace(j, admin_comment=f"gridrl.power_cap={p.power_cap_fraction:.3f}"))
    return out


@pytest.mark.parametrize("mode", ["start_time", "hold"])
def test_a_second_tick_within_the_step_issues_nothing(mode):
    cfg = _cfg(defer_mode=mode)
    jobs = [_job(i, deadline_h=3 + i) for i in range(1, 9)]
    decisions = _decisions(run_a=0.5, migrate_a=0.5)
    plans, records, _ = _tick(jobs, {}, cfg, NOW, decisions)
    assert {p.action for p in plans} == {"run", "defer", "move"}
    assert sum(len(p.commands) for p in plans) > 0
    shown = _as_slurm_shows(jobs, plans, cfg, NOW)
    # same inputs 10 min later, and a policy that would send everything back: nothing moves
    for later, dec in ((NOW + 600, decisions), (NOW + 1800, _decisions(migrate_b=1.0))):
        plans2, records2, notes = _tick(shown, records, cfg, later, dec)
        assert notes == []
        assert {p.action for p in plans2} == {"wait"}
        assert [p.commands for p in plans2] == [[]] * len(plans2)
        assert records2 == records
    # one step later the adapter decides again: its deferrals roll, moved jobs may move
    plans3, _, _ = _tick(shown, records, cfg, NOW + HOUR_S, _decisions(run_a=1.0))
    assert "wait" not in {p.action for p in plans3}
    released = [p for p in plans3 if p.action == "run" and p.commands]
    assert released  # its own deferrals, and only those, are released
    deferred = {p.job_id for p in plans if p.action != "run"}
    for p in released:
        assert p.job_id in deferred
        verbs = [c[1] for c in p.commands]
        assert ("release" in verbs) == (mode == "hold")


def test_new_arrivals_are_decided_while_earlier_decisions_stand():
    cfg = _cfg()
    jobs = [_job(1, deadline_h=5), _job(2, deadline_h=6)]
    plans, records, _ = _tick(jobs, {}, cfg, NOW, _decisions(run_a=0.0))
    shown = [*_as_slurm_shows(jobs, plans, cfg, NOW), _job(3, deadline_h=7, submit_time=NOW)]
    plans2, _, _ = _tick(shown, records, cfg, NOW + 600, _decisions(run_a=0.0))
    by_id = {p.job_id: p for p in plans2}
    assert by_id[1].action == by_id[2].action == "wait"
    assert by_id[3].action == "defer" and by_id[3].commands


def test_a_standing_deferral_is_released_when_the_deadline_requires():
    cfg = _cfg()
    jobs = [_job(1, deadline_h=5)]
    plans, records, _ = _tick(jobs, {}, cfg, NOW, _decisions(run_a=0.0))
    (shown,) = _as_slurm_shows(jobs, plans, cfg, NOW)
    # the owner brought the deadline forward: 1 h 30 min left for a 1 h job
    shown = replace(shown, deadline=NOW + 600 + 1.5 * HOUR_S)
    (plan,) = _tick([shown], records, cfg, NOW + 600, _decisions(run_a=0.0))[0]
    assert plan.action == "run"
    assert plan.commands == [["scontrol", "update", "JobId=1", "StartTime=now"]]


def test_reconcile_drops_what_someone_else_changed():
    cfg = _cfg(defer_mode="hold")
    rec = JobRecord(1, NOW - 600, NOW - 600, deferred="hold", power_cap_fraction=0.8)
    held = _job(1, reason="JobHeldUser")
    kept, notes = reconcile({rec.key: rec}, [held], cfg, NOW)
    assert kept == {rec.key: rec} and notes == []
    # an administrator held it on top: no longer the adapter's to release
    kept, notes = reconcile({rec.key: rec}, [replace(held, reason="JobHeldAdmin")], cfg, NOW)
    assert kept[rec.key].deferred is None and "administrator" in notes[0]
    # the owner released it
    kept, notes = reconcile({rec.key: rec}, [replace(held, reason="Priority")], cfg, NOW)
    assert kept[rec.key].deferred is None and "no longer held" in notes[0]
    # the job id was reused by a new job: the record is not about it
    kept, _ = reconcile({rec.key: rec}, [replace(held, submit_time=NOW - 5)], cfg, NOW)
    assert kept == {}
    # start_time: the owner moved the begin time; the deferral is not the adapter's
    cfg = _cfg()
    rec = JobRecord(1, NOW - 600, NOW - 600, deferred="start_time", deferred_until_s=NOW + 3000)
    begin = _job(1, reason="BeginTime", eligible_time=NOW + 3000 + 1)
    assert reconcile({rec.key: rec}, [begin], cfg, NOW)[0][rec.key] == rec
    changed = replace(begin, eligible_time=NOW + 9 * HOUR_S)
    kept, notes = reconcile({rec.key: rec}, [changed], cfg, NOW)
    assert kept[rec.key].deferred is None and "not the one the adapter set" in notes[0]
    # a passed begin time ends the deferral quietly
    kept, notes = reconcile({rec.key: rec}, [begin], cfg, NOW + 3001)
    assert kept[rec.key].deferred is None and notes == []
    # moved elsewhere by someone else
    moved = JobRecord(1, NOW - 600, NOW - 600, moved_to="pb", moved_from="pa", moved_at_s=NOW)
    kept, notes = reconcile({moved.key: moved}, [_job(1, partition="pa")], cfg, NOW)
    assert kept[moved.key].moved_to is None and "in partition pa, not in pb" in notes[0]


def test_safe_default_runs_the_queue_and_releases_only_own_deferrals_when_due():
    cfg = _cfg()
    due = JobRecord(1, NOW - 600, NOW - 2 * HOUR_S, deferred="start_time",
                    deferred_until_s=NOW + 1800)  # fmt: skip
    not_due = replace(due, job_id=2)
    jobs = [
        _job(1, deadline_h=1.8, reason="BeginTime", eligible_time=NOW + 1800),
        _job(2, deadline_h=20, reason="BeginTime", eligible_time=NOW + 1800),
        _job(3, deadline_h=1.2),  # due, but not deferred by the adapter: nothing to undo
        _job(4, deadline_h=1.2, reason="BeginTime", eligible_time=NOW + 1800),  # owner's
    ]
    records = {r.key: r for r in (due, not_due)}
    managed = managed_jobs(jobs, cfg, NOW, records)
    plans = {p.job_id: p for p in safe_plans(managed, cfg)}
    assert {k: p.action for k, p in plans.items()} == {1: "run", 2: "keep", 3: "keep"}
    by_id = {m.job.job_id: m for m in managed}
    assert commands_for(plans[1], by_id[1], cfg) == [
        ["scontrol", "update", "JobId=1", "StartTime=now"]
    ]
    assert commands_for(plans[2], by_id[2], cfg) == commands_for(plans[3], by_id[3], cfg) == []
    assert record_for(plans[3], by_id[3], cfg, NOW) is None  # no record for a job left be


def test_state_folder_is_the_adapters_alone(tmp_path):
    state = AdapterState(tmp_path / "st")
    assert state.load() == {}
    rec = JobRecord(7, NOW, NOW, deferred="hold", power_cap_fraction=0.75)
    state.save({rec.key: rec})
    assert os.stat(tmp_path / "st").st_mode & 0o777 == 0o700
    assert os.stat(state.path).st_mode & 0o777 == 0o600
    assert state.load() == {job_key(7, NOW): rec}
    (tmp_path / "st").chmod(0o777)
    with pytest.raises(StateError, match=r"writable by group or others \(mode 0777\)"):
        state.load()
    (tmp_path / "st").chmod(0o700)
    if os.geteuid() == 0:  # another account's folder
        os.chown(tmp_path / "st", 65534, 65534)
        with pytest.raises(StateError, match="belongs to uid 65534"):
            state.load()
        os.chown(tmp_path / "st", 0, 0)
    (tmp_path / "link").symlink_to(tmp_path / "st")
    with pytest.raises(StateError, match="must not be a symbolic link"):
        AdapterState(tmp_path / "link").load()
    # a damaged file is named, with the key at fault
    state.path.write_text('{"version": 1, "jobs": {"7@1": {"job_id": "x"}}}')
    with pytest.raises(StateError, match=r"state.json: jobs\.7@1"):
        state.load()
    state.path.write_text("{")
    with pytest.raises(StateError, match="not readable as JSON"):
        state.load()


def _signal_cfg(csv, **values):
    site = {"name": "a", "partitions": ["pa"], "gpus": 8,
            "signals": {"file": str(csv), "max_age_s": 7200}, "values": values}  # fmt: skip
    return SitesConfig.model_validate({"sites": [site]})


FIELDS = [
    ObservationField(name="a.pv", key="pv_kw", site="a", unit="kW", scale=500.0),
    ObservationField(name="a.price", key="price_per_mwh", site="a", scale=100.0),
    ObservationField(name="a.fc", key="fc_pv_kw_h1_spread", site="a", unit="kW", scale=500.0),
]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", "is empty"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n", "header but no rows"),
        ('time,pv_kw\n"{t},1\n', "not a readable CSV"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},inf,50,1\n",
         r"row 2, column 'pv_kw': expected a finite number, got inf"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},,50,1\n",
         r"row 2, column 'pv_kw': expected a finite number"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},1e40,50,1\n",
         r"column 'pv_kw': 1e\+40 is implausibly large"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},-3,50,1\n",
         r"column 'pv_kw': -3 is negative"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},3,50,-1\n",
         r"column 'fc_pv_kw_h1_spread': -1 is negative"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},3,50,1\n{t},4,60,1\n",
         r"the same time in several rows \[2, 3\]"),
        ("time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\nnot-a-time,3,50,1\n", "not times"),
    ],
)  # fmt: skip
def test_bad_signal_files_are_named_errors(tmp_path, body, match):
    now = time.time()
    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    csv = tmp_path / "a.csv"
    csv.write_text(body.format(t=t))
    with pytest.raises(ObservationError, match=match) as err:
        raw_observation(FIELDS, _signal_cfg(csv), [], [], now)
    assert str(csv) in str(err.value)


def test_signal_values_pass_and_negative_prices_are_allowed(tmp_path):
    now = time.time()
    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    csv = tmp_path / "a.csv"
    csv.write_text(f"time,pv_kw,price_per_mwh,fc_pv_kw_h1_spread\n{t},0,-20,5\n")
    raw = raw_observation(FIELDS, _signal_cfg(csv), [], [], now)
    assert raw == {"a.pv": 0.0, "a.price": -20.0, "a.fc": 5.0}
    with pytest.raises(ObservationError, match=r"sites\[0\]\.values\.pv_kw: -1 is negative"):
        raw_observation(FIELDS, _signal_cfg(csv, pv_kw=-1.0), [], [], now)


def test_sites_yaml_refuses_booleans_for_counts_and_numbers(tmp_path):
    path = tmp_path / "sites.yaml"
    site = {"name": "a", "partitions": ["p"], "gpus": True, "values": {"soc_kwh": False}}
    path.write_text(yaml.safe_dump({"sites": [site], "power_cap_digits": True}))
    with pytest.raises(SitesConfigError) as err:
        load_sites(path)
    text = str(err.value)
    assert "sites[0].gpus" in text and "(got True)" in text
    assert "sites[0].values.soc_kwh" in text and "power_cap_digits" in text
    path.write_text(yaml.safe_dump({"sites": [{**site, "gpus": 2, "values": {}}],
                                    "state_dir": "st"}))  # fmt: skip
    assert load_sites(path).state_dir == str(tmp_path / "st")


def test_state_round_trips_as_plain_json(tmp_path):
    state = AdapterState(tmp_path / "st")
    rec = JobRecord(3, NOW, NOW, moved_to="pb", moved_from="pa", moved_at_s=NOW)
    state.save({rec.key: rec})
    doc = json.loads(state.path.read_text())
    assert doc["version"] == 1 and doc["jobs"][f"3@{int(NOW)}"]["moved_to"] == "pb"
