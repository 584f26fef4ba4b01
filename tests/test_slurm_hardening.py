"""The Slurm adapter under hostile and faulty input, on a real munged + slurmctld + slurmd.

* Holds: an admin hold and the owner's own hold are never released, held jobs are never
  moved, and a Comment the owner forges (``gridrl.deferred=hold``, ``gridrl.power_cap``)
  changes nothing. When the tests run as root, jobs belong to ``nobody``, who is not a
  Slurm administrator (and cannot write the AdminComment the cap is published in).
* Repeated ticks: a second tick within the decision step issues no command, even when
  the policy would now send the moved jobs back.
* A daemon (``--interval``) survives an empty, malformed, non-finite, implausible or
  duplicated signal file: it logs, takes the safe default, keeps ticking, and its health
  file says when the last good tick was; ``--once`` exits 1 on such a tick.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from slurm_helpers import LocalSlurm, needs_slurm
from test_slurm_integration import ACTION, _bundle, _sites_yaml, _submit_queue
from typer.testing import CliRunner

from gridrl.cli import app

pytestmark = [
    needs_slurm,
    pytest.mark.timeout(240),
]

FORGED = "gridrl.deferred=hold gridrl.power_cap=0.100"
SPACED = "  two  spaces\tand a tab  "
FAKE_LINE = "n\n   AdminComment=gridrl.power_cap=0.100"
README = Path(__file__).parents[1] / "README.md"


def _readme_prolog_cap(c: LocalSlurm, job_id: int) -> str:
    """Run the README prolog's ``cap=$(...)`` command for a job; its output."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cap=$(squeue"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    script = "set -o pipefail\n" + "\n".join(lines[start : end + 1]) + '\nprintf %s "$cap"\n'
    env = {**c.env, "SLURM_JOB_ID": str(job_id)}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def cluster():
    """A cluster in a world-searchable folder (the job owner reads its config)."""
    root = Path(tempfile.mkdtemp(prefix="gridrl-slurm-", dir="/tmp"))
    try:
        with LocalSlurm(root) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _slurm(tmp_path: Path, c: LocalSlurm, *args: str):
    env = {"SLURM_CONF": c.env["SLURM_CONF"]}
    return CliRunner().invoke(app, ["slurm", *args], env=env)


def _ran(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ran: ")]


def _snapshot(c: LocalSlurm, ids) -> dict[int, tuple]:
    """What the adapter could change of each job (a pending reason other than a hold is
    the scheduler's)."""
    out = {}
    for j in ids:
        s = c.show_job(j)
        hold = s["Reason"] if s["Reason"] in ("JobHeldUser", "JobHeldAdmin") else "-"
        out[j] = (s["Partition"], hold, s["EligibleTime"], s.get("Comment"), s.get("AdminComment"))
    return out


def test_holds_and_forged_comments_and_repeated_ticks(tmp_path, cluster):
    c = cluster
    sites = _sites_yaml(tmp_path, "hold")
    submitted = _submit_queue(c)
    owner = ["-p", "site_a", "-n", "1", "-t", "60", "-o", "/dev/null"]
    # 1. admin hold + forged Comment
    admin_held = c.sbatch_as_owner(*owner, "--deadline=now+3hours", "--wrap", "sleep 1")
    c.run("scontrol", "hold", str(admin_held))
    c.as_owner("scontrol", "update", f"JobId={admin_held}", f"Comment={FORGED}")
    # 2. the owner's own hold, also with a forged Comment
    user_held = c.sbatch_as_owner(*owner, f"--comment={FORGED}", "--wrap", "sleep 1")
    c.as_owner("scontrol", "uhold", str(user_held))
    # 3. the owner's own begin time, forged as the adapter's deferral
    begin = c.sbatch_as_owner(
        *owner, "--begin=now+2hours", "--comment=gridrl.deferred=start_time", "--wrap", "sleep 1"
    )
    # 4. a plain job whose Comment has odd whitespace, and whose name fakes an
    #    AdminComment line in `scontrol show job` (the README's prolog must not fall for it)
    spaced = c.sbatch_as_owner(*owner, f"--comment={SPACED}", "-J", FAKE_LINE, "--wrap", "sleep 1")
    assert c.show_job(admin_held)["Reason"] == "JobHeldAdmin"
    assert c.show_job(user_held)["Reason"] == "JobHeldUser"
    if c.owner_is_other_account:  # the cap's channel is closed to the owner
        denied = c.as_owner("scontrol", "update", f"JobId={spaced}", "AdminComment=x", check=False)
        assert denied.returncode != 0 and "denied" in denied.stderr
    untouchable = [admin_held, user_held, begin]
    before = _snapshot(c, untouchable)

    bundle = _bundle(tmp_path, ACTION)  # migrates the most work away from site_a
    res = _slurm(tmp_path, c, "--bundle", str(bundle), "--sites", str(sites), "--once")
    assert res.exit_code == 0, res.output
    ran = _ran(res.output)
    assert any("Partition=site_b" in line for line in ran)  # the policy does move jobs
    for j in untouchable:
        assert not any(f"JobId={j} " in f"{line} " or line.endswith(f" {j}") for line in ran)
    assert _snapshot(c, untouchable) == before
    assert c.show_job(spaced)["Comment"] == SPACED + " "  # scontrol pads one space
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    recorded = {r["job_id"] for r in state["jobs"].values()}
    assert recorded.isdisjoint(untouchable) and spaced in recorded
    assert recorded >= set(submitted["site_a"])
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"
    # the README's prolog reads the cap the adapter published, not the faked line
    (cap,) = [r["power_cap_fraction"] for r in state["jobs"].values() if r["job_id"] == spaced]
    assert (
        "AdminComment=gridrl.power_cap=0.100"
        in c.run("scontrol", "show", "job", str(spaced)).stdout
    )
    if shutil.which("jq") is not None:  # the prolog's JSON reader
        assert _readme_prolog_cap(c, spaced) == f"{cap:.3f}"
        assert _readme_prolog_cap(c, admin_held) == ""  # no cap for a job it leaves alone

    # A second tick within the step: no command, nothing changes.
    managed = [*submitted["site_a"], *submitted["site_b"], spaced]
    after_first = _snapshot(c, managed)
    res2 = _slurm(tmp_path, c, "--bundle", str(bundle), "--sites", str(sites), "--once")
    assert res2.exit_code == 0, res2.output
    assert _ran(res2.output) == []
    # ... even when the policy would now send every moved job back
    back = ACTION.copy()
    back[[2, 3, 6, 7]] = [1.0, -1.0, -1.0, 1.0]  # route to site_a, migrate all from site_b
    res3 = _slurm(
        tmp_path, c, "--bundle", str(_bundle(tmp_path / "back", back)), "--sites", str(sites),
        "--once",
    )  # fmt: skip
    assert res3.exit_code == 0, res3.output
    assert _ran(res3.output) == []
    assert _snapshot(c, managed) == after_first
    assert _snapshot(c, untouchable) == before

    # A damaged state file stops every change and is left for the operator.
    state_file = tmp_path / "state" / "state.json"
    state_file.write_text('{"version": 1, "jobs": {"1@2": "x"}}')
    res4 = _slurm(tmp_path, c, "--bundle", str(bundle), "--sites", str(sites), "--once")
    said = "".join(res4.output.split())  # the console wraps long lines
    assert res4.exit_code == 2 and "state.json:jobs.1@2:expectedanobject" in said
    assert _ran(res4.output) == []
    assert state_file.read_text() == '{"version": 1, "jobs": {"1@2": "x"}}'


def _write_signals(path: Path, body: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body)
    os.replace(tmp, path)


def _wait_health(health: Path, proc: subprocess.Popen, ok, what: str, timeout_s=60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}) waiting for {what}"
        try:
            h = json.loads(health.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            h = None
        if h is not None and ok(h):
            return h
        time.sleep(0.2)
    raise AssertionError(f"no health update with {what} within {timeout_s} s")


def _eligible(c: LocalSlurm, job_id: int) -> float:
    value = c.show_job(job_id)["EligibleTime"]
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))


