"""Signals.from_csv: the timestamp forms it reads (ISO, epoch seconds, offsets) and their errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gridrl.data import SignalError, Signals

# 2021-03-28 00:00 UTC; Europe/London moves from UTC+0 to UTC+1 at 01:00 UTC that day.
EPOCH_0 = 1616889600
HOURS = 6


def _write(tmp_path: Path, times: list, name: str = "carbon.csv") -> Path:
    path = tmp_path / name
    values = [100.0 + k for k in range(len(times))]
    pd.DataFrame({"time": times, "carbon_g_per_kwh": values}).to_csv(path, index=False)
    return path


def _load(path: Path, **kw) -> Signals:
    return Signals.from_csv(path, time_column="time", site="a", **kw)


def _expected(start: str = "2021-03-28 00:00") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=HOURS, freq="h", tz="UTC", name="time")


def test_iso_with_and_without_offset(tmp_path):
    # Across the London DST change: offsets +00:00 then +01:00 in one file.
    local = _expected().tz_convert("Europe/London")
    aware = _write(tmp_path, [t.isoformat() for t in local], "aware.csv")
    assert _load(aware).index.equals(_expected())
    naive = _write(tmp_path, [t.strftime("%Y-%m-%d %H:%M") for t in _expected()], "naive.csv")
    with pytest.raises(SignalError, match="assume_tz"):
        _load(naive)
    assert _load(naive, assume_tz="UTC").index.equals(_expected())


def test_epoch_seconds(tmp_path):
    path = _write(tmp_path, [EPOCH_0 + 3600 * k for k in range(HOURS)])
    s = _load(path, time_format="epoch_s")
    assert s.index.equals(_expected())
    assert s.frame[("a", "carbon_g_per_kwh")].iloc[-1] == 100.0 + HOURS - 1
    assert s.provenance[0] == {"step": "parse_times", "format": "epoch_s"}
    # Without the option the integers are not guessed at.
    with pytest.raises(SignalError, match="cannot parse timestamp 1616889600"):
        _load(path)


def test_epoch_seconds_in_first_column(tmp_path):
    path = _write(tmp_path, [EPOCH_0 + 3600 * k for k in range(HOURS)])
    s = Signals.from_csv(path, site="a", time_format="epoch_s")
    assert s.index.equals(_expected())


@pytest.mark.parametrize(
    ("cell", "shown"), [("1616893200.5", "1616893200.5"), ("soon", "'soon'"), ("", "nan")]
)
def test_epoch_bad_cell_names_row_and_line(tmp_path, cell, shown):
    times = [str(EPOCH_0 + 3600 * k) for k in range(HOURS)]
    times[2] = cell
    path = _write(tmp_path, times)
    with pytest.raises(SignalError) as info:
        _load(path, time_format="epoch_s")
    err = info.value
    assert (err.column, err.row, err.line) == ("time", 3, 4)
    assert f"{shown} is not a whole number of seconds since 1970-01-01T00:00Z" in str(err)
    assert str(err).startswith(f"{path}: column 'time', row 3 (line 4)")


def test_offset_from_origin_with_zone(tmp_path):
    path = _write(tmp_path, list(range(HOURS)))
    s = _load(path, time_format="offset", time_origin="2021-03-28T01:00+01:00")
    assert s.index.equals(_expected())
    assert s.provenance[0]["origin"] == "2021-03-28 01:00:00+01:00"
    assert s.provenance[0]["unit"] == "h"


def test_offset_units(tmp_path):
    path = _write(tmp_path, [3600 * k for k in range(HOURS)])
    s = _load(path, time_format="offset", time_origin="2021-03-28T00:00Z", time_unit="s")
    assert s.index.equals(_expected())
    path = _write(tmp_path, [60 * k for k in range(HOURS)], "min.csv")
    s = _load(path, time_format="offset", time_origin="2021-03-28T00:00Z", time_unit="min")
    assert s.index.equals(_expected())


def test_offset_local_origin_is_elapsed_time(tmp_path):
    # Origin at local midnight in London; the offsets are elapsed hours, so they run
    # straight through the missing local hour 01:00-02:00.
    path = _write(tmp_path, list(range(HOURS)))
    s = _load(path, time_format="offset", time_origin="2021-03-28 00:00", assume_tz="Europe/London")
    assert s.index.equals(_expected())
    with pytest.raises(SignalError, match="assume_tz"):
        _load(path, time_format="offset", time_origin="2021-03-28 00:00")
    with pytest.raises(SignalError, match="cannot be placed in 'Europe/London'"):
        _load(
            path,
            time_format="offset",
            time_origin="2021-03-28 01:30",
            assume_tz="Europe/London",
        )


def test_option_errors(tmp_path):
    path = _write(tmp_path, list(range(HOURS)))
    with pytest.raises(SignalError, match="needs time_origin"):
        _load(path, time_format="offset")
    with pytest.raises(SignalError, match="applies only to it"):
        _load(path, time_format="epoch_s", time_origin="2021-01-01")
    with pytest.raises(SignalError, match="unknown time_format 'unix'"):
        _load(path, time_format="unix")
    with pytest.raises(SignalError, match="unknown time_unit 'd'"):
        _load(path, time_format="offset", time_origin="2021-01-01Z", time_unit="d")
    with pytest.raises(SignalError, match="time_origin 'yesterday' is not an ISO timestamp"):
        _load(path, time_format="offset", time_origin="yesterday")


def test_offset_gap_is_still_a_gap(tmp_path):
    path = _write(tmp_path, [0, 1, 2, 5, 6, 7])
    with pytest.raises(SignalError, match="gap: 2 missing hour"):
        _load(path, time_format="offset", time_origin="2021-03-28T00:00Z")
