"""Learning curves of the report: one curve per agent and forecast mode."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridrl.experiments.plots import learning_curves_plot
from gridrl.experiments.report import learning_curve_bands


def _curves() -> pd.DataFrame:
    """Two seeds of one agent trained in two forecast modes, each seed's episodes
    restarting at step 0 (as every unit's monitor does)."""
    frames = []
    for mode, level in (("lightgbm", -10.0), ("none", -50.0)):
        for seed in (0, 1):
            steps = np.cumsum(np.full(30, 168))
            ret = level + seed + np.linspace(-5.0, 0.0, 30)
            frames.append(pd.DataFrame({"agent": "ppo", "seed": seed, "forecast_mode": mode,
                                        "timesteps": steps, "episode_return": ret}))
    return pd.concat(frames, ignore_index=True)


def test_bands_keep_forecast_modes_apart(tmp_path):
    bands = learning_curve_bands(_curves(), points=50)
    assert sorted(bands.groupby(["agent", "forecast_mode"]).groups) == [
        ("ppo", "lightgbm"), ("ppo", "none")]
    for mode, level in (("lightgbm", -10.0), ("none", -50.0)):
        b = bands[bands["forecast_mode"] == mode]
        assert len(b) == 50 and (b["seeds"] == 2).all()
        # seeds 0 and 1 sit at level + 0 and level + 1 on the same ramp
        ramp = np.linspace(-5.0, 0.0, 50)
        np.testing.assert_allclose(b["low"], level + ramp, atol=1e-9)
        np.testing.assert_allclose(b["high"], level + 1.0 + ramp, atol=1e-9)
        np.testing.assert_allclose(b["mean"], level + 0.5 + ramp, atol=1e-9)
    png = learning_curves_plot(bands, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
