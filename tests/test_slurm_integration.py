"""The Slurm adapter against a real munged + slurmctld + slurmd on 127.0.0.1.

Two partitions (site_a, site_b) are the bundle's two sites. A blocker job fills the
node so submitted jobs stay pending on resources; the adapter runs once (the ``gridrl
slurm --once`` command) and ``scontrol show job`` must show every decision: deferred
start, moved partition, power cap in the AdminComment (the owner's Comment untouched).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from export_helpers import fixed_action_policy_dir, geo_env, raw_signal_row
from slurm_helpers import LocalSlurm, needs_slurm
from typer.testing import CliRunner

from gridrl.cli import app
from gridrl.export.bundle import export_bundle

pytestmark = [
    needs_slurm,
    pytest.mark.timeout(180),
]

INTERVAL_S = 3600
# Fixed policy output, per site [run, cap, route, migrate] in [-1, 1]:
# greensboro runs 40 % of what stays, caps half-way to cap_min, sends its maximum
# share away; miami runs everything, caps at cap_min, attracts migrating work.
ACTION = np.array([-0.2, 0.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])


SITE_OF = {"site_a": "greensboro", "site_b": "miami"}  # partition -> bundle site (geo3)


def _bundle(tmp_path: Path, action: np.ndarray) -> Path:
    pdir = fixed_action_policy_dir(tmp_path / "policy", geo_env(2), action)
    out = tmp_path / "bundle"
    export_bundle(pdir, out)
    return out


def _sites_yaml(tmp_path: Path, defer_mode: str, **extra) -> Path:
    """SITES.yaml plus one signal CSV per site. The CSVs hold the environment's own raw
    signals and forecasts of two hours, stamped 2 h and 30 min ago."""
    from gridrl.export.manifest import ObservationField
    from gridrl.integrations.slurm_observation import source_of

    env = geo_env(2)
    # keys the adapter cannot read from Slurm or the clock come from the signal file
    from_file = {
        f.key
        for f in env.observation_layout.fields
        if source_of(ObservationField.model_validate(f.__dict__)) == "SITES.yaml"
    }
    obs, _ = env.reset(seed=2)
    rows = [obs, env.step(env.action_space.sample())[0]]
    now = time.time()
    sites = []
    for partition, site in SITE_OF.items():
        lines = []
        for age_s, o in zip((7200, 1800), rows, strict=True):
            raw = {k: v for k, v in raw_signal_row(env, o, site).items() if k in from_file}
            if not lines:
                lines.append(",".join(["time", *raw]))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age_s))
            lines.append(",".join([stamp, *(repr(v) for v in raw.values())]))
        (tmp_path / f"signals_{site}.csv").write_text("\n".join(lines) + "\n")
        sites.append(
            {
                "name": site,
                "partitions": [partition],
                "gpus": 2,
                "signals": {"file": f"signals_{site}.csv"},
            }
        )
    cfg = {
        "decision_interval_s": INTERVAL_S,
        "defer_mode": defer_mode,
        "resource": "cpu",
        "default_slack_h": 12,
        "state_dir": "state",
        "sites": sites,
        **extra,
    }
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _submit_queue(c: LocalSlurm) -> dict[str, list[int]]:
    blocker = c.sbatch(
        "-p", "site_a", "-n", "2", "-t", "10", "-o", "/dev/null", "--wrap", "sleep 120"
    )
    deadline = time.monotonic() + 30
    while "RUNNING" not in c.show_job(blocker)["JobState"]:
        assert time.monotonic() < deadline, "blocker job did not start"
        time.sleep(0.2)
    jobs = {"site_a": [], "site_b": []}
    for i, (limit_min, deadline_h) in enumerate(
        [(60, 3), (120, 6), (30, None), (90, 10), (60, None), (45, 8)]
    ):
        args = ["-p", "site_a", "-n", "1", "-t", str(limit_min), "-o", "/dev/null", "-J", f"a{i}"]
        if deadline_h:
            args.append(f"--deadline=now+{deadline_h}hours")
        jobs["site_a"].append(c.sbatch(*args, "--comment=user note", "--wrap", "sleep 60"))
    for i in range(2):
        jobs["site_b"].append(
            c.sbatch(
                "-p",
                "site_b",
                "-n",
                "1",
                "-t",
                "30",
                "-o",
                "/dev/null",
                "-J",
                f"b{i}",
                "--wrap",
                "sleep 60",
            )
        )
    return jobs


def _age_records(state_dir: Path, by_s: float) -> None:
    """Make the adapter's decisions ``by_s`` older (as if that much time had passed)."""
    path = state_dir / "state.json"
    doc = json.loads(path.read_text())
    for rec in doc["jobs"].values():
        rec["decided_at_s"] -= by_s
        if rec.get("moved_at_s") is not None:
            rec["moved_at_s"] -= by_s
    path.write_text(json.dumps(doc))


def _when(value: str) -> float:
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))


