"""Weather forecasts for a site from Open-Meteo through its Python SDK (no key for
non-commercial use).

``openmeteo_requests.Client().weather_api(base_url + "/v1/forecast", params)`` (package
``openmeteo-requests``, https://github.com/open-meteo/python-requests) asks
``GET /v1/forecast?latitude=..&longitude=..&hourly=temperature_2m,...&timezone=GMT
&wind_speed_unit=ms&start_hour=..&end_hour=..&format=flatbuffers``
(https://open-meteo.com/en/docs) and decodes the answer into ``openmeteo_sdk``
``WeatherApiResponse`` objects, one per location. Its ``Hourly()`` block holds the
variables in the order asked, each with its ``Variable`` and ``Altitude()``, a ``Unit``
enum and float32 values, over Unix times (UTC) from ``Time()`` to the exclusive
``TimeEnd()`` every ``Interval()`` seconds. Every one of these is checked against what
was asked: the variable, its unit (``Unit.celsius``, ``metre_per_second``,
``watt_per_square_metre``), an interval of one hour, and ``UtcOffsetSeconds() == 0``
(times are asked in GMT). Values are read at their shortest decimal (12.1, not the
float32's 12.100000381), as the JSON API prints them.

Errors are HTTP 400 with ``{"error": true, "reason": ".."}``, which the SDK raises;
they become a ``ProviderError`` quoting the reason, and HTTP 429 a ``RateLimitedError``.
The SDK's HTTP session (niquests) is made here with no retries and no cache (the
``requests-cache``/``retry-requests`` wrappers of the SDK's examples are not used), so
no cache file is written and a failed call fails at once.

Labels: temperature and wind speed are instantaneous at the label; radiation is the
mean over the hour *before* the label (Open-Meteo's convention), so radiation values
are moved to the start of their hour. One extra hour is asked for so that the window's
last hour has its radiation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd

from gridrl.data.providers.base import (
    DEFAULT_TIMEOUT_S,
    Provider,
    ProviderError,
    RateLimitedError,
    _retry_after_s,
)
from gridrl.data.signals import HOUR, Signals

__all__ = ["HourlyVariable", "OpenMeteo", "OPEN_METEO_VARIABLES"]


class HourlyVariable(NamedTuple):
    """What the answer must say of one asked variable, and the gridrl signal it fills."""

    signal: str
    sdk_variable: str  # member name in openmeteo_sdk.Variable.Variable
    altitude_m: int
    sdk_unit: str  # member name in openmeteo_sdk.Unit.Unit
    mean_of_hour_before: bool  # labelled at the end of the hour it averages


OPEN_METEO_VARIABLES: dict[str, HourlyVariable] = {
    "temperature_2m": HourlyVariable("temp_c", "temperature", 2, "celsius", False),
    "wind_speed_10m": HourlyVariable(
        "wind_speed_m_per_s", "wind_speed", 10, "metre_per_second", False
    ),
    "shortwave_radiation": HourlyVariable(
        "ghi_w_per_m2", "shortwave_radiation", 0, "watt_per_square_metre", True
    ),
    "direct_normal_irradiance": HourlyVariable(
        "dni_w_per_m2", "direct_normal_irradiance", 0, "watt_per_square_metre", True
    ),
    "diffuse_radiation": HourlyVariable(
        "dhi_w_per_m2", "diffuse_radiation", 0, "watt_per_square_metre", True
    ),
}
_API_HOUR = "%Y-%m-%dT%H:%M"
_PATH = "v1/forecast"
_HOUR_S = 3600
# Longest part of an unexpected body quoted in an error.
_EXCERPT_BYTES = 120


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
    provides: ClassVar[tuple[str, ...]] = tuple(v.signal for v in OPEN_METEO_VARIABLES.values())
    latitude: float = float("nan")
    longitude: float = float("nan")
    base_url: str = "https://api.open-meteo.com"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def fetch(self, start: Any, end: Any) -> Signals:
        lat, lon = self._point()
        lo, hi = self.window(start, end)
        frame = self._frame(self.query(self._params(lat, lon, lo, hi)))
        self._check_values(frame, lo, hi)
        return self.to_signals(
            frame,
            f"{self.base_url}/{_PATH}?latitude={lat}&longitude={lon}",
            lo,
            hi,
            note={"radiation": "mean of the hour after the row's time (label moved back 1 h)"},
        )

    # ------------------------------------------------------------------ request

    def _point(self) -> tuple[float, float]:
        lat, lon = float(self.latitude), float(self.longitude)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ProviderError(
                f"{self.name}: latitude/longitude ({self.latitude}, {self.longitude}) missing "
                "or out of range: give latitude=DEG longitude=DEG"
            )
        return lat, lon

    @staticmethod
    def _params(lat: float, lon: float, lo: pd.Timestamp, hi: pd.Timestamp) -> dict[str, Any]:
        return {
            "latitude": lat,
            "longitude": lon,
            "hourly": ",".join(OPEN_METEO_VARIABLES),
            "timezone": "GMT",
            "wind_speed_unit": "ms",
            "start_hour": lo.strftime(_API_HOUR),
            # Inclusive end, one hour past the window for the last hour's radiation.
            "end_hour": hi.strftime(_API_HOUR),
        }

    def query(self, params: dict[str, Any]) -> Any:
        """The one call into the SDK: the ``WeatherApiResponse`` of the one location."""
        try:
            import niquests
            from openmeteo_requests import Client, OpenMeteoRequestsError
        except ImportError:
            raise ProviderError(
                f"{self.name}: the openmeteo-requests package is not installed: "
                "URLLIB3_NO_OVERRIDE=1 pip install 'gridrl[openmeteo]' --no-binary urllib3-future"
            ) from None
        url = self.base_url.rstrip("/") + "/" + _PATH
        seen: list[Any] = []  # the HTTP response, for its status, headers and size

        def record(response: Any, **_: Any) -> None:
            seen.append(response)

        with niquests.Session(retries=0) as session:
            client = Client(session=session)
            try:
                answers = client.weather_api(
                    url, params, timeout=self.timeout_s, hooks={"response": [record]}
                )
            except OpenMeteoRequestsError as err:
                raise self._request_error(url, err, seen[-1] if seen else None) from None
        return self._one_answer(url, answers, (seen[-1].content if seen else None) or b"")

    def _request_error(self, url: str, err: Exception, response: Any) -> ProviderError:
        """The SDK's error as a ``ProviderError``: status, and the API's reason if any."""
        cause = err.__cause__ if err.__cause__ is not None else err
        body = cause.args[0] if cause.args else None
        detail = f"error: {body.get('reason')!r}" if isinstance(body, dict) else str(cause)
        if response is None:
            return ProviderError(f"{self.name}: GET {url} failed: {detail}")
        status = response.status_code
        if status == 200:  # the SDK could not split the body into messages
            return ProviderError(
                f"{self.name}: GET {url}: unreadable answer ({type(cause).__name__}: {detail})"
            )
        if status == 429:
            retry_s = _retry_after_s(response.headers.get("Retry-After"))
            wait = f"retry after {retry_s:g} s" if retry_s is not None else "no Retry-After given"
            return RateLimitedError(
                f"{self.name}: GET {url}: rate limited (HTTP 429, {wait}): {detail}", retry_s
            )
        return ProviderError(f"{self.name}: GET {url}: HTTP {status}: {detail}")

    def _one_answer(self, url: str, answers: list[Any], body: bytes) -> Any:
        """The single size-prefixed message asked for; anything else is an error."""
        prefix = int.from_bytes(body[:4], "little") if len(body) >= 4 else -1
        if len(answers) != 1 or prefix != len(body) - 4:
            raise ProviderError(
                f"{self.name}: GET {url}: the answer is not one FlatBuffers WeatherApiResponse "
                f"({len(body)} bytes, messages: {len(answers)}): {body[:_EXCERPT_BYTES]!r}"
            )
        return answers[0]

    # ------------------------------------------------------------------ answer

    def _frame(self, response: Any) -> pd.DataFrame:
        """Signal columns on the UTC hours of the answer (radiation moved back 1 h)."""
        try:
            return self._decode(response)
        except (IndexError, struct.error) as err:
            raise ProviderError(
                f"{self.name}: {_PATH}: unreadable FlatBuffers answer ({type(err).__name__}: {err})"
            ) from None

    def _decode(self, response: Any) -> pd.DataFrame:
        offset_s = response.UtcOffsetSeconds()
        if offset_s != 0:
            raise ProviderError(
                f"{self.name}: {_PATH}: utc_offset_seconds is {offset_s} where 0 (GMT) was asked"
            )
        block = response.Hourly()
        if block is None:
            raise ProviderError(f"{self.name}: {_PATH}: the answer has no hourly block")
        index = self._hours(block)
        if block.VariablesLength() != len(OPEN_METEO_VARIABLES):
            raise ProviderError(
                f"{self.name}: {_PATH}: {block.VariablesLength()} hourly variables where "
                f"{len(OPEN_METEO_VARIABLES)} were asked ({', '.join(OPEN_METEO_VARIABLES)})"
            )
        names = _sdk_names()
        columns = {
            spec.signal: self._series(block.Variables(k), name, spec, index, names)
            for k, (name, spec) in enumerate(OPEN_METEO_VARIABLES.items())
        }
        # Rows where instantaneous and moved radiation values both exist.
        return pd.concat(columns, axis=1, join="inner")

    def _hours(self, block: Any) -> pd.DatetimeIndex:
        """Labels of the hourly block: ``Time()`` to the exclusive ``TimeEnd()``."""
        start_s, end_s, interval_s = block.Time(), block.TimeEnd(), block.Interval()
        if interval_s != _HOUR_S:
            raise ProviderError(
                f"{self.name}: {_PATH}: hourly interval is {interval_s} s where {_HOUR_S} s "
                "was expected"
            )
        if end_s < start_s or (end_s - start_s) % _HOUR_S:
            raise ProviderError(
                f"{self.name}: {_PATH}: hourly times {start_s}..{end_s} (Unix s) are not whole "
                "hours"
            )
        first = pd.Timestamp(start_s, unit="s", tz="UTC")
        return pd.date_range(first, periods=(end_s - start_s) // _HOUR_S, freq="h")

    def _series(
        self,
        variable: Any,
        name: str,
        spec: HourlyVariable,
        index: pd.DatetimeIndex,
        names: tuple[dict[int, str], dict[int, str]],
    ) -> pd.Series:
        """One variable's values, checked to be the one asked, in its expected unit."""
        where = f"{self.name}: {_PATH}: hourly {name}"
        variable_names, unit_names = names
        got = variable_names.get(variable.Variable(), f"#{variable.Variable()}")
        if (got, variable.Altitude()) != (spec.sdk_variable, spec.altitude_m):
            raise ProviderError(
                f"{where} is {got!r} at {variable.Altitude()} m where {spec.sdk_variable!r} "
                f"at {spec.altitude_m} m was asked (variables out of order?)"
            )
        unit = unit_names.get(variable.Unit(), f"#{variable.Unit()}")
        if unit != spec.sdk_unit:
            raise ProviderError(f"{where}: unit is {unit!r} where {spec.sdk_unit!r} was expected")
        values_f32 = np.asarray(variable.ValuesAsNumpy() if variable.ValuesLength() else [])
        if len(values_f32) != len(index):
            raise ProviderError(f"{where} has {len(values_f32)} values for {len(index)} times")
        # The shortest decimal of each float32 (12.1), as the JSON API writes it.
        values = values_f32.astype(np.float32).astype(str).astype(np.float64)
        return pd.Series(values, index - HOUR if spec.mean_of_hour_before else index)

    def _check_values(self, frame: pd.DataFrame, lo: pd.Timestamp, hi: pd.Timestamp) -> None:
        """Every value of the window present: an empty one names its variable and hour."""
        window = frame[(frame.index >= lo) & (frame.index < hi)]
        for name, spec in OPEN_METEO_VARIABLES.items():
            empty = window.index[window[spec.signal].isna().to_numpy()]
            if len(empty):
                hour = empty[0]
                moved = spec.mean_of_hour_before
                label = f" (labelled {hour + HOUR} in the answer)" if moved else ""
                raise ProviderError(
                    f"{self.name}: {_PATH}: hourly {name} has no value for the hour {hour}"
                    f"{label}; {len(empty)} such hours in the window"
                )


def _sdk_names() -> tuple[dict[int, str], dict[int, str]]:
    """Names of the SDK's ``Variable`` and ``Unit`` enum values, by number."""
    from openmeteo_sdk.Unit import Unit
    from openmeteo_sdk.Variable import Variable

    def names(enum: type) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}

    return names(Variable), names(Unit)
