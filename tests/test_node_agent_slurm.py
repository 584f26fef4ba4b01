"""The adapter publishes per-node caps of running jobs; the node agent applies them.

The real local cluster (tests/slurm/cluster.py) announces four fake GPUs (gres.conf of
placeholder files), so Slurm hands out real GRES indices; the agent drives in-memory
GPUs with those indices."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from export_helpers import geo_env
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
from cluster import FAKE_GPUS, LocalSlurm, missing_binaries  # noqa: E402
from test_slurm_integration import ACTION, _bundle, _sites_yaml  # noqa: E402

from gridrl.cli import app  # noqa: E402
from gridrl.integrations.node_agent import AgentConfig, NodeAgent  # noqa: E402
from gridrl.integrations.nvml import MEMORY_GPU_MAX_MW, MemoryGpuPower  # noqa: E402
from gridrl.integrations.slurm import node_caps  # noqa: E402
from gridrl.integrations.slurm_queue import parse_squeue_json  # noqa: E402
from gridrl.integrations.slurm_sites import SitesConfig  # noqa: E402


def _raw_job(job_id: int, partition: str, state: str, **extra) -> dict:
    return {"job_id": job_id, "partition": partition, "job_state": state, **extra}


def test_gres_indices_of_both_json_dialects_and_node_caps():
    old = _raw_job(  # Slurm 22.05
        1, "pa", "RUNNING",
        gres_detail=["gpu:2(IDX:0-1)", "gpu:a100:3(IDX:0,2-3)"],
        job_resources={"allocated_nodes": [{"nodename": "n1"}, {"nodename": "n2"}]},
    )  # fmt: skip
    new = _raw_job(  # Slurm 23.02+
        2, "pb", ["RUNNING"],
        gres_detail=["gpu:1(IDX:5)"],
        job_resources={"nodes": {"allocation": [{"name": "n3"}]}},
    )  # fmt: skip
    pending = _raw_job(3, "pa", "PENDING", gres_detail=[], job_resources=None)
    unknown = _raw_job(4, "pa", "RUNNING", gres_detail=["gpu:1(IDX:N/A)"],
                       job_resources={"allocated_nodes": [{"nodename": "n1"}]})  # fmt: skip
    jobs = parse_squeue_json(json.dumps({"jobs": [old, new, pending, unknown]}))
    assert [j.gpu_indices for j in jobs] == [{"n1": (0, 1), "n2": (0, 2, 3)}, {"n3": (5,)}, {}, {}]

    cfg = SitesConfig.model_validate(
        {"sites": [{"name": "a", "partitions": ["pa"], "gpus": 8},
                   {"name": "b", "partitions": ["pb"], "gpus": 8}]}
    )  # fmt: skip

    class D:  # a SiteDecision's two fields used here
        def __init__(self, site: str, cap: float) -> None:
            self.site, self.power_cap_fraction = site, cap

    caps = node_caps(jobs, [D("a", 0.61234), D("b", 0.5)], cfg)
    assert caps == {
        "n1": {1: (0.612, [0, 1])},
        "n2": {1: (0.612, [0, 2, 3])},
        "n3": {2: (0.5, [5])},
    }
    assert node_caps(jobs, [], cfg) == {}  # safe default: no caps


NEEDS_SLURM = pytest.mark.skipif(
    bool(missing_binaries()),
    reason=f"Slurm/munge programs missing: {missing_binaries()} "
    "(Debian: apt-get install slurm-wlm munge; see .ci/system-packages.sh)",
)


def _wait_running(c: LocalSlurm, *ids: int) -> None:
    deadline = time.monotonic() + 30
    while not all(c.show_job(i)["JobState"] == "RUNNING" for i in ids):
        assert time.monotonic() < deadline, [c.show_job(i)["JobState"] for i in ids]
        time.sleep(0.2)


def _gres_idx(c: LocalSlurm, job_id: int) -> list[int]:
    """GPU indices of the job from ``scontrol show job -d`` (a second, independent view)."""
    out = c.run("scontrol", "show", "job", "-d", str(job_id)).stdout
    found = re.search(r"Nodes=localhost .*GRES=gpu:\d+\(IDX:([0-9,-]+)\)", out)
    assert found, out
    idx: list[int] = []
    for part in found.group(1).split(","):
        lo, _, hi = part.partition("-")
        idx += range(int(lo), int(hi or lo) + 1)
    return idx


@NEEDS_SLURM
@pytest.mark.timeout(240)
def test_adapter_publishes_caps_the_agent_applies(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path, ACTION)
    sites = _sites_yaml(tmp_path, "start_time", node_caps_file="node_caps.json")
    caps_file = tmp_path / "node_caps.json"
    with LocalSlurm(tmp_path / "cluster") as c:
        monkeypatch.setenv("SLURM_CONF", c.env["SLURM_CONF"])
        common = ["-n", "1", "-t", "10", "-o", "/dev/null", "--wrap", "sleep 120"]
        job_a = c.sbatch("-p", "site_a", "--gres=gpu:2", *common)  # greensboro
        job_b = c.sbatch("-p", "site_b", "--gres=gpu:1", *common)  # miami
        _wait_running(c, job_a, job_b)
        gpus_a, gpus_b = _gres_idx(c, job_a), _gres_idx(c, job_b)
        assert len(gpus_a) == 2 and len(gpus_b) == 1 and not set(gpus_a) & set(gpus_b)

        runner = CliRunner()
        tick = ["slurm", "--bundle", str(bundle), "--sites", str(sites), "--once"]
        res = runner.invoke(app, tick)
        assert res.exit_code == 0, res.output
        doc = json.loads(caps_file.read_text())
        assert (caps_file.stat().st_mode & 0o777) == 0o644
        cap_min = geo_env(2).params.cap_min
        cap_a = round(cap_min + 0.5 * (1 - cap_min), 3)  # ACTION: half-way for greensboro
        assert doc["decision"] == "policy" and abs(doc["written_at_s"] - time.time()) < 60
        assert doc["nodes"] == {
            "localhost": {
                str(job_a): {"cap_fraction": cap_a, "gpus": gpus_a},
                str(job_b): {"cap_fraction": cap_min, "gpus": gpus_b},
            }
        }

        gpus = MemoryGpuPower(FAKE_GPUS)
        cfg = AgentConfig(caps_file=caps_file, node="localhost", state_file=tmp_path / "a.json")
        agent = NodeAgent(cfg, gpus)
        r = agent.step()
        assert r.caps_error is None and r.errors == []
        want = {g: round(cap_a * MEMORY_GPU_MAX_MW) for g in gpus_a}
        want |= {g: round(cap_min * MEMORY_GPU_MAX_MW) for g in gpus_b}
        assert {g: gpus.limits_mw[g] for g in want} == want
        free = set(range(FAKE_GPUS)) - set(want)
        assert all(gpus.limits_mw[g] == MEMORY_GPU_MAX_MW for g in free)

        # job a ends: the next tick drops it, the agent restores its GPUs
        c.run("scancel", str(job_a))
        deadline = time.monotonic() + 30
        while job_a in _running(c):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        res = runner.invoke(app, tick)
        assert res.exit_code == 0, res.output
        assert list(json.loads(caps_file.read_text())["nodes"]["localhost"]) == [str(job_b)]
        r = agent.step()
        assert sorted(r.restored) == gpus_a
        assert all(gpus.limits_mw[g] == MEMORY_GPU_MAX_MW for g in gpus_a)
        assert gpus.limits_mw[gpus_b[0]] == round(cap_min * MEMORY_GPU_MAX_MW)

        # a bad signal file: the safe default publishes no caps, the agent restores job b's
        (tmp_path / "signals_greensboro.csv").write_text("")
        res = runner.invoke(app, tick)
        assert res.exit_code == 1 and "is empty" in res.output, res.output
        doc = json.loads(caps_file.read_text())
        assert doc["decision"] == "safe_default" and doc["nodes"] == {}
        assert agent.step().restored == gpus_b
        assert set(gpus.limits_mw.values()) == {MEMORY_GPU_MAX_MW}


def _running(c: LocalSlurm) -> set[int]:
    out = c.run("squeue", "-h", "-t", "RUNNING", "-o", "%i").stdout.split()
    return {int(i) for i in out}
