"""CityLearn loader beyond the 2022 set: explicit calendars, multi-year 365-day sets,
day-type breaks and daylight-saving status.

The multi-year sets are built in tmp_path from the real 2022 files (read through
``dataset_dir("citylearn_2022")``): their values tiled over three years and their
calendar columns rewritten for 2013-2015 with the US daylight-saving days. A last test
reads CityLearn's own 2021 set (four 365-day years) from a CityLearn checkout when
``GRIDRL_CITYLEARN_DATASETS`` points at its ``data/datasets`` folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridrl.data import SignalError
from gridrl.data.datasets import dataset_dir
from gridrl.data.loaders import load_citylearn

YEARS = (2013, 2014, 2015)  # consecutive, none a leap year; 2013-01-01 is a Tuesday
HOURS = 8760
CITYLEARN_DATASETS_ENV = "GRIDRL_CITYLEARN_DATASETS"


@pytest.fixture(scope="module")
def source(shared_data) -> Path:
    return dataset_dir("citylearn_2022")


def _us_dst_days(local: pd.DatetimeIndex) -> np.ndarray:
    """1 on days the US clock is on daylight time (2nd Sunday of March .. 1st of Nov)."""
    zone = pd.DatetimeIndex(local.normalize() + pd.Timedelta(hours=12)).tz_localize(
        "America/Los_Angeles"
    )
    return np.array([bool(t.dst()) for t in zone], dtype=int)


def _calendar(years=YEARS) -> pd.DataFrame:
    """Calendar columns of consecutive 365-day years (hour-ending labels)."""
    local = pd.DatetimeIndex(
        np.concatenate(
            [pd.date_range(f"{y}-01-01", periods=HOURS, freq="h").to_numpy() for y in years]
        )
    )
    return pd.DataFrame(
        {
            "month": local.month,
            "hour": local.hour + 1,
            "day_type": local.dayofweek + 1,
            "daylight_savings_status": _us_dst_days(local),
        }
    )


def _multi_year_set(source: Path, folder: Path, years=YEARS) -> Path:
    """Building_1 and Building_2 of the 2022 set over several 365-day years, no tariff."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = json.loads((source / "schema.json").read_text())
    keep = {k: schema["buildings"][k] for k in ("Building_1", "Building_2")}
    for spec in keep.values():
        spec["pricing"] = None
    (folder / "schema.json").write_text(json.dumps({"buildings": keep}))
    cal = _calendar(years)
    n = len(years)
    for name in ("Building_1.csv", "Building_2.csv"):
        raw = pd.read_csv(source / name)
        values = pd.concat([raw] * n, ignore_index=True).drop(columns=list(cal.columns))
        pd.concat([cal, values], axis=1).to_csv(folder / name, index=False)
    for name in ("weather.csv", "carbon_intensity.csv"):
        raw = pd.read_csv(source / name)
        pd.concat([raw] * n, ignore_index=True).to_csv(folder / name, index=False)
    return folder


def test_registered_2022_set_keeps_its_calendar_defaults(source, tmp_path):
    s = load_citylearn(source, buildings=["Building_1"])
    assert s.index[0] == pd.Timestamp("2016-08-01 07:00", tz="UTC")
    assert "daylight_saving_fraction" not in s.signals  # status 0 throughout
    note = s.provenance[-1]
    assert note["daylight_saving_hours"] == {"Building_1": 0}
    assert note["not_in_schema"] == []
    # The same files elsewhere (links, not copies): nothing says which calendar they use.
    other = tmp_path / "elsewhere"
    other.mkdir()
    for f in source.iterdir():
        (other / f.name).symlink_to(f)
    with pytest.raises(SignalError, match="give year and utc_offset_h: CityLearn files carry"):
        load_citylearn(other)
    with pytest.raises(SignalError, match="give utc_offset_h"):
        load_citylearn(other, year=2016)
    s = load_citylearn(other, year=2016, utc_offset_h=-8, buildings=["Building_1"])
    assert s.index[0] == pd.Timestamp("2016-08-01 07:00", tz="UTC")


def test_multi_year_set_with_daylight_saving(source, tmp_path):
    folder = _multi_year_set(source, tmp_path / "three_years")
    s = load_citylearn(folder, year=2013, utc_offset_h=-8)
    assert len(s.index) == 3 * HOURS
    assert s.index[0] == pd.Timestamp("2013-01-01 08:00", tz="UTC")
    assert s.index[-1] == pd.Timestamp("2016-01-01 07:00", tz="UTC")
    assert (np.diff(s.index.asi8) == 3600 * 10**9).all()
    raw = pd.read_csv(folder / "Building_2.csv")
    np.testing.assert_allclose(
        s.frame[("Building_2", "load_kw")].to_numpy(), raw["non_shiftable_load"]
    )
    dst = s.frame[("Building_1", "daylight_saving_fraction")]
    np.testing.assert_array_equal(dst.to_numpy(), raw["daylight_savings_status"])
    # 2014: daylight time from Sunday 9 March to Saturday 1 November (local days).
    local = (dst.index + pd.Timedelta(hours=-8)).tz_localize(None)
    on = local[(dst.to_numpy() == 1) & (local.year == 2014)]
    assert (on[0], on[-1]) == (pd.Timestamp("2014-03-09 00:00"), pd.Timestamp("2014-11-01 23:00"))
    note = s.provenance[-1]
    assert note["daylight_saving_hours"]["Building_1"] == int(raw["daylight_savings_status"].sum())
    assert note["not_in_schema"] == ["pricing"]
    assert "price_per_mwh" not in s.signals and "carbon_g_per_kwh" in s.signals


