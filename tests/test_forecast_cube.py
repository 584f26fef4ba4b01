"""ForecastCube and the cheap modes (perfect, persistence, none, noisy) on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from forecast_helpers import NATIONAL_CENTROIDS, entsoe_signals, tmy_pv_signals

from gridrl.data.signals import Signals
from gridrl.forecast import ForecastConfig, ForecastCube, ForecastError, make_cube
from gridrl.forecast.bounds import physical_bounds
from gridrl.forecast.config import BoundsConfig

TARGETS = ["carbon_g_per_kwh", "solar_mw", "wind_mw"]
HORIZONS = [1, 2, 4, 8, 12, 24]
QUANTILES = [0.1, 0.5, 0.9]
# National ENTSO-E solar reports small nonzero values at night, so it is only >= 0 here;
# the night bound is tested on site PV built from real TMY weather.
CFG = ForecastConfig(bounds=BoundsConfig(zero_at_night=["pv_kw"]))


@pytest.fixture(scope="module")
def fr(shared_data):
    return entsoe_signals(shared_data, "fr")


def _cube(signals, mode, **kw):
    return make_cube(signals, mode, targets=TARGETS, horizons_h=HORIZONS, quantiles=QUANTILES,
                     config=CFG, locations=NATIONAL_CENTROIDS, **kw)


def _check_invariants(cube: ForecastCube, signals: Signals) -> None:
    v = cube.values
    assert v.dtype == np.float32 and np.isfinite(v).all()
    assert (np.diff(v, axis=-1) >= 0).all(), "quantiles cross"
    assert (v >= 0).all(), "all three signals are nonnegative"


def test_perfect_is_truth_and_holds_last_row(fr):
    cube = _cube(fr, "perfect")
    assert cube.values.shape == (len(fr.index), 1, 3, 6, 3)
    y = fr.array(TARGETS)[:, 0]  # [T, K]
    for i, h in enumerate(HORIZONS):
        np.testing.assert_allclose(cube.values[:-h, 0, :, i, 1], y[h:], rtol=1e-6)
        # targets beyond the data hold the last row
        np.testing.assert_allclose(cube.values[-1, 0, :, i, 1], y[-1], rtol=1e-6)
    _check_invariants(cube, fr)


def test_persistence_median_is_value_at_issue_time(fr):
    cube = _cube(fr, "persistence")
    y = fr.array(TARGETS)[:, 0]
    k = cube.signals.index("carbon_g_per_kwh")
    for i in range(len(HORIZONS)):
        np.testing.assert_allclose(cube.values[:, 0, k, i, 1], y[:, k], rtol=1e-5)
    width = cube.values[:, 0, k, :, 2] - cube.values[:, 0, k, :, 0]
    # residual spread grows with the horizon
    assert width[:, -1].mean() > width[:, 0].mean() > 0
    # in-sample empirical quantiles: the P10-P90 band covers about 80 % at 24 h
    truth = y[24:, k]
    band = cube.values[:-24, 0, k, -1]
    cover = np.mean((truth >= band[:, 0]) & (truth <= band[:, 2]))
    assert 0.7 < cover < 0.9
    _check_invariants(cube, fr)


def test_none_is_zeros(fr):
    cube = _cube(fr, "none")
    assert not cube.values.any()
    assert cube.mode == "none"


def test_noisy_is_seeded_and_calibrated(fr):
    a = _cube(fr, "noisy(0.2)", seed=3)
    b = _cube(fr, "noisy(0.2)", seed=3)
    c = _cube(fr, "noisy(0.2)", seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert a.mode == "noisy(0.2)"
    _check_invariants(a, fr)
    y = fr.array(TARGETS)[:, 0]
    k = a.signals.index("carbon_g_per_kwh")
    truth = y[24:, k]
    band = a.values[:-24, 0, k, -1]
    cover = np.mean((truth >= band[:, 0]) & (truth <= band[:, 2]))
    assert 0.75 < cover < 0.85
    rel_err = np.mean(np.abs(band[:, 1] - truth) / truth)
    assert 0.1 < rel_err < 0.2  # E|N(0, 0.2)| = 0.16
    zero = _cube(fr, "noisy(0)")
    np.testing.assert_allclose(zero.values, _cube(fr, "perfect").values)


def test_at_select_save_load(fr, tmp_path):
    cube = _cube(fr, "persistence")
    assert cube.at(5).shape == (1, 3, 6, 3)
    rows = np.array([0, 10, 100])
    np.testing.assert_array_equal(cube.at(rows), cube.values[rows])
    sub = cube.select(signals=["wind_mw", "carbon_g_per_kwh"], horizons_h=[24, 1],
                      quantiles=[0.5])
    assert sub.values.shape == (len(fr.index), 1, 2, 2, 1)
    np.testing.assert_array_equal(sub.values[:, :, 0, 0, 0], cube.values[:, :, 2, 5, 1])
    assert sub.signals == ("wind_mw", "carbon_g_per_kwh") and sub.horizons_h == (24, 1)
    with pytest.raises(ForecastError, match="price_per_mwh"):
        cube.select(signals=["price_per_mwh"])
    path = cube.save(tmp_path / "cube.npz")
    assert (tmp_path / "cube.json").exists()
    back = ForecastCube.load(path)
    np.testing.assert_array_equal(back.values, cube.values)
    assert back.index.equals(cube.index) and back.signals == cube.signals
    assert back.quantiles == cube.quantiles and back.mode == cube.mode
    with pytest.raises(ForecastError, match="not found"):
        ForecastCube.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("mode", ["perfect", "persistence", "noisy(0.3)", "none"])
def test_pv_is_zero_at_night(mode):
    sig, loc = tmy_pv_signals()
    cube = make_cube(sig, mode, targets=["pv_kw"], horizons_h=HORIZONS, quantiles=QUANTILES,
                     locations=loc)
    bounds = physical_bounds(sig.array(["pv_kw"]), sig.index, ("tmy",), ("pv_kw",),
                             ("pv_kw",), CFG.bounds, loc)
    t_len = len(cube.index)
    tgt = np.minimum(np.arange(t_len)[:, None] + np.asarray(HORIZONS)[None], t_len - 1)
    night = bounds.night[tgt][:, :, 0, 0]  # [T, H]
    assert 0.3 < night.mean() < 0.6
    v = cube.values[:, 0, 0]  # [T, H, Q]
    assert (v[night] == 0).all()
    assert (v >= 0).all() and (np.diff(v, axis=-1) >= 0).all()
    # real irradiance is zero in those hours too: the bound never hides generation
    assert (sig.array(["pv_kw"])[:, 0, 0][bounds.night[:, 0, 0]] == 0).all()
    if mode in ("persistence", "noisy(0.3)"):
        assert (v[~night][:, 1] > 0).mean() > 0.5


def test_headroom_never_exceeds_feeder_capacity(fr):
    # A feeder whose headroom is its capacity minus a real national load shape.
    wind = fr.array(["wind_mw"])[:, 0, 0]
    cap_kw = 2.0 * wind.max()
    frame = pd.DataFrame(
        {("f", "feeder_capacity_kw"): np.full(len(wind), cap_kw),
         ("f", "headroom_kw"): cap_kw - wind},
        index=fr.index,
    )
    sig = Signals.from_frame(frame)
    for mode in ("persistence", "noisy(0.5)"):
        cube = make_cube(sig, mode, targets=["headroom_kw"], horizons_h=[1, 24],
                         quantiles=QUANTILES)
        assert cube.values.max() <= cap_kw
        assert cube.values.min() >= 0


def test_running_bounds_use_data_up_to_the_issue_row(fr):
    """The lightgbm cube's bounds: what a forecaster knows at the issue time."""
    wind = fr.array(["wind_mw"])[:, 0, 0]
    t_len = len(wind)
    rows = np.arange(t_len)
    step = t_len // 2
    cap = np.where(rows < step, 1.5, 2.0) * wind.max()  # the feeder is upgraded mid-year
    price = np.where(rows < step, wind, wind - 0.5 * wind.max())  # negative from mid-year
    data = np.stack([cap, cap - wind, price], axis=-1)[:, None, :]  # [T, 1, 3]
    names = ("feeder_capacity_kw", "headroom_kw", "price_per_mwh")
    args = (data, fr.index, ("f",), names, names[1:], BoundsConfig())
    running, static = physical_bounds(*args, running=True), physical_bounds(*args)
    assert static.upper[0, 0] == cap.max() and np.isneginf(static.lower[0, 1])
    assert (running.upper[:step, 0, 0] == cap[0]).all()
    assert (running.upper[step:, 0, 0] == cap.max()).all()
    first_negative = int(np.flatnonzero(price < 0)[0])
    assert (running.lower[:first_negative, 0, 1] == 0).all()
    assert np.isneginf(running.lower[first_negative:, 0, 1]).all()
    values = np.full((t_len, 1, 2, 1, 3), -1e9, dtype=np.float32)
    values[:, :, 0] = 1e9
    running.apply(values, rows, [1])
    assert (values[:step, 0, 0] == np.float32(cap[0])).all()
    assert (values[:first_negative, 0, 1] == 0).all() and (values[first_negative:, 0, 1] < 0).all()


