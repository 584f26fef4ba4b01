"""Embedded signal sources: real TMY weather, pvlib PV, windpowerlib wind, grid headroom,
carbon/price models, workload generator, the whole build, and ``gridrl signals``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gridrl.data.build import SITE_SIGNALS, build_signals, build_stats, cache_path
from gridrl.data.signals import SignalError, Signals
from gridrl.data.sources.grid import event_depth
from gridrl.data.sources.pv import pv_power_kw, solar_geometry
from gridrl.data.sources.rng import stream_rng
from gridrl.data.sources.weather import load_weather, pvlib_data_dir, year_index
from gridrl.data.sources.wind import (
    available_turbine_types,
    turbine_curve,
    wind_capacity_factor,
)
from gridrl.data.summary import site_summary
from gridrl.scenario import EventProcess, Scenario, WeatherSource, WindConfig, load_scenario

ENVS = Path(__file__).resolve().parents[1] / "envs"
TMY_FILES = ("723170TYA.CSV", "703165TY.csv", "12839.tm2")


@pytest.fixture(scope="module")
def geo3() -> Scenario:
    return load_scenario(ENVS / "geo3.yaml")


@pytest.fixture(scope="module")
def geo3_signals(geo3) -> Signals:
    return build_signals(geo3, cache=False)


@pytest.fixture(scope="module")
def edge24_signals() -> Signals:
    return build_signals(load_scenario(ENVS / "edge24.yaml"), cache=False)


def _with(scenario: Scenario, **changes) -> Scenario:
    data = scenario.model_dump(mode="json")
    data.update(changes)
    return Scenario.model_validate(data)


# ------------------------------------------------------------------ weather


@pytest.mark.parametrize("file", TMY_FILES)
def test_weather_covers_every_utc_hour_of_the_year(file):
    w = load_weather(WeatherSource(file=file), 2021)
    assert w.frame.index.equals(year_index(2021))
    assert len(w.frame) == 8760 and str(w.frame.index.tz) == "UTC"
    assert np.isfinite(w.frame.to_numpy()).all()
    leap = load_weather(WeatherSource(file=file), 2024)
    assert len(leap.frame) == 8784
    feb28 = leap.frame.loc["2024-02-28 12:00":"2024-02-28 23:00"].to_numpy()
    local_feb29 = leap.frame.loc["2024-02-29 12:00":"2024-02-29 23:00"].to_numpy()
    if leap.tz_offset_h == -5.0:  # UTC 12:00-23:00 is local 07:00-18:00 on both days
        np.testing.assert_array_equal(feb28, local_feb29)


def test_tmy_year_is_rolled_across_new_year_for_utc():
    """Greensboro is UTC-5: UTC 00:00-04:00 on 1 January is local 19:00-23:00 on
    31 December, the last five rows of the TMY file; UTC 05:00 is the first row."""
    import pvlib.iotools

    raw, meta = pvlib.iotools.read_tmy3(str(pvlib_data_dir() / "723170TYA.CSV"),
                                        map_variables=True)
    assert meta["TZ"] == -5.0
    w = load_weather(WeatherSource(file="723170TYA.CSV"), 2021).frame
    np.testing.assert_array_equal(w["temp_c"].to_numpy()[:5], raw["temp_air"].to_numpy()[-5:])
    np.testing.assert_array_equal(w["temp_c"].to_numpy()[5:29], raw["temp_air"].to_numpy()[:24])
    np.testing.assert_array_equal(w["ghi_w_per_m2"].to_numpy()[5:], raw["ghi"].to_numpy()[:-5])


def test_tmy2_units_are_converted():
    w = load_weather(WeatherSource(file="12839.tm2"), 2021)
    assert 15 < w.frame["temp_c"].mean() < 30  # Miami, degC (file stores tenths)
    assert 1 < w.frame["wind_speed_m_per_s"].mean() < 8  # m/s (file stores tenths)
    assert 95_000 < w.frame["pressure_pa"].mean() < 105_000
    assert w.tz_offset_h == -5 and abs(w.latitude_deg - 25.8) < 0.1


@pytest.mark.parametrize("file", TMY_FILES)
def test_irradiance_lines_up_with_the_sun(file):
    """Hour labels are right: measured GHI matches the computed sun best with no shift."""
    w = load_weather(WeatherSource(file=file), 2021)
    geo = solar_geometry(w)
    ghi = w.frame["ghi_w_per_m2"].to_numpy()
    cos_z = np.maximum(np.cos(np.radians(geo["zenith"].to_numpy())), 0)
    corr = {s: np.corrcoef(ghi, np.roll(cos_z, s))[0, 1] for s in (-1, 0, 1)}
    assert corr[0] > corr[-1] and corr[0] > corr[1], corr
    deep_night = geo["zenith"].to_numpy() > 95
    assert np.count_nonzero(ghi[deep_night] > 0) < 0.01 * deep_night.sum()


def test_missing_tmy_file_lists_the_bundled_ones():
    with pytest.raises(SignalError, match="723170TYA.CSV"):
        load_weather(WeatherSource(file="nowhere.csv"), 2021)


# ------------------------------------------------------------------ PV and wind


def test_pv_capacity_factors_are_physically_plausible(geo3, geo3_signals):
    summary = site_summary(geo3, geo3_signals)
    cf = summary["pv_cf"]
    # Fixed-tilt PV: roughly 10-22 %; Sand Point AK (55 N, cloudy) lowest.
    assert ((cf > 0.09) & (cf < 0.22)).all(), cf.to_dict()
    assert cf.idxmin() == "sandpoint"
    assert cf["miami"] > 0.14 and cf["greensboro"] > 0.14


def test_pv_is_zero_at_night_and_never_negative(geo3, geo3_signals):
    for site in geo3.expanded_sites():
        pv = geo3_signals.frame[(site.name, "pv_kw")].to_numpy()
        weather = load_weather(site.weather, geo3.year)
        night = solar_geometry(weather)["zenith"].to_numpy() >= 90
        assert night.sum() > 3000
        assert (pv >= 0).all()
        assert (pv[night] == 0).all()
        assert (pv[weather.frame["ghi_w_per_m2"].to_numpy() == 0] == 0).all()
        assert pv.max() <= site.pv.kwp / site.pv.dc_ac_ratio + 1e-9  # inverter AC rating
        assert pv.max() > 0.5 * site.pv.kwp / site.pv.dc_ac_ratio


def test_pv_scales_with_kwp():
    from gridrl.scenario import PVConfig

    w = load_weather(WeatherSource(file="723170TYA.CSV"), 2021)
    a = pv_power_kw(PVConfig(kwp=100.0), w)
    b = pv_power_kw(PVConfig(kwp=200.0), w)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-9)
    assert (pv_power_kw(PVConfig(kwp=0.0), w) == 0).all()


@pytest.mark.parametrize("file", TMY_FILES)
def test_wind_capacity_factor_at_the_tmy_sites_is_plausible(geo3, file):
    site = next(s for s in geo3.expanded_sites() if s.weather.file == file)
    w = load_weather(site.weather, geo3.year)
    cf = wind_capacity_factor(site.wind, w)  # the site's turbine, or the default one
    assert site.wind.turbine_type in available_turbine_types()
    assert 0.05 < cf.mean() < 0.50, (file, cf.mean())
    _, per_unit = turbine_curve(site.wind.turbine_type, site.wind.hub_height_m)
    # Published curves may top out a little above nameplate (E48/800: 810 kW).
    assert cf.min() >= 0 and cf.max() <= per_unit.max() < 1.05


def test_wind_output_in_signals_respects_capacity(geo3, geo3_signals):
    summary = site_summary(geo3, geo3_signals)
    for site in geo3.expanded_sites():
        wind = geo3_signals.frame[(site.name, "wind_kw")]
        _, per_unit = turbine_curve(site.wind.turbine_type, site.wind.hub_height_m)
        assert wind.min() >= 0 and wind.max() <= site.wind.capacity_kw * per_unit.max() + 1e-9
        if site.wind.capacity_kw > 0:
            assert 0.05 < summary.loc[site.name, "wind_cf"] < 0.50


def test_unknown_turbine_type_lists_the_available_ones():
    w = load_weather(WeatherSource(file="723170TYA.CSV"), 2021)
    with pytest.raises(SignalError, match="E-82/2350"):
        wind_capacity_factor(WindConfig(capacity_kw=1.0, turbine_type="X-1/1"), w)


# ------------------------------------------------------------------ grid


def test_headroom_follows_its_equation_and_bounds(geo3, geo3_signals):
    outage_hours = 0
    for site in geo3.expanded_sites():
        d = geo3_signals.site(site.name)
        cap, bg, hr = d["feeder_capacity_kw"], d["background_load_kw"], d["headroom_kw"]
        assert (hr <= cap).all()
        assert (hr >= 0).all()
        expected = np.maximum(cap - bg - site.grid.reserve_fraction * site.grid.feeder_capacity_kw,
                              0.0)
        np.testing.assert_allclose(hr, expected)
        outage = cap == 0
        assert (hr[outage] == 0).all()
        outage_hours += int(outage.sum())
        # Most of the time there is room; congestion lowers the capacity sometimes.
        assert hr.median() > 0.3 * site.grid.feeder_capacity_kw
        assert (cap < site.grid.feeder_capacity_kw).any()
    stats = build_stats(geo3_signals)
    assert outage_hours == sum(s.outage_hours for s in stats.values()) > 0


def test_event_process_matches_its_rate_and_duration():
    process = EventProcess(rate_per_year=50.0, mean_duration_h=5.0, depth_fraction=0.4)
    n_hours = 8760 * 20
    depth = event_depth(process, n_hours, stream_rng(0, "s", "congestion"))
    assert set(np.unique(depth)) == {0.0, 0.4}
    covered = (depth > 0).mean()
    # 50 events/yr x 5 h = 250 h/yr ~ 2.85 % of hours (less a little for overlaps).
    assert 0.022 < covered < 0.032, covered
    assert (event_depth(EventProcess(), 100, stream_rng(0, "s", "x")) == 0).all()


def test_congested_site_binds_on_hot_afternoons():
    sc = load_scenario(ENVS / "congested1.yaml")
    site = sc.expanded_sites()[0]
    d = build_signals(sc, cache=False).site(site.name)
    pue = site.pue + site.pue_temp_slope_per_c * np.maximum(
        d["temp_c"] - site.pue_temp_threshold_c, 0)
    busy_kw = site.gpu_board_max_kw + site.host_busy_kw_per_gpu
    full_kw = site.facility_fixed_kw + site.gpus * busy_kw * pue - d["pv_kw"]
    binds = full_kw > d["headroom_kw"]
    assert 50 < binds.sum() < 0.2 * len(d)  # binds at peaks, not all the time
    summer_afternoon = d.index.month.isin([6, 7, 8]) & ((d.index.hour - 5) % 24 >= 13) & (
        (d.index.hour - 5) % 24 <= 18)
    assert binds[summer_afternoon].mean() > 5 * binds[~summer_afternoon].mean()


# ------------------------------------------------------------------ carbon, price, workload


def test_carbon_is_lower_at_sunny_midday_and_differs_by_region(geo3, geo3_signals):
    f = geo3_signals.frame
    means = {s.name: f[(s.name, "carbon_g_per_kwh")].mean() for s in geo3.expanded_sites()}
    assert means["sandpoint"] > means["miami"] > means["greensboro"]  # diesel > gas > mix
    for site in geo3.expanded_sites():
        c = f[(site.name, "carbon_g_per_kwh")]
        assert c.min() >= site.carbon.min_g_per_kwh
        ghi = f[(site.name, "ghi_w_per_m2")]
        assert c[ghi > 500].mean() < c[ghi == 0].mean()
        p = f[(site.name, "price_per_mwh")]
        assert np.corrcoef(c, p)[0, 1] > 0.2  # merit order follows the mix (plus noise)


def test_workload_means_and_shape(geo3, geo3_signals):
    for site in geo3.expanded_sites():
        d = geo3_signals.site(site.name)
        target = site.workload.flexible_utilisation_fraction * site.gpus
        assert abs(d["flexible_gpu_h"].mean() / target - 1) < 0.03
        inf = d["inference_gpus"]
        assert (inf >= 0).all() and (d["flexible_gpu_h"] >= 0).all()
        lo, hi = site.workload.inference_trough_fraction, site.workload.inference_peak_fraction
        assert lo * site.gpus < inf.mean() < hi * site.gpus
        local = d.index.tz_convert(None) + pd.Timedelta(hours=load_weather(
            site.weather, 2021).tz_offset_h)
        weekend = local.dayofweek >= 5
        assert inf[weekend].mean() < inf[~weekend].mean()


# ------------------------------------------------------------------ build


def test_build_has_every_site_and_signal_validated(geo3, geo3_signals):
    assert geo3_signals.sites == tuple(s.name for s in geo3.expanded_sites())
    assert set(geo3_signals.signals) == set(SITE_SIGNALS)
    assert geo3_signals.index.equals(year_index(geo3.year))
    geo3_signals.validate()
    assert geo3_signals.array(["pv_kw", "headroom_kw"]).shape == (8760, 3, 2)


def test_build_is_deterministic_under_the_seed(geo3, geo3_signals):
    again = build_signals(geo3, cache=False)
    pd.testing.assert_frame_equal(again.frame, geo3_signals.frame)
    other = build_signals(_with(geo3, seed=geo3.seed + 1), cache=False).frame
    for col in ("carbon_g_per_kwh", "inference_gpus", "flexible_gpu_h"):
        assert not np.allclose(other[("miami", col)], geo3_signals.frame[("miami", col)])
    np.testing.assert_array_equal(other[("miami", "pv_kw")],
                                  geo3_signals.frame[("miami", "pv_kw")])  # weather, no noise


def test_edge24_sites_differ(edge24_signals):
    f = edge24_signals.frame
    sites = edge24_signals.sites
    assert len(sites) == 24
    for signal in ("pv_kw", "headroom_kw", "inference_gpus", "background_load_kw"):
        values = np.stack([f[(s, signal)].to_numpy() for s in sites])
        assert len({v.tobytes() for v in values}) == 24, signal
    # Same weather for all: temperatures are identical; one region: carbon noise shared.
    temps = np.stack([f[(s, "temp_c")].to_numpy() for s in sites])
    assert (temps == temps[0]).all()
    carbon = np.stack([f[(s, "carbon_g_per_kwh")].to_numpy() for s in sites])
    assert np.corrcoef(carbon)[0].min() > 0.95


def test_cache_round_trip(tmp_path, monkeypatch, geo3, geo3_signals):
    monkeypatch.setenv("GRIDRL_CACHE", str(tmp_path))
    path = cache_path(geo3)
    assert str(path).startswith(str(tmp_path))
    built = build_signals(geo3)
    assert path.is_file()
    cached = build_signals(geo3)
    pd.testing.assert_frame_equal(cached.frame, geo3_signals.frame, check_freq=False)
    assert build_stats(cached) == build_stats(built)


def test_carbon_from_a_real_csv(shared_data, geo3):
    """EIA-930 hourly carbon intensity of New York (NYIS), 2022, as the carbon signal."""
    csv = shared_data / "grid" / "eia930_2022" / "NYIS.csv"
    data = geo3.model_dump(mode="json")
    data["year"] = 2022
    data["sites"] = [data["sites"][0]]
    data["sites"][0]["carbon"] = {"source": "csv", "file": str(csv), "column": "avg_CI",
                                  "time_column": "timestamp"}
    sc = Scenario.model_validate(data)
    sig = build_signals(sc, cache=False)
    direct = pd.read_csv(csv)["avg_CI"].to_numpy()
    np.testing.assert_allclose(sig.frame[("greensboro", "carbon_g_per_kwh")], direct)
    # A file that misses hours of the scenario year is an error naming it.
    data["year"] = 2021
    with pytest.raises(SignalError, match="NYIS.csv"):
        build_signals(Scenario.model_validate(data), cache=False)


def test_real_csv_with_empty_cells_is_reported_not_filled(shared_data, geo3):
    """PJM's 2022 file has 23 empty avg_CI cells: the build stops and names the first."""
    csv = shared_data / "grid" / "eia930_2022" / "PJM.csv"
    data = geo3.model_dump(mode="json")
    data["year"] = 2022
    data["sites"] = [data["sites"][0]]
    data["sites"][0]["carbon"] = {"source": "csv", "file": str(csv), "column": "avg_CI",
                                  "time_column": "timestamp"}
    with pytest.raises(SignalError) as err:
        build_signals(Scenario.model_validate(data), cache=False)
    message = str(err.value)
    assert "PJM.csv" in message and "avg_CI" in message and "row 1712" in message
    assert "23 non-finite" in message


