"""Live providers against a real HTTP server on 127.0.0.1 serving documented response shapes.

The fixtures under tests/data/providers/ are hand-built in each API's documented shape
(see the README there) for the cases recordings do not show: errors, gaps, keys, rate
limits. Answers recorded from the live services are replayed in
``test_data_providers_recorded.py``. The HTTP providers, Open-Meteo's SDK client and
entsoe-py's client included, are pointed at the local server (``service``); gridstatus
does its own HTTP to fixed hosts, so its one library call is replaced by the fixture
frame and gridrl's parsing is tested.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from provider_helpers import (
    ENTSOE_XML_WARNING,
    FIXTURES,
    TEST_KEY,
    FakeService,
    serve_entsoe,
    serve_entsoe_no_data,
)

from gridrl.data.providers import (
    ElectricityMaps,
    Entsoe,
    GridStatus,
    OpenMeteo,
    ProviderError,
    RateLimitedError,
    UKCarbonIntensity,
    make_provider,
    poll_to_csv,
)
from gridrl.data.providers.base import hourly_from_intervals, intervals_of_readings

START, END = "2024-06-01T00:00Z", "2024-06-01T06:00Z"
HOURS = pd.date_range(START, END, freq="h", inclusive="left", name="time")


UK_PATH = "/intensity/2024-06-01T00:00Z/2024-06-01T06:00Z"
EM_HISTORY, EM_FORECAST = "/v3/carbon-intensity/history", "/v3/carbon-intensity/forecast"


# ------------------------------------------------------------------ UK Carbon Intensity


def test_uk_national_forecast_and_actual(service):
    service.serve_file(UK_PATH, "uk_carbon_national.json")
    raw = json.loads((FIXTURES / "uk_carbon_national.json").read_text())["data"][1:]
    for value in ("forecast", "actual"):
        p = UKCarbonIntensity(base_url=service.url, value=value, site="gb")
        s = p.fetch(START, END)
        assert s.index.equals(HOURS)
        halves = np.array([d["intensity"][value] for d in raw], dtype=float)
        got = s.frame[("gb", "carbon_g_per_kwh")].to_numpy()
        np.testing.assert_allclose(got, halves.reshape(-1, 2).mean(axis=1))
        assert s.provenance[-1]["provider"] == "uk_carbon"


def test_uk_regional(service):
    path = "/regional/intensity/2024-06-01T00:00Z/2024-06-01T06:00Z/regionid/13"
    service.serve_file(path, "uk_carbon_regional.json")
    s = make_provider("uk_carbon", {"base_url": service.url, "region_id": "13"}).fetch(START, END)
    assert s.frame[("site", "carbon_g_per_kwh")].iloc[0] == pytest.approx((92 + 90) / 2)
    with pytest.raises(ProviderError, match="regional series have no actual values"):
        UKCarbonIntensity(base_url=service.url, region_id=13, value="actual").fetch(START, END)


def test_uk_missing_half_hour_and_null(service):
    body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
    del body["data"][4]  # 01:30-02:00
    service.serve(UK_PATH, body=body)
    with pytest.raises(ProviderError, match=r"hour 2024-06-01 01:00:00\+00:00 has 1 half-hour"):
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
    body["data"][6]["intensity"]["actual"] = None  # not yet measured
    service.serve(UK_PATH, body=body)
    with pytest.raises(ProviderError, match="intensity.actual is empty.*from 2024-06-01 02:30"):
        UKCarbonIntensity(base_url=service.url, value="actual").fetch(START, END)


def test_uk_missing_field_and_short_answer(service):
    body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
    del body["data"][3]["intensity"]["forecast"]
    service.serve(UK_PATH, body=body)
    with pytest.raises(ProviderError, match="period 4: missing field 'intensity.forecast'"):
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
    body["data"] = body["data"][:9]  # up to 04:00
    service.serve(UK_PATH, body=body)
    with pytest.raises(
        ProviderError, match=r"no data for 2 of the 6 hours asked, first 2024-06-01 04"
    ):
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    for stamp, match in (("soon", "'soon' is not a timestamp"), ("2024-06-01T01:00", "no UTC")):
        body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
        body["data"][2]["from"] = stamp
        service.serve(UK_PATH, body=body)
        with pytest.raises(ProviderError, match=f"period 3: .*{match}"):
            UKCarbonIntensity(base_url=service.url).fetch(START, END)
    service.serve(UK_PATH, body={"error": {"code": "400 Bad Request"}})
    with pytest.raises(ProviderError, match="missing field 'data'"):
        UKCarbonIntensity(base_url=service.url).fetch(START, END)


# ------------------------------------------------------------------ HTTP failures


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (500, "upstream down", r"HTTP 500 Internal Server Error: 'upstream down'"),
        (404, '{"error": "zone not found"}', r"HTTP 404 Not Found"),
        (200, "<html>maintenance</html>", r"response is not JSON"),
        (200, '{"data": [', r"response is not JSON"),
    ],
)
def test_http_errors_are_named(service, status, body, match):
    service.serve(UK_PATH, status=status, body=body)
    with pytest.raises(ProviderError, match=match) as info:
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    assert str(info.value).startswith(f"uk_carbon: GET {service.url}{UK_PATH}")


def test_rate_limit_reports_retry_after(service):
    service.serve(UK_PATH, status=429, body="slow down", Retry_After="120")
    with pytest.raises(
        RateLimitedError, match=r"rate limited \(HTTP 429, retry after 120 s\)"
    ) as info:
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    assert info.value.retry_after_s == 120.0
    service.serve(UK_PATH, status=429, body="")
    with pytest.raises(RateLimitedError, match="no Retry-After given") as info:
        UKCarbonIntensity(base_url=service.url).fetch(START, END)
    assert info.value.retry_after_s is None


def test_unreachable_service_is_named():
    # A port nothing listens on: bind, read the port, close.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError, match=f"GET http://127.0.0.1:{port}/intensity/.* failed"):
        UKCarbonIntensity(base_url=f"http://127.0.0.1:{port}", timeout_s=2.0).fetch(START, END)


# ------------------------------------------------------------------ Electricity Maps


def test_electricitymaps_history_then_forecast(service, monkeypatch):
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", TEST_KEY)
    service.serve_file(EM_HISTORY, "electricitymaps_history.json")
    service.serve_file(EM_FORECAST, "electricitymaps_forecast.json")
    s = ElectricityMaps(zone="DE", base_url=service.url, site="de").fetch(START, END)
    got = s.frame[("de", "carbon_g_per_kwh")].to_numpy()
    # History runs 2024-05-31T04:00 (300) to 06-01T03:00 (323); forecast from 02:00 (400).
    np.testing.assert_array_equal(got, [320, 321, 322, 323, 402, 403])
    note = s.provenance[-1]
    assert (note["history_hours"], note["forecast_hours"]) == (4, 4)
    for path, query, headers in service.requests:
        assert query == {"zone": ["DE"]}
        assert headers["auth-token"] == TEST_KEY
        assert TEST_KEY not in path
    # Without the forecast the hours after the history are missing: a clear error.
    with pytest.raises(ProviderError, match="no data for 2 of the 6 hours"):
        ElectricityMaps(zone="DE", base_url=service.url, forecast=False).fetch(START, END)


def test_electricitymaps_key_never_in_messages_or_logs(service, monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("ELECTRICITYMAPS_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="set the environment variable ELECTRICITYMAPS_API_KEY"):
        ElectricityMaps(zone="DE", base_url=service.url).fetch(START, END)
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", TEST_KEY)
    # A service that echoes the key back in its error body: the message scrubs it.
    service.serve(EM_HISTORY, status=401, body=f'{{"message": "invalid token {TEST_KEY}"}}')
    with pytest.raises(ProviderError) as info:
        ElectricityMaps(zone="DE", base_url=service.url).fetch(START, END)
    assert "HTTP 401" in str(info.value) and "invalid token ***" in str(info.value)
    service.serve_file(EM_HISTORY, "electricitymaps_history.json")
    service.serve_file(EM_FORECAST, "electricitymaps_forecast.json")
    out = tmp_path / "de.csv"
    poll_to_csv(ElectricityMaps(zone="DE", base_url=service.url), out, START, END)
    assert TEST_KEY not in str(info.value)
    assert TEST_KEY not in caplog.text
    assert TEST_KEY not in repr(ElectricityMaps(zone="DE"))
    assert TEST_KEY not in out.read_text()
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)  # urllib3 did log


def test_electricitymaps_bad_entries(service, monkeypatch):
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", TEST_KEY)
    body = json.loads((FIXTURES / "electricitymaps_forecast.json").read_text())
    body["forecast"][3]["carbonIntensity"] = -5
    service.serve_file(EM_HISTORY, "electricitymaps_history.json")
    service.serve(EM_FORECAST, body=body)
    with pytest.raises(ProviderError, match=r"invalid data: .*carbon_g_per_kwh.*negative"):
        ElectricityMaps(zone="DE", base_url=service.url).fetch(START, END)
    del body["forecast"][3]["carbonIntensity"]
    service.serve(EM_FORECAST, body=body)
    with pytest.raises(ProviderError, match="forecast entry 4: missing field 'carbonIntensity'"):
        ElectricityMaps(zone="DE", base_url=service.url).fetch(START, END)
    with pytest.raises(ProviderError, match="no zone given"):
        ElectricityMaps(base_url=service.url).fetch(START, END)


# ------------------------------------------------------------------ Open-Meteo


@pytest.fixture()
def om_fixture():
    """The fixture generator (tests/data/providers/make_openmeteo_forecast.py) as a module."""
    import importlib.util

    reason = "openmeteo-requests not installed (gridrl[openmeteo])"
    pytest.importorskip("openmeteo_requests", reason=reason)
    path = FIXTURES / "make_openmeteo_forecast.py"
    spec = importlib.util.spec_from_file_location("make_openmeteo_forecast", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve_flatbuffers(service: FakeService, body: bytes) -> None:
    service.serve("/v1/forecast", body=body, Content_Type="application/octet-stream")


def test_openmeteo_forecast(service, om_fixture):
    """The SDK's own client on the committed FlatBuffers answer, from the local server."""
    _serve_flatbuffers(service, (FIXTURES / "openmeteo_forecast.bin").read_bytes())
    s = OpenMeteo(latitude=51.5, longitude=-0.12, base_url=service.url, site="lon").fetch(
        START, END
    )
    f = s.site("lon")
    assert s.index.equals(HOURS)
    assert list(f.columns) == list(OpenMeteo.provides)
    # float32 values read at their shortest decimal, as the JSON API prints them.
    assert f["temp_c"].tolist() == [12.1, 11.8, 11.5, 11.2, 11.0, 11.4]
    assert f["wind_speed_m_per_s"].tolist() == [3.2, 3.0, 2.9, 2.7, 2.5, 2.6]
    # Radiation labelled 05:00 is the mean of 04:00-05:00: it is the 04:00 row's; the
    # extra hour asked (label 06:00) gives the window's last hour.
    assert f["ghi_w_per_m2"].tolist() == [0.0, 0.0, 0.0, 4.0, 38.0, 112.0]
    assert f["dni_w_per_m2"].tolist() == [0.0, 0.0, 0.0, 10.5, 120.3, 251.0]
    assert f["dhi_w_per_m2"].tolist() == [0.0, 0.0, 0.0, 3.0, 21.0, 48.0]
    assert s.provenance[-1]["provider"] == "openmeteo"
    assert "label moved back 1 h" in s.provenance[-1]["radiation"]
    assert len(service.requests) == 1  # one call: no retry
    path, query, _ = service.requests[-1]
    assert path == "/v1/forecast" and query["format"] == ["flatbuffers"]
    assert query["hourly"] == [
        "temperature_2m,wind_speed_10m,shortwave_radiation,direct_normal_irradiance,"
        "diffuse_radiation"
    ]
    assert (query["latitude"], query["longitude"]) == (["51.5"], ["-0.12"])
    assert query["timezone"] == ["GMT"] and query["wind_speed_unit"] == ["ms"]
    assert (query["start_hour"], query["end_hour"]) == (["2024-06-01T00:00"], ["2024-06-01T06:00"])
    # The committed file is what the generator builds.
    assert (FIXTURES / "openmeteo_forecast.bin").read_bytes() == om_fixture.build_response()


