"""Temporal shifting on real ENTSO-E carbon intensity: ``lp_bound`` through the env equals
the direct answer (the cleanest hour of each job's window, numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridrl.agents.evaluate import evaluate
from gridrl.agents.shifting import direct_min_carbon, shifting_case
from gridrl.data.loaders import load_entsoe_carbon
from gridrl.scenario import ScenarioError, load_scenario

ENVS = Path(__file__).resolve().parents[1] / "envs"


def _carbon(shared_data: Path, zone: str):
    sc = load_scenario(ENVS / f"entsoe_shift_{zone}.yaml")
    site = sc.sites[0].name
    sig = load_entsoe_carbon(shared_data / "grid" / "entsoe_2020" / f"{zone}_carbon_intensity.csv",
                             site=site, resample="mean")
    return sc, sig.frame[(site, "carbon_g_per_kwh")]


@pytest.mark.parametrize("zone", ["fr", "gb"])
def test_lp_bound_equals_the_cleanest_hour_of_each_window(shared_data, zone):
    sc, carbon = _carbon(shared_data, zone)
    base = shifting_case(sc, carbon, 0, max_window_h=8)
    run_now = evaluate("run_now", base.setup, starts=base.starts)
    intensity = carbon.loc[str(sc.year)].to_numpy()
    assert len(base.arrivals) == 366 - 12  # every day but the 1st of each month
    # status quo: every job at 01:00 UTC, 1 kWh each
    assert (base.setup.data.index[base.arrivals].hour == 1).all()
    assert run_now["carbon_kg"].sum() == pytest.approx(intensity[base.arrivals].sum() / 1000)
    for w in (3, 8):
        case = shifting_case(sc, carbon, w, max_window_h=8)
        bound = evaluate("lp_bound", case.setup, starts=case.starts)
        best = direct_min_carbon(intensity, case.arrivals, w) / 1000  # kg per job
        # episode by episode: the jobs arriving inside each episode
        for k, start in enumerate(case.starts):
            hours = int(bound["hours"].iloc[k])
            inside = (case.arrivals >= start) & (case.arrivals < start + hours)
            assert bound["carbon_kg"].iloc[k] == pytest.approx(best[inside].sum(), rel=1e-9,
                                                               abs=1e-12)
        assert bound["work_done_gpu_h"].sum() == pytest.approx(len(case.arrivals))
        assert bound["deadline_miss_gpu_h"].sum() == pytest.approx(0.0, abs=1e-9)
        # and the shift never costs carbon
        assert bound["carbon_kg"].sum() <= run_now["carbon_kg"].sum()


def test_shifting_case_rejects_bad_input(shared_data):
    sc, carbon = _carbon(shared_data, "fr")
    with pytest.raises(ScenarioError, match="window"):
        shifting_case(sc, carbon, 12)
    with pytest.raises(ScenarioError, match="lacks .* hours of 2020"):
        shifting_case(sc, carbon.loc["2020-03-01":], 2)
    assert np.isfinite(carbon.to_numpy()).all()
