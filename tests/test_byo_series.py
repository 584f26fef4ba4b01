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
