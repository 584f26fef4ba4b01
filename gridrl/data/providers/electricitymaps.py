"""Carbon intensity history and forecast of any grid zone from the Electricity Maps API.

Electricity Maps' API v3 (https://portal.electricitymaps.com/docs, key in the
``auth-token`` header, from ``$ELECTRICITYMAPS_API_KEY``) answers
``GET /v3/carbon-intensity/history?zone=DE`` (the last 24 hours) with
``{"zone": "DE", "history": [{"zone": "DE", "carbonIntensity": 302, "datetime":
"2019-05-21T00:00:00.000Z", "updatedAt": .., "isEstimated": false, ...}, ...]}`` and
``GET /v3/carbon-intensity/forecast?zone=DE`` with ``{"zone": "DE", "forecast":
[{"carbonIntensity": 340, "datetime": "2019-05-21T01:00:00.000Z"}, ...], "updatedAt":
..}``; values are gCO2eq/kWh (life cycle), ``datetime`` is the start of the hour. Where
both answer for an hour, the history (measured) wins over the forecast; how many hours
came from each is recorded in the provenance. The forecast needs a plan that includes
it: with ``forecast=False`` only the history is asked for.
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

__all__ = ["ElectricityMaps"]

KEY_HEADER = "auth-token"


@dataclass
class ElectricityMaps(Provider):
    """``carbon_g_per_kwh`` of one Electricity Maps zone, hourly.

    Attributes
    ----------
    zone : str
        Zone key (``DE``, ``FR``, ``US-CAL-CISO``, ...).
    forecast : bool
        Also ask for the forecast (hours after the last measured one).
    base_url : str
        The API root (a local server in tests).
    """

    name: ClassVar[str] = "electricitymaps"
    key_env: ClassVar[str | None] = "ELECTRICITYMAPS_API_KEY"
    provides: ClassVar[tuple[str, ...]] = ("carbon_g_per_kwh",)
    zone: str = ""
    forecast: bool = True
    base_url: str = "https://api.electricitymap.org"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def fetch(self, start: Any, end: Any) -> Signals:
        if not self.zone:
            raise ProviderError(f"{self.name}: no zone given (e.g. zone=DE)")
        lo, hi = self.window(start, end)
        key = self.api_key()
        http = HttpJson(self.name, self.base_url, self.timeout_s, secrets=(key,))
        headers = {KEY_HEADER: key}
        parts = {"history": self._series(http, "history", headers)}
        if self.forecast:
            parts["forecast"] = self._series(http, "forecast", headers)
        measured = parts["history"]
        merged = measured
        if "forecast" in parts:
            later = parts["forecast"][~parts["forecast"].index.isin(measured.index)]
            merged = pd.concat([measured, later])
        frame = merged.to_frame("carbon_g_per_kwh")
        counts = {
            f"{name}_hours": int(((s.index >= lo) & (s.index < hi)).sum())
            for name, s in parts.items()
        }
        return self.to_signals(
            frame,
            f"{self.base_url}/v3/carbon-intensity?zone={self.zone}",
            lo,
            hi,
            note={"zone": self.zone, "history_wins_over_forecast": True, **counts},
        )

    def _series(self, http: HttpJson, kind: str, headers: dict[str, str]) -> pd.Series:
        path = f"v3/carbon-intensity/{kind}"
        body = http.get(path, params={"zone": self.zone}, headers=headers)
        where = f"{path}?zone={self.zone}"
        rows = field_path(body, kind, self.name, where)
        if not isinstance(rows, list):
            raise ProviderError(f"{self.name}: {where}: {kind!r} is not a list")
        item = f"{kind} entry"
        series = timed_values(rows, "datetime", "carbonIntensity", self.name, where, item)
        return series.rename_axis("time")
