"""Inference demand loaders: the real hourly utilisation traces and the LLM request format.

The utilisation tests read the ``cpu_hourly`` data set. No LLM request trace is among
the shared data sets, so that loader is tested on small files written here in the Azure
LLM inference trace's published format (``TIMESTAMP,ContextTokens,GeneratedTokens``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridrl.data import SignalError
from gridrl.data.datasets import dataset_dir
from gridrl.data.loaders import load_llm_requests, load_utilisation_trace

GPUS = 64


@pytest.mark.parametrize(
    ("name", "rows"), [("alibaba_2017_1.csv", 8904), ("google_2011_1.csv", 8760)]
)
def test_utilisation_traces_as_inference_gpus(shared_data, name, rows):
    path = dataset_dir("cpu_hourly") / name
    s = load_utilisation_trace(path, start="2021-01-04T00:00Z", gpus=GPUS, site="dc")
    raw = pd.read_csv(path, index_col=0)["cpu_load"].to_numpy()
    assert len(s.index) == rows
    assert s.index[0] == pd.Timestamp("2021-01-04", tz="UTC")
    np.testing.assert_allclose(s.frame[("dc", "inference_gpus")].to_numpy(), raw * GPUS)
    assert s.provenance[0]["gpus"] == GPUS


def test_utilisation_trace_errors(shared_data, tmp_path):
    raw = pd.read_csv(dataset_dir("cpu_hourly") / "google_2011_1.csv", index_col=0)
    gap = raw.drop(index=raw.index[100])
    gap.to_csv(tmp_path / "gap.csv")
    with pytest.raises(SignalError, match="row number 101 after 99: rows must run on") as info:
        load_utilisation_trace(tmp_path / "gap.csv", start="2021-01-01", gpus=GPUS)
    assert (info.value.column, info.value.row, info.value.line) == ("first column", 101, 102)
    high = raw.copy()
    high.iloc[7, 0] = 1.4
    high.to_csv(tmp_path / "high.csv")
    with pytest.raises(SignalError, match=r"1.4 is not a utilisation in \[0, 1\]") as info:
        load_utilisation_trace(tmp_path / "high.csv", start="2021-01-01", gpus=GPUS)
    assert (info.value.column, info.value.line) == ("cpu_load", 9)
    path = dataset_dir("cpu_hourly") / "google_2011_1.csv"
    with pytest.raises(SignalError, match="not on a whole hour"):
        load_utilisation_trace(path, start="2021-01-01 00:30", gpus=GPUS)
    with pytest.raises(SignalError, match="gpus must be positive"):
        load_utilisation_trace(path, start="2021-01-01", gpus=0)
    with pytest.raises(SignalError, match="column 'util'.*column not found"):
        load_utilisation_trace(path, start="2021-01-01", gpus=GPUS, column="util")


def _requests(tmp_path, rows):
    path = tmp_path / "requests.csv"
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    path.write_text(text + "".join(f"{t},{c},{g}\n" for t, c, g in rows))
    return path


def test_llm_requests_hourly_gpu_demand(tmp_path):
    rows = [
        ("2023-11-16 18:15:46.6805900", 374, 44),  # partial first hour
        ("2023-11-16 19:00:00.0000000", 1000, 100),
        ("2023-11-16 19:59:59.9999990", 2000, 200),
        # no request between 20:00 and 21:00: a real zero
        ("2023-11-16 21:10:00.5000000", 500, 50),
        ("2023-11-16 22:05:00.0000000", 800, 10),  # partial last hour
    ]
    s = load_llm_requests(
        _requests(tmp_path, rows),
        assume_tz="UTC",
        gpu_s_per_1k_context_tokens=0.36,
        gpu_s_per_1k_generated_tokens=36.0,
        site="serve",
    )
    got = s.frame[("serve", "inference_gpus")]
    assert list(got.index) == list(pd.date_range("2023-11-16 19:00", periods=3, freq="h", tz="UTC"))
    # 19:00: (3000 * 0.36 + 300 * 36) / 1000 GPU s = 11.88 GPU s over 3600 s.
    np.testing.assert_allclose(got.to_numpy(), [11.88 / 3600, 0.0, (0.18 + 1.8) / 3600])
    note = s.provenance[0]
    assert (note["requests"], note["requests_in_partial_edge_hours"]) == (5, 2)
    assert note["hours_without_requests"] == 1


def test_llm_requests_local_zone_and_errors(tmp_path):
    rows = [("2023-07-01 09:30:00", 10, 1), ("2023-07-01 12:30:00", 10, 1)]
    s = load_llm_requests(
        _requests(tmp_path, rows),
        assume_tz="America/Los_Angeles",
        gpu_s_per_1k_context_tokens=1.0,
        gpu_s_per_1k_generated_tokens=1.0,
    )
    assert s.index[0] == pd.Timestamp("2023-07-01 17:00", tz="UTC")  # 10:00 PDT
    kw = {"gpu_s_per_1k_context_tokens": 1.0, "gpu_s_per_1k_generated_tokens": 1.0}
    bad = _requests(tmp_path, [("2023-07-01 09:30:00", 10, 1), ("later", 10, 1)])
    with pytest.raises(SignalError, match="cannot parse timestamp 'later'") as info:
        load_llm_requests(bad, assume_tz="UTC", **kw)
    assert (info.value.column, info.value.line) == ("TIMESTAMP", 3)
    bad = _requests(tmp_path, [("2023-07-01 09:30:00", 10, 1), ("2023-07-01 12:30:00", -3, 1)])
    with pytest.raises(SignalError, match="-3 is not a token count") as info:
        load_llm_requests(bad, assume_tz="UTC", **kw)
    assert info.value.column == "ContextTokens"
    short = _requests(tmp_path, [("2023-07-01 09:30:00", 10, 1), ("2023-07-01 10:20:00", 10, 1)])
    with pytest.raises(SignalError, match="do not span one whole hour"):
        load_llm_requests(short, assume_tz="UTC", **kw)
    with pytest.raises(SignalError, match="cannot place times in 'Mars/Olympus'"):
        load_llm_requests(_requests(tmp_path, rows), assume_tz="Mars/Olympus", **kw)
    (tmp_path / "other.csv").write_text("time,prompt,output\n2023-07-01 09:30:00,1,1\n")
    with pytest.raises(SignalError, match="column 'TIMESTAMP'.*column not found"):
        load_llm_requests(tmp_path / "other.csv", assume_tz="UTC", **kw)
