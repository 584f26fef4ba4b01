"""Loaders for the real data sets in ../shared/data (skipped when the data is absent)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gridrl.data import (
    SignalError,
    load_alibaba_pods,
    load_citylearn,
    load_eia930,
    load_entsoe_carbon,
    load_entsoe_production,
)

# ------------------------------------------------------------------ ENTSO-E


def test_entsoe_gb_carbon_reports_mixed_steps(shared_data):
    path = shared_data / "grid" / "entsoe_2020" / "gb_carbon_intensity.csv"
    with pytest.raises(SignalError) as exc:
        load_entsoe_carbon(path)
    msg = str(exc.value)
    assert exc.value.source == str(path)
    assert "column 'Time'" in msg and "row 2 (line 3" in msg
    assert "mixed steps: 30min x 15171" in msg and "15min x 6808" in msg


def test_entsoe_gb_production_reports_mixed_steps_then_resamples(shared_data):
    path = shared_data / "grid" / "entsoe_2020" / "gb_production.csv"
    with pytest.raises(SignalError, match=r"mixed steps: 30min x \d+ .*15min x \d+"):
        load_entsoe_production(path)

    s = load_entsoe_production(path, resample="mean")
    assert s.sites == ("gb",)
    assert {"solar_mw", "wind_onshore_mw", "wind_offshore_mw", "import_from_fr_mw"} <= set(
        s.signals
    )
    idx = s.index
    assert (np.diff(idx.asi8) == 3600 * 10**9).all() and str(idx.tz) == "UTC"
    record = s.provenance[-1]
    assert record["method"] == "mean"
    # The 16 empty cells are excluded from the means and counted, not filled.
    assert sum(record["empty_cells_excluded"].values()) == 16

    # Independent check of one 15-minute hour and one hour with an empty cell.
    raw = pd.read_csv(path, index_col=0, parse_dates=True)
    for hour in ["2020-11-15 12:00", "2020-10-30 23:00"]:
        rows = raw.loc[hour : pd.Timestamp(hour) + pd.Timedelta("59min")]
        got = s.frame.loc[pd.Timestamp(hour, tz="UTC"), "gb"]
        assert got["solar_mw"] == pytest.approx(rows["Solar"].mean())
        assert got["import_from_nl_mw"] == pytest.approx(rows["NL"].dropna().mean())


def test_entsoe_fr_production_hourly_with_signed_net_types(shared_data):
    path = shared_data / "grid" / "entsoe_2020" / "fr_production.csv"
    s = load_entsoe_production(path)
    assert len(s.index) == 9288 and s.sites == ("fr",)
    # Coal units' auxiliaries make the net output negative at times; that is legal.
    assert s.frame[("fr", "hard_coal_net_mw")].min() < 0
    assert s.frame[("fr", "solar_mw")].min() >= 0
    only = load_entsoe_production(path, columns={"Solar": "solar_mw"})
    assert only.signals == ("solar_mw",)


def test_entsoe_hour_without_values_and_unknown_column(tmp_path):
    path = tmp_path / "xx_production.csv"
    path.write_text(
        ",Solar,Nuclear\n"
        "2020-01-01 00:00:00,1,10\n2020-01-01 00:30:00,3,10\n"
        "2020-01-01 01:00:00,,10\n2020-01-01 01:30:00,,10\n"
        "2020-01-01 02:00:00,5,10\n"
    )
    with pytest.raises(SignalError, match="no values to mean") as exc:
        load_entsoe_production(path, resample="mean")
    assert "column 'Solar'" in str(exc.value) and exc.value.row == 2
    bad = tmp_path / "yy_production.csv"
    bad.write_text(",Solar,Fusion\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,1,2\n")
    with pytest.raises(SignalError, match="unknown ENTSO-E production column") as exc:
        load_entsoe_production(bad)
    assert exc.value.source == str(bad) and "column 'Fusion'" in str(exc.value)


# ------------------------------------------------------------------ CityLearn


def test_citylearn_loads_8760_consecutive_hours(shared_data):
    directory = shared_data / "buildings" / "citylearn_2022"
    s = load_citylearn(directory)
    idx = s.index
    assert len(idx) == 8760
    assert str(idx.tz) == "UTC"
    assert (np.diff(idx.asi8) == 3600 * 10**9).all()
    assert idx[0] == pd.Timestamp("2016-08-01 07:00", tz="UTC")  # 31 Jul 23:00 PST
    schema = json.loads((directory / "schema.json").read_text())
    buildings = [b for b, spec in schema["buildings"].items() if spec["include"]]
    assert s.sites == (*buildings, "neighbourhood")
    assert s.array(["pv_kw", "load_kw"], sites=buildings).shape == (8760, len(buildings), 2)
    assert {"temp_c", "diffuse_w_per_m2_fcst_6h", "direct_w_per_m2_fcst_24h"} <= set(s.signals)

    # Units, checked against the raw files.
    raw = pd.read_csv(directory / "Building_4.csv")
    kw = schema["buildings"]["Building_4"]["pv"]["attributes"]["nominal_power"]
    np.testing.assert_allclose(
        s.frame[("Building_4", "pv_kw")].to_numpy(), raw["solar_generation"] * kw / 1000
    )
    np.testing.assert_allclose(
        s.frame[("Building_4", "load_kw")].to_numpy(), raw["non_shiftable_load"]
    )
    carbon = pd.read_csv(directory / "carbon_intensity.csv")["carbon_intensity"]
    np.testing.assert_allclose(
        s.frame[("neighbourhood", "carbon_g_per_kwh")].to_numpy(), carbon * 1000
    )
    price = pd.read_csv(directory / "pricing.csv")["electricity_pricing_predicted_1"]
    np.testing.assert_allclose(
        s.frame[("neighbourhood", "price_per_mwh_fcst_6h")].to_numpy(), price * 1000
    )


def test_citylearn_wrong_year_names_file_column_row(shared_data):
    directory = shared_data / "buildings" / "citylearn_2022"
    with pytest.raises(SignalError, match="calendar mismatch") as exc:
        load_citylearn(directory, year=2018, buildings=["Building_1"])
    assert exc.value.source == str(directory / "Building_1.csv")
    assert "column 'day_type'" in str(exc.value) and "row 1 (line 2)" in str(exc.value)


# ------------------------------------------------------------------ Alibaba GPU trace


def _direct_gpu_hours(path):
    """GPU-hours per class straight from the CSV, written without the loader's code."""
    df = pd.read_csv(path)
    end = df[["creation_time", "scheduled_time", "deletion_time"]].max().max()
    held_s = df["deletion_time"].clip(upper=end) - df["scheduled_time"]  # NaN if never ran
    gpu_h = (df["num_gpu"] * df["gpu_milli"] / 1000 * held_s / 3600).fillna(0.0)
    cls = df["qos"].map(
        {"LS": "inference", "Guaranteed": "inference", "BE": "flexible", "Burstable": "flexible"}
    )
    assert cls.notna().all()
    return gpu_h.groupby(cls).sum(), df


