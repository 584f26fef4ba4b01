"""Forecasting a column of any file from the CLI: ``gridrl forecast ... --csv F --column C``.

The forecaster config is derived from the target: sun features only for a solar series
with a location; a constant target (a region without solar) is refused by name, by the
CLI and by the library that the scenario path uses too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gridrl.cli import app
from gridrl.errors import GridrlError
from gridrl.forecast.config import ForecastConfig, derive_config, follows_sun
from gridrl.forecast.errors import ForecastError
from gridrl.forecast.pipeline import file_inputs, resolve_config
from gridrl.scenario import SeriesSource

SOLAR_FEATURES = {"elevation_deg", "clearsky_ghi"}


def _eia(shared_data: Path, region: str) -> str:
    return str(shared_data / "grid" / "eia930_2022" / f"{region}.csv")


def _features(model_dir: Path) -> set[str]:
    """The feature names of the median model of every target (LightGBM text files)."""
    names: set[str] = set()
    for path in model_dir.glob("*.txt"):
        for line in path.read_text().splitlines():
            if line.startswith("feature_names="):
                names |= set(line.removeprefix("feature_names=").split())
                break
    assert names, f"no LightGBM model files in {model_dir}"
    return names


def test_backtest_of_a_wind_column_prints_metrics(shared_data):
    result = CliRunner().invoke(app, ["forecast", "backtest", "--csv", _eia(shared_data, "PJM"),
                                      "--column", "WND"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "solar features: off" in text
    row = next(line for line in result.output.splitlines() if "lightgbm" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[0] == "wind_mw"
    mae, skill = float(cells[2]), float(cells[-1])
    assert mae > 0 and np.isfinite(skill)  # a real score, not the NaN of a flat target


def test_fit_without_sun_has_no_solar_features(shared_data, tmp_path):
    out = tmp_path / "wind"
    result = CliRunner().invoke(app, [
        "forecast", "fit", "--csv", _eia(shared_data, "CISO"), "--column", "WND",
        "--lat", "37.4", "--lon", "-121.93", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not _features(out / "model") & SOLAR_FEATURES
    fit = json.loads((out / "fit.json").read_text())
    assert fit["targets"] == ["wind_mw"] and fit["solar_features"] is False
    # The same region's solar series with its location gets the sun features.
    out_sun = tmp_path / "sun"
    result = CliRunner().invoke(app, [
        "forecast", "fit", "--csv", _eia(shared_data, "CISO"), "--column", "SUN",
        "--lat", "37.4", "--lon", "-121.93", "--out", str(out_sun)])
    assert result.exit_code == 0, result.output
    assert SOLAR_FEATURES <= _features(out_sun / "model")
    shown = CliRunner().invoke(app, ["forecast", "show", str(out_sun)])
    assert shown.exit_code == 0 and "solar_mw" in shown.output


def test_all_zero_column_is_refused_by_name(shared_data, tmp_path):
    # New York's EIA-930 solar column is 0 in every hour of 2022.
    assert (pd.read_csv(_eia(shared_data, "NYIS"))["SUN"] == 0).all()
    result = CliRunner().invoke(app, ["forecast", "backtest", "--csv", _eia(shared_data, "NYIS"),
                                      "--column", "SUN"])
    assert result.exit_code == GridrlError.exit_code, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "NYIS.csv" in text
    assert "target 'solar_mw' is constant (0)" in text
    # The library refuses it too, for a given config as for a derived one.
    data = file_inputs(SeriesSource(file=_eia(shared_data, "NYIS"), column="SUN"), "solar_mw")
    for config in (None, ForecastConfig(targets=["solar_mw"])):
        with pytest.raises(ForecastError, match="'solar_mw' is constant"):
            resolve_config(config, data)


def test_missing_hours_stay_missing_unless_filled(shared_data):
    """PJM has 23 empty hours: kept empty (not fitted, not scored) unless --fill."""
    path = _eia(shared_data, "PJM")
    kept = file_inputs(SeriesSource(file=path, column="WND"), "wind_mw")
    assert int(kept.signals.isna().sum().sum()) == 23
    record = kept.signals.attrs["provenance"][0]
    assert record["missing_hours_kept"] == 23
    filled = file_inputs(SeriesSource(file=path, column="WND", fill="interpolate"), "wind_mw")
    assert int(filled.signals.isna().sum().sum()) == 0
    full = kept.signals.notna().to_numpy().ravel()
    np.testing.assert_array_equal(kept.signals.to_numpy().ravel()[full],
                                  filled.signals.to_numpy().ravel()[full])


def test_bad_file_options_are_clear(shared_data, tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["forecast", "backtest", "envs/geo3.yaml", "--csv", "x.csv"])
    assert both.exit_code == 2 and "one" in both.output
    no_unit = runner.invoke(app, ["forecast", "backtest", "--csv", _eia(shared_data, "PJM"),
                                  "--column", "timestamp"])
    assert no_unit.exit_code == GridrlError.exit_code
    assert "give the signal name with a unit" in " ".join(no_unit.output.split())
    absent = runner.invoke(app, ["forecast", "backtest", "--csv", _eia(shared_data, "PJM"),
                                 "--column", "GEO", "--signal", "geothermal_mw"])
    assert absent.exit_code == GridrlError.exit_code and "GEO" in absent.output


def test_derived_config_follows_the_targets():
    assert follows_sun("pv_kw") and follows_sun("solar_mw") and not follows_sun("wind_mw")
    wind = derive_config(["wind_mw"], ["wind_mw"], located=True)
    assert not wind.features.solar and wind.pv.signals == [] and wind.weather == []
    assert wind.bounds.zero_at_night == [] and wind.weather_for == {}
    fleet = derive_config(["solar_mw"], ["solar_mw"], located=True)
    assert fleet.features.solar and fleet.reference["solar_mw"] == "seasonal"
    site = derive_config(["pv_kw", "wind_kw"], ["pv_kw", "wind_kw", "ghi_w_per_m2"],
                         located=True)
    assert site.pv.signals == ["pv_kw"] and site.weather_for == {"pv_kw": ["ghi_w_per_m2"]}
    unlocated = derive_config(["pv_kw"], ["pv_kw"], located=False)
    assert not unlocated.features.solar and unlocated.bounds.zero_at_night == []


def test_scenario_without_pv_or_wind_gets_a_config_without_them(shared_data):
    """envs/entsoe_shift_fr.yaml has no PV, no wind and a constant headroom: the derived
    config leaves them out (the built-in one would fail on zero PV in daylight)."""
    from gridrl.forecast.pipeline import load_inputs

    data = load_inputs(Path(__file__).resolve().parents[1] / "envs" / "entsoe_shift_fr.yaml")
    cfg, left_out = resolve_config(None, data)
    assert left_out == ["headroom_kw", "pv_kw", "wind_kw"]
    assert cfg.targets == ["carbon_g_per_kwh", "price_per_mwh", "inference_gpus"]
    assert not cfg.features.solar and cfg.pv.signals == []
    with pytest.raises(ForecastError, match="'pv_kw' is constant"):
        resolve_config(ForecastConfig(), data)
