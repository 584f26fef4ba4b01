"""Inference demand from public traces: hourly utilisation and LLM request logs.

Two trace forms become a site's ``inference_gpus`` (mean GPUs busy with
latency-sensitive work in each hour):

- **Hourly utilisation** (``cpu_hourly`` data set: ``alibaba_2017_1.csv``,
  ``google_2011_1.csv``, columns ``(index), cpu_load``): one 0-1 utilisation of a whole
  cluster per hour, with a running row number and no calendar. The rows are placed at
  an explicit ``start`` and scaled by the site's ``gpus``: ``inference_gpus = load x
  gpus``. The row numbers must run on by one (a gap or repeat is an error naming the
  line); a value outside [0, 1] is an error.
- **LLM serving requests** (Azure LLM inference trace format, github.com/Azure/
  AzurePublicDataset: ``TIMESTAMP,ContextTokens,GeneratedTokens``, one row per request,
  timestamps like ``2023-11-16 18:15:46.6805900`` with no zone stated): each request
  costs ``gpu_s_per_1k_context_tokens`` and ``gpu_s_per_1k_generated_tokens`` GPU
  seconds per thousand tokens, both given by the caller (they depend on the model and
  the hardware), and is counted in the hour it arrives. Only the whole hours between
  the first and the last request are kept; the requests of the partial hours at the two
  ends are counted in the provenance. An hour without a request is a real zero.
  A scenario reads such a log as ``sites[i].series.inference_gpus`` with ``format:
  llm_requests`` (``gridrl.scenario.SeriesSource``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.loaders._common import read_csv, require_columns, row_error
from gridrl.data.signals import SignalError, Signals

__all__ = ["LLM_TRACE_COLUMNS", "load_llm_requests", "load_utilisation_trace"]

SECONDS_PER_HOUR = 3600.0
TOKENS_PER_K = 1000.0
LLM_TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def load_utilisation_trace(
    path: str | Path,
    *,
    start: Any,
    gpus: float,
    site: str = "cluster",
    column: str = "cpu_load",
) -> Signals:
    """An hourly 0-1 utilisation trace as ``inference_gpus`` of a site with ``gpus`` GPUs.

    Parameters
    ----------
    path : path
        CSV with a running row number in its first column and ``column``.
    start : timestamp
        UTC time of the first row (the trace has no calendar; naive is read as UTC).
    gpus : float
        GPUs of the site; the trace's utilisation is applied to them.
    """
    path = Path(path)
    if not gpus > 0:
        raise SignalError(str(path), f"gpus must be positive, got {gpus!r}")
    df = read_csv(path, index_col=0)
    require_columns(df, [column], path)
    numbers = pd.to_numeric(pd.Series(df.index), errors="coerce").to_numpy(float)
    steps = np.diff(numbers)
    bad = np.flatnonzero(~np.isfinite(numbers[1:]) | (steps != 1))
    if bad.size:
        raise row_error(
            path,
            str(df.index.name or "first column"),
            bad + 1,
            f"row number {df.index[bad[0] + 1]} after {df.index[bad[0]]}: rows must "
            "run on by one (an hour missing or repeated)",
        )
    load = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~((load >= 0.0) & (load <= 1.0)))
    if bad.size:
        raise row_error(
            path, column, bad, f"{df[column].iloc[bad[0]]} is not a utilisation in [0, 1]"
        )
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    if first != first.floor("h"):
        raise SignalError(str(path), f"start {start!r} is not on a whole hour")
    index = pd.date_range(first, periods=len(df), freq="h", name="time")
    frame = pd.DataFrame({column: load * gpus}, index=index)
    frame.attrs["provenance"] = [
        {"step": "utilisation_trace", "source": str(path), "start": str(first), "gpus": gpus}
    ]
    return Signals.from_frame(
        frame, source=str(path), site=site, columns={column: "inference_gpus"}, _line_offset=1
    )


def load_llm_requests(
    path: str | Path,
    *,
    assume_tz: str,
    gpu_s_per_1k_context_tokens: float,
    gpu_s_per_1k_generated_tokens: float,
    site: str = "cluster",
) -> Signals:
    """Hourly ``inference_gpus`` from a request log in the Azure LLM trace format.

    Parameters
    ----------
    assume_tz : str
        Zone of the naive timestamps (``"UTC"`` if the log is in UTC); required, since
        the format does not say.
    gpu_s_per_1k_context_tokens, gpu_s_per_1k_generated_tokens : float
        GPU seconds spent per thousand prompt (prefill) and generated (decode) tokens.
    """
    path = Path(path)
    for name, value in (
        ("gpu_s_per_1k_context_tokens", gpu_s_per_1k_context_tokens),
        ("gpu_s_per_1k_generated_tokens", gpu_s_per_1k_generated_tokens),
    ):
        if not value >= 0:
            raise SignalError(str(path), f"{name} must be >= 0, got {value!r}")
    df = read_csv(path)
    require_columns(df, LLM_TRACE_COLUMNS, path)
    times = _request_times(df, path, assume_tz)
    tokens = {}
    for col in LLM_TRACE_COLUMNS[1:]:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~(values >= 0) | (values != np.round(values)))
        if bad.size:
            raise row_error(path, col, bad, f"{df[col].iloc[bad[0]]} is not a token count")
        tokens[col] = values
    gpu_s = (
        tokens["ContextTokens"] * gpu_s_per_1k_context_tokens
        + tokens["GeneratedTokens"] * gpu_s_per_1k_generated_tokens
    ) / TOKENS_PER_K
    first_hour, end_hour = times.min().ceil("h"), times.max().floor("h")
    if end_hour <= first_hour:
        raise SignalError(str(path), "the requests do not span one whole hour")
    inside = (times >= first_hour) & (times < end_hour)
    hours = times[inside].floor("h")
    index = pd.date_range(first_hour, end_hour, freq="h", inclusive="left", name="time")
    per_hour = pd.Series(gpu_s[inside]).groupby(hours).sum().reindex(index, fill_value=0.0)
    counts = pd.Series(1, index=hours).groupby(level=0).sum().reindex(index, fill_value=0)
    frame = pd.DataFrame({"inference_gpus": per_hour.to_numpy() / SECONDS_PER_HOUR}, index)
    frame.attrs["provenance"] = [
        {
            "step": "llm_requests",
            "source": str(path),
            "assume_tz": assume_tz,
            "gpu_s_per_1k_context_tokens": gpu_s_per_1k_context_tokens,
            "gpu_s_per_1k_generated_tokens": gpu_s_per_1k_generated_tokens,
            "requests": int(len(times)),
            "requests_in_partial_edge_hours": int((~inside).sum()),
            "hours_without_requests": int((counts == 0).sum()),
        }
    ]
    return Signals.from_frame(frame, source=str(path), site=site)


def _request_times(df: pd.DataFrame, path: Path, assume_tz: str) -> pd.DatetimeIndex:
    """UTC arrival times; unparseable ones and zones are errors naming the row."""
    col = LLM_TRACE_COLUMNS[0]
    text = df[col].astype("string").str.strip()
    # pandas reads at most 9 fractional digits; the trace writes 7.
    times = pd.to_datetime(text, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        raise row_error(path, col, bad, f"cannot parse timestamp {df[col].iloc[bad[0]]!r}")
    if getattr(times.dt, "tz", None) is not None:
        raise SignalError(
            str(path), "timestamps carry a zone: assume_tz does not apply", column=col
        )
    try:
        local = pd.DatetimeIndex(times).tz_localize(
            assume_tz, ambiguous="raise", nonexistent="raise"
        )
    except Exception as err:  # unknown zones and DST edges raise several types
        raise SignalError(
            str(path), f"cannot place times in {assume_tz!r}: {err}", column=col
        ) from None
    return local.tz_convert("UTC")