def test_bad_input_is_named(fr):
    with pytest.raises(ForecastError, match="unknown forecast mode"):
        _cube(fr, "oracle")
    with pytest.raises(ForecastError, match="'price_per_mwh' is missing at site 'fr'"):
        make_cube(fr, "perfect", targets=["price_per_mwh"], horizons_h=[1], quantiles=[0.5])
    with pytest.raises(ForecastError, match="horizon 9000 h is beyond the data"):
        make_cube(fr, "perfect", targets=["wind_mw"], horizons_h=[1, 9000], quantiles=[0.5])
    with pytest.raises(ForecastError, match="quantiles"):
        make_cube(fr, "perfect", targets=["wind_mw"], horizons_h=[1], quantiles=[0.9, 0.1])
    frame = fr.frame.copy()
    frame[("fr", "wind_mw")] = np.nan
    with pytest.raises(ForecastError, match="'wind_mw' at site 'fr' is all NaN"):
        make_cube(frame, "perfect", targets=["wind_mw"], horizons_h=[1], quantiles=[0.5])
    sig, _ = tmy_pv_signals()
    with pytest.raises(ForecastError, match="'pv_kw' at site 'tmy': zero at night needs"):
        make_cube(sig, "perfect", targets=["pv_kw"], horizons_h=[1], quantiles=[0.5])
