"""Real series in place of the built-in models: one signal of a site from a file.

``read_series(source, signal, index)`` reads what a ``SeriesSource`` of the scenario
names (``sites[i].series.<signal>``): a CSV or parquet file, or a file of a registered
data set found by name (``gridrl.data.datasets``). The data sets with a loader go
through it (``entsoe_2020``: naive UTC timestamps, sub-hourly steps; ``eia930_2022``;
``citylearn_2022``: no timestamps, a calendar), any other file through
``Signals.from_frame``. Either way the series is validated (no gap, no duplicate, no
empty cell, sign by unit) unless ``resample``/``fill`` are asked for, and the result
must cover every hour of the scenario, or be mapped onto its years by
``typical_year`` (a one-year series) or ``repeat: day | week`` (a shorter one, by its
mean at each UTC hour of the day or of the week). ``format: llm_requests`` reads a
request log (Azure LLM inference trace format) through ``load_llm_requests`` instead.
Nothing else is changed; the record returned says what was done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.datasets import dataset_dir
from gridrl.data.loaders._common import read_csv, require_columns
from gridrl.data.signals import SignalError, Signals, signal_spec
from gridrl.scenario import SeriesSource

PARQUET_SUFFIXES = (".parquet", ".pq")
LEAP_DAY = (2, 29)
HOURS_PER_LEAP_YEAR = 8784
HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7
REPEAT_PERIOD_H = {"day": HOURS_PER_DAY, "week": HOURS_PER_DAY * DAYS_PER_WEEK}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Runs of missing hours named in full in an error before the rest are only counted.
MISSING_RUNS_SHOWN = 3


def series_path(source: SeriesSource, base_dir: Path | None) -> Path:
    """The file a series names: inside its data set's folder, else relative to the
    scenario's folder (absolute paths as they are)."""
    if source.dataset is not None:
        root = dataset_dir(source.dataset)
        return root / source.file if source.file else root
    path = Path(source.file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _mapping(source: SeriesSource, signal: str) -> dict[str, tuple[str, str]]:
    """Raw column -> (raw column, signal): each summed column is validated by the
    signal's sign rule (before ``scale``)."""
    return {raw: (raw, signal) for raw in source.columns}


def _assume_tz(source: SeriesSource) -> str | None:
    """The zone of naive timestamps: as given; for ``entsoe_2020`` UTC by default, as its
    loaders read it (ENTSO-E publishes in UTC); the localisation is recorded."""
    if source.assume_tz is None and source.dataset == "entsoe_2020":
        return "UTC"
    return source.assume_tz


def _times(df: pd.DataFrame, source: SeriesSource, path: Path) -> tuple[pd.DataFrame, str]:
    """Turn epoch-second or hour-offset times into UTC timestamps (ISO: left as they are)."""
    column = source.time_column or str(df.columns[0])
    require_columns(df, [column], path)
    if source.time_format == "iso":
        return df, column
    raw = pd.to_numeric(df[column], errors="coerce")
    whole = raw.notna() & (raw == raw.round())
    if not whole.all():
        r = int(np.flatnonzero(~whole.to_numpy())[0])
        raise SignalError(
            str(path), f"expected whole numbers for time_format {source.time_format}, got "
            f"{df[column].iloc[r]!r}", column=column, row=r + 1, line=r + 2,
        )
    if source.time_format == "epoch_s":
        times = pd.to_datetime(raw.astype(np.int64), unit="s", utc=True)
    else:
        origin = pd.Timestamp(source.time_origin)
        if origin.tzinfo is None:
            raise SignalError(str(path), f"time_origin {source.time_origin!r} needs a UTC "
                              "offset (e.g. 2022-01-01T00:00Z)", column=column)
        times = origin + pd.to_timedelta(raw.astype(np.int64), unit="h")
    return df.assign(**{column: times}), column


def _read_file(source: SeriesSource, signal: str, path: Path) -> Signals:
    """A plain CSV or parquet file through ``Signals.from_frame``."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise SignalError(str(path), f"cannot read parquet: {err}") from err
        if source.time_column is None and isinstance(df.index, pd.DatetimeIndex):
            df = df.reset_index()
    else:
        df = read_csv(path)
    df, column = _times(df, source, path)
    require_columns(df, source.columns, path)
    return Signals.from_frame(
        df, source=str(path), columns=_mapping(source, signal), time_column=column,
        assume_tz=_assume_tz(source), resample=source.resample, fill=source.fill,
        max_fill_h=source.max_fill_h, _line_offset=1,
    )


def _read_loader(source: SeriesSource, signal: str, path: Path) -> Signals:
    """A file of a data set that has a loader in ``gridrl.data.loaders``."""
    if source.dataset == "eia930_2022":
        from gridrl.data.loaders.eia930 import load_eia930

        return load_eia930(path, columns=_mapping(source, signal), fill=source.fill,
                           max_fill_h=source.max_fill_h)
    if source.dataset == "entsoe_2020" and path.name.endswith("_production.csv"):
        from gridrl.data.loaders.entsoe import load_entsoe_production

        return load_entsoe_production(path, columns=_mapping(source, signal),
                                      assume_tz=_assume_tz(source),
                                      resample=source.resample)
    from gridrl.data.loaders.citylearn import load_citylearn

    wanted = [c.split("/", 1) for c in source.columns]
    if any(len(w) != 2 for w in wanted):
        raise SignalError(str(path), "citylearn_2022 columns are '<building>/<signal>' "
                          f"(Building_1/load_kw), got {source.columns}", column="column")
    buildings = sorted({b for b, _ in wanted if b.startswith("Building_")})
    loaded = load_citylearn(path, buildings=buildings or None)
    keys = [tuple(w) for w in wanted]
    absent = [f"{b}/{s}" for b, s in keys if (b, s) not in loaded.frame.columns]
    if absent:
        raise SignalError(loaded.source, "not a column of the loaded set; it has "
                          f"{['/'.join(c) for c in loaded.frame.columns]}", column=absent[0])
    frame = loaded.frame.loc[:, keys]
    frame.columns = pd.MultiIndex.from_tuples(
        [(raw, signal) for raw in source.columns], names=["site", "signal"])
    frame.attrs["provenance"] = loaded.provenance
    return Signals.from_frame(frame, source=loaded.source)


def _read_llm_requests(source: SeriesSource, path: Path) -> Signals:
    """A request log in the Azure LLM trace format as hourly ``inference_gpus``."""
    from gridrl.data.loaders.demand import load_llm_requests

    return load_llm_requests(
        path, assume_tz=source.assume_tz,
        gpu_s_per_1k_context_tokens=source.gpu_s_per_1k_context_tokens,
        gpu_s_per_1k_generated_tokens=source.gpu_s_per_1k_generated_tokens,
    )


def _read_columns(source: SeriesSource) -> list[str]:
    """The raw columns a series reads (a request log's token counts)."""
    if source.format == "llm_requests":
        from gridrl.data.loaders.demand import LLM_TRACE_COLUMNS

        return list(LLM_TRACE_COLUMNS[1:])
    return source.columns


def _label(source: SeriesSource, signal: str) -> str:
    """What a series reads into a signal, for messages: ``[WND as wind_kw]``."""
    what = source.format if source.format == "llm_requests" else ", ".join(source.columns)
    return f"[{what} as {signal}]"


def _load(source: SeriesSource, signal: str, path: Path) -> Signals:
    if source.format == "llm_requests":
        return _read_llm_requests(source, path)
    loader_file = source.dataset == "entsoe_2020" and path.name.endswith("_production.csv")
    if source.dataset in ("eia930_2022", "citylearn_2022") or loader_file:
        return _read_loader(source, signal, path)
    return _read_file(source, signal, path)


def _typical_year(series: pd.Series, index: pd.DatetimeIndex, source: str) -> np.ndarray:
    """Values at the same UTC month, day and hour (29 February takes 28 February)."""
    if len(series) > HOURS_PER_LEAP_YEAR:
        raise SignalError(source, f"typical_year needs a series of one year at most; it "
                          f"has {len(series)} hours")
    s = series.index
    key = pd.Index(s.month * 10_000 + s.day * 100 + s.hour)
    month, day = index.month.to_numpy(), index.day.to_numpy()
    day = np.where((month == LEAP_DAY[0]) & (day == LEAP_DAY[1]), LEAP_DAY[1] - 1, day)
    want = month * 10_000 + day * 100 + index.hour.to_numpy()
    pos = key.get_indexer(want)
    if (pos < 0).any():
        first = index[int(np.flatnonzero(pos < 0)[0])]
        raise SignalError(source, f"typical_year: no value for {first:%m-%d %H:00} UTC "
                          f"({int((pos < 0).sum())} hours of the scenario lack one)")
    return series.to_numpy(dtype=np.float64)[pos]


def _span(first: pd.Timestamp, last: pd.Timestamp) -> str:
    return f"{first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00}"


def _hour_runs(hours: pd.DatetimeIndex) -> str:
    """Consecutive hours as ``first..last`` runs, the first few named, the rest counted."""
    breaks = np.flatnonzero((hours[1:] - hours[:-1]) != pd.Timedelta(hours=1)) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(hours)] - 1
    runs = [_span(hours[a], hours[b]) for a, b in zip(starts, ends, strict=True)]
    more = len(runs) - MISSING_RUNS_SHOWN
    shown = ", ".join(runs[:MISSING_RUNS_SHOWN])
    return f"{shown} and {more} more runs" if more > 0 else shown


def _on_index(series: pd.Series, index: pd.DatetimeIndex, source: str) -> np.ndarray:
    present = index.isin(series.index)
    if not present.all():
        missing = index[~present]
        raise SignalError(
            source, f"{missing.size} hours of the scenario are not in the series: "
            f"{_hour_runs(missing)} UTC; it covers "
            f"{_span(series.index[0], series.index[-1])} ({len(series)} hours). A shorter "
            "series needs typical_year (one year) or repeat: day | week (its mean daily or "
            "weekly pattern)")
    return series.reindex(index).to_numpy(dtype=np.float64)


def _hour_of_period(times: pd.DatetimeIndex, repeat: str) -> np.ndarray:
    """UTC hour of the day (``day``) or of the week from Monday 00:00 (``week``)."""
    hour = times.hour.to_numpy()
    return hour if repeat == "day" else times.dayofweek.to_numpy() * HOURS_PER_DAY + hour


def _hour_name(hour: int, repeat: str) -> str:
    day, clock = divmod(hour, HOURS_PER_DAY)
    return f"{clock:02d}:00" if repeat == "day" else f"{WEEKDAYS[day]} {clock:02d}:00"


def _repeated(
    series: pd.Series, index: pd.DatetimeIndex, repeat: str, source: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Values at the same UTC hour of the day (or of the week): the series' mean there.

    Returns the values and a provenance record (``values_per_mean``: the fewest and
    the most values one hour's mean took).
    """
    profile = series.groupby(_hour_of_period(series.index, repeat)).agg(["mean", "count"])
    period_h = REPEAT_PERIOD_H[repeat]
    absent = sorted(set(range(period_h)) - set(profile.index))
    if absent:
        raise SignalError(
            source, f"repeat: {repeat} needs a value at every hour of the {repeat}; the "
            f"series ({_span(series.index[0], series.index[-1])}, {len(series)} hours) has "
            f"none at {_hour_name(absent[0], repeat)} UTC ({len(absent)} of {period_h} "
            "hours lack one)")
    values = profile["mean"].reindex(_hour_of_period(index, repeat)).to_numpy(np.float64)
    record = {"step": "repeat", "method": repeat, "series_hours": len(series),
              "values_per_mean": [int(profile["count"].min()), int(profile["count"].max())]}
    return values, record


def _missing_hours(source: SeriesSource, path: Path) -> pd.DatetimeIndex:
    """UTC hours at which a plain file's columns are empty (for ``keep_missing``)."""
    probe = source.model_copy(update={"fill": None, "max_fill_h": None})
    df = pd.read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else read_csv(path)
    df, column = _times(df, probe, path)
    empty = df[source.columns].isna().any(axis=1).to_numpy()
    raw = df[column].iloc[np.flatnonzero(empty)]
    try:
        times = pd.DatetimeIndex(pd.to_datetime(raw, format="ISO8601"))
    except (ValueError, TypeError):  # mixed UTC offsets (local time with DST)
        times = pd.DatetimeIndex(pd.to_datetime(raw, format="ISO8601", utc=True))
    if times.tz is None:
        times = times.tz_localize(_assume_tz(source) or "UTC")
    return times.tz_convert("UTC")


def load_series(
    source: SeriesSource, signal: str, *, site: str, base_dir: Path | None = None,
    keep_missing: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The whole series as a one-column frame ``(site, signal)`` (summed, scaled).

    ``keep_missing`` (not with ``resample``): cells empty in the file stay NaN instead
    of being an error; everything else is validated as usual (they are validated
    filled, then put back empty). For forecasting, which leaves missing targets out.

    Returns the frame (hourly UTC index ``time``) and a record of what was done.
    """
    path = series_path(source, base_dir)
    if keep_missing and source.resample is None and source.fill is None:
        loaded = _load(source.model_copy(update={"fill": "interpolate"}), signal, path)
        filled = any(r.get("step") == "fill" and r.get("cells_filled") for r in loaded.provenance)
        missing = _missing_hours(source, path) if filled else pd.DatetimeIndex([])
    else:
        loaded, missing = _load(source, signal, path), pd.DatetimeIndex([])
    total = loaded.frame.sum(axis=1, min_count=loaded.frame.shape[1]) * source.scale
    total[total.index.isin(missing)] = np.nan
    provenance = loaded.provenance
    if source.time_format != "iso":
        provenance.insert(0, {"step": "times", "method": source.time_format,
                              "origin": source.time_origin})
    if len(missing):  # the fill only served validation: say what the values are
        provenance = [r for r in provenance if r.get("step") != "fill"]
        provenance.append({"step": "keep_missing", "empty_hours": len(missing),
                           "first": str(missing[0])})
    record = {
        "signal": signal, "file": str(path), "dataset": source.dataset,
        "format": source.format, "columns": _read_columns(source), "scale": source.scale,
        "missing_hours_kept": len(missing), "typical_year": source.typical_year,
        "repeat": source.repeat, "provenance": provenance,
    }
    frame = total.to_frame(name=(site, signal))
    frame.columns = pd.MultiIndex.from_tuples([(site, signal)], names=["site", "signal"])
    frame.index.name = "time"
    return frame, record


def read_series(
    source: SeriesSource, signal: str, index: pd.DatetimeIndex, base_dir: Path | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """One signal of a site on ``index`` (UTC hours) from a real series.

    Returns
    -------
    values : numpy.ndarray
        float64 ``[len(index)]``: the (summed) columns times ``scale``.
    record : dict
        What was read and done: file, data set, form, columns, scale, the loader's
        provenance (time-zone steps, resampling, cells filled; for a request log the
        requests, those in the partial edge hours and the hours without one),
        ``typical_year`` and ``repeat``.

    Raises
    ------
    SignalError
        Naming the file, column and row of bad data, or the hours of the scenario the
        series does not cover.
    """
    frame, record = load_series(source, signal, site="_", base_dir=base_dir)
    total = frame[("_", signal)]
    where = f"{record['file']} {_label(source, signal)}"
    if source.typical_year:
        values = _typical_year(total, index, where)
    elif source.repeat is not None:
        values, step = _repeated(total, index, source.repeat, where)
        record["provenance"].append(step)
    else:
        values = _on_index(total, index, where)
    if signal_spec(signal).nonnegative and (values < 0).any():
        r = int(np.flatnonzero(values < 0)[0])
        raise SignalError(where, f"negative value {values[r]:.4g} for {signal} after scale "
                          f"{source.scale}", timestamp=index[r])
    del record["missing_hours_kept"]
    return values, record


def series_files(source: SeriesSource, base_dir: Path | None) -> list[Path]:
    """The files a series reads (for the build cache key)."""
    path = series_path(source, base_dir)
    if path.is_dir():  # a data set read as a whole (CityLearn)
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def signal_name_for(column: str) -> str:
    """A signal name for a raw column: the loaders' names for EIA-930 and ENTSO-E
    columns (``WND`` -> ``wind_mw``), else the column in snake case when it ends in a
    unit (``load_kw``).

    Raises
    ------
    SignalError
        when the column says no unit: name the signal explicitly.
    """
    from gridrl.data.loaders._common import snake
    from gridrl.data.loaders.eia930 import EIA930_NAMES
    from gridrl.data.loaders.entsoe import CARBON_COLUMN, ENTSOE_PRODUCTION_NAMES

    known = {**EIA930_NAMES, **ENTSOE_PRODUCTION_NAMES, CARBON_COLUMN: "carbon_g_per_kwh"}
    if column in known:
        return known[column]
    name = snake(column)
    try:
        signal_spec(name)
    except SignalError:
        raise SignalError(
            "<column>", "no unit in the column name: give the signal name with a unit "
            "suffix (wind_mw, load_kw, carbon_g_per_kwh, ...)", column=column,
        ) from None
    return name
