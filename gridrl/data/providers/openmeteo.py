"""Weather forecasts for a site from Open-Meteo (no key for non-commercial use).

``GET /v1/forecast?latitude=..&longitude=..&hourly=temperature_2m,...&timezone=GMT
&wind_speed_unit=ms&start_hour=..&end_hour=..`` answers (https://open-meteo.com/en/docs)
``{"latitude": .., "utc_offset_seconds": 0, "timezone": "GMT", "hourly_units":
{"time": "iso8601", "temperature_2m": "°C", ...}, "hourly": {"time":
["2024-06-01T00:00", ...], "temperature_2m": [14.2, ...], ...}}``; errors are HTTP 400
with ``{"error": true, "reason": ".."}``. Times are asked in GMT and the answer's
``utc_offset_seconds`` must be 0. Units are checked against ``hourly_units``.

Labels: temperature and wind speed are instantaneous at the label; radiation is the
mean over the hour *before* the label (Open-Meteo's convention), so radiation values
are moved to the start of their hour. One extra hour is asked for so that the window's
last hour has its radiation.
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
)
from gridrl.data.signals import HOUR, Signals

__all__ = ["OpenMeteo", "OPEN_METEO_VARIABLES"]

# Open-Meteo variable -> (signal, unit the answer must state, mean over preceding hour).
OPEN_METEO_VARIABLES: dict[str, tuple[str, str, bool]] = {
    "temperature_2m": ("temp_c", "°C", False),
    "wind_speed_10m": ("wind_speed_m_per_s", "m/s", False),
    "shortwave_radiation": ("ghi_w_per_m2", "W/m²", True),
    "direct_normal_irradiance": ("dni_w_per_m2", "W/m²", True),
    "diffuse_radiation": ("dhi_w_per_m2", "W/m²", True),
}
_API_HOUR = "%Y-%m-%dT%H:%M"


@dataclass
class OpenMeteo(Provider):
    """Hourly weather forecast at a point: temperature, 10 m wind speed, irradiance.

    Attributes
    ----------
    latitude, longitude : float
        WGS84 degrees of the site.
    base_url : str
        The API root (a local server in tests).
    """

    name: ClassVar[str] = "openmeteo"
    provides: ClassVar[tuple[str, ...]] = tuple(v[0] for v in OPEN_METEO_VARIABLES.values())
    latitude: float = float("nan")
    longitude: float = float("nan")
    base_url: str = "https://api.open-meteo.com"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def fetch(self, start: Any, end: Any) -> Signals:
        lat, lon = float(self.latitude), float(self.longitude)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ProviderError(
                f"{self.name}: latitude/longitude ({self.latitude}, {self.longitude}) missing "
                "or out of range: give latitude=DEG longitude=DEG"
            )
        lo, hi = self.window(start, end)
        params = {
            "latitude": lat,
            "longitude": lon,
            "hourly": ",".join(OPEN_METEO_VARIABLES),
            "timezone": "GMT",
            "wind_speed_unit": "ms",
            "start_hour": lo.strftime(_API_HOUR),
            # Inclusive end, one hour past the window for the last hour's radiation.
            "end_hour": hi.strftime(_API_HOUR),
        }
        body = HttpJson(self.name, self.base_url, self.timeout_s).get("v1/forecast", params)
        frame = self._frame(body)
        return self.to_signals(
            frame,
            f"{self.base_url}/v1/forecast?latitude={lat}&longitude={lon}",
            lo,
            hi,
            note={"radiation": "mean of the hour after the row's time (label moved back 1 h)"},
        )

    def _frame(self, body: Any) -> pd.DataFrame:
        where = "v1/forecast"
        if isinstance(body, dict) and body.get("error"):
            raise ProviderError(f"{self.name}: {where}: error: {body.get('reason')!r}")
        offset = field_path(body, "utc_offset_seconds", self.name, where)
        if offset != 0:
            raise ProviderError(
                f"{self.name}: {where}: utc_offset_seconds is {offset!r} where 0 (GMT) was asked"
            )
        times = field_path(body, "hourly.time", self.name, where)
        try:
            index = pd.DatetimeIndex(pd.to_datetime(times, format="%Y-%m-%dT%H:%M"))
        except (ValueError, TypeError) as err:
            raise ProviderError(f"{self.name}: {where}: hourly.time: {err}") from None
        index = index.tz_localize("UTC")
        columns = {}
        for var, (signal, unit, backward) in OPEN_METEO_VARIABLES.items():
            got = field_path(body, f"hourly_units.{var}", self.name, where)
            if got != unit:
                raise ProviderError(
                    f"{self.name}: {where}: hourly_units.{var} is {got!r} where {unit!r} "
                    "was expected"
                )
            values = field_path(body, f"hourly.{var}", self.name, where)
            if not isinstance(values, list) or len(values) != len(index):
                raise ProviderError(
                    f"{self.name}: {where}: hourly.{var} has "
                    f"{len(values) if isinstance(values, list) else 'no list of'} values "
                    f"for {len(index)} times"
                )
            series = pd.Series(
                pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
                    dtype=float
                ),
                index - HOUR if backward else index,
            )
            columns[signal] = series
        # Rows where instantaneous and moved radiation values both exist.
        return pd.concat(columns, axis=1, join="inner")
