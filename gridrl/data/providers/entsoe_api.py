"""European day-ahead prices and load from the ENTSO-E Transparency Platform (entsoe-py).

``entsoe.EntsoePandasClient(api_key=..)`` (https://github.com/EnergieID/entsoe-py; key
from ``$ENTSOE_API_KEY``, a free token of the Transparency Platform) returns, for a
bidding zone or country code and tz-aware ``start``/``end``:

- ``query_day_ahead_prices(code, start=, end=)``: a ``Series`` of EUR/MWh indexed by
  the start of each market time unit (60 min, 15 min since the 2025 move to a 15-minute
  day-ahead market) in Europe/Brussels time;
- ``query_load_forecast(code, start=, end=)``: a frame with ``Forecasted Load`` (MW);
- ``query_load(code, start=, end=)``: a frame with ``Actual Load`` (MW), past hours only.

The client does its own HTTP with the key in the query string (its endpoint is set by
``$ENTSOE_ENDPOINT_URL`` when entsoe-py is imported); the call sits in ``Entsoe.query``,
which scrubs the key from the client's and urllib3's log records and from errors.
Each interval lasts one step of the series (its most common spacing); any other
spacing is a gap and an error.

Install with ``pip install 'gridrl[live]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gridrl.data.providers.base import (
    DEFAULT_TIMEOUT_S,
    REDACTED,
    Provider,
    ProviderError,
    hourly_from_intervals,
    redacted_logs,
)
from gridrl.data.signals import Signals

__all__ = ["Entsoe"]

# What to ask for -> (signal, client method, column of a returned frame or None: a Series).
ENTSOE_QUERIES: dict[str, tuple[str, str, str | None]] = {
    "price": ("price_per_mwh", "query_day_ahead_prices", None),
    "load_forecast": ("load_forecast_mw", "query_load_forecast", "Forecasted Load"),
    "load": ("load_mw", "query_load", "Actual Load"),
}

_LIBRARY_LOGGERS = ("entsoe.entsoe", "entsoe.decorators", "urllib3.connectionpool")


@dataclass
class Entsoe(Provider):
    """Day-ahead ``price_per_mwh`` (EUR) and load (MW) of an ENTSO-E bidding zone.

    Attributes
    ----------
    country_code : str
        entsoe-py area code (``DE_LU``, ``FR``, ``NL``, ``ES``, ...).
    series : str
        Comma-separated subset of ``price``, ``load_forecast``, ``load`` (actual load
        exists only for past hours).
    """

    name: ClassVar[str] = "entsoe"
    key_env: ClassVar[str | None] = "ENTSOE_API_KEY"
    provides: ClassVar[tuple[str, ...]] = tuple(v[0] for v in ENTSOE_QUERIES.values())
    country_code: str = ""
    series: str = "price,load_forecast"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def fetch(self, start: Any, end: Any) -> Signals:
        if not self.country_code:
            raise ProviderError(f"{self.name}: no country_code given (e.g. country_code=DE_LU)")
        kinds = [k.strip() for k in self.series.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in ENTSOE_QUERIES]
        if unknown or not kinds:
            raise ProviderError(
                f"{self.name}: series {self.series!r}: expected a comma list of "
                f"{list(ENTSOE_QUERIES)}"
            )
        lo, hi = self.window(start, end)
        columns = {
            ENTSOE_QUERIES[k][0]: self.parse(k, self.query(k, lo, hi), (lo, hi)) for k in kinds
        }
        return self.to_signals(
            pd.concat(columns, axis=1),
            f"entsoe {self.country_code}",
            lo,
            hi,
            note={"country_code": self.country_code, "series": kinds, "currency": "EUR"},
        )

    def query(self, kind: str, start: pd.Timestamp, end: pd.Timestamp) -> Any:
        """The one call into entsoe-py: its Series or frame for ``kind``."""
        try:
            from entsoe import EntsoePandasClient
        except ImportError:
            raise ProviderError(
                f"{self.name}: the entsoe-py package is not installed: pip install 'gridrl[live]'"
            ) from None
        key = self.api_key()
        client = EntsoePandasClient(
            api_key=key, retry_count=1, retry_delay=0, timeout=self.timeout_s
        )
        method = getattr(client, ENTSOE_QUERIES[kind][1])
        try:
            # entsoe-py and urllib3 log request URLs at DEBUG, key included.
            with redacted_logs(key, _LIBRARY_LOGGERS):
                return method(self.country_code, start=start, end=end)
        except Exception as err:  # the client raises many types; its URLs carry the key
            text = f"{type(err).__name__}: {err}".replace(key, REDACTED)
            raise ProviderError(f"{self.name}: {self.country_code} {kind}: {text}") from None

    def parse(self, kind: str, data: Any, window: tuple[pd.Timestamp, pd.Timestamp]) -> pd.Series:
        """Hourly means of what entsoe-py returned for ``kind``."""
        where = f"{self.country_code} {kind}"
        column = ENTSOE_QUERIES[kind][2]
        if isinstance(data, pd.DataFrame):
            if column is None or column not in data.columns:
                raise ProviderError(
                    f"{self.name}: {where}: expected a Series"
                    if column is None
                    else f"{self.name}: {where}: column {column!r} missing; the frame has "
                    f"{list(data.columns)}"
                )
            data = data[column]
        if not isinstance(data, pd.Series) or not isinstance(data.index, pd.DatetimeIndex):
            raise ProviderError(f"{self.name}: {where}: expected a time-indexed Series")
        if data.index.tz is None:
            raise ProviderError(f"{self.name}: {where}: index has no time zone")
        if len(data) < 2:
            raise ProviderError(f"{self.name}: {where}: {len(data)} values, need at least 2")
        starts = data.index
        steps = pd.Series(starts[1:] - starts[:-1])
        step = steps.mode().iloc[0]
        odd = np.flatnonzero((steps != step).to_numpy())
        if odd.size:
            k = int(odd[0])
            raise ProviderError(
                f"{self.name}: {where}: step {steps.iloc[k]} after {starts[k]} where the "
                f"series steps by {step} (a gap is not filled; {odd.size} such steps)"
            )
        ends = starts + step
        return hourly_from_intervals(starts, ends, data.to_numpy(), self.name, where, window)
