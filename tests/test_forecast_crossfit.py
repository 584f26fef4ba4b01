"""Cross-fitted LightGBM cube: out-of-fold by construction, cached under a content hash."""

from __future__ import annotations

import time

import numpy as np
import pytest
from forecast_helpers import geo3_inputs, small_config

from gridrl.forecast import ForecastCube, make_cube
from gridrl.forecast.crossfit import crossfit_mask, fold_blocks

TARGETS = ["pv_kw", "headroom_kw", "carbon_g_per_kwh"]
HORIZONS = [1, 6, 24]
Q = [0.1, 0.5, 0.9]


@pytest.mark.parametrize("held_out", [None, slice(400, 500)])
def test_fold_masks_keep_every_block_out_of_its_training(held_out):
    t_len, h_max, lookback = 1000, 24, 30
    rows = np.ones(t_len, dtype=bool)
    if held_out is not None:
        rows[held_out] = False  # evaluation rows: never cross-fitted, never trained on
    blocks = fold_blocks(t_len, 4, None if held_out is None else rows)
    assert np.array_equal(np.concatenate(blocks), np.flatnonzero(rows))
    for block in blocks:
        mask = crossfit_mask(t_len, block, 10, None if held_out is None else rows, lookback)
        t = np.arange(t_len)[:, None]
        h = np.arange(1, h_max + 1)[None, :]
        s = np.minimum(t + h, t_len - 1)
        allowed = mask[t] & mask[s]  # the rule QuantileForecaster.fit applies to pairs
        inside = np.isin(t, block) | np.isin(s, block) | ~rows[t] | ~rows[s]
        assert not (allowed & inside).any()
        # no issue row whose lags reach into the block
        reaches = (t[:, 0] - lookback <= block[-1]) & (t[:, 0] > block[-1])
        assert not mask[reaches].any()


@pytest.fixture(scope="module")
def geo3():
    return geo3_inputs()


def test_lightgbm_cube_is_cached_bounded_and_calibrated(geo3, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDRL_CACHE", str(tmp_path / "cache"))
    cfg = small_config()
    kw = {"targets": TARGETS, "horizons_h": HORIZONS, "quantiles": Q, "config": cfg,
          "locations": geo3.locations}
    t0 = time.perf_counter()
    cube = make_cube(geo3.signals, "lightgbm", **kw)
    first_s = time.perf_counter() - t0
    files = list((tmp_path / "cache" / "forecast").glob("cube-*.npz"))
    assert len(files) == 1, "cached under $GRIDRL_CACHE"
    assert cube.values.shape == (len(geo3.signals.index), 3, 3, 3, 3)
    assert cube.mode == "lightgbm" and len(cube.meta["folds"]) == 3
    v = cube.values
    assert np.isfinite(v).all() and (np.diff(v, axis=-1) >= 0).all()
    assert (v[:, :, TARGETS.index("pv_kw")] >= 0).all()
    cap = geo3.signals.array(["feeder_capacity_kw"]).max(axis=0)[:, 0]
    assert (v[:, :, TARGETS.index("headroom_kw")] <= cap[None, :, None, None]).all()
    # out-of-fold P10-P90 coverage after the rolling recalibration
    y = geo3.signals.array(TARGETS)
    k = TARGETS.index("carbon_g_per_kwh")
    truth = y[1000 + 24:, :, k]
    band = v[1000: len(y) - 24, :, k, 2]
    cover = np.mean((truth >= band[..., 0]) & (truth <= band[..., 2]))
    assert 0.7 < cover < 0.9
    # second call: loaded from the cache, same values
    t0 = time.perf_counter()
    again = make_cube(geo3.signals, "lightgbm", **kw)
    assert time.perf_counter() - t0 < first_s / 3
    np.testing.assert_array_equal(again.values, cube.values)
    # another seed or config is another cache entry
    make_cube(geo3.signals, "lightgbm", **{**kw, "targets": ["carbon_g_per_kwh"]}, seed=1)
    assert len(list((tmp_path / "cache" / "forecast").glob("cube-*.npz"))) == 2
    # the env's view: a sub-cube in its layout, read in O(1) per step
    sub = ForecastCube.load(files[0]).select(signals=["carbon_g_per_kwh"], quantiles=[0.5])
    assert sub.at(np.array([5, 6])).shape == (2, 3, 1, 3, 1)


def test_each_target_is_cached_and_a_fixed_seed_reuses_it(geo3, tmp_path):
    """A cube caches each target under the columns it reads: under another scenario
    seed (another cube seed) that changes only headroom (congestion draws), a config
    with a fixed ``seed`` reads carbon back and refits headroom alone."""
    frame = geo3.signals.frame.iloc[: 24 * 60]
    cache = tmp_path / "cache"
    targets = ["carbon_g_per_kwh", "headroom_kw"]
    kw = {"targets": targets, "horizons_h": [1, 6], "quantiles": Q,
          "locations": geo3.locations, "cache_dir": cache}
    fixed = small_config(seed=7)
    first = make_cube(frame, "lightgbm", config=fixed, seed=1, **kw)
    assert first.meta["seed"] == 7 and len(list(cache.glob("forecast/target-*.npz"))) == 2
    changed = frame.copy()
    for col in [c for c in frame.columns if c[1] == "headroom_kw"]:
        changed[col] = frame[col] * 0.8
    second = make_cube(changed, "lightgbm", config=fixed, seed=2, **kw)
    assert len(list(cache.glob("forecast/target-*.npz"))) == 3  # headroom's new entry only
    np.testing.assert_array_equal(second.values[:, :, 0], first.values[:, :, 0])
    assert not np.allclose(second.values[:, :, 1], first.values[:, :, 1])
    assert second.meta["coverage_outer"].keys() == set(targets)
    # a cube of fewer targets reads them back as well
    alone = make_cube(frame, "lightgbm", config=fixed, seed=3,
                      **{**kw, "targets": ["carbon_g_per_kwh"]})
    np.testing.assert_array_equal(alone.values[:, :, 0], first.values[:, :, 0])
    assert len(list(cache.glob("forecast/target-*.npz"))) == 3
    # without a fixed seed the cube's seed counts: other simulated weather, other fits
    other = make_cube(frame, "lightgbm", config=small_config(), seed=2, **kw)
    assert other.meta["seed"] == 2
    assert not np.allclose(other.values[:, :, 0], first.values[:, :, 0])