def test_alibaba_gpu_hours_match_direct_computation(shared_data):
    path = shared_data / "traces" / "alibaba_gpu_2023" / "pods.csv"
    trace = load_alibaba_pods(path)
    expected, df = _direct_gpu_hours(path)
    got = trace.gpu_hours()
    assert set(got.index) == {"inference", "flexible"}
    for cls in expected.index:
        assert got[cls] == pytest.approx(expected[cls], rel=1e-12)

    report = trace.report()
    assert report["pods"] == len(df)
    assert report["unscheduled_pods"] == int(df["scheduled_time"].isna().sum())
    assert report["running_at_end_pods"] == int(
        (df["deletion_time"] == df["deletion_time"].max()).sum()
    )
    assert report["pods_by_class"] == {
        "inference": int(df["qos"].isin(["LS", "Guaranteed"]).sum()),
        "flexible": int(df["qos"].isin(["BE", "Burstable"]).sum()),
    }
    # Every pod is kept, flagged rather than dropped.
    assert len(trace.jobs) == len(df)


def test_alibaba_hourly_signals_conserve_gpu_hours(shared_data):
    path = shared_data / "traces" / "alibaba_gpu_2023" / "pods.csv"
    trace = load_alibaba_pods(path)
    s = trace.hourly("2023-07-01T00:00Z", site="ali")
    assert s.signals == ("inference_gpus", "flexible_gpu_h")
    assert s.index[0] == pd.Timestamp("2023-07-01", tz="UTC")
    assert len(s.index) == int(np.ceil(trace.trace_end_s / 3600))
    totals = trace.gpu_hours()
    # Mean GPUs over each hour x 1 h summed = GPU-hours; arrivals sum to their GPU-hours.
    assert s.frame[("ali", "inference_gpus")].sum() == pytest.approx(totals["inference"])
    assert s.frame[("ali", "flexible_gpu_h")].sum() == pytest.approx(totals["flexible"])
    # Concurrency never exceeds the GPUs the inference pods ask for in total.
    inf = trace.jobs[trace.jobs["workload_class"] == "inference"]
    assert s.frame[("ali", "inference_gpus")].max() <= inf["gpu_equiv"].sum()
    with pytest.raises(SignalError, match="no time zone"):
        trace.hourly("2023-07-01")


