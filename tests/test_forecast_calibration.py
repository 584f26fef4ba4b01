"""Rolling conformal recalibration: reaches the nominal coverage and is causal."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_helpers import entsoe_signals

from gridrl.forecast.calibration import quantile_pairs, rolling_cqr, target_truth
from gridrl.forecast.config import CalibrationConfig
from gridrl.forecast.metrics import coverage

HORIZONS = [1, 6, 24]
Q = [0.1, 0.5, 0.9]


@pytest.fixture(scope="module")
def carbon(shared_data):
    """Real FR carbon intensity with a persistence band far too narrow (under-covers)."""
    y = entsoe_signals(shared_data, "fr").array(["carbon_g_per_kwh"])  # [T, 1, 1]
    t_len = len(y)
    values = np.empty((t_len, 1, 1, len(HORIZONS), len(Q)), dtype=np.float32)
    for j, dq in enumerate([-1.0, 0.0, 1.0]):
        values[..., j] = (y[:, :, :, None] + dq)  # +-1 g/kWh around persistence
    return y, values


def test_pairs():
    assert quantile_pairs([0.05, 0.1, 0.5, 0.9, 0.95]) == [(0, 4), (1, 3)]
    assert quantile_pairs([0.5]) == []


def test_recalibration_reaches_nominal_coverage(carbon):
    y, values = carbon
    truth = target_truth(y, np.arange(len(y)), HORIZONS)
    raw = coverage(values[..., 0], values[..., -1], truth, axis=(0, 1, 2))
    out, info = rolling_cqr(values, y, HORIZONS, Q, CalibrationConfig())
    later = slice(1000, None)  # after the first rolling window has filled
    cov = coverage(out[later, ..., 0], out[later, ..., -1], truth[later], axis=(0, 1, 2))
    assert (raw < 0.5).all()
    assert ((cov > 0.75) & (cov < 0.85)).all(), cov
    assert info["correction"].shape == (len(y), 1, len(HORIZONS), 1)
    np.testing.assert_array_equal(out[..., 1], values[..., 1])  # the median is not moved
    none, _ = rolling_cqr(values, y, HORIZONS, Q, CalibrationConfig(method="none"))
    np.testing.assert_array_equal(none, values)


def test_recalibration_is_causal(carbon):
    y, values = carbon
    cfg = CalibrationConfig()
    out, _ = rolling_cqr(values, y, HORIZONS, Q, cfg)
    t0 = 3000
    y2 = y.copy()
    y2[t0 + 1:] *= 5.0  # every truth after the issue time changes
    values2 = values.copy()
    values2[t0 + 1:] *= 3.0  # and every later forecast
    out2, _ = rolling_cqr(values2, y2, HORIZONS, Q, cfg)
    np.testing.assert_array_equal(out[: t0 + 1], out2[: t0 + 1])
    assert not np.array_equal(out[t0 + 30:], out2[t0 + 30:])
