"""Signals: validation errors on crafted bad files, and the table operations."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridrl.data import SignalError, Signals, signal_spec

HOURS = 48


def _hourly(n: int = HOURS, start: str = "2021-03-01 00:00") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h", tz="UTC", name="time")


def _frame(index: pd.DatetimeIndex) -> pd.DataFrame:
    n = len(index)
    return pd.DataFrame(
        {
            "pv_kw": np.linspace(0.0, 5.0, n),
            "temp_c": np.linspace(-4.0, 12.0, n),
            "price_per_mwh": np.linspace(-20.0, 80.0, n),
        },
        index=index,
    )


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "site.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index_label="time")
    return path


def _load(path: Path, **kw) -> Signals:
    return Signals.from_csv(path, time_column="time", site="a", **kw)


def _assert_names(err: SignalError, path: Path, column: str, row: int) -> None:
    """The error names the file, the column and the row (with its line in the file)."""
    msg = str(err)
    assert err.source == str(path)
    assert msg.startswith(f"{path}: ")
    assert f"column '{column}'" in msg
    assert err.row == row
    assert err.line == row + 1  # one header line
    assert f"row {row} (line {row + 1}" in msg


# ------------------------------------------------------------------ validation errors


def test_valid_file_loads(tmp_path):
    path = _write(tmp_path, _frame(_hourly()))
    s = _load(path)
    assert s.sites == ("a",)
    assert s.signals == ("pv_kw", "temp_c", "price_per_mwh")
    assert s.frame.index.tz is not None and str(s.frame.index.tz) == "UTC"
    assert s.frame.columns.names == ["site", "signal"]
    assert (s.frame.dtypes == np.float64).all()
    # Negative temperature and price are legal.
    assert s.frame[("a", "temp_c")].min() < 0 and s.frame[("a", "price_per_mwh")].min() < 0


def test_gap(tmp_path):
    df = _frame(_hourly()).drop(index=_hourly()[[10, 11, 12]])
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 11)  # the row after the hole
    assert "gap: 3 missing hour(s)" in str(exc.value)
    assert "2021-03-01 09:00:00+00:00 and 2021-03-01 13:00:00+00:00" in str(exc.value)


def test_duplicate_timestamp(tmp_path):
    df = _frame(_hourly())
    df = pd.concat([df.iloc[:6], df.iloc[5:6], df.iloc[6:]])
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 7)
    assert "duplicate timestamp 2021-03-01 05:00:00+00:00" in str(exc.value)


def test_naive_timezone(tmp_path):
    df = _frame(_hourly())
    df.index = df.index.tz_localize(None)
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 1)
    assert "naive timestamps" in str(exc.value) and "assume_tz" in str(exc.value)
    # Explicit localisation is accepted and recorded.
    s = _load(path, assume_tz="UTC")
    assert s.provenance == [{"step": "localize", "assume_tz": "UTC"}]


def test_non_monotonic(tmp_path):
    df = _frame(_hourly())
    order = list(range(HOURS))
    order[20], order[21] = order[21], order[20]
    path = _write(tmp_path, df.iloc[order])
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 22)
    assert "non-monotonic" in str(exc.value)


def test_nan(tmp_path):
    df = _frame(_hourly())
    df.iloc[30, 0] = np.nan  # written as an empty cell
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "pv_kw", 31)
    assert "NaN" in str(exc.value) and "2021-03-02 06:00:00+00:00" in str(exc.value)


def test_inf(tmp_path):
    df = _frame(_hourly())
    df.iloc[7, 1] = np.inf
    path = _write(tmp_path, df)
    assert "inf" in path.read_text()
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "temp_c", 8)
    assert "infinite" in str(exc.value)


def test_negative_power(tmp_path):
    df = _frame(_hourly())
    df.iloc[12, 0] = -0.5
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "pv_kw", 13)
    assert "negative value -0.5 kW" in str(exc.value)


def test_wrong_step(tmp_path):
    index = pd.date_range("2021-03-01", periods=HOURS, freq="30min", tz="UTC", name="time")
    path = _write(tmp_path, _frame(index))
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 2)
    assert f"wrong step: 30min where 1h was expected ({HOURS - 1} steps)" in str(exc.value)


def test_mixed_steps(tmp_path):
    a = pd.date_range("2021-03-01 00:00", periods=20, freq="30min", tz="UTC")
    b = pd.date_range(a[-1] + pd.Timedelta("15min"), periods=12, freq="15min", tz="UTC")
    path = _write(tmp_path, _frame(a.append(b).rename("time")))
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", 2)
    assert "mixed steps: 30min x 19 (first at row 2), 15min x 12 (first at row 21)" in str(
        exc.value
    )


def test_unknown_unit(tmp_path):
    df = _frame(_hourly()).rename(columns={"pv_kw": "pv_power"})
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path)
    assert exc.value.source == str(path)
    assert "column 'pv_power'" in str(exc.value)
    assert "unknown unit" in str(exc.value)


def test_not_a_number(tmp_path):
    path = _write(tmp_path, _frame(_hourly()))
    lines = path.read_text().splitlines()
    parts = lines[5].split(",")
    parts[2] = "n/a-ish"
    lines[5] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SignalError) as exc:
        _load(path)
    _assert_names(exc.value, path, "temp_c", 5)
    assert "not a number: 'n/a-ish'" in str(exc.value)


def test_mapped_column_named_as_in_file(tmp_path):
    df = _frame(_hourly()).rename(columns={"pv_kw": "PV power"})
    df.iloc[3, 0] = -1.0
    path = _write(tmp_path, df)
    with pytest.raises(SignalError) as exc:
        _load(path, columns={"PV power": "pv_kw"})
    _assert_names(exc.value, path, "PV power", 4)
    assert "(as a/pv_kw)" in str(exc.value)
    assert exc.value.mapped == ("a", "pv_kw")


def test_frame_rows_are_one_based_without_lines():
    df = _frame(_hourly())
    df.iloc[4, 0] = np.nan
    with pytest.raises(SignalError) as exc:
        Signals.from_frame(df, site="a")
    assert exc.value.source == "<frame>" and exc.value.row == 5 and exc.value.line is None
    assert "row 5 (2021-03-01 04:00:00+00:00)" in str(exc.value)


def test_error_pickles():
    err = SignalError("f.csv", "bad", column="x", row=3, line=4, timestamp="t")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.row == 3 and back.line == 4


# ------------------------------------------------------------------ units


def test_signal_spec_rules():
    assert signal_spec("pv_kw").nonnegative
    assert not signal_spec("price_per_mwh").nonnegative
    assert signal_spec("price_per_mwh").unit == "currency/MWh"
    assert signal_spec("solar_mw").unit == "MW" and signal_spec("solar_mw").nonnegative
    assert not signal_spec("hydro_pumped_storage_net_mw").nonnegative
    assert signal_spec("diffuse_w_per_m2_fcst_6h").unit == "W/m2"
    assert signal_spec("temp_c_fcst_24h") == signal_spec("temp_c")
    assert signal_spec("energy_kwh").unit == "kWh"
    with pytest.raises(SignalError, match="unknown unit"):
        signal_spec("kw")
    with pytest.raises(SignalError, match="unknown unit"):
        signal_spec("speed")


# ------------------------------------------------------------------ operations


def test_parquet_round_trip(tmp_path):
    a = Signals.from_frame(_frame(_hourly()), site="a", source="a")
    half = _frame(_hourly()).iloc[:, :1] * 2
    b = Signals.from_frame(half, site="b", source="b")
    both = Signals.combine([a, b])
    out = both.to_parquet(tmp_path / "sub" / "signals.parquet")
    assert sorted(p.name for p in out.parent.iterdir()) == ["signals.parquet"]  # no temp left
    back = Signals.from_parquet(out)
    pd.testing.assert_frame_equal(back.frame, both.frame, check_freq=False)
    assert back.provenance == both.provenance
    assert back.source == str(out)


def test_combine_rejects_duplicates_and_other_index():
    a = Signals.from_frame(_frame(_hourly()), site="a", source="first")
    again = Signals.from_frame(_frame(_hourly()).iloc[:, :1], site="a", source="second")
    with pytest.raises(SignalError, match="duplicate") as exc:
        Signals.combine([a, again])
    assert "first" in str(exc.value) and "second" in str(exc.value)
    shorter = Signals.from_frame(_frame(_hourly(HOURS - 1)), site="b", source="short")
    with pytest.raises(SignalError, match="index differs"):
        Signals.combine([a, shorter])


def test_array_shapes_and_order():
    a = Signals.from_frame(_frame(_hourly()), site="a")
    b = Signals.from_frame(_frame(_hourly()) + 1.0, site="b")
    s = Signals.combine([a, b])
    arr = s.array(["temp_c", "pv_kw"])
    assert arr.shape == (HOURS, 2, 2) and arr.dtype == np.float64
    np.testing.assert_array_equal(arr[:, 1, 0], s.frame[("b", "temp_c")].to_numpy())
    np.testing.assert_array_equal(arr[:, 0, 1], s.frame[("a", "pv_kw")].to_numpy())
    only_b = s.array(["pv_kw"], sites=["b"])
    assert only_b.shape == (HOURS, 1, 1)
    with pytest.raises(SignalError, match="no such column") as exc:
        s.array(["wind_kw"])
    assert "a/wind_kw" in str(exc.value)
    assert list(s.site("b").columns) == ["pv_kw", "temp_c", "price_per_mwh"]


def test_between_is_half_open():
    s = Signals.from_frame(_frame(_hourly()), site="a")
    part = s.between("2021-03-01 10:00", "2021-03-01 20:00")
    assert len(part.index) == 10
    assert part.index[0] == pd.Timestamp("2021-03-01 10:00", tz="UTC")
    with pytest.raises(SignalError, match="no rows"):
        s.between("2022-01-01", "2022-01-02")


def test_resample_mean_records_provenance(tmp_path):
    index = pd.date_range("2021-03-01", periods=8, freq="30min", tz="UTC", name="time")
    df = pd.DataFrame({"pv_kw": [1.0, 3.0, 2.0, np.nan, 5.0, 7.0, 0.0, 0.0]}, index=index)
    path = _write(tmp_path, df)
    s = _load(path, resample="mean")
    np.testing.assert_allclose(s.frame[("a", "pv_kw")].to_numpy(), [2.0, 2.0, 6.0, 0.0])
    (record,) = s.provenance
    assert record["step"] == "resample" and record["method"] == "mean"
    assert record["rows_in"] == 8 and record["rows_out"] == 4
    assert record["steps_in"] == {"30min": 7}
    assert record["empty_cells_excluded"] == {"a/pv_kw": 1}


def test_resample_empty_hour_is_an_error(tmp_path):
    index = pd.date_range("2021-03-01", periods=6, freq="30min", tz="UTC", name="time")
    df = pd.DataFrame({"pv_kw": [1.0, 3.0, np.nan, np.nan, 5.0, 7.0]}, index=index)
    path = _write(tmp_path, df)
    with pytest.raises(SignalError, match="no values to mean") as exc:
        _load(path, resample="mean")
    assert "column 'pv_kw'" in str(exc.value) and exc.value.row == 2


def test_resample_sum_and_interpolate():
    quarter = pd.date_range("2021-03-01", periods=8, freq="15min", tz="UTC")
    s = Signals.from_frame(
        pd.DataFrame({"energy_kwh": np.arange(8.0)}, index=quarter), site="a", resample="sum"
    )
    np.testing.assert_allclose(s.frame.iloc[:, 0].to_numpy(), [6.0, 22.0])
    three = pd.date_range("2021-03-01", periods=3, freq="3h", tz="UTC")
    s = Signals.from_frame(
        pd.DataFrame({"temp_c": [0.0, 3.0, 0.0]}, index=three), site="a", resample="interpolate"
    )
    np.testing.assert_allclose(s.frame.iloc[:, 0].to_numpy(), [0, 1, 2, 3, 2, 1, 0])
    assert s.provenance[-1]["hours_interpolated"] == 4


def test_fill_is_explicit_and_counted():
    df = _frame(_hourly())
    df.iloc[5:7, 0] = np.nan
    df.iloc[20:30, 1] = np.nan
    with pytest.raises(SignalError, match="NaN"):
        Signals.from_frame(df, site="a")
    s = Signals.from_frame(df, site="a", fill="interpolate")
    assert s.provenance[-1]["cells_filled"] == {"a/pv_kw": 2, "a/temp_c": 10}
    expected = np.linspace(0.0, 5.0, HOURS)[5:7]
    np.testing.assert_allclose(s.frame[("a", "pv_kw")].iloc[5:7].to_numpy(), expected)
    with pytest.raises(SignalError, match="NaN") as exc:
        Signals.from_frame(df, site="a", fill="interpolate", max_fill_h=3)
    assert "column 'temp_c'" in str(exc.value) and exc.value.row == 21


def test_validate_catches_later_corruption():
    s = Signals.from_frame(_frame(_hourly()), site="a")
    frame = s.frame.copy()
    frame.iloc[3, 0] = -2.0
    with pytest.raises(SignalError, match="negative"):
        Signals(frame, "edited").validate()


# ------------------------------------------------------------------ time parsing


def test_mixed_utc_offsets_are_converted_and_recorded():
    times = ["2021-03-28 00:00+01:00", "2021-03-28 01:00+01:00", "2021-03-28 03:00+02:00"]
    s = Signals.from_frame(
        pd.DataFrame({"time": times, "pv_kw": [1.0, 2.0, 3.0]}), time_column="time", site="a"
    )
    assert s.index[0] == pd.Timestamp("2021-03-27 23:00", tz="UTC")
    assert s.provenance == [{"step": "tz_convert", "from": "mixed UTC offsets", "to": "UTC"}]


@pytest.mark.parametrize(
    ("times", "row", "problem"),
    [
        (["2021-03-28 00:00+01:00", "2021-03-28 01:00"], 2, "has no UTC offset"),
        (["2021-01-01 00:00Z", "01/02/2021 1am"], 2, "cannot parse timestamp"),
        (["2021-01-01 00:00Z", None], 2, "missing timestamp"),
    ],
)
def test_bad_timestamps_are_named(tmp_path, times, row, problem):
    path = tmp_path / "t.csv"
    pd.DataFrame({"time": times, "pv_kw": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(SignalError, match=problem) as exc:
        _load(path)
    _assert_names(exc.value, path, "time", row)


def test_local_time_that_does_not_exist(tmp_path):
    path = tmp_path / "paris.csv"
    times = ["2021-03-28 00:00", "2021-03-28 01:00", "2021-03-28 02:00"]
    pd.DataFrame({"time": times, "pv_kw": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    with pytest.raises(SignalError, match="does not exist or is ambiguous") as exc:
        _load(path, assume_tz="Europe/Paris")
    _assert_names(exc.value, path, "time", 3)
