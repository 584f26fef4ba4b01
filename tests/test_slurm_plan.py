"""Slurm adapter pieces that need no cluster: squeue JSON dialects, SITES.yaml validation,
job-level planning, command generation, observation sources."""

from __future__ import annotations

import json
import math
import time

import pytest
import yaml
from slurm_helpers import NOW
from slurm_helpers import pending_job as _job

from gridrl.calendar import calendar_at
from gridrl.export.manifest import ObservationField
from gridrl.integrations.slurm_observation import (
    ObservationError,
    raw_observation,
    source_of,
)
from gridrl.integrations.slurm_plan import (
    cap_of,
    commands_for,
    managed_jobs,
    plan_decisions,
    reconcile,
    record_for,
    with_cap,
)
from gridrl.integrations.slurm_queue import SlurmError, SlurmJob, parse_squeue_json
from gridrl.integrations.slurm_sites import SitesConfig, SitesConfigError, load_sites
from gridrl.integrations.slurm_state import JobRecord, job_key


def _cfg(**kw) -> SitesConfig:
    base = {
        "sites": [
            {"name": "a", "partitions": ["pa"], "gpus": 8},
            {"name": "b", "partitions": ["pb", "pb2"], "gpus": 8},
            {"name": "c", "partitions": ["pc"], "gpus": 8},
        ]
    }
    base.update(kw)
    return SitesConfig.model_validate(base)


def _decision(site, run=1.0, cap=1.0, route=None, migrate=0.0):
    return {
        "site": site,
        "run_share": run,
        "power_cap_fraction": cap,
        "route_weight": route if route is not None else 1 / 3,
        "migrate_share": migrate,
    }


def test_squeue_json_both_dialects():
    old = {
        "meta": {},
        "errors": [],
        "jobs": [
            {
                "job_id": 7,
                "name": "train",
                "partition": "pa",
                "job_state": "PENDING",
                "state_reason": "BeginTime",
                "qos": "normal",
                "submit_time": 100,
                "eligible_time": 200,
                "deadline": 0,
                "time_limit": 4294967295,
                "tres_req_str": "cpu=4,mem=1G,node=1,billing=4,gres/gpu=2",
                "cpus": 4,
                "comment": "",
            }
        ],
    }
    (j,) = parse_squeue_json(json.dumps(old))
    assert (j.job_id, j.gpus, j.deadline, j.eligible_time) == (7, 2, None, 200.0)
    assert math.isinf(j.time_limit_s)

    new = {
        "jobs": [
            {
                "job_id": 8,
                "partition": "pb",
                "job_state": ["PENDING"],
                "state_reason": "Priority",
                "submit_time": {"set": True, "infinite": False, "number": 100},
                "eligible_time": {"set": True, "infinite": False, "number": 150},
                "deadline": {"set": False, "infinite": False, "number": 0},
                "time_limit": {"set": True, "infinite": False, "number": 90},
                "tres_per_node": "gres/gpu:a100:4",
                "cpus": {"set": True, "infinite": False, "number": 16},
                "comment": "x",
            }
        ]
    }
    (j,) = parse_squeue_json(json.dumps(new))
    assert (j.state, j.gpus, j.cpus, j.time_limit_s, j.deadline) == ("PENDING", 4, 16, 5400.0, None)
    # per-node requests count on every node
    new["jobs"][0]["node_count"] = {"set": True, "infinite": False, "number": 2}
    assert parse_squeue_json(json.dumps(new))[0].gpus == 8
    with pytest.raises(SlurmError, match="invalid JSON"):
        parse_squeue_json("{nope")
    with pytest.raises(SlurmError, match="reported errors"):
        parse_squeue_json(json.dumps({"errors": [{"error": "boom"}], "jobs": []}))


def test_sites_yaml_errors_name_the_key(tmp_path):
    path = tmp_path / "sites.yaml"
    path.write_text(
        yaml.safe_dump({"sites": [{"name": "a", "partitions": [], "gpus": 0}], "defer_mode": "x"})
    )
    with pytest.raises(SitesConfigError) as err:
        load_sites(path)
    text = str(err.value)
    assert "sites[0].partitions" in text and "sites[0].gpus" in text and "defer_mode" in text
    path.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {"name": "a", "partitions": ["p"], "gpus": 1, "signals": {"file": "s.csv"}},
                    {"name": "b", "partitions": ["p"], "gpus": 1},
                ]
            }
        )
    )
    with pytest.raises(SitesConfigError, match=r"repeated: \['p'\]"):
        load_sites(path)
    with pytest.raises(SitesConfigError, match="file not found"):
        load_sites(tmp_path / "none.yaml")


