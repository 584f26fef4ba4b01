"""A scenario whose every signal comes from real files, named by data set, all from YAML.

One site in PJM, 2022: PV, wind and carbon from EIA-930 (PJM.csv), price and weather
from the multiregion set (US-MIDA-PJM), the feeder's other load from CityLearn homes
(mapped onto 2022 as a typical year), inference demand and flexible arrivals from the
hourly cluster utilisation traces. The test builds it, forecasts it and runs an episode.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gridrl.data.build import SITE_SIGNALS, build_signals, series_summary
from gridrl.data.signals import SignalError
from gridrl.scenario import ScenarioError, load_scenario

SCENARIO = textwrap.dedent("""\
    name: byo_pjm
    seed: 7
    year: 2022
    sites:
      - name: pjm
        location: {latitude_deg: 39.95, longitude_deg: -75.16, tz: America/New_York}
        weather: {source: multiregion, zone: US-MIDA-PJM, years: [2022, 2022],
                  edge_fill: adjacent_day}
        gpus: 8
        gpu_board_idle_kw: 0.075
        gpu_board_max_kw: 0.7
        host_idle_kw_per_gpu: 0.22
        host_busy_kw_per_gpu: 0.35
        facility_fixed_kw: 0.7
        grid: {feeder_capacity_kw: 120.0, reserve_fraction: 0.05}
        price: {source: multiregion, zone: US-MIDA-PJM, years: [2022, 2022]}
        series:
          pv_kw: {dataset: eia930_2022, file: PJM.csv, column: SUN, scale: 0.002,
                  fill: interpolate, max_fill_h: 24}
          wind_kw: {dataset: eia930_2022, file: PJM.csv, column: WND, scale: 0.001,
                    fill: interpolate, max_fill_h: 24}
          carbon_g_per_kwh: {dataset: eia930_2022, file: PJM.csv, column: avg_CI,
                             fill: interpolate, max_fill_h: 24}
          background_load_kw:
            dataset: citylearn_2022
            column: [Building_1/load_kw, Building_2/load_kw, Building_3/load_kw]
            scale: 4.0
            typical_year: true
          inference_gpus: {dataset: cpu_hourly, file: alibaba_2017_1.csv, column: cpu_load,
                           time_format: offset_h, time_origin: "2021-12-31T23:00Z",
                           scale: 4.0}
          flexible_gpu_h: {dataset: cpu_hourly, file: google_2011_1.csv, column: cpu_load,
                           time_format: offset_h, time_origin: "2022-01-01T00:00Z",
                           scale: 3.0}
    throttle:
      training:
        cap_fraction: [0.6, 0.8, 1.0]
        throughput_fraction: [0.75, 0.92, 1.0]
        source: McDonald et al. 2022, arXiv:2205.09646
      inference:
        cap_fraction: [0.6, 0.8, 1.0]
        throughput_fraction: [0.82, 0.91, 1.0]
        power_fraction: [0.52, 0.62, 0.7]
        source: Patel et al. 2024 (POLCA), arXiv:2308.12908
    env: {episode_hours: 48, forecast_horizons_h: [1, 6, 24]}
    periods:
      train: {start: "2022-01-01", end: "2022-09-30"}
      test: {start: "2022-11-01", end: "2022-11-14"}
