"""Build ``openmeteo_forecast.bin``: an Open-Meteo forecast answer in FlatBuffers.

Not a recording (the test machines have no internet access): a response of the
documented shape with invented values. ``GET /v1/forecast?...&format=flatbuffers``
(https://open-meteo.com/en/docs) answers one size-prefixed ``WeatherApiResponse`` per
location, whose ``hourly`` block holds the variables in the order they were asked,
times as Unix seconds (UTC, ``time_end`` exclusive) and values as float32. The tables
are written with ``flatbuffers.Builder`` at the field slots of the schema
``flatbuffers/weather_api.fbs`` of https://github.com/open-meteo/sdk (the Python package
``openmeteo_sdk`` ships only the reading classes), with the SDK's ``Unit`` and
``Variable`` enums, and read back through the SDK's ``WeatherApiResponse`` to check the
slots. The window is 2024-06-01 00:00-06:00 UTC asked with ``timezone=GMT`` and
``wind_speed_unit=ms``, plus the one extra hour the provider asks for.

Regenerate with ``python tests/data/providers/make_openmeteo_forecast.py`` (needs
``openmeteo-requests``); the tests import ``build_response`` for variants of the answer.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from openmeteo_sdk.Unit import Unit
from openmeteo_sdk.Variable import Variable
from openmeteo_sdk.WeatherApiResponse import WeatherApiResponse

OUT = Path(__file__).with_name("openmeteo_forecast.bin")
START_S = 1_717_200_000  # 2024-06-01T00:00:00Z
HOUR_S = 3600

# Field slots (declaration order) of the schema's tables, and their field counts.
RESPONSE_FIELDS, LATITUDE, LONGITUDE, ELEVATION, GENERATION_MS = 15, 0, 1, 2, 3
UTC_OFFSET_S, TIMEZONE, TIMEZONE_ABBREVIATION, HOURLY_BLOCK = 6, 7, 8, 11
BLOCK_FIELDS, TIME, TIME_END, INTERVAL, VARIABLES = 4, 0, 1, 2, 3
VARIABLE_FIELDS, VARIABLE, UNIT, VALUES, ALTITUDE = 13, 0, 1, 3, 5

# Asked variable -> (SDK variable, altitude in metres, SDK unit, values from START_S).
Spec = tuple[int, int, int, list[float]]
HOURLY: dict[str, Spec] = {
    "temperature_2m": (
        Variable.temperature,
        2,
        Unit.celsius,
        [12.1, 11.8, 11.5, 11.2, 11.0, 11.4, 12.6],
    ),
    "wind_speed_10m": (
        Variable.wind_speed,
        10,
        Unit.metre_per_second,
        [3.2, 3.0, 2.9, 2.7, 2.5, 2.6, 3.1],
    ),
    "shortwave_radiation": (
        Variable.shortwave_radiation,
        0,
        Unit.watt_per_square_metre,
        [0.0, 0.0, 0.0, 0.0, 4.0, 38.0, 112.0],
    ),
    "direct_normal_irradiance": (
        Variable.direct_normal_irradiance,
        0,
        Unit.watt_per_square_metre,
        [0.0, 0.0, 0.0, 0.0, 10.5, 120.3, 251.0],
    ),
    "diffuse_radiation": (
        Variable.diffuse_radiation,
        0,
        Unit.watt_per_square_metre,
        [0.0, 0.0, 0.0, 0.0, 3.0, 21.0, 48.0],
    ),
}


def _variable(builder: flatbuffers.Builder, spec: Spec) -> int:
    variable, altitude_m, unit, values = spec
    vector = builder.CreateNumpyVector(np.asarray(values, dtype=np.float32))
    builder.StartObject(VARIABLE_FIELDS)
    builder.PrependUOffsetTRelativeSlot(VALUES, vector, 0)
    builder.PrependInt16Slot(ALTITUDE, altitude_m, 0)
    builder.PrependUint8Slot(VARIABLE, variable, 0)
    builder.PrependUint8Slot(UNIT, unit, 0)
    return builder.EndObject()


def _hourly(
    builder: flatbuffers.Builder, hourly: dict[str, Spec], start_s: int, step_s: int
) -> int:
    tables = [_variable(builder, spec) for spec in hourly.values()]
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    variables = builder.EndVector()
    hours = max((len(spec[3]) for spec in hourly.values()), default=0)
    builder.StartObject(BLOCK_FIELDS)
    builder.PrependInt64Slot(TIME, start_s, 0)
    builder.PrependInt64Slot(TIME_END, start_s + hours * step_s, 0)
    builder.PrependUOffsetTRelativeSlot(VARIABLES, variables, 0)
    builder.PrependInt32Slot(INTERVAL, step_s, 0)
    return builder.EndObject()


def build_response(
    hourly: dict[str, Spec] | None = None,
    *,
    start_s: int = START_S,
    interval_s: int = HOUR_S,
    utc_offset_s: int = 0,
) -> bytes:
    """One size-prefixed ``WeatherApiResponse`` (London, GMT) holding ``hourly``."""
    hourly = HOURLY if hourly is None else hourly
    builder = flatbuffers.Builder(1024)
    block = _hourly(builder, hourly, start_s, interval_s)
    timezone = builder.CreateString("GMT")
    abbreviation = builder.CreateString("GMT")
    builder.StartObject(RESPONSE_FIELDS)
    builder.PrependUOffsetTRelativeSlot(HOURLY_BLOCK, block, 0)
    builder.PrependUOffsetTRelativeSlot(TIMEZONE, timezone, 0)
    builder.PrependUOffsetTRelativeSlot(TIMEZONE_ABBREVIATION, abbreviation, 0)
    builder.PrependFloat32Slot(LATITUDE, 51.5, 0.0)
    builder.PrependFloat32Slot(LONGITUDE, -0.12, 0.0)
    builder.PrependFloat32Slot(ELEVATION, 23.0, 0.0)
    builder.PrependFloat32Slot(GENERATION_MS, 0.31, 0.0)
    builder.PrependInt32Slot(UTC_OFFSET_S, utc_offset_s, 0)
    builder.FinishSizePrefixed(builder.EndObject())
    data = bytes(builder.Output())
    _check(data, hourly, start_s, interval_s, utc_offset_s)
    return data


def _check(data: bytes, hourly: dict[str, Spec], start_s: int, step_s: int, offset_s: int) -> None:
    """Read ``data`` back with the SDK's own classes: the slots match its schema."""
    size = int.from_bytes(data[:4], "little")
    assert size == len(data) - 4, (size, len(data))
    response = WeatherApiResponse.GetRootAs(data, 4)
    assert (response.Timezone(), response.UtcOffsetSeconds()) == (b"GMT", offset_s)
    block = response.Hourly()
    assert (block.Time(), block.Interval(), block.VariablesLength()) == (
        start_s,
        step_s,
        len(hourly),
    )
    for k, (variable, altitude_m, unit, values) in enumerate(hourly.values()):
        got = block.Variables(k)
        assert (got.Variable(), got.Altitude(), got.Unit()) == (variable, altitude_m, unit)
        np.testing.assert_array_equal(got.ValuesAsNumpy(), np.asarray(values, np.float32))


if __name__ == "__main__":
    OUT.write_bytes(build_response())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