def test_csv_with_a_gap_names_file_and_row(tmp_path, geo3):
    times = pd.date_range("2021-01-01", periods=8760, freq="h", tz="UTC")
    df = pd.DataFrame({"time": times.astype(str), "ci": 300.0}).drop(index=100)
    path = tmp_path / "carbon.csv"
    df.to_csv(path, index=False)
    data = geo3.model_dump(mode="json")
    data["sites"] = [data["sites"][0]]
    data["sites"][0]["carbon"] = {"source": "csv", "file": "carbon.csv", "column": "ci"}
    with pytest.raises(SignalError) as err:
        build_signals(Scenario.model_validate(data), base_dir=tmp_path, cache=False)
    assert "carbon.csv" in str(err.value) and "row 101" in str(err.value)


# ------------------------------------------------------------------ CLI


def test_cli_signals_prints_the_table_and_writes_the_plot(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gridrl.cli import app

    monkeypatch.setenv("GRIDRL_CACHE", str(tmp_path / "cache"))
    png = tmp_path / "plots" / "week.png"
    result = CliRunner().invoke(app, ["signals", str(ENVS / "geo3.yaml"), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    for text in ("greensboro", "miami", "sandpoint", "PV", "CF", "headroom", "carbon"):
        assert text in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".week.png.*"))  # no temporary file left behind


def test_cli_signals_reports_a_bad_scenario(tmp_path):
    from typer.testing import CliRunner

    from gridrl.cli import app

    raw = yaml.safe_load((ENVS / "geo3.yaml").read_text())
    raw["sites"][0]["gpus"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["signals", str(bad)])
    assert result.exit_code == 2
    assert "sites[0].gpus" in result.output
