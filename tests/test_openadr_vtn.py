"""VTN -> VEN -> event signal -> Slurm adapter, with a real openleadr VTN on 127.0.0.1.

The test's VTN (openleadr's ``OpenADRServer``) queues two events for the greensboro
site's VEN: one it can meet (0.98 kW for 2 GPUs of 0.7 kW: cap 0.7) and one it cannot
(0.2 kW, below the 0.42 kW of every GPU at its lowest cap 0.3). ``gridrl openadr-ven``
runs as its own process, registers, answers optIn / optOut (the VTN's callbacks see
them) and writes the event signal. ``gridrl slurm --once --dry-run`` on a real local
Slurm cluster then publishes greensboro's caps at 0.700 instead of the policy's 0.800.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm_helpers import LocalSlurm, needs_slurm
from test_slurm_integration import ACTION, SITE_OF, _bundle, _sites_yaml, _submit_queue
from typer.testing import CliRunner

from gridrl.cli import app

openleadr = pytest.importorskip(
    "openleadr", reason="openleadr not installed (pip install -e '.[openadr]')"
)
pytestmark = [
    needs_slurm,
    pytest.mark.timeout(240),
]

REPO = Path(__file__).resolve().parents[1]
VEN_NAME, VEN_ID = "greensboro-ven", "VEN-GREENSBORO"
GPU_MAX_KW = 0.7  # H100 SXM board maximum
MEETABLE_W, UNMEETABLE_W = 980.0, 200.0  # 2 GPUs x 0.7 kW = 1.4 kW at full power


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vtn:
    """openleadr's VTN in a thread with its own event loop; ``opts`` = the VEN's answers."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"
        self.opts: dict[str, str] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Vtn:
        self.thread.start()
        self.server = self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self):
        server = openleadr.OpenADRServer(
            vtn_id="UTILITY-VTN", http_host="127.0.0.1", http_port=self.port,
            requested_poll_freq=timedelta(seconds=1), show_fingerprint=False,
        )  # fmt: skip

        async def register(payload):
            if payload["ven_name"] != VEN_NAME:
                return False
            return VEN_ID, "REG-1"

        server.add_handler("on_create_party_registration", register)
        await server.run()
        return server

    def publish(self, event_id: str, watts: float, start: datetime, hours: float) -> None:
        self._call(self._publish(event_id, watts, start, hours))

    async def _publish(self, event_id, watts, start, hours) -> None:
        o = openleadr.objects
        length = timedelta(hours=hours)
        power = o.Measurement(
            name="powerReal", description="RealPower", unit="W", scale="none",
            power_attributes=o.PowerAttributes(hertz=60, voltage=480, ac=True),
        )  # fmt: skip
        event = o.Event(
            event_descriptor=o.EventDescriptor(
                event_id=event_id, modification_number=0, market_context="http://utility/dr",
                event_status="active", created_date_time=datetime.now(timezone.utc),
            ),
            active_period=o.ActivePeriod(dtstart=start, duration=length),
            event_signals=[o.EventSignal(
                intervals=[o.Interval(dtstart=start, duration=length, signal_payload=watts)],
                signal_name="LOAD_DISPATCH", signal_type="setpoint", signal_id=f"{event_id}-s",
                measurement=power,
            )],
            targets=[o.Target(ven_id=VEN_ID)],
            response_required="always",
        )  # fmt: skip

        def answered(ven_id, event_id, opt_type):
            self.opts[event_id] = opt_type

        self.server.add_raw_event(VEN_ID, event, callback=answered)


def _with_events(sites: Path, dr_csv: Path) -> Path:
    """A copy of SITES.yaml whose sites know their GPU power and greensboro its events."""
    doc = yaml.safe_load(sites.read_text())
    for s in doc["sites"]:
        s["gpu_max_kw"] = GPU_MAX_KW
        if s["name"] == "greensboro":
            s["events"] = {"file": str(dr_csv), "max_age_s": 3600}
    out = sites.with_name("sites_dr.yaml")
    out.write_text(yaml.safe_dump(doc))
    return out


