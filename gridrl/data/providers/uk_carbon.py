"""Great Britain's carbon intensity from the free Carbon Intensity API (no key).

National Grid ESO's API (https://carbonintensity.org.uk, CC BY 4.0) publishes half-hourly
carbon intensity in gCO2/kWh: ``forecast`` for every half hour up to 48 h ahead and
``actual`` (national only) once a half hour has passed. ``GET /intensity/{from}/{to}``
answers ``{"data": [{"from": "2018-01-20T12:00Z", "to": "2018-01-20T12:30Z",
"intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}, ...]}``; the
regional form ``GET /regional/intensity/{from}/{to}/regionid/{id}`` nests the same
periods (forecast only) under ``{"data": {"regionid": .., "shortname": .., "data":
[...]}}``. The two half hours of each hour are averaged into the hour; an hour with
only one of them is an error, not a half-known value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from gridrl.data.providers.base import (
    DEFAULT_TIMEOUT_S,
    HttpJson,
    Provider,
    ProviderError,
    field_path,
    timed_values,
)
from gridrl.data.signals import Signals

__all__ = ["UKCarbonIntensity"]

HALF_HOURS_PER_HOUR = 2
VALUES = ("forecast", "actual")
NATIONAL = 0
# The API takes ISO 8601 minutes with a Z.
_API_TIME = "%Y-%m-%dT%H:%MZ"


@dataclass
class UKCarbonIntensity(Provider):
    """``carbon_g_per_kwh`` of Great Britain or one of its regions, hourly.

    Attributes
    ----------
    value : {"forecast", "actual"}
        Which series to return. ``actual`` exists only nationally and for past hours.
    region_id : int
        0 for the national series, else the API's region id (1 North Scotland ..
        13 London .. 17 Scotland).
    base_url : str
        The API root (a local server in tests).
    """

    name: ClassVar[str] = "uk_carbon"
    provides: ClassVar[tuple[str, ...]] = ("carbon_g_per_kwh",)
    value: str = "forecast"
    region_id: int = NATIONAL
    base_url: str = "https://api.carbonintensity.org.uk"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def fetch(self, start: Any, end: Any) -> Signals:
        if self.value not in VALUES:
            raise ProviderError(f"{self.name}: value {self.value!r}: expected one of {VALUES}")
        if self.value == "actual" and self.region_id != NATIONAL:
            raise ProviderError(f"{self.name}: regional series have no actual values")
        lo, hi = self.window(start, end)
        span = f"{lo.strftime(_API_TIME)}/{hi.strftime(_API_TIME)}"
        path = (
            f"intensity/{span}"
            if self.region_id == NATIONAL
            else f"regional/intensity/{span}/regionid/{int(self.region_id)}"
        )
        body = HttpJson(self.name, self.base_url, self.timeout_s).get(path)
        periods = field_path(body, "data", self.name, path)
        if self.region_id != NATIONAL:
            periods = field_path(periods, "data", self.name, path)
        frame = self._half_hours(periods, path, lo, hi)
        return self.to_signals(
            frame,
            f"{self.base_url}/{path}",
            lo,
            hi,
            resample="mean",
            note={"value": self.value, "region_id": self.region_id},
        )

    def _half_hours(
        self, periods: Any, where: str, lo: pd.Timestamp, hi: pd.Timestamp
    ) -> pd.DataFrame:
        """Half-hour values inside ``[lo, hi)``; each hour must have both halves."""
        if not isinstance(periods, list):
            raise ProviderError(f"{self.name}: {where}: 'data' is not a list of periods")
        field = f"intensity.{self.value}"
        values = timed_values(periods, "from", field, self.name, where, "period")
        frame = values.to_frame("carbon_g_per_kwh")
        # The API also returns the half hour that ends at ``from``: keep the window only.
        frame = frame[(frame.index >= lo) & (frame.index < hi)]
        empty = frame.index[frame["carbon_g_per_kwh"].isna().to_numpy()]
        if len(empty):
            # Checked here: the hourly mean would otherwise average the other half alone.
            raise ProviderError(
                f"{self.name}: {where}: intensity.{self.value} is empty or not a number for "
                f"the period from {empty[0]} ({len(empty)} such periods)"
            )
        counts = frame.groupby(frame.index.floor("h")).size()
        short = counts[counts != HALF_HOURS_PER_HOUR]
        if len(short):
            raise ProviderError(
                f"{self.name}: {where}: hour {short.index[0]} has {short.iloc[0]} half-hour "
                f"period(s) where {HALF_HOURS_PER_HOUR} were expected ({len(short)} such hours)"
            )
        return frame