def test_alibaba_bad_rows_are_named(tmp_path):
    header = "name,num_gpu,gpu_milli,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    good = "p0,1,500,LS,Running,0,7200,10\n"
    cases = {
        "p1,1,500,XX,Running,0,7200,10\n": ("qos", "unknown qos 'XX'"),
        "p1,1,500,BE,Failed,,7200,10\n": ("creation_time", "missing creation time"),
        "p1,1,500,BE,Failed,10,50,80\n": ("deletion_time", "deleted before scheduled"),
        "p1,0,500,BE,Failed,0,7200,10\n": ("gpu_milli", "both or neither must be 0"),
    }
    for i, (row, (column, problem)) in enumerate(cases.items()):
        path = tmp_path / f"pods{i}.csv"
        path.write_text(header + good + row)
        with pytest.raises(SignalError) as exc:
            load_alibaba_pods(path)
        msg = str(exc.value)
        assert exc.value.source == str(path)
        assert f"column '{column}'" in msg and "row 2 (line 3)" in msg and problem in msg
    # Missing deletion time: kept, flagged as running at the end, censored.
    path = tmp_path / "open.csv"
    path.write_text(header + good + "p1,2,1000,BE,Running,3600,,3600\n")
    trace = load_alibaba_pods(path)
    assert trace.report()["missing_deletion_time"] == 1
    assert trace.jobs["running_at_end"].tolist() == [True, True]
    assert trace.jobs["gpu_h"].tolist() == pytest.approx([0.5 * 7190 / 3600, 2 * 1.0])


# ------------------------------------------------------------------ EIA-930


def test_eia930_loads_and_reports_empty_hours(shared_data):
    directory = shared_data / "grid" / "eia930_2022"
    s = load_eia930(directory / "ERCO.csv")
    assert len(s.index) == 8760 and s.sites == ("erco",)
    assert {"solar_mw", "wind_mw", "carbon_g_per_kwh"} <= set(s.signals)
    with pytest.raises(SignalError) as exc:
        load_eia930(directory / "CISO.csv")
    assert "column 'WND'" in str(exc.value) and "row 107 (line 108" in str(exc.value)
    filled = load_eia930(directory / "PJM.csv", fill="interpolate")
    assert set(filled.provenance[-1]["cells_filled"].values()) == {23}
    with pytest.raises(SignalError, match="NaN"):
        load_eia930(directory / "PJM.csv", fill="interpolate", max_fill_h=6)
