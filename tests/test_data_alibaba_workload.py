"""The Alibaba GPU trace as a scenario's workload source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gridrl.data.build import build_signals
from gridrl.data.loaders import load_alibaba_pods, trace_cluster_gpus
from gridrl.scenario import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[1]


def _scenario_with_trace(tmp_path: Path, pods: Path, window_days: int = 28) -> Path:
    raw = yaml.safe_load((REPO / "envs" / "congested1.yaml").read_text())
    site = raw["sites"][0]
    site["workload"] = {
        "source": "alibaba",
        "trace_file": str(pods),
        "trace_window_days": window_days,
    }
    path = tmp_path / "trace.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_trace_workload_is_the_scaled_tiled_trace(shared_data: Path, tmp_path: Path) -> None:
    pods = shared_data / "traces" / "alibaba_gpu_2023" / "pods.csv"
    scenario = load_scenario(_scenario_with_trace(tmp_path, pods))
    site = scenario.expanded_sites()[0]
    signals = build_signals(scenario)
    got = signals.site(site.name)

    trace = load_alibaba_pods(pods)
    hourly = trace.hourly(pd.Timestamp("2000-01-01", tz="UTC")).frame["cluster"]
    whole = int(trace.trace_end_s // 3600)
    window = hourly.iloc[whole - 28 * 24 : whole]
    scale = site.gpus / trace_cluster_gpus(pods.with_name("gpu_nodes.csv"))
    # the first four weeks of the year are the trace's last four weeks, scaled
    np.testing.assert_allclose(
        got["flexible_gpu_h"].to_numpy()[: 28 * 24], window["flexible_gpu_h"].to_numpy() * scale
    )
    np.testing.assert_allclose(
        got["inference_gpus"].to_numpy()[28 * 24 : 56 * 24],
        window["inference_gpus"].to_numpy() * scale,
    )
    assert got["inference_gpus"].mean() > 0


def test_window_longer_than_trace_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    pods = shared_data / "traces" / "alibaba_gpu_2023" / "pods.csv"
    scenario = load_scenario(_scenario_with_trace(tmp_path, pods, window_days=400))
    with pytest.raises(ValueError, match="trace_window_days=400"):
        build_signals(scenario)


def test_alibaba_source_needs_a_trace_file(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "envs" / "congested1.yaml").read_text())
    raw["sites"][0]["workload"] = {"source": "alibaba"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.workload"):
        load_scenario(path)