def test_managed_jobs_leave_other_peoples_holds_and_begin_times_alone():
    cfg = _cfg(inflexible_qos=["inference"])
    jobs = [
        _job(1),
        _job(2, reason="JobHeldUser"),
        _job(3, reason="JobHeldAdmin", comment="gridrl.deferred=hold"),  # forged tag
        _job(4, reason="BeginTime", eligible_time=NOW + 3600),
        _job(5, reason="BeginTime", eligible_time=NOW + 3600, comment="gridrl.deferred=start_time"),
        _job(6, qos="inference"),
        _job(7, partition="elsewhere"),
        _job(8, gpus=0),
        _job(9, state="RUNNING"),
        _job(10, reason="Dependency"),
        _job(11, time_limit_s=math.inf),
        _job(12, reason="None", eligible_time=NOW + 60),  # a fresh --begin, not yet BeginTime
        _job(13, reason="JobHeldUser"),
        _job(14, reason="BeginTime", eligible_time=NOW + 1800),
    ]
    # the adapter's records: it user-held 13 and deferred 14 (30 min left); its record
    # of an admin-held job (3) gives it nothing
    records = {
        job_key(13, NOW - 600): JobRecord(13, NOW - 600, NOW - 3600, deferred="hold"),
        job_key(14, NOW - 600): JobRecord(
            14, NOW - 600, NOW - 1800, deferred="start_time", deferred_until_s=NOW + 1800
        ),
        job_key(3, NOW - 600): JobRecord(3, NOW - 600, NOW - 3600, deferred="hold"),
    }
    got = {m.job.job_id: m for m in managed_jobs(jobs, cfg, NOW, records)}
    assert sorted(got) == [1, 13, 14]
    assert got[13].deferred_by_us == "hold" and got[14].deferred_by_us == "start_time"
    assert got[14].frozen and not got[13].frozen  # decided 30 min / 1 h ago
    # no --deadline: submit + limit + default slack (24 h) -> about 24 h of slack
    assert got[1].slack_h == pytest.approx(24.0 - 600 / 3600)
    # Comments are never evidence: without records only job 1 is the adapter's to manage
    assert [m.job.job_id for m in managed_jobs(jobs, cfg, NOW)] == [1]


def test_plan_mirrors_the_core_migrate_then_run_earliest_deadline_first():
    cfg = _cfg()
    jobs = [_job(i, deadline_h=2 + i, gpus=1, limit_h=1.0) for i in range(1, 11)]  # 10 GPU-h at a
    managed = managed_jobs(jobs, cfg, NOW)
    decisions = [
        _decision("a", run=0.5, cap=0.75, route=0.2, migrate=0.4),
        _decision("b", cap=0.6, route=0.6),
        _decision("c", cap=0.9, route=0.2),
    ]
    plans = plan_decisions(managed, decisions, cfg)
    moved = [p for p in plans if p.action == "move"]
    stay = [p for p in plans if p.action != "move"]
    assert len(moved) == 4  # 40 % of the work
    # spread over deadlines (the core moves the same share of every slack bucket)
    moved_ids = sorted(p.job_id for p in moved)
    assert moved_ids[0] <= 3 and moved_ids[-1] >= 8
    # destinations split by route weight among the other sites: b 0.6, c 0.2 -> 3:1
    assert sorted(p.to_site for p in moved) == ["b", "b", "b", "c"]
    assert {p.partition for p in moved if p.to_site == "b"} == {"pb"}  # first partition
    assert {p.power_cap_fraction for p in moved if p.to_site == "b"} == {0.6}
    # half of the 6 staying jobs run, earliest deadline first
    run_ids = sorted(p.job_id for p in stay if p.action == "run")
    stay_ids = sorted(p.job_id for p in stay)
    assert run_ids == stay_ids[:3]
    assert all(p.power_cap_fraction == 0.75 for p in stay)


