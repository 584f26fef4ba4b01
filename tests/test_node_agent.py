"""The node agent's logic on in-memory GPUs, its command under SIGTERM, and real NVML
where a GPU exists.

Caps files are written with the adapter's own writer (``write_node_caps``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridrl.integrations.node_agent import (
    AgentConfig,
    AgentStateError,
    NodeAgent,
    NodeCapsError,
    read_node_caps,
)
from gridrl.integrations.nvml import MemoryGpuPower, NvmlError, PowerLimits
from gridrl.integrations.slurm_state import write_node_caps

NOW_S = 1_800_000_000.0
MAX_MW = 400_000
NODE = "gpu01"


class Clock:
    def __init__(self, t: float = NOW_S) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path: Path):
    caps = tmp_path / "caps.json"
    cfg = AgentConfig(caps_file=caps, node=NODE, state_file=tmp_path / "agent" / "state.json")
    gpus = MemoryGpuPower(4)
    clock = Clock()
    return cfg, gpus, clock, NodeAgent(cfg, gpus, clock)


def _publish(cfg: AgentConfig, jobs: dict, written_s: float = NOW_S, node: str = NODE) -> None:
    write_node_caps(cfg.caps_file, {node: jobs, "gpu02": {99: (0.5, [0])}}, written_s, "policy")


def test_apply_then_drift_then_job_end(setup):
    cfg, gpus, clock, agent = setup
    _publish(cfg, {11: (0.8, [0, 1]), 12: (0.55, [3])})
    r = agent.step()
    assert gpus.limits_mw == {0: 320_000, 1: 320_000, 2: MAX_MW, 3: 220_000}
    assert r.capped == {0: (11, 320_000), 1: (11, 320_000), 3: (12, 220_000)}
    assert r.caps_error is None and r.errors == []
    # the state names every GPU the agent changed (for a restart after a crash)
    assert json.loads(cfg.state_file.read_text())["gpus"] == {"0": 11, "1": 11, "3": 12}
    assert (cfg.state_file.stat().st_mode & 0o777) == 0o600

    # a step with nothing changed sets nothing; a limit changed behind its back is set again
    assert agent.step().set_mw == []
    gpus.limits_mw[1] = MAX_MW  # e.g. nvidia-smi -pl by someone else
    clock.t += 60
    _publish(cfg, {11: (0.8, [0, 1]), 12: (0.55, [3])}, written_s=clock.t)
    assert agent.step().set_mw == [(1, 320_000)]
    assert gpus.limits_mw[1] == 320_000

    # job 11 ends: its GPUs go back to the default limit, job 12 keeps its cap
    _publish(cfg, {12: (0.55, [3])}, written_s=clock.t)
    r = agent.step()
    assert r.restored == [0, 1]
    assert gpus.limits_mw == {0: MAX_MW, 1: MAX_MW, 2: MAX_MW, 3: 220_000}
    assert json.loads(cfg.state_file.read_text())["gpus"] == {"3": 12}


def test_stale_missing_or_bad_file_restores_defaults(setup):
    cfg, gpus, clock, agent = setup
    _publish(cfg, {11: (0.5, [2])})
    agent.step()
    assert gpus.limits_mw[2] == 200_000
    clock.t += cfg.max_age_s + 1  # the adapter stopped publishing
    r = agent.step()
    assert "max age" in r.caps_error and str(cfg.caps_file) in r.caps_error
    assert gpus.limits_mw[2] == MAX_MW and r.restored == [2]

    _publish(cfg, {11: (0.5, [2])}, written_s=clock.t)
    agent.step()
    cfg.caps_file.write_text('{"version": 1, "written_at_s": 1, "nodes": ')  # torn write
    r = agent.step()
    assert "cannot read" in r.caps_error and gpus.limits_mw[2] == MAX_MW

    cfg.caps_file.unlink()
    assert "cannot read" in agent.step().caps_error


@pytest.mark.parametrize(
    ("jobs", "key"),
    [
        ({"11": {"cap_fraction": 1.5, "gpus": [0]}}, "nodes.gpu01.11.cap_fraction"),
        ({"11": {"cap_fraction": 0.5, "gpus": ["0"]}}, "nodes.gpu01.11.gpus"),
        ({"x": {"cap_fraction": 0.5, "gpus": [0]}}, "nodes.gpu01.x"),
        ({"11": {"cap_fraction": 0.5}}, "nodes.gpu01.11"),
    ],
)
def test_caps_file_errors_name_the_key(tmp_path, jobs, key):
    path = tmp_path / "caps.json"
    path.write_text(json.dumps({"version": 1, "written_at_s": NOW_S, "nodes": {NODE: jobs}}))
    with pytest.raises(NodeCapsError, match=key.replace(".", r"\.")) as err:
        read_node_caps(path, NODE, NOW_S, 60.0)
    assert str(path) in str(err.value)
    # another node's bad entry does not concern this node
    assert read_node_caps(path, "gpu02", NOW_S, 60.0) == []


def test_stop_restores_every_capped_gpu(setup):
    cfg, gpus, clock, agent = setup
    _publish(cfg, {11: (0.7, [0, 1, 2, 3])})

    def stop_after_one(result):
        if result.capped:
            assert set(gpus.limits_mw.values()) == {280_000}
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only asks the loop to stop

    before = signal.getsignal(signal.SIGTERM)
    agent.run(on_step=stop_after_one)
    assert signal.getsignal(signal.SIGTERM) is before  # the agent's handler is gone
    assert set(gpus.limits_mw.values()) == {MAX_MW}
    assert json.loads(cfg.state_file.read_text())["gpus"] == {}


def test_crash_recovery_restores_from_state_file(setup):
    cfg, gpus, clock, agent = setup
    _publish(cfg, {11: (0.6, [1, 2])})
    agent.step()  # then the agent dies (kill -9): the limits stay
    assert gpus.limits_mw[1] == 240_000
    cfg.caps_file.unlink()  # and the adapter is gone too
    restarted = NodeAgent(cfg, gpus, clock)
    restarted.run(max_steps=1, handle_signals=False)
    assert set(gpus.limits_mw.values()) == {MAX_MW}
    # what the restarted agent set: the two restores at start-up, nothing else
    assert gpus.sets[-2:] == [(1, MAX_MW), (2, MAX_MW)]


def test_damaged_state_file_is_refused_not_overwritten(setup):
    cfg, gpus, clock, agent = setup
    cfg.state_file.parent.mkdir(parents=True)
    cfg.state_file.write_text("{not json")
    with pytest.raises(AgentStateError, match="state.json"):
        agent.restore_all()
    assert cfg.state_file.read_text() == "{not json"


def test_clamping_to_the_allowed_range(tmp_path):
    board = PowerLimits(min_mw=150_000, max_mw=350_000, default_mw=300_000)
    gpus = MemoryGpuPower(2, board=board)
    cfg = AgentConfig(caps_file=tmp_path / "c.json", node=NODE, state_file=tmp_path / "s.json")
    write_node_caps(cfg.caps_file, {NODE: {5: (0.2, [0]), 6: (1.0, [1])}}, NOW_S, "policy")
    agent = NodeAgent(cfg, gpus, Clock())
    r = agent.step()
    # 0.2 x 350 W = 70 W is below the 150 W minimum; 1.0 is the max limit, not the default
    assert gpus.limits_mw == {0: 150_000, 1: 350_000}
    assert r.capped == {0: (5, 150_000), 1: (6, 350_000)}
    agent.restore_all()
    assert gpus.limits_mw == {0: 300_000, 1: 300_000}  # back to the default


def test_unknown_gpu_and_shared_gpu(setup):
    cfg, gpus, clock, agent = setup
    _publish(cfg, {11: (0.9, [0, 7]), 12: (0.6, [0])})
    r = agent.step()
    assert r.errors == ["job 11: GPU 7 is not on this node"]
    assert r.capped == {0: (12, 240_000)}  # two jobs on one GPU: the lower cap


class FailingGpu(MemoryGpuPower):
    """GPU 1 refuses to be set (e.g. the agent is not root)."""

    def set_power_limit_mw(self, index: int, limit_mw: int) -> None:
        if index == 1:
            raise NvmlError("GPU 1: nvmlDeviceSetPowerManagementLimit failed: No permission")
        super().set_power_limit_mw(index, limit_mw)


def test_a_failing_gpu_does_not_stop_the_others(tmp_path):
    cfg = AgentConfig(caps_file=tmp_path / "c.json", node=NODE, state_file=tmp_path / "s.json")
    gpus = FailingGpu(3)
    write_node_caps(cfg.caps_file, {NODE: {5: (0.5, [0, 1, 2])}}, NOW_S, "policy")
    r = NodeAgent(cfg, gpus, Clock()).step()
    assert gpus.limits_mw == {0: 200_000, 1: MAX_MW, 2: 200_000}
    assert len(r.errors) == 1 and "No permission" in r.errors[0]


def test_command_restores_on_sigterm(tmp_path):
    """``gridrl node-agent`` as a process: caps applied, SIGTERM, limits restored, exit 0.
    In-memory GPUs live in the process, so the state file shows what it did."""
    caps, state = tmp_path / "caps.json", tmp_path / "state.json"
    write_node_caps(caps, {NODE: {11: (0.5, [0, 2])}}, time.time(), "policy")
    code = "from gridrl.cli import app; app()"
    argv = [sys.executable, "-c", code, "node-agent", "--caps", str(caps), "--node", NODE]
    argv += ["--state", str(state), "--interval", "0.2", "--memory-gpus", "4"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]  # restore, 2 steps
        assert lines[1]["capped"] == {
            "0": {"job_id": 11, "limit_mw": 200_000},
            "2": {"job_id": 11, "limit_mw": 200_000},
        }
        assert json.loads(state.read_text())["gpus"] == {"0": 11, "2": 11}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    last = json.loads(out.strip().splitlines()[-1])
    assert last["restored"] == [0, 2] and json.loads(state.read_text())["gpus"] == {}


def _nvml_answers() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # library missing, no driver, no GPU
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_answers(), reason="no NVIDIA GPU here: pynvml.nvmlInit() fails")
def test_real_nvml_reads_and_sets_back_the_same_limit():
    """Reads every GPU's range and limit; sets GPU 0's current limit again (a no-op for
    the hardware; needs root)."""
    from gridrl.integrations.nvml import PynvmlPower

    with PynvmlPower() as nv:
        indices = nv.gpu_indices()
        assert indices == list(range(len(indices))) and indices
        for i in indices:
            lim = nv.limits(i)
            assert 0 < lim.min_mw <= lim.default_mw <= lim.max_mw
            assert lim.min_mw <= nv.power_limit_mw(i) <= lim.max_mw
        if os.geteuid() == 0:
            now = nv.power_limit_mw(0)
            nv.set_power_limit_mw(0, now)
            assert nv.power_limit_mw(0) == now


@pytest.mark.skipif(_nvml_answers(), reason="NVML answers here: no missing-driver path")
def test_command_without_nvml_is_one_clear_error(tmp_path):
    from typer.testing import CliRunner

    from gridrl.cli import app

    caps = tmp_path / "caps.json"
    write_node_caps(caps, {NODE: {}}, time.time(), "policy")
    res = CliRunner().invoke(app, ["node-agent", "--caps", str(caps), "--once", "--node", NODE])
    assert res.exit_code == 2, res.output
    assert "NVML cannot start" in res.output and "Traceback" not in res.output
