"""The one interface of live signal providers, and the HTTP plumbing they share.

A provider turns a remote service into validated hourly ``Signals`` rows for one site:
``provider.fetch(start, end)`` returns the hours ``start <= t < end`` (UTC, labelled by
the start of the hour) that the service has, validated like every file source (units in
names, no gap, no empty cell). Live data are for operation (``gridrl slurm``,
``gridrl serve``): training uses the data sets and files.

API keys come from environment variables only (``Provider.key_env``). A key is sent in
a request header, never in a URL, and is scrubbed from every error message, so it
cannot reach a log or a traceback through gridrl.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gridrl.data.signals import SignalError, Signals
from gridrl.errors import GridrlError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HttpJson",
    "Provider",
    "ProviderError",
    "RateLimitedError",
    "hour_floor",
    "hourly_from_intervals",
    "timed_values",
]

DEFAULT_TIMEOUT_S = 30.0
REDACTED = "***"
HOUR_TD = pd.Timedelta(hours=1)
# Longest part of a response body quoted in an error: enough to see the service's reason.
BODY_EXCERPT_CHARS = 300


class ProviderError(GridrlError, RuntimeError):
    """A live provider failed: no key, HTTP error, bad response. Names the provider."""


class RateLimitedError(ProviderError):
    """HTTP 429: the service asks to wait ``retry_after_s`` seconds (None if unsaid)."""

    exit_code = 3  # a caller's poll loop retries later; not bad input

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def hour_floor(value: Any) -> pd.Timestamp:
    """``value`` as a UTC timestamp rounded down to the hour (naive is read as UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.floor("h")


@dataclass
class Provider(ABC):
    """A live source of one site's hourly signals.

    Subclasses are dataclasses whose fields are the provider's options (all strings,
    numbers or booleans, so that ``gridrl live NAME --param key=value`` can set them).

    Attributes
    ----------
    site : str
        Site name of the returned columns.
    """

    name: ClassVar[str]
    # Environment variable holding the API key; None for keyless services.
    key_env: ClassVar[str | None] = None
    # Signal names ``fetch`` returns (documentation and the CLI listing).
    provides: ClassVar[tuple[str, ...]] = ()
    site: str = "site"

    @abstractmethod
    def fetch(self, start: Any, end: Any) -> Signals:
        """Validated signals for ``start <= t < end`` (hour-aligned UTC)."""

    # ------------------------------------------------------------------ helpers

    def api_key(self) -> str:
        """The key from ``key_env``; a clear error naming the variable when unset."""
        if self.key_env is None:
            raise ProviderError(f"{self.name}: this provider takes no API key")
        key = os.environ.get(self.key_env, "").strip()
        if not key:
            raise ProviderError(
                f"{self.name}: no API key: set the environment variable {self.key_env}"
            )
        return key

    def window(self, start: Any, end: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Hour-aligned UTC bounds; an empty or reversed window is an error."""
        lo, hi = hour_floor(start), hour_floor(end)
        if hi <= lo:
            raise ProviderError(f"{self.name}: empty window [{lo}, {hi}) (whole hours, UTC)")
        return lo, hi

    def to_signals(
        self,
        frame: pd.DataFrame,
        source: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        *,
        resample: str | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> Signals:
        """Validate a frame of signal columns (UTC index) and keep ``[start, end)``.

        Every hour of the window must be present: a service that returns fewer hours
        than asked is an error naming the first missing one, not a shorter table.
        """
        frame = frame.sort_index()
        # Services answer a little more than asked (whole days, the period ending at
        # the start): keep the window, then every hour of it must be there.
        frame = frame[(frame.index >= start) & (frame.index < end)]
        want = pd.date_range(start, end, freq="h", inclusive="left", name="time")
        missing = want.difference(frame.index.floor("h"))
        if len(missing):
            raise ProviderError(
                f"{self.name}: {source}: no data for {len(missing)} of the {len(want)} hours "
                f"asked, first {missing[0]} (window [{start}, {end}))"
            )
        try:
            signals = Signals.from_frame(frame, source=source, site=self.site, resample=resample)
        except SignalError as err:
            raise ProviderError(f"{self.name}: invalid data: {err}") from None
        signals.frame.attrs["provenance"] = signals.provenance + [
            {"step": "live", "provider": self.name, "source": source, **dict(note or {})}
        ]
        return signals


@dataclass
class HttpJson:
    """GET JSON from one service; every failure is a ``ProviderError`` naming it.

    Secrets (API keys) listed in ``secrets`` are replaced by ``***`` in every message,
    including those of the HTTP library, which may quote URLs.
    """

    provider: str
    base_url: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Decoded JSON of ``GET base_url + path``."""
        import requests

        url = self.base_url.rstrip("/") + "/" + path.lstrip("/")
        try:
            resp = requests.get(url, params=params, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as err:
            raise ProviderError(self._scrub(f"{self.provider}: GET {url} failed: {err}")) from None
        if resp.status_code == 429:
            retry = _retry_after_s(resp.headers.get("Retry-After"))
            wait = f"retry after {retry:g} s" if retry is not None else "no Retry-After given"
            raise RateLimitedError(
                self._scrub(f"{self.provider}: GET {url}: rate limited (HTTP 429, {wait})"),
                retry,
            )
        if resp.status_code != 200:
            raise ProviderError(
                self._scrub(
                    f"{self.provider}: GET {url}: HTTP {resp.status_code} {resp.reason}: "
                    f"{resp.text[:BODY_EXCERPT_CHARS]!r}"
                )
            )
        try:
            return resp.json()
        except (ValueError, json.JSONDecodeError) as err:
            raise ProviderError(
                self._scrub(
                    f"{self.provider}: GET {url}: response is not JSON ({err}): "
                    f"{resp.text[:BODY_EXCERPT_CHARS]!r}"
                )
            ) from None

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = pd.Timestamp(value)
    except ValueError:
        return None
    when = when.tz_localize("UTC") if when.tz is None else when
    return max((when - pd.Timestamp.now(tz="UTC")).total_seconds(), 0.0)


def field_path(record: Any, path: str, provider: str, where: str) -> Any:
    """``record[a][b]...`` for ``path = "a.b"``; a missing key is an error naming it."""
    value = record
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise ProviderError(
                f"{provider}: {where}: missing field {path!r} (no {key!r} in {_short(value)})"
            )
        value = value[key]
    return value


def parse_time(value: Any, provider: str, where: str) -> pd.Timestamp:
    """A UTC timestamp from a response field; unparseable or zone-less is an error."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise ProviderError(f"{provider}: {where}: {value!r} is not a timestamp ({err})") from None
    if ts is pd.NaT or ts.tz is None:
        raise ProviderError(f"{provider}: {where}: {value!r} has no UTC offset")
    return ts.tz_convert("UTC")


def timed_values(
    rows: list[Any], time_field: str, value_field: str, provider: str, where: str, item: str
) -> pd.Series:
    """``value_field`` of each row (NaN where null or not a number) at its UTC
    ``time_field``; a missing field or bad time names ``item`` and its 1-based number."""
    times, values = [], []
    for k, row in enumerate(rows):
        at = f"{where}, {item} {k + 1}"
        times.append(parse_time(field_path(row, time_field, provider, at), provider, at))
        value = field_path(row, value_field, provider, at)
        values.append(float("nan") if value is None else value)
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
    return pd.Series(numbers, pd.DatetimeIndex(times, tz="UTC"))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "..."


def hourly_from_intervals(
    starts: pd.DatetimeIndex,
    ends: pd.DatetimeIndex,
    values: Any,
    provider: str,
    where: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> pd.Series:
    """Duration-weighted hourly means of values over ``[start, end)`` intervals.

    Intervals must not cross an hour boundary (5, 15, 30 or 60 minute market intervals
    do not). An hour of ``window`` that the intervals cover only in part is an error (a
    hole is never averaged over); partial hours outside it are left out.
    """
    starts = pd.DatetimeIndex(starts).tz_convert("UTC")
    ends = pd.DatetimeIndex(ends).tz_convert("UTC")
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    if len(numbers) and not np.isfinite(numbers).all():
        p = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise ProviderError(
            f"{provider}: {where}: value for the interval from {starts[p]} is empty or not a "
            f"number ({int((~np.isfinite(numbers)).sum())} such intervals)"
        )
    hours = starts.floor("h")
    crossing = np.flatnonzero(np.asarray((ends - HOUR_TD) > hours))
    if crossing.size:
        p = int(crossing[0])
        raise ProviderError(
            f"{provider}: {where}: interval {starts[p]}..{ends[p]} crosses an hour boundary"
        )
    seconds = np.asarray((ends - starts).total_seconds(), dtype=float)
    frame = pd.DataFrame({"w": seconds, "wv": seconds * numbers}, index=hours)
    sums = frame.groupby(level=0).sum()
    full = np.isclose(sums["w"].to_numpy(), HOUR_TD.total_seconds())
    inside = (sums.index >= window[0]) & (sums.index < window[1])
    partial = np.flatnonzero(~full & inside)
    if partial.size:
        p = int(partial[0])
        raise ProviderError(
            f"{provider}: {where}: hour {sums.index[p]} is covered for "
            f"{sums['w'].iloc[p] / 60:g} of 60 minutes ({partial.size} such hours)"
        )
    return pd.Series(sums["wv"].to_numpy()[full] / sums["w"].to_numpy()[full], sums.index[full])


def intervals_of_readings(
    times: pd.DatetimeIndex, provider: str, where: str
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray]:
    """``[start, end)`` intervals of readings taken at ``times`` (tz-aware, increasing),
    split at hour boundaries for :func:`hourly_from_intervals`.

    A reading holds until the next one, for at most the usual spacing (the most common
    step; off-cycle readings in between shorten it): a reading missing from the series
    leaves a hole, which is not held over. Returns the starts, the ends and, for every
    interval, the position of its reading.
    """
    times = pd.DatetimeIndex(times).tz_convert("UTC")
    if len(times) < 2:
        raise ProviderError(f"{provider}: {where}: {len(times)} reading(s); the spacing of "
                            "readings needs two")
    t = times.asi8
    steps = np.diff(t)
    if (steps <= 0).any():
        p = int(np.flatnonzero(steps <= 0)[0])
        raise ProviderError(f"{provider}: {where}: readings not in time order at {times[p + 1]}")
    spacings, counts = np.unique(steps, return_counts=True)
    step = int(spacings[np.argmax(counts)])
    end = np.minimum(np.append(t[1:], t[-1] + step), t + step)
    # a reading whose interval runs into the next hour counts in both
    boundary = times.floor("h").asi8 + HOUR_TD.value
    split = np.flatnonzero(end > boundary)
    position = np.concatenate([np.arange(len(t)), split])
    starts = np.concatenate([t, boundary[split]])
    ends = np.concatenate([np.minimum(end, boundary), end[split]])
    return pd.DatetimeIndex(starts, tz="UTC"), pd.DatetimeIndex(ends, tz="UTC"), position


class _Redact(logging.Filter):
    """Replace a secret in a log record's rendered message."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, REDACTED), ()
        return True


@contextmanager
def redacted_logs(secret: str, loggers: Sequence[str]) -> Iterator[None]:
    """Scrub ``secret`` from the records of ``loggers`` (libraries that log URLs with it)."""
    redact = _Redact(secret)
    for name in loggers:
        logging.getLogger(name).addFilter(redact)
    try:
        yield
    finally:
        for name in loggers:
            logging.getLogger(name).removeFilter(redact)