def _variant(om_fixture, name: str, **changes) -> dict:
    """The fixture's hourly variables with ``name``'s (variable, altitude, unit, values)
    entries replaced by ``changes``."""
    hourly = dict(om_fixture.HOURLY)
    variable, altitude_m, unit, values = hourly[name]
    fields = {"variable": variable, "altitude_m": altitude_m, "unit": unit, "values": values}
    fields.update(changes)
    hourly[name] = tuple(fields.values())
    return hourly


def test_openmeteo_api_errors(service, om_fixture):
    p = OpenMeteo(latitude=51.5, longitude=0.0, base_url=service.url, timeout_s=5.0)
    # HTTP 400 {"error": true, "reason": ..}: the SDK raises; the reason is quoted.
    service.serve("/v1/forecast", status=400, body=(FIXTURES / "openmeteo_error.json").read_text())
    with pytest.raises(ProviderError, match=r"openmeteo: GET .*/v1/forecast: HTTP 400: error: "):
        p.fetch(START, END)
    with pytest.raises(ProviderError, match="Latitude must be in range of -90 to 90°"):
        p.fetch(START, END)
    body = {"error": True, "reason": "Minutely API request limit exceeded."}
    service.serve("/v1/forecast", status=429, body=body, Retry_After="60")
    with pytest.raises(RateLimitedError, match="HTTP 429, retry after 60 s.*limit exceeded") as e:
        p.fetch(START, END)
    assert e.value.retry_after_s == 60.0
    service.serve("/v1/forecast", status=503, body="maintenance", Content_Type="text/plain")
    with pytest.raises(ProviderError, match="HTTP 503: 503 Server Error"):
        p.fetch(START, END)
    # A JSON answer where FlatBuffers were asked (a server that ignores format=).
    service.serve("/v1/forecast", body={"latitude": 51.5, "hourly": {}})
    with pytest.raises(ProviderError, match="not one FlatBuffers WeatherApiResponse"):
        p.fetch(START, END)
    # A size prefix and bytes that are no WeatherApiResponse: the SDK cannot decode it.
    _serve_flatbuffers(service, b"\x10\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(ProviderError, match="GET .*: unreadable answer"):
        p.fetch(START, END)
    with pytest.raises(ProviderError, match="latitude/longitude"):
        OpenMeteo(base_url=service.url).fetch(START, END)


def test_openmeteo_checks_the_answer(service, om_fixture):
    p = OpenMeteo(latitude=51.5, longitude=0.0, base_url=service.url, timeout_s=5.0)
    unit = om_fixture.Unit
    cases = [
        (
            om_fixture.build_response(_variant(om_fixture, "wind_speed_10m", unit=unit.knots)),
            "hourly wind_speed_10m: unit is 'knots' where 'metre_per_second' was expected",
        ),
        (
            om_fixture.build_response(_variant(om_fixture, "temperature_2m", unit=unit.kelvin)),
            "hourly temperature_2m: unit is 'kelvin' where 'celsius'",
        ),
        (
            om_fixture.build_response(utc_offset_s=3600),
            "utc_offset_seconds is 3600 where 0 \\(GMT\\)",
        ),
        (
            om_fixture.build_response(interval_s=900),
            "hourly interval is 900 s where 3600 s",
        ),
        (
            om_fixture.build_response(
                dict(reversed(list(om_fixture.HOURLY.items())))  # variables out of order
            ),
            "hourly temperature_2m is 'diffuse_radiation' at 0 m where 'temperature' at 2 m",
        ),
        (
            om_fixture.build_response(
                _variant(om_fixture, "temperature_2m", values=[12.1, 11.8, 11.5])
            ),
            "hourly temperature_2m has 3 values for 7 times",
        ),
        (
            # The answer starts an hour late: the window's first hour is missing.
            om_fixture.build_response(start_s=om_fixture.START_S + 3600),
            r"no data for 1 of the 6 hours asked, first 2024-06-01 00:00:00\+00:00",
        ),
    ]
    nan = float("nan")
    temps = [12.1, 11.8, nan, 11.2, 11.0, 11.4, 12.6]
    cases.append(
        (
            om_fixture.build_response(_variant(om_fixture, "temperature_2m", values=temps)),
            r"hourly temperature_2m has no value for the hour 2024-06-01 02:00:00\+00:00; 1 such",
        )
    )
    ghi = [0.0, 0.0, 0.0, 0.0, 4.0, 38.0, nan]  # label 06:00: the window's last hour
    cases.append(
        (
            om_fixture.build_response(_variant(om_fixture, "shortwave_radiation", values=ghi)),
            r"shortwave_radiation has no value for the hour 2024-06-01 05:00:00\+00:00 "
            r"\(labelled 2024-06-01 06:00:00\+00:00 in the answer\)",
        )
    )
    for body, message in cases:
        _serve_flatbuffers(service, body)
        with pytest.raises(ProviderError, match=message):
            p.fetch(START, END)


# ------------------------------------------------------------------ library providers


def _fixture_frame(name: str) -> pd.DataFrame:
    df = pd.read_csv(FIXTURES / name, comment="#")
    for col in ("Time", "Interval Start", "Interval End"):
        df[col] = pd.to_datetime(df[col])
    return df


def test_gridstatus_parsing_of_documented_frames(monkeypatch):
    frames = {
        "load": _fixture_frame("gridstatus_caiso_load.csv"),
        "lmp": _fixture_frame("gridstatus_caiso_lmp.csv"),
    }
    asked = []

    def query(self, kind, start, end):
        asked.append((kind, start, end))
        return frames[kind]

    monkeypatch.setattr(GridStatus, "query", query)
    p = GridStatus(iso="CAISO", location="TH_NP15_GEN-APND", site="ca")
    s = p.fetch(START, END)
    f = s.site("ca")
    # 12 five-minute loads per hour, 24000 + 10 k: the first hour's mean is 24055.
    assert f["load_mw"].iloc[0] == pytest.approx(24055.0)
    assert f["price_per_mwh"].tolist() == [31.2, 35.9, 48.7, 62.1, 44.0, 38.5]
    assert asked[0][1] == pd.Timestamp(START)
    # An hour with a 5-minute interval missing is not averaged over.
    frames["load"] = frames["load"].drop(index=30)
    with pytest.raises(
        ProviderError, match=r"CAISO load: hour 2024-06-01 02:00:00\+00:00 is covered for 55 of 60"
    ):
        p.fetch(START, END)
    frames["lmp"] = frames["lmp"].rename(columns={"LMP": "Price"})
    with pytest.raises(ProviderError, match="column 'LMP' missing"):
        GridStatus(iso="CAISO", location="X", load=False).fetch(START, END)
    with pytest.raises(ProviderError, match="iso 'CAISOX'"):
        GridStatus(iso="CAISOX").fetch(START, END)


def test_readings_held_across_the_hour():
    # readings every 5 minutes from 00:57:30: each counts in the hours it spans
    times = pd.date_range("2024-06-01T00:57:30Z", "2024-06-01T02:57:30Z", freq="5min")
    values = np.arange(len(times), dtype=float)
    starts, ends, at = intervals_of_readings(pd.Series(times), "p", "w")
    window = (pd.Timestamp("2024-06-01T01:00Z"), pd.Timestamp("2024-06-01T03:00Z"))
    got = hourly_from_intervals(starts, ends, values[at], "p", "w", window)
    # the first hour: 2.5 minutes of reading 0, 5 of readings 1..11, 2.5 of reading 12
    first = (2.5 * 0 + 5 * sum(range(1, 12)) + 2.5 * 12) / 60
    assert got.loc[window[0]] == pytest.approx(first)
    assert got.loc[window[0] + pd.Timedelta(hours=1)] == pytest.approx(first + 12)
    with pytest.raises(ProviderError, match="not in time order"):
        intervals_of_readings(pd.Series(times[::-1]), "p", "w")


def test_entsoe_parsing_of_documented_shapes(monkeypatch):
    prices = pd.read_csv(FIXTURES / "entsoe_de_lu_prices.csv", comment="#", index_col=0)
    prices.index = pd.to_datetime(prices.index).tz_convert("Europe/Brussels")
    load = pd.read_csv(FIXTURES / "entsoe_de_lu_load_forecast.csv", comment="#", index_col=0)
    load.index = pd.to_datetime(load.index).tz_convert("Europe/Brussels")
    data = {"price": prices["price"], "load_forecast": load}
    monkeypatch.setattr(Entsoe, "query", lambda self, kind, start, end: data[kind])
    s = Entsoe(country_code="DE_LU", site="de").fetch(START, END)
    f = s.site("de")
    # 15-minute prices 80 + 0.5 k: hour h has k = 4h..4h+3, mean 80 + 0.5 (4h + 1.5).
    np.testing.assert_allclose(f["price_per_mwh"], [80.75 + 2.0 * h for h in range(6)])
    np.testing.assert_allclose(f["load_forecast_mw"], [45060.0 + 160 * h for h in range(6)])
    data["price"] = prices["price"].drop(prices.index[9])  # a 15-minute hole
    with pytest.raises(
        ProviderError, match=r"DE_LU price: step 0 days 00:30:00 after 2024-06-01 04:00:00\+02:00"
    ):
        Entsoe(country_code="DE_LU").fetch(START, END)
    with pytest.raises(ProviderError, match="series 'price,wind'"):
        Entsoe(country_code="DE_LU", series="price,wind").fetch(START, END)


@pytest.mark.filterwarnings(ENTSOE_XML_WARNING)
def test_entsoe_client_against_local_server(entsoe_service, caplog):
    """entsoe-py's own client, its endpoint pointed at the local server."""
    service = entsoe_service
    caplog.set_level(logging.DEBUG)
    no_data = (FIXTURES / "entsoe_no_data.xml").read_text()
    # prices are paged; the load forecast is one day-ahead (A01) document
    serve_entsoe(service, "A44", (FIXTURES / "entsoe_a44_de_lu.xml").read_text(), paged=True)
    serve_entsoe(service, "A65", (FIXTURES / "entsoe_a65_de_lu.xml").read_text(), paged=False,
                 processType="A01")
    serve_entsoe_no_data(service, no_data)
    s = Entsoe(country_code="DE_LU", site="de", timeout_s=5.0).fetch(START, END)
    f = s.site("de")
    # The A44 prices start at 2024-05-31T22:00Z: hour h of the window is position h + 3.
    np.testing.assert_allclose(
        f["price_per_mwh"], [round(70.0 + 3.0 * k - 0.1 * k * k, 2) for k in range(2, 8)]
    )
    # 15-minute loads 45000 + 20 j from 22:00Z: hour h has j = 8 + 4h .. 11 + 4h.
    np.testing.assert_allclose(f["load_forecast_mw"], [45190.0 + 80 * h for h in range(6)])
    sent = [q for path, q, _ in service.requests if path == "/api"]
    assert sent and all(q["securityToken"] == [TEST_KEY] for q in sent)  # the API's design
    assert any(TEST_KEY in str(q) for q in sent)
    assert "/api" in caplog.text  # the client and urllib3 logged the requests ...
    assert TEST_KEY not in caplog.text  # ... with the key scrubbed
    # An error page that quotes the request: the key is scrubbed from the message.
    service.serve(
        "/api", status=401, body=f"<html>bad token {TEST_KEY}</html>", Content_Type="text/html"
    )
    with pytest.raises(ProviderError, match="DE_LU price: HTTPError: 401") as info:
        Entsoe(country_code="DE_LU", timeout_s=5.0).fetch(START, END)
    assert TEST_KEY not in str(info.value) and TEST_KEY not in caplog.text


def test_library_providers_without_packages_or_keys(monkeypatch):
    import importlib.util

    monkeypatch.delenv("ENTSOE_API_KEY", raising=False)
    if importlib.util.find_spec("gridstatus") is None:
        with pytest.raises(ProviderError, match=r"pip install 'gridrl\[iso\]'"):
            GridStatus(iso="PJM").fetch(START, END)
    if importlib.util.find_spec("entsoe") is None:
        with pytest.raises(ProviderError, match=r"pip install 'gridrl\[live\]'"):
            Entsoe(country_code="FR").fetch(START, END)
    if importlib.util.find_spec("openmeteo_requests") is None:
        with pytest.raises(ProviderError, match=r"openmeteo-requests .*'gridrl\[openmeteo\]'"):
            OpenMeteo(latitude=51.5, longitude=0.0).fetch(START, END)
    else:
        with pytest.raises(ProviderError, match="ENTSOE_API_KEY"):
            Entsoe(country_code="FR").fetch(START, END)


# ------------------------------------------------------------------ options and polling


def test_make_provider_options():
    p = make_provider("openmeteo", {"latitude": "48.1", "longitude": "11.6", "site": "muc"})
    assert (p.latitude, p.longitude, p.site) == (48.1, 11.6, "muc")
    assert make_provider("electricitymaps", {"forecast": "false"}).forecast is False
    with pytest.raises(ProviderError, match="unknown provider 'watttime'"):
        make_provider("watttime")
    with pytest.raises(ProviderError, match="unknown option 'zone'"):
        make_provider("openmeteo", {"zone": "DE"})
    with pytest.raises(ProviderError, match="option region_id='london': not a int"):
        make_provider("uk_carbon", {"region_id": "london"})
    with pytest.raises(ProviderError, match="option forecast='maybe'"):
        make_provider("electricitymaps", {"forecast": "maybe"})


def test_poll_merges_atomically_and_keeps_history(service, tmp_path):
    out = tmp_path / "signals" / "gb.csv"
    body = json.loads((FIXTURES / "uk_carbon_national.json").read_text())
    service.serve(UK_PATH, body=body)
    p = UKCarbonIntensity(base_url=service.url)
    first = poll_to_csv(p, out, START, END)
    assert (first.fetched_rows, first.file_rows, first.replaced_values) == (6, 6, 0)
    df = pd.read_csv(out)
    kept = df["carbon_g_per_kwh"].tolist()[:3]
    assert kept == [(176 + 171) / 2, (169 + 166) / 2, (160 + 158) / 2]
    assert list(df.columns) == ["time", "carbon_g_per_kwh"]
    assert df["time"].iloc[0] == "2024-06-01T00:00:00+00:00"
    # A later poll over 03:00-09:00 with new forecasts: 03-05 replaced, 00-02 kept.
    later = {
        "data": [
            {"from": t.strftime("%Y-%m-%dT%H:%MZ"), "intensity": {"forecast": 200.0}}
            for t in pd.date_range("2024-06-01T03:00Z", periods=12, freq="30min")
        ]
    }
    service.serve("/intensity/2024-06-01T03:00Z/2024-06-01T09:00Z", body=later)
    second = poll_to_csv(p, out, "2024-06-01T03:00Z", "2024-06-01T09:00Z")
    assert (second.fetched_rows, second.file_rows, second.replaced_values) == (6, 9, 3)
    df = pd.read_csv(out)
    assert df["carbon_g_per_kwh"].tolist()[:3] == kept
    assert df["carbon_g_per_kwh"].tolist()[3:] == [200.0] * 6
    assert sorted(p.name for p in out.parent.iterdir()) == ["gb.csv"]  # no temp file left
    # A failed poll leaves the file as it was.
    before = out.read_text()
    service.serve(UK_PATH, status=503, body="maintenance")
    with pytest.raises(ProviderError, match="HTTP 503"):
        poll_to_csv(p, out, START, END)
    assert out.read_text() == before
    out.write_text("when,value\nyesterday,1\n")
    service.serve(UK_PATH, body=body)
    with pytest.raises(ProviderError, match="no 'time' column.*not replaced"):
        poll_to_csv(p, out, START, END)
    assert out.read_text() == "when,value\nyesterday,1\n"


def test_poll_output_is_read_by_the_slurm_adapter(service, tmp_path, om_fixture):
    from gridrl.integrations.slurm_observation import read_signal_row
    from gridrl.integrations.slurm_sites import SignalFile

    _serve_flatbuffers(service, (FIXTURES / "openmeteo_forecast.bin").read_bytes())
    out = tmp_path / "site.csv"
    poll_to_csv(OpenMeteo(latitude=51.5, longitude=-0.12, base_url=service.url), out, START, END)
    now_s = pd.Timestamp("2024-06-01T04:30Z").timestamp()
    row = read_signal_row(SignalFile(file=str(out)), now_s, ["temp_c", "ghi_w_per_m2"])
    assert row == {"temp_c": 11.0, "ghi_w_per_m2": 38.0}


# ------------------------------------------------------------------ command line


def test_cli_live_polls_into_file(service, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gridrl.cli import app

    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", TEST_KEY)
    service.serve_file(EM_HISTORY, "electricitymaps_history.json")
    service.serve_file(EM_FORECAST, "electricitymaps_forecast.json")
    out = tmp_path / "de.csv"
    args = ["live", "electricitymaps", "--out", str(out), "-p", "zone=DE"]
    args += ["-p", f"base_url={service.url}", "--start", START, "--end", END]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 hours 2024-06-01 00:00:00+00:00 .. 2024-06-01 05:00:00+00:00" in result.output
    assert pd.read_csv(out)["carbon_g_per_kwh"].tolist() == [320, 321, 322, 323, 402, 403]
    assert TEST_KEY not in result.output

    service.serve(EM_HISTORY, status=429, body="", Retry_After="30")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3 and "retry after 30 s" in result.output
    result = CliRunner().invoke(app, ["live", "watttime", "--out", str(out)])
    assert result.exit_code == 2 and "unknown provider 'watttime'" in result.output
    result = CliRunner().invoke(app, ["live", "openmeteo", "--out", str(out), "-p", "latitude"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output