def _wait(ok, what: str, timeout_s: float = 60.0, ven: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if ven is not None and ven.poll() is not None:
            pytest.fail(f"the VEN exited ({ven.returncode}) before {what}:\n{ven.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _caps(output: str) -> dict[int, str]:
    """``{job id: published cap}`` from the dry run's scontrol lines."""
    caps = {}
    for line in output.splitlines():
        if "AdminComment=gridrl.power_cap=" in line:
            job = int(line.split("JobId=")[1].split()[0])
            caps[job] = line.rsplit("=", 1)[1]
    return caps


def test_vtn_event_reaches_the_slurm_caps(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path, ACTION)
    sites = _sites_yaml(tmp_path, "start_time")
    dr_csv = tmp_path / "dr_greensboro.csv"
    sites_dr = _with_events(sites, dr_csv)
    start = datetime.now(timezone.utc) - timedelta(minutes=1)  # "at once": already begun
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    with Vtn() as vtn:
        vtn.publish("dr-meetable", MEETABLE_W, start, 1.0)
        vtn.publish("dr-too-deep", UNMEETABLE_W, start, 1.0)
        ven = subprocess.Popen(
            [sys.executable, "-m", "gridrl.cli", "openadr-ven", "--vtn", vtn.url,
             "--ven-name", VEN_NAME, "--out", str(dr_csv), "--sites", str(sites_dr),
             "--site", "greensboro", "--step-s", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        try:
            _wait(lambda: len(vtn.opts) == 2, "the VEN's answers at the VTN", ven=ven)
        finally:
            ven.send_signal(signal.SIGINT)
            log, _ = ven.communicate(timeout=30)
    assert ven.returncode == 0, log
    # the standard's createdEvent answers, as the VTN received them
    assert vtn.opts == {"dr-meetable": "optIn", "dr-too-deep": "optOut"}, log
    rows = pd.read_csv(dr_csv)
    now = pd.Timestamp.now(tz="UTC")
    current = rows[pd.to_datetime(rows["time"], utc=True) <= now].iloc[-1]  # the row in force
    assert current["dr_active"] == 1 and current["dr_event_id"] == "dr-meetable"
    assert current["dr_limit_kw"] == pytest.approx(MEETABLE_W / 1000)
    assert current["dr_notice_h"] == 0.0 and 0.9 < current["dr_remaining_h"] <= 1.0
    assert "dr-too-deep" not in set(rows["dr_event_id"])  # opted out: not in the signal

    with LocalSlurm(tmp_path / "cluster") as c:
        monkeypatch.setenv("SLURM_CONF", c.env["SLURM_CONF"])
        submitted = _submit_queue(c)
        runner = CliRunner()
        args = ["slurm", "--bundle", str(bundle), "--once", "--dry-run", "--sites"]
        before = runner.invoke(app, [*args, str(sites)])
        during = runner.invoke(app, [*args, str(sites_dr)])
    assert before.exit_code == 0, before.output
    assert during.exit_code == 0, during.output
    assert "demand-response limit 0.980 kW: cap 0.800 -> 0.700" in during.output
    cap_before, cap_during = _caps(before.output), _caps(during.output)
    greensboro_jobs = set(submitted["site_a"])  # partition site_a is greensboro
    assert SITE_OF["site_a"] == "greensboro"
    stayed = {j for j in greensboro_jobs if cap_before.get(j) == "0.800"}
    assert stayed, before.output
    assert {cap_during[j] for j in stayed} == {"0.700"}, during.output
    # the other site has no event: its caps are the policy's, unchanged
    others = {j: v for j, v in cap_before.items() if v != "0.800"}
    assert {j: cap_during[j] for j in others} == others
    # 2 GPUs x 0.7 kW x 0.700 = 0.98 kW: at the requested limit
    assert 2 * GPU_MAX_KW * 0.7 <= MEETABLE_W / 1000 + 1e-12