def test_protected_deadlines_always_run_and_never_move():
    cfg = _cfg(protect_deadlines=True, decision_interval_s=3600)
    jobs = [_job(1, deadline_h=1.5), _job(2, deadline_h=10), _job(3, deadline_h=12)]
    plans = plan_decisions(
        managed_jobs(jobs, cfg, NOW),
        [
            _decision("a", run=0.0, migrate=0.5, route=0.0),
            _decision("b", route=1.0),
            _decision("c", route=0.0),
        ],
        cfg,
    )
    by_id = {p.job_id: p.action for p in plans}
    assert by_id[1] == "run"
    assert sorted(by_id.values()) == ["defer", "move", "run"]


def test_missing_site_decision_is_an_error():
    cfg = _cfg()
    with pytest.raises(ValueError, match=r"\['c'\] are not sites of the bundle"):
        plan_decisions([], [_decision("a"), _decision("b")], cfg)


def test_commands_never_write_the_comment_and_keep_the_admin_comment():
    cfg = _cfg()
    job = _job(1, comment="project=x  note ", admin_comment="site  note")
    (m,) = managed_jobs([job], cfg, NOW)
    (plan,) = plan_decisions(
        [m], [_decision("a", run=0.0, cap=0.7), _decision("b"), _decision("c")], cfg
    )
    cmds = commands_for(plan, m, cfg)
    assert cmds == [
        ["scontrol", "update", "JobId=1", "StartTime=now+3600"],
        ["scontrol", "update", "JobId=1", "AdminComment=site  note gridrl.power_cap=0.700"],
    ]
    assert not any(a.startswith("Comment=") for c in cmds for a in c)
    rec = record_for(plan, m, cfg, NOW)
    assert (rec.deferred, rec.deferred_until_s, rec.power_cap_fraction) == (
        "start_time",
        NOW + 3600,
        0.7,
    )
    # one step later Slurm shows the deferral and the cap: releasing needs StartTime only
    after = _job(
        1,
        reason="BeginTime",
        eligible_time=NOW + 3601,
        comment="project=x  note ",
        admin_comment="site  note gridrl.power_cap=0.700",
    )
    later = NOW + 3300
    recs, notes = reconcile({rec.key: rec}, [after], cfg, later)
    assert notes == []
    (m2,) = managed_jobs([after], cfg, later, recs)
    assert m2.deferred_by_us == "start_time" and not m2.frozen
    (plan2,) = plan_decisions(
        [m2], [_decision("a", run=1.0, cap=0.7), _decision("b"), _decision("c")], cfg
    )
    assert commands_for(plan2, m2, cfg) == [["scontrol", "update", "JobId=1", "StartTime=now"]]
    # the cap token is replaced in place; every other byte stays
    assert with_cap("a\tgridrl.power_cap=0.5  b", "gridrl.", "0.8") == "a\tgridrl.power_cap=0.8  b"
    assert with_cap("", "gridrl.", "0.8") == "gridrl.power_cap=0.8"
    assert cap_of("x gridrl.power_cap=0.8", "gridrl.") == 0.8
    assert cap_of("xgridrl.power_cap=0.8", "gridrl.") is None


