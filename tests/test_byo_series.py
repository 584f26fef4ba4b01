"""Series options from YAML: naive times, empty hours, epoch seconds, parquet, location."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from gridrl.data.build import build_signals
from gridrl.data.signals import SignalError
from gridrl.data.sources.grid import temperature_load_kw
from gridrl.scenario import Scenario, ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[1]
HOURS = pd.date_range("2021-01-01", periods=8760, freq="h", tz="UTC")


def _geo3_site(tmp_path: Path, name: str, site_update: dict) -> Path:
    """geo3 reduced to Greensboro, with ``site_update`` merged into its site."""
    data = yaml.safe_load((REPO / "envs" / "geo3.yaml").read_text())
    site = data["sites"][0]
    site.update(site_update)
    data["sites"] = [site]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _carbon(tmp_path: Path) -> np.ndarray:
    """A carbon file with naive timestamps and three empty hours in one run."""
    values = 300.0 + 50.0 * np.sin(np.arange(8760) / 24.0 * 2 * np.pi)
    written = values.copy()
    written[1000:1003] = np.nan
    frame = pd.DataFrame({"when": HOURS.tz_localize(None).strftime("%Y-%m-%d %H:%M"),
                          "ci": written})
    frame.to_csv(tmp_path / "carbon.csv", index=False)
    return values


def test_naive_carbon_with_three_empty_hours_from_yaml(tmp_path):
    values = _carbon(tmp_path)
    carbon = {"source": "csv", "file": "carbon.csv", "column": "ci", "time_column": "when"}
    plain = _geo3_site(tmp_path, "plain", {"carbon": carbon})
    with pytest.raises(SignalError, match="assume_tz"):
        build_signals(load_scenario(plain), base_dir=tmp_path, cache=False)
    carbon.update(assume_tz="UTC")
    unfilled = _geo3_site(tmp_path, "unfilled", {"carbon": carbon})
    with pytest.raises(SignalError, match=r"carbon\.csv.*'ci'.*row 1001"):
        build_signals(load_scenario(unfilled), base_dir=tmp_path, cache=False)
    carbon.update(fill="interpolate", max_fill_h=3)
    filled = load_scenario(_geo3_site(tmp_path, "filled", {"carbon": carbon}))
    sig = build_signals(filled, base_dir=tmp_path, cache=False)
    got = sig.frame[("greensboro", "carbon_g_per_kwh")].to_numpy()
    np.testing.assert_allclose(got[:1000], values[:1000])
    np.testing.assert_allclose(got[1000:1003], np.linspace(values[999], values[1003], 5)[1:4])
    record = next(r for r in sig.provenance if r.get("step") == "build_signals")
    steps = record["sources"]["greensboro"]["series"]["carbon_g_per_kwh"]["provenance"]
    assert {"step": "localize", "assume_tz": "UTC"} in steps
    assert [s["cells_filled"] for s in steps if s["step"] == "fill"] == [{"ci/carbon_g_per_kwh": 3}]
    # A run longer than max_fill_h stays an error.
    carbon.update(max_fill_h=2)
    short = load_scenario(_geo3_site(tmp_path, "short", {"carbon": carbon}))
    with pytest.raises(SignalError, match="row 1001"):
        build_signals(short, base_dir=tmp_path, cache=False)


def test_parquet_with_epoch_seconds_summed_and_scaled(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 2, 8760), rng.uniform(0, 1, 8760)
    pd.DataFrame({"epoch": HOURS.asi8 // 10**9, "wind_a_mw": a, "wind_b_mw": b}).to_parquet(
        tmp_path / "wind.parquet")
    series = {"wind_kw": {"file": "wind.parquet", "column": ["wind_a_mw", "wind_b_mw"],
                          "time_format": "epoch_s", "scale": 1000.0}}
    sc = load_scenario(_geo3_site(tmp_path, "wind", {"series": series}))
    sig = build_signals(sc, base_dir=tmp_path, cache=False)
    np.testing.assert_allclose(sig.frame[("greensboro", "wind_kw")], (a + b) * 1000.0)
    # A negative value after scale is an error for a nonnegative signal.
    series["wind_kw"]["scale"] = -1.0
    neg = load_scenario(_geo3_site(tmp_path, "neg", {"series": series}))
    with pytest.raises(SignalError, match="negative value"):
        build_signals(neg, base_dir=tmp_path, cache=False)


def _daily_phase_h(series: pd.Series) -> float:
    """Hour (UTC) of the peak of the first harmonic of the mean daily profile."""
    profile = series.groupby(series.index.hour).mean().to_numpy()
    z = np.sum(profile * np.exp(-2j * np.pi * np.arange(24) / 24))
    return float(-np.angle(z) * 24 / (2 * np.pi)) % 24


def test_location_key_sets_local_time_and_keeps_old_hashes(tmp_path):
    geo3 = load_scenario(REPO / "envs" / "geo3.yaml")
    base = _geo3_site(tmp_path, "base", {})
    # Unset new keys leave a scenario's hash as it was.
    data = yaml.safe_load(base.read_text())
    data["sites"][0].update(series={}, location=None)
    assert Scenario.model_validate(data).content_hash() == load_scenario(base).content_hash()
    # ... for every later key at its unused value, on a whole shipped scenario too
    dumped = geo3.model_dump(mode="json")
    for site in dumped["sites"]:
        site["workload"].update(trace_start_weekday=0, trace_target_utilisation_fraction=None)
        site.update(series={}, location=None)
    assert Scenario.model_validate(dumped).content_hash() == geo3.content_hash()
    # The site placed in the Azores (UTC-1 standard time, Greensboro UTC-5): the local
    # calendar of the workload model moves by four hours.
    moved = load_scenario(_geo3_site(tmp_path, "moved", {"location": {
        "latitude_deg": 37.7, "longitude_deg": -25.7, "tz": "Atlantic/Azores"}}))
    assert moved.content_hash() != load_scenario(base).content_hash()
    home = build_signals(load_scenario(base), cache=False).frame[("greensboro", "inference_gpus")]
    away = build_signals(moved, cache=False).frame[("greensboro", "inference_gpus")]
    assert (_daily_phase_h(home) - _daily_phase_h(away)) % 24 == pytest.approx(4.0, abs=0.1)
    from gridrl.forecast.sites import site_locations

    assert site_locations(moved)["greensboro"].longitude_deg == -25.7
    bad = yaml.safe_load(base.read_text())
    bad["sites"][0]["location"] = {"latitude_deg": 95.0, "longitude_deg": 0.0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.location\.latitude_deg"):
        load_scenario(tmp_path / "bad.yaml")


def test_temperature_and_headroom_series(tmp_path):
    """A real temperature drives the feeder-load model; a real headroom is used as is."""
    pd.DataFrame({"time": HOURS.strftime("%Y-%m-%dT%H:%M:%SZ"), "t_c": 30.0}).to_csv(
        tmp_path / "temp.csv", index=False)
    series = {"temp_c": {"file": "temp.csv", "column": "t_c"}}
    sc = load_scenario(_geo3_site(tmp_path, "temp", {"series": series}))
    site = build_signals(sc, base_dir=tmp_path, cache=False).site("greensboro")
    assert (site["temp_c"] == 30.0).all()
    grid = sc.sites[0].grid
    # Constant temperature: the load is L_T(30 C) times the daily/weekly shape alone.
    ratio = site["background_load_kw"] / temperature_load_kw(grid, np.array(30.0))
    assert ratio.groupby([ratio.index.hour, ratio.index.dayofweek]).std().max() < 1e-9
    assert ratio.max() <= 1 + grid.background_daily_amplitude_fraction
    cap = grid.feeder_capacity_kw * (1 - grid.reserve_fraction)
    headroom = cap * (0.5 + 0.4 * np.sin(np.arange(8760) / 24 * 2 * np.pi))
    pd.DataFrame({"time": HOURS.strftime("%Y-%m-%dT%H:%M:%SZ"), "h_kw": headroom}).to_csv(
        tmp_path / "headroom.csv", index=False)
    data = yaml.safe_load((REPO / "envs" / "geo3.yaml").read_text())["sites"][0]["grid"]
    data.update(congestion={"rate_per_year": 0.0}, outages={"rate_per_year": 0.0})
    update = {"grid": data, "series": {"headroom_kw": {"file": "headroom.csv",
                                                       "column": "h_kw"}}}
    sc = load_scenario(_geo3_site(tmp_path, "headroom", update))
    site = build_signals(sc, base_dir=tmp_path, cache=False).site("greensboro")
    np.testing.assert_allclose(site["headroom_kw"], headroom)
    np.testing.assert_allclose(site["background_load_kw"], cap - headroom)
    update["grid"] = {**data, "feeder_capacity_kw": data["feeder_capacity_kw"] / 2}
    small = load_scenario(_geo3_site(tmp_path, "small", update))
    with pytest.raises(SignalError, match="headroom_kw.*exceeds the feeder capacity"):
        build_signals(small, base_dir=tmp_path, cache=False)


def test_entsoe_series_by_data_set_name(shared_data):
    """GB wind (onshore + offshore, mixed 15/30-min steps) and FR carbon (naive UTC)."""
    from gridrl.data.sources.series import load_series
    from gridrl.scenario import SeriesSource

    wind = SeriesSource(dataset="entsoe_2020", file="gb_production.csv",
                        column=["Wind Onshore", "Wind Offshore"], resample="mean")
    frame, record = load_series(wind, "wind_mw", site="gb")
    raw = pd.read_csv(shared_data / "grid" / "entsoe_2020" / "gb_production.csv", index_col=0,
                      parse_dates=True)
    hour = raw.loc["2020-06-01 12:00":"2020-06-01 12:59"]
    expected = hour["Wind Onshore"].mean() + hour["Wind Offshore"].mean()
    got = frame.loc[pd.Timestamp("2020-06-01 12:00", tz="UTC"), ("gb", "wind_mw")]
    assert got == pytest.approx(expected)
    steps = [p["step"] for p in record["provenance"]]
    assert steps[:2] == ["localize", "resample"]
    carbon = SeriesSource(dataset="entsoe_2020", file="fr_carbon_intensity.csv",
                          column="Carbon Intensity", resample="mean")
    frame, record = load_series(carbon, "carbon_g_per_kwh", site="fr")
    assert {"step": "localize", "assume_tz": "UTC"} in record["provenance"]
    assert frame.index[0] == pd.Timestamp("2019-12-20", tz="UTC")
    # The multiregion set keeps its own keys (zone, years) rather than a second reader.
    with pytest.raises(ValidationError, match="read by source: multiregion"):
        SeriesSource(dataset="multiregion_2021_2024", file="price/SG_2022.csv.gz",
                     column="Price (USD/MWh)")


# A request log in the Azure LLM inference trace format (TIMESTAMP,ContextTokens,
# GeneratedTokens, naive timestamps with 7 fractional digits). No such trace is among the
# shared data sets: tests/data/llm_requests_small.csv is written by hand in that format,
# in Los Angeles time (UTC-8 in early March 2021). In UTC its requests arrive at
# 03-01 23:58 and 03-04 00:02 (the partial edge hours, left out), 03-02 09:15 and 09:45,
# 03-02 14:00, 03-03 09:30 and 03-03 20:59:59.999999: 48 whole hours, 03-02 00:00 to
# 03-03 23:00.
LLM_LOG = REPO / "tests" / "data" / "llm_requests_small.csv"
GPU_S_PER_1K_CONTEXT = 1.8
GPU_S_PER_1K_GENERATED = 18.0
LLM_SCALE = 2.0
SECONDS_PER_HOUR = 3600.0


def _llm_series(**update) -> dict:
    """``series`` of a site reading the request log; ``None`` values drop a key."""
    src = {"format": "llm_requests", "file": str(LLM_LOG), "assume_tz": "America/Los_Angeles",
           "gpu_s_per_1k_context_tokens": GPU_S_PER_1K_CONTEXT,
           "gpu_s_per_1k_generated_tokens": GPU_S_PER_1K_GENERATED, "scale": LLM_SCALE,
           "repeat": "day"}
    src.update(update)
    return {"inference_gpus": {k: v for k, v in src.items() if v is not None}}


def _gpu_s(context_tokens: float, generated_tokens: float) -> float:
    return (context_tokens * GPU_S_PER_1K_CONTEXT
            + generated_tokens * GPU_S_PER_1K_GENERATED) / 1000.0


def test_llm_request_log_as_inference_gpus_from_yaml(tmp_path):
    sc = load_scenario(_geo3_site(tmp_path, "llm", {"series": _llm_series()}))
    sig = build_signals(sc, base_dir=tmp_path, cache=False)
    got = sig.frame[("greensboro", "inference_gpus")]
    # GPU seconds per UTC hour of each logged day, then the mean of the two days.
    day1 = {9: _gpu_s(2000, 500) + _gpu_s(1000, 100), 14: _gpu_s(4000, 1000)}
    day2 = {9: _gpu_s(3000, 200), 20: _gpu_s(500, 50)}
    mean_s = {h: (day1.get(h, 0.0) + day2.get(h, 0.0)) / 2 for h in range(24)}
    assert mean_s[9] == pytest.approx(12.6) and mean_s[20] == pytest.approx(0.9)
    expected = np.array([mean_s[h] for h in HOURS.hour]) / SECONDS_PER_HOUR * LLM_SCALE
    assert got.index.equals(HOURS)
    np.testing.assert_allclose(got.to_numpy(), expected)
    record = next(r for r in sig.provenance if r.get("step") == "build_signals")
    read = record["sources"]["greensboro"]["series"]["inference_gpus"]
    assert (read["format"], read["repeat"], read["scale"]) == ("llm_requests", "day", LLM_SCALE)
    llm, repeat = read["provenance"][0], read["provenance"][-1]
    assert llm["step"] == "llm_requests" and llm["assume_tz"] == "America/Los_Angeles"
    assert (llm["requests"], llm["requests_in_partial_edge_hours"],
            llm["hours_without_requests"]) == (7, 2, 44)
    assert repeat == {"step": "repeat", "method": "day", "series_hours": 48,
                      "values_per_mean": [2, 2]}


def test_llm_request_log_not_covering_the_scenario(tmp_path):
    short = load_scenario(_geo3_site(tmp_path, "short", {"series": _llm_series(repeat=None)}))
    with pytest.raises(SignalError) as info:
        build_signals(short, base_dir=tmp_path, cache=False)
    message = str(info.value)
    assert "llm_requests_small.csv [llm_requests as inference_gpus]: 8712 hours of the " \
        "scenario are not in the series: 2021-01-01 00:00..2021-03-01 23:00, " \
        "2021-03-04 00:00..2021-12-31 23:00 UTC" in message
    assert "(48 hours)" in message and "repeat: day | week" in message
    # Two days hold no pattern of the week: the first hour of the week lacking is named.
    week = load_scenario(_geo3_site(tmp_path, "week", {"series": _llm_series(repeat="week")}))
    with pytest.raises(SignalError, match=r"repeat: week needs a value at every hour of the "
                       r"week; .*48 hours\) has none at Mon 00:00 UTC \(120 of 168 hours"):
        build_signals(week, base_dir=tmp_path, cache=False)


@pytest.mark.parametrize(("series", "message"), [
    (_llm_series(gpu_s_per_1k_generated_tokens=None),
     r"sites\[0\]\.series\.inference_gpus: format: llm_requests needs "
     r"gpu_s_per_1k_generated_tokens \(GPU seconds"),
    (_llm_series(assume_tz=None),
     r"sites\[0\]\.series\.inference_gpus: format: llm_requests needs assume_tz"),
    (_llm_series(column="ContextTokens", time_format="iso"),
     r"sites\[0\]\.series\.inference_gpus: column, time_format: not for format: "
     r"llm_requests"),
    ({"flexible_gpu_h": _llm_series()["inference_gpus"]},
     r"sites\[0\]: series\.flexible_gpu_h\.format: llm_requests gives GPUs busy serving "
     r"requests; only series\.inference_gpus takes it"),
    ({"inference_gpus": {"file": "x.csv", "column": "gpus", "gpu_s_per_1k_context_tokens": 1}},
     r"sites\[0\]\.series\.inference_gpus: gpu_s_per_1k_context_tokens: only for format: "
     r"llm_requests"),
    (_llm_series(typical_year=True),
     r"sites\[0\]\.series\.inference_gpus: typical_year and repeat"),
])
def test_llm_request_log_key_errors(tmp_path, series, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_geo3_site(tmp_path, "bad", {"series": series}))


def test_series_keys_added_later_keep_old_hashes(tmp_path):
    series = {"temp_c": {"file": "temp.csv", "column": "t_c"}}
    plain = load_scenario(_geo3_site(tmp_path, "plain", {"series": series}))
    series["temp_c"].update(format="timeseries", repeat=None)
    explicit = load_scenario(_geo3_site(tmp_path, "explicit", {"series": series}))
    assert explicit.content_hash() == plain.content_hash()
    series["temp_c"].update(repeat="day")
    assert load_scenario(_geo3_site(tmp_path, "day", {"series": series})).content_hash() \
        != plain.content_hash()