def test_adapter_decisions_show_in_scontrol(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path, ACTION)
    sites = _sites_yaml(tmp_path, "start_time")
    with LocalSlurm(tmp_path / "cluster") as c:
        monkeypatch.setenv("SLURM_CONF", c.env["SLURM_CONF"])
        submitted = _submit_queue(c)
        runner = CliRunner()
        dry = runner.invoke(
            app, ["slurm", "--bundle", str(bundle), "--sites", str(sites), "--once", "--dry-run"]
        )
        assert dry.exit_code == 0, dry.output
        assert "scontrol update JobId=" in dry.output
        # a dry run changed nothing
        first = submitted["site_a"][0]
        assert "gridrl." not in c.show_job(first)["Comment"]

        from gridrl.export.runtime import PolicyRuntime
        from gridrl.integrations.slurm import SlurmAdapter
        from gridrl.integrations.slurm_queue import SlurmClient
        from gridrl.integrations.slurm_sites import load_sites

        t0 = time.time()
        adapter = SlurmAdapter(PolicyRuntime(bundle), load_sites(sites), SlurmClient(env=c.env))
        (result,) = adapter.run(once=True)
        assert result.errors == []
        plans = {p.job_id: p for p in result.plans}
        managed = set(submitted["site_a"] + submitted["site_b"])
        assert set(plans) == managed  # the running blocker is not managed
        actions = {p.action for p in plans.values()}
        assert actions == {"run", "defer", "move"}, actions
        caps = {p.site: p.power_cap_fraction for p in plans.values() if p.action != "move"}
        cap_min = geo_env(2).params.cap_min
        assert caps == {"greensboro": round(cap_min + 0.5 * (1 - cap_min), 3), "miami": cap_min}
        moved = [p for p in plans.values() if p.action == "move"]
        assert all(p.site == "greensboro" and p.to_site == "miami" for p in moved)

        for job_id, plan in plans.items():
            shown = c.show_job(job_id)
            admin = shown["AdminComment"].strip()
            assert admin == f"gridrl.power_cap={plan.power_cap_fraction:.3f}", (job_id, admin)
            if job_id in submitted["site_a"]:
                assert shown["Comment"] == "user note ", shown["Comment"]  # never written
            assert shown["JobState"] == "PENDING"
            eligible = _when(shown["EligibleTime"]) if shown["EligibleTime"] != "Unknown" else 0.0
            if plan.action == "run":
                assert SITE_OF[shown["Partition"]] == plan.site
                assert eligible <= time.time() + 1, shown["EligibleTime"]
            else:
                assert eligible >= t0 + INTERVAL_S - 5, shown["EligibleTime"]
                assert _when(shown["StartTime"]) >= t0 + INTERVAL_S - 5
            if plan.action == "move":
                assert shown["Partition"] == "site_b"

        # Next decision, one step later: a policy that runs everything releases the
        # adapter's own deferrals only.
        run_all = ACTION.copy()
        run_all[[0, 3, 4, 7]] = [1.0, -1.0, 1.0, -1.0]
        bundle2 = _bundle(tmp_path / "second", run_all)
        user_begin = c.sbatch(
            "-p", "site_a", "-t", "30", "-o", "/dev/null", "--begin=now+2hours", "--wrap", "sleep 1"
        )
        (result2,) = SlurmAdapter(
            PolicyRuntime(bundle2),
            load_sites(sites),
            SlurmClient(env=c.env),
            clock=lambda: time.time() + INTERVAL_S - 60,
        ).run(once=True)
        assert result2.errors == []
        assert {p.action for p in result2.plans} == {"run"}
        assert user_begin not in {
            p.job_id for p in result2.plans
        }  # the user's --begin is respected
        for job_id in managed:
            shown = c.show_job(job_id)
            assert _when(shown["EligibleTime"]) <= time.time() + 1
        assert _when(c.show_job(user_begin)["EligibleTime"]) > time.time() + 3600


def test_hold_mode_holds_and_releases(tmp_path, monkeypatch):
    """Through the `gridrl slurm --once` command (no dry run): hold, then release."""
    defer_all = np.array([-1.0, 1.0, 0.0, -1.0, -1.0, 1.0, 0.0, -1.0])  # run nothing, move nothing
    run_all = defer_all.copy()
    run_all[[0, 4]] = 1.0
    sites = _sites_yaml(tmp_path, "hold")
    runner = CliRunner()
    with LocalSlurm(tmp_path / "cluster") as c:
        monkeypatch.setenv("SLURM_CONF", c.env["SLURM_CONF"])
        submitted = _submit_queue(c)
        managed = submitted["site_a"] + submitted["site_b"]
        user_held = c.sbatch(
            "-H", "-p", "site_b", "-t", "30", "-o", "/dev/null", "--wrap", "sleep 1"
        )
        bundle = _bundle(tmp_path / "defer", defer_all)
        res = runner.invoke(
            app, ["slurm", "--bundle", str(bundle), "--sites", str(sites), "--once"]
        )
        assert res.exit_code == 0, res.output
        ran = [line for line in res.output.splitlines() if line.startswith("ran: ")]
        assert sum("scontrol uhold" in line for line in ran) == len(managed)
        assert not any(f"hold {user_held}" in line for line in ran)
        for job_id in managed:
            shown = c.show_job(job_id)
            assert shown["Reason"] == "JobHeldUser", shown["Reason"]
            assert shown["AdminComment"].strip() == "gridrl.power_cap=1.000"
            assert "gridrl" not in shown.get("Comment", "")
        # one decision step later (the state says when the adapter decided)
        _age_records(tmp_path / "state", INTERVAL_S)
        bundle2 = _bundle(tmp_path / "run", run_all)
        res = runner.invoke(
            app, ["slurm", "--bundle", str(bundle2), "--sites", str(sites), "--once"]
        )
        assert res.exit_code == 0, res.output
        assert sum("scontrol release" in line for line in res.output.splitlines()) == len(managed)
        for job_id in managed:
            shown = c.show_job(job_id)
            assert shown["Reason"] not in ("JobHeldAdmin", "JobHeldUser"), shown["Reason"]
        # someone else's hold is never released
        assert c.show_job(user_held)["Reason"] == "JobHeldUser"