def test_leap_year_is_named(source, tmp_path):
    folder = _multi_year_set(source, tmp_path / "three_years")
    with pytest.raises(SignalError, match=r"placed on 2015..2017: 2016 is a leap year") as info:
        load_citylearn(folder, year=2015, utc_offset_h=-8)
    assert "(year 1 of the file, rows 8761..17520)" in str(info.value)
    assert "years_from_file" in str(info.value)


def test_years_from_file(source, tmp_path):
    folder = _multi_year_set(source, tmp_path / "three_years")
    s = load_citylearn(folder, year=2014, utc_offset_h=-8, years_from_file=[1, 2])
    assert len(s.index) == 2 * HOURS
    assert s.index[0] == pd.Timestamp("2014-01-01 08:00", tz="UTC")
    raw = pd.read_csv(folder / "weather.csv")
    np.testing.assert_allclose(
        s.frame[("neighbourhood", "temp_c")].to_numpy(),
        raw["outdoor_dry_bulb_temperature"].to_numpy()[HOURS:],
    )
    for bad, match in (([0, 2], "expected consecutive years"), ([3], "years 0..2")):
        with pytest.raises(SignalError, match=match):
            load_citylearn(folder, year=2014, utc_offset_h=-8, years_from_file=bad)
    # Errors inside a selected year name the line of the file.
    df = pd.read_csv(folder / "Building_1.csv")
    df.loc[2 * HOURS + 5, "non_shiftable_load"] = np.nan
    df.to_csv(folder / "Building_1.csv", index=False)
    with pytest.raises(SignalError, match=r"non_shiftable_load.*line 17527") as info:
        load_citylearn(folder, year=2014, utc_offset_h=-8, years_from_file=[1, 2])
    assert info.value.source == str(folder / "Building_1.csv")


def test_day_type_break_is_an_error_unless_accepted(source, tmp_path):
    folder = _multi_year_set(source, tmp_path / "three_years")
    df = pd.read_csv(folder / "Building_2.csv")
    first_day_year3 = slice(2 * HOURS, 2 * HOURS + 23)  # .loc: both ends included
    df.loc[first_day_year3, "day_type"] = 7  # 2015-01-01 is a Thursday (4)
    df.to_csv(folder / "Building_2.csv", index=False)
    with pytest.raises(SignalError, match="check_day_type=False accepts it") as info:
        load_citylearn(folder, year=2013, utc_offset_h=-8)
    err = info.value
    assert (err.column, err.row, err.line) == ("day_type", 2 * HOURS + 1, 2 * HOURS + 2)
    assert "7 where 4 was expected" in str(err) and "24 rows differ" in str(err)
    s = load_citylearn(folder, year=2013, utc_offset_h=-8, check_day_type=False)
    assert s.provenance[-1]["day_type_mismatch_days"] == {"Building_1": 0, "Building_2": 1}
    assert s.provenance[-1]["day_type_checked"] is False


def test_bad_daylight_saving_status(source, tmp_path):
    folder = _multi_year_set(source, tmp_path / "three_years")
    df = pd.read_csv(folder / "Building_1.csv")
    df.loc[100, "daylight_savings_status"] = 2
    df.to_csv(folder / "Building_1.csv", index=False)
    with pytest.raises(SignalError, match="2 where 0 or 1 was expected") as info:
        load_citylearn(folder, year=2013, utc_offset_h=-8)
    assert (info.value.column, info.value.row, info.value.line) == (
        "daylight_savings_status",
        101,
        102,
    )


def test_citylearn_2021_set_from_a_checkout():
    root = os.environ.get(CITYLEARN_DATASETS_ENV)
    folder = Path(root or ".") / "citylearn_challenge_2021"
    if not root or not folder.is_dir():
        pytest.skip(
            f"set {CITYLEARN_DATASETS_ENV} to a CityLearn checkout's data/datasets folder "
            "(github.com/intelligent-environments-lab/CityLearn) to run this test"
        )
    # Four 365-day years: 2009-2012 would need 29 February 2012.
    with pytest.raises(SignalError, match="2012 is a leap year"):
        load_citylearn(folder, year=2009, utc_offset_h=-6)
    # Buildings 1-2 fit 2009-2011 day by day; the others break the weekday sequence.
    pair = ["Building_1", "Building_2"]
    s = load_citylearn(
        folder, year=2009, utc_offset_h=-6, years_from_file=[0, 1, 2], buildings=pair
    )
    assert len(s.index) == 3 * HOURS and s.provenance[-1]["not_in_schema"] == ["pricing"]
    flags = s.frame[("Building_1", "daylight_saving_fraction")]
    assert int(flags.sum()) == 3 * 5736
    with pytest.raises(SignalError, match="Building_5.csv: column 'day_type'"):
        load_citylearn(folder, year=2009, utc_offset_h=-6, years_from_file=[0, 1, 2])
    s = load_citylearn(
        folder, year=2009, utc_offset_h=-6, years_from_file=[0, 1, 2], check_day_type=False
    )
    assert s.provenance[-1]["day_type_mismatch_days"]["Building_1"] == 0
    assert max(s.provenance[-1]["day_type_mismatch_days"].values()) > 0