""")
# Signals read from files, and the ones the multiregion loaders give.
SERIES = {"pv_kw", "wind_kw", "carbon_g_per_kwh", "background_load_kw", "inference_gpus",
          "flexible_gpu_h"}


@pytest.fixture(scope="module")
def byo(shared_data, tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("byo") / "byo_pjm.yaml"
    path.write_text(SCENARIO)
    return path, build_signals(load_scenario(path), base_dir=path.parent, cache=False)


def test_every_signal_comes_from_a_file(byo, shared_data):
    path, sig = byo
    record = next(r for r in sig.provenance if r.get("step") == "build_signals")
    sources = record["sources"]["pjm"]
    assert set(sources["series"]) == SERIES
    assert {"weather", "price"} <= set(sources)  # multiregion: real weather and price
    pjm = pd.read_csv(shared_data / "grid" / "eia930_2022" / "PJM.csv")
    site = sig.site("pjm")
    full = pjm["WND"].notna().to_numpy()
    np.testing.assert_allclose(site["wind_kw"].to_numpy()[full], pjm["WND"][full] * 0.001)
    np.testing.assert_allclose(site["carbon_g_per_kwh"].to_numpy()[full], pjm["avg_CI"][full])
    # The 23 empty hours (a day at the spring DST change) were filled, and it is recorded.
    fill = [r for r in sources["series"]["wind_kw"]["provenance"] if r["step"] == "fill"]
    assert fill[0]["cells_filled"] == {"WND/wind_kw": 23}
    cpu = pd.read_csv(shared_data / "traces" / "cpu_hourly" / "alibaba_2017_1.csv")
    np.testing.assert_allclose(site["inference_gpus"].to_numpy(), cpu["cpu_load"][:8760] * 4.0)
    # Headroom follows from the real feeder load: capacity minus reserve minus load.
    np.testing.assert_allclose(site["headroom_kw"], 120.0 * 0.95 - site["background_load_kw"])
    assert set(site.columns) == set(SITE_SIGNALS)
    assert sources["series"]["background_load_kw"]["typical_year"] is True
    assert sources["series"]["inference_gpus"]["provenance"][0] == {
        "step": "times", "method": "offset_h", "origin": "2021-12-31T23:00Z"}
    summary = series_summary(sig)
    assert set(summary.index.get_level_values("signal")) == SERIES
    assert summary.loc[("pjm", "wind_kw"), "cells_filled"] == 23


def test_forecast_and_episode_from_yaml(byo, tmp_path):
    from gridrl.agents.evaluate import evaluate
    from gridrl.forecast.config import CrossFitConfig, LightGBMConfig
    from gridrl.forecast.pipeline import fit_scenario, load_inputs, resolve_config

    path, _ = byo
    data = load_inputs(path)
    assert data.locations["pjm"].latitude_deg == 39.95  # the site key, not the weather's
    cfg, left_out = resolve_config(None, data)
    assert left_out == [] and cfg.features.solar and cfg.pv.signals == ["pv_kw"]
    small = cfg.model_copy(update={"lightgbm": LightGBMConfig(n_estimators=15, num_leaves=7),
                                   "crossfit": CrossFitConfig(folds=3, gap_h=24)})
    info = fit_scenario(data, small, tmp_path / "fit", progress=False)
    assert info["targets"] == list(cfg.targets) and Path(info["cube"]).is_file()
    table = evaluate("carbon_aware", path, period="test", episodes=1, seed=0,
                     forecast_mode="lightgbm", forecast_config=small)
    assert len(table) == 1 and np.isfinite(table["J"]).all()
    assert table["carbon_kg"].iloc[0] > 0


def _variant(tmp_path: Path, name: str, edit) -> Path:
    """The scenario with one edit of its parsed YAML, written beside the test."""
    data = yaml.safe_load(SCENARIO)
    edit(data, data["sites"][0]["series"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_series_errors_name_the_key_and_the_file(tmp_path, shared_data):
    bad = _variant(tmp_path, "bad", lambda d, s: s["pv_kw"].update(fill="sometimes"))
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.series\.pv_kw\.fill"):
        load_scenario(bad)
    both = _variant(tmp_path, "both", lambda d, s: s.update(headroom_kw=s["wind_kw"]))
    with pytest.raises(ScenarioError, match="background_load_kw or headroom_kw"):
        load_scenario(both)
    # Without fill, PJM's empty hours stop the build, naming file, column and row.
    unfilled = _variant(tmp_path, "unfilled",
                        lambda d, s: [s["wind_kw"].pop(k) for k in ("fill", "max_fill_h")])
    with pytest.raises(SignalError, match=r"PJM\.csv.*WND.*row 1712"):
        build_signals(load_scenario(unfilled), cache=False)
    # A one-year series does not cover another year unless it is a typical year.
    def later_year(d, s):
        d["year"] = 2023
        d["periods"] = {"train": {"start": "2023-01-01", "end": "2023-09-30"},
                        "test": {"start": "2023-11-01", "end": "2023-11-14"}}
        d["sites"][0]["weather"]["years"] = [2023, 2023]
        d["sites"][0]["price"]["years"] = [2023, 2023]

    later = _variant(tmp_path, "later", later_year)
    with pytest.raises(SignalError, match=r"PJM\.csv \[\w+ as \w+\]: 8760 hours of the "):
        build_signals(load_scenario(later), cache=False)