def _wait_until(ok, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


def test_daemon_survives_bad_signal_files(tmp_path, cluster):
    c = cluster
    health = tmp_path / "health" / "gridrl.json"
    sites = _sites_yaml(tmp_path, "start_time", health_file=str(health))
    signals = tmp_path / "signals_greensboro.csv"
    good = signals.read_text()
    header, *rows = good.splitlines()
    last = rows[-1].split(",")
    _submit_queue(c)
    # deferred by the first good tick, then due while the signals are bad
    defer_all = np.array([-1.0, 1.0, 0.0, -1.0, -1.0, 1.0, 0.0, -1.0])
    due = c.sbatch_as_owner(
        "-p", "site_b", "-t", "10", "-o", "/dev/null", "--deadline=now+3hours", "--wrap", "sleep 1"
    )
    bundle = _bundle(tmp_path, defer_all)
    env = {**os.environ, "SLURM_CONF": c.env["SLURM_CONF"], "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridrl.cli", "slurm", "--bundle", str(bundle),
         "--sites", str(sites), "--interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        h = _wait_health(health, proc, lambda h: h.get("last_good_tick_s"), "a good tick")
        assert oct(health.stat().st_mode & 0o777) == "0o644"
        assert _eligible(c, due) > time.time() + 3000  # deferred by the policy
        first_good = None  # the last good tick before the first bad file (ticks every 1 s)
        bad = {
            "empty file": ("", "is empty"),
            "malformed CSV": (f'{header}\n"{rows[-1]}\n', "not a readable CSV"),
            "inf": (f"{header}\n" + ",".join([last[0], "inf", *last[2:]]) + "\n", "got inf"),
            "absurd value": (
                f"{header}\n" + ",".join([last[0], "1e40", *last[2:]]) + "\n",
                "implausibly",
            ),
            "duplicate times": (f"{header}\n{rows[-1]}\n{rows[-1]}\n", "the same time"),
        }
        for i, (what, (body, message)) in enumerate(bad.items()):
            _write_signals(signals, body)
            h = _wait_health(
                health, proc, lambda h, m=message: m in (h.get("last_error") or ""), what
            )
            first_good = first_good or h["last_good_tick_s"]
            assert h["decision"] == "safe_default" and h["last_good_tick_s"] == first_good
            if i == 0:
                # the deadline moves forward: the adapter's own deferral must end even
                # while the signals are bad
                c.run("scontrol", "update", f"JobId={due}", "Deadline=now+50minutes")
                _wait_until(lambda: _eligible(c, due) <= time.time() + 1, "release of the due job")
        assert json.loads(health.read_text())["last_good_tick_s"] == first_good
        _write_signals(signals, good)
        _wait_health(health, proc, lambda h: h["last_good_tick_s"] > first_good, "recovery")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in text, text
    assert text.count("tick input error") >= len(bad), text
    assert f"ran: scontrol update JobId={due} StartTime=now" in text

    # --once on a bad file: the safe default, and exit 1 so the operator sees it
    _write_signals(signals, "")
    res = _slurm(tmp_path, c, "--bundle", str(bundle), "--sites", str(sites), "--once")
    assert res.exit_code == 1, res.output
    assert "tick input error" in res.output and "is empty" in res.output
