"""The workload generator calibrated to the Alibaba GPU trace, against the trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gridrl.data.build import build_signals
from gridrl.data.sources.alibaba_calibrated import fit_trace, generate_calibrated
from gridrl.data.sources.site_weather import SiteWeather
from gridrl.scenario import Periods, ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[1]
# Tolerances (relative) of generated statistics against the trace's, over 4 years of
# hours: Poisson noise of ~124 000 arrivals is 0.3 %; heavy-tailed pod GPU-h (a few
# pods of hundreds of hours) leave a few % on the mean work.
TOL_ARRIVALS = 0.03
TOL_WORK = 0.10
TOL_INFERENCE = 0.03
TOL_QUANTILE = 0.05


@pytest.fixture(scope="module")
def fit(shared_data: Path):
    folder = shared_data / "traces" / "alibaba_gpu_2023"
    return fit_trace(folder / "pods.csv", folder / "gpu_nodes.csv", 28, 0)


def _weather(hours: int) -> SiteWeather:
    index = pd.date_range("2021-01-04", periods=hours, freq="h", tz="UTC", name="time")
    frame = pd.DataFrame({"temp_c": 15.0}, index=index)
    return SiteWeather(frame=frame, latitude_deg=0.0, longitude_deg=0.0, altitude_m=0.0,
                       tz_offset_h=0.0, station="none", source="test")


def test_generated_statistics_match_the_trace(fit) -> None:
    weather = _weather(4 * 8760)
    # a site the size of the traced cluster: the trace's own numbers are expected
    gen = generate_calibrated(fit, fit.cluster_gpus, weather, seed=3, site="s")
    trace = fit.hourly
    assert gen["arrivals"].mean() == pytest.approx(trace["arrivals"].mean(), rel=TOL_ARRIVALS)
    assert gen["flexible_gpu_h"].mean() == pytest.approx(
        trace["flexible_gpu_h"].mean(), rel=TOL_WORK)
    assert gen["inference_gpus"].mean() == pytest.approx(
        trace["inference_gpus"].mean(), rel=TOL_INFERENCE)
    # arrival profile by hour of day (trace second 0 = local midnight, UTC+0 here)
    hod_gen = gen["arrivals"].groupby(gen.index.hour).mean().to_numpy()
    hod_trace = trace["arrivals"].groupby(trace.index % 24).mean().to_numpy()
    assert np.corrcoef(hod_gen, hod_trace)[0, 1] > 0.9
    assert hod_gen == pytest.approx(hod_trace, rel=0.1)
    # share of busy GPU time that is inference (the QoS mix in work)
    share = lambda f: f["inference_gpus"].mean() / (  # noqa: E731
        f["inference_gpus"].mean() + f["flexible_gpu_h"].mean())
    assert share(gen) == pytest.approx(share(trace), rel=0.02)
    # hour-to-hour persistence of inference demand
    lag1 = lambda v: np.corrcoef(v[:-1], v[1:])[0, 1]  # noqa: E731
    assert lag1(gen["inference_gpus"].to_numpy()) == pytest.approx(
        lag1(trace["inference_gpus"].to_numpy()), abs=0.05)


def test_sizes_and_durations_are_the_traces(fit) -> None:
    rng = np.random.default_rng(0)
    pick = rng.integers(0, fit.pod_gpus.size, 200_000)
    for drawn, own in ((fit.pod_gpus[pick], fit.pod_gpus), (fit.pod_hours[pick], fit.pod_hours)):
        q = [0.25, 0.5, 0.9]
        assert np.quantile(drawn, q) == pytest.approx(np.quantile(own, q), rel=TOL_QUANTILE)
    assert fit.qos_share["LS"] + fit.qos_share["BE"] > 0.95
    assert fit.pod_gpus.size > 2000  # the window's flexible GPU pods


def test_splits_draw_different_copies(fit) -> None:
    weather = _weather(24 * 28)
    day = lambda a, b: {"start": f"2021-01-{a:02d}", "end": f"2021-01-{b:02d}"}  # noqa: E731
    periods = Periods(train=[day(4, 10)], validation=[day(11, 17)], test=[day(18, 24)])
    swapped = Periods(train=[day(18, 24)], validation=[day(11, 17)], test=[day(4, 10)])
    a = generate_calibrated(fit, 500, weather, 0, "s", periods)
    b = generate_calibrated(fit, 500, weather, 0, "s", swapped)
    train_rows = periods.train[0].hours(a.index)
    val_rows = periods.validation[0].hours(a.index)
    # relabelling a week as test instead of train draws it anew; validation is untouched
    assert not np.allclose(a["flexible_gpu_h"].to_numpy()[train_rows],
                           b["flexible_gpu_h"].to_numpy()[train_rows])
    pd.testing.assert_frame_equal(a.iloc[val_rows], b.iloc[val_rows])
    again = generate_calibrated(fit, 500, weather, 0, "s", periods)
    pd.testing.assert_frame_equal(a, again)  # seeded


def test_scenario_key_selects_the_calibrated_generator(shared_data: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "envs" / "congested1.yaml").read_text())
    raw["sites"][0]["workload"] = {"source": "alibaba_calibrated",
                                   "trace_target_utilisation_fraction": 0.5}
    path = tmp_path / "calibrated.yaml"
    path.write_text(yaml.safe_dump(raw))
    scenario = load_scenario(path)
    site = scenario.expanded_sites()[0]
    got = build_signals(scenario, base_dir=tmp_path).site(site.name)
    busy = got["inference_gpus"].mean() + got["flexible_gpu_h"].mean()
    assert busy / site.gpus == pytest.approx(0.5, rel=TOL_WORK)
    assert (got["flexible_gpu_h"] >= 0).all() and (got["inference_gpus"] > 0).all()


def test_calibration_keys_belong_to_the_calibrated_source(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "envs" / "congested1.yaml").read_text())
    raw["sites"][0]["workload"] = {"trace_target_utilisation_fraction": 0.5}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match="applies to source 'alibaba_calibrated' only"):
        load_scenario(path)