def test_observation_sources_and_errors(tmp_path):
    now = time.time()
    csv = tmp_path / "a.csv"
    t_old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 4000))
    t_new = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 100))
    t_future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))
    csv.write_text(
        f"time,carbon_g_per_kwh,unused\n{t_old},400,x\n{t_new},250,y\n{t_future},999,z\n"
    )
    cfg = SitesConfig.model_validate(
        {
            "sites": [
                {
                    "name": "a",
                    "partitions": ["pa"],
                    "gpus": 8,
                    "signals": {"file": str(csv), "max_age_s": 600},
                },
            ]
        }
    )
    fields = [
        ObservationField(name="hour_sin", key="hour_sin"),
        ObservationField(name="a.carbon", key="carbon_g_per_kwh", site="a"),
        ObservationField(name="a.q0", key="queue_slack_0_2h", site="a"),
        ObservationField(name="a.q2", key="queue_slack_2h_plus", site="a"),
        ObservationField(name="a.over", key="overdue_gpu_h", site="a"),
        ObservationField(name="a.cap", key="cap", site="a"),
    ]
    jobs = [
        _job(
            1, deadline_h=2.5, gpus=2, submit_time=now - 60, eligible_time=now - 60
        ),  # slack 1.5 h, 2 GPU-h
        _job(2, deadline_h=None, gpus=1, limit_h=3, submit_time=now - 60, eligible_time=now - 60),
        _job(3, deadline_h=0.5, gpus=4, submit_time=now - 60, eligible_time=now - 60),  # overdue
        _job(4, state="RUNNING", comment="gridrl.power_cap=0.100"),  # the owner's text
        _job(5, state="RUNNING"),
    ]
    # the cap in force comes from the adapter's records, never from a Comment
    records = {job_key(5, NOW - 600): JobRecord(5, NOW - 600, now, power_cap_fraction=0.7)}
    jobs = [
        SlurmJob(
            **{**j.__dict__, "deadline": None if j.deadline is None else j.deadline - NOW + now}
        )
        for j in jobs
    ]
    raw = raw_observation(fields, cfg, managed_jobs(jobs, cfg, now), jobs, now, records)
    assert raw["a.carbon"] == 250.0  # latest row not in the future
    assert raw["a.q0"] == pytest.approx(2.0)  # slack 1.5 h; overdue work has its own key
    assert raw["a.over"] == pytest.approx(4.0)
    assert raw["a.q2"] == pytest.approx(3.0)
    assert raw["a.cap"] == pytest.approx(0.7)
    assert raw["hour_sin"] == pytest.approx(calendar_at(now)["hour_sin"])
    with pytest.raises(ObservationError, match=r"a\.missing \(key 'headroom_kw'\)"):
        raw_observation(
            [*fields, ObservationField(name="a.missing", key="headroom_kw", site="a")],
            cfg,
            [],
            jobs,
            now,
        )
    assert [source_of(f) for f in fields] == [
        "clock",
        "SITES.yaml",
        "slurm",
        "slurm",
        "slurm",
        "slurm",
    ]
    with pytest.raises(ObservationError, match="s old, more than max_age_s = 600"):
        raw_observation(fields, cfg, [], jobs, now + 1200)


def test_daemon_loop_survives_a_failing_queue_read(tmp_path):
    import numpy as np
    from export_helpers import fixed_action_policy_dir, geo_env

    from gridrl.export.bundle import export_bundle
    from gridrl.export.runtime import PolicyRuntime
    from gridrl.integrations.slurm import SlurmAdapter
    from gridrl.integrations.slurm_queue import SlurmClient

    export_bundle(fixed_action_policy_dir(tmp_path / "p", geo_env(2), np.zeros(8)), tmp_path / "b")
    cfg = SitesConfig.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "sites": [
                {"name": "greensboro", "partitions": ["a"], "gpus": 8},
                {"name": "miami", "partitions": ["b"], "gpus": 8},
            ],
        }
    )
    adapter = SlurmAdapter(
        PolicyRuntime(tmp_path / "b"), cfg, SlurmClient(squeue=str(tmp_path / "no-squeue"))
    )
    errors = []
    results = adapter.run(interval_s=0, max_ticks=2, on_error=errors.append, sleep=lambda s: None)
    assert results == [] and len(errors) == 2
    assert "command not found" in str(errors[0])
    with pytest.raises(SlurmError, match="command not found"):
        adapter.run(once=True, on_error=errors.append)
    with pytest.raises(ValueError, match="must be the bundle's sites"):
        SlurmAdapter(PolicyRuntime(tmp_path / "b"), _cfg())
    # the failures are in the health file, with no good tick yet
    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert health["last_good_tick_s"] is None and "command not found" in health["last_error"]
    assert health["consecutive_errors"] == 3
    # a restarted adapter keeps counting from the health file
    restarted = SlurmAdapter(PolicyRuntime(tmp_path / "b"), cfg)
    assert restarted.health["consecutive_errors"] == 3 and "last_error" in restarted.health
    with pytest.raises(ValueError, match="state_dir is required"):
        SlurmAdapter(PolicyRuntime(tmp_path / "b"), cfg.model_copy(update={"state_dir": None}))
