"""Live providers on responses recorded from the real services (tests/data/providers/recorded).

Each answer was recorded from the live service by someone else and published in a public
repository (sources and licences in the README there); a local HTTP server replays it to
the provider. Expected values are read from the recording independently of the provider
(JSON fields, XML points), so the test checks gridrl's request window, time handling and
hourly means on what the services really send, quirks included: the UK API's half hour
before the window, a region at 0 g/kWh for two days, Electricity Maps' estimated last
hours, and an ENTSO-E document with 15- and 60-minute price series side by side.
"""

from __future__ import annotations

import json
import logging
import struct
import xml.etree.ElementTree as ET

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
    UKCarbonIntensity,
)

RECORDED = FIXTURES / "recorded"
# FlatBuffers' size prefix: a little-endian uint32 before each message
SIZE_PREFIX = struct.Struct("<I")
SEQUENCE = "classificationSequence_AttributeInstanceComponent.position"


def _half_hour_means(periods: list[dict], value: str, lo: str, hi: str) -> pd.Series:
    """Hourly means of the recorded half hours inside ``[lo, hi)``."""
    s = pd.Series(
        [p["intensity"][value] for p in periods],
        index=pd.to_datetime([p["from"] for p in periods], utc=True),
        dtype=float,
    )
    s = s[(s.index >= pd.Timestamp(lo)) & (s.index < pd.Timestamp(hi))]
    return s.groupby(s.index.floor("h")).mean()


def test_uk_national_on_a_recorded_day(service: FakeService) -> None:
    # recorded 2023-03-14T03:01Z: 48 half hours, forecast and actual
    name = "carbonintensity_national_pt24h_2023-03-14T0301Z.json"
    lo, hi = "2023-03-13T03:00Z", "2023-03-14T03:00Z"
    service.serve_file(f"/intensity/{lo}/{hi}", f"recorded/{name}")
    periods = json.loads((RECORDED / name).read_text())["data"]
    for value in ("forecast", "actual"):
        s = UKCarbonIntensity(base_url=service.url, value=value, site="gb").fetch(lo, hi)
        got = s.frame[("gb", "carbon_g_per_kwh")]
        want = _half_hour_means(periods, value, lo, hi)
        assert len(got) == 24
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy())
    # the day's forecast and outturn differ, as a replayed file of one series would not
    assert not np.allclose(_half_hour_means(periods, "forecast", lo, hi),
                           _half_hour_means(periods, "actual", lo, hi))


def test_uk_region_at_zero_for_two_days(service: FakeService) -> None:
    # North Scotland (region 1), recorded 2023-03-13T01:31Z: 96 half hours from 01:30,
    # all forecast at 0 g/kWh (wind, hydro and nuclear only); a real 0 is a value
    name = "carbonintensity_regional_fw48h_regionid1_2023-03-13T0131Z.json"
    lo, hi = "2023-03-13T02:00Z", "2023-03-15T01:00Z"
    service.serve_file(f"/regional/intensity/{lo}/{hi}/regionid/1", f"recorded/{name}")
    body = json.loads((RECORDED / name).read_text())["data"]
    assert body["shortname"] == "North Scotland"
    s = UKCarbonIntensity(base_url=service.url, region_id=1, site="ns").fetch(lo, hi)
    got = s.frame[("ns", "carbon_g_per_kwh")]
    want = _half_hour_means(body["data"], "forecast", lo, hi)
    assert len(got) == 47 and got.index.equals(want.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def test_electricitymaps_recorded_history(
    service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # France, recorded 2024-07-05 ~10:00Z: 24 hours, the last ones estimated
    name = "electricitymaps_v3_history_FR_2024-07-05.json"
    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", TEST_KEY)
    service.serve_file("/v3/carbon-intensity/history", f"recorded/{name}")
    history = json.loads((RECORDED / name).read_text())["history"]
    lo, hi = history[0]["datetime"], pd.Timestamp(history[-1]["datetime"]) + pd.Timedelta("1h")
    s = ElectricityMaps(zone="FR", base_url=service.url, site="fr", forecast=False).fetch(lo, hi)
    np.testing.assert_array_equal(
        s.frame[("fr", "carbon_g_per_kwh")].to_numpy(),
        [h["carbonIntensity"] for h in history],
    )
    # the recording's last 3 hours are estimates; gridrl keeps them as values
    assert sum(h["isEstimated"] for h in history) == 3
    assert service.requests[0][1] == {"zone": ["FR"]}


def _xml_points(text: str, resolution: str) -> pd.Series:
    """Every interval of the document's series at ``resolution``, by start (UTC); a
    point holds until the next one (curve type A03 leaves out repeated values)."""
    root = ET.fromstring(text)
    ns = {"d": root.tag.split("}")[0].strip("{")}
    step = pd.Timedelta(resolution.replace("PT", "").lower().replace("m", "min"))
    parts = []
    for period in root.iterfind(".//d:Period", ns):
        if period.findtext("d:resolution", namespaces=ns) != resolution:
            continue
        start, end = (pd.Timestamp(period.findtext(f"d:timeInterval/d:{k}", namespaces=ns))
                      for k in ("start", "end"))
        points = {
            start + (int(p.findtext("d:position", namespaces=ns)) - 1) * step: float(
                p.findtext("d:price.amount", namespaces=ns)
                or p.findtext("d:quantity", namespaces=ns))
            for p in period.iterfind("d:Point", ns)
        }
        full = pd.date_range(start, end, freq=step, inclusive="left")
        parts.append(pd.Series(points).reindex(full).ffill())
    return pd.concat(parts).sort_index()


def _only_sequence(text: str, position: int) -> str:
    """The document with only the time series of one classification sequence, as the
    service answers a request that names it (the recording's request did not)."""
    root = ET.fromstring(text)
    ns = root.tag.split("}")[0].strip("{")
    ET.register_namespace("", ns)  # no prefix: entsoe-py matches bare tag names
    series = root.findall(f"{{{ns}}}TimeSeries")
    for ts in series:
        if ts.findtext(f"{{{ns}}}{SEQUENCE}") != str(position):
            root.remove(ts)
    assert 0 < len(root.findall(f"{{{ns}}}TimeSeries")) < len(series)
    return ET.tostring(root, encoding="unicode")


NO_DATA = RECORDED / "entsoe_ack_no_data_NL.xml"


@pytest.mark.filterwarnings(ENTSOE_XML_WARNING)
def test_entsoe_recorded_prices_of_the_day_ahead_auction(
    entsoe_service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    # DE-LU, 2021-01-01 (Brussels): the document holds the hourly day-ahead auction
    # (classification sequence 1) and a 15-minute series (sequence 2) side by side;
    # entsoe-py asks for sequence 1 in DE-LU, and the service answers with it alone
    text = (RECORDED / "entsoe_A44_dayahead_DE-LU_2021-01-01.xml").read_text()
    sdac = _only_sequence(text, 1)
    assert "PT15M" in text and "PT15M" not in sdac
    serve_entsoe(entsoe_service, "A44", sdac, paged=True, **{SEQUENCE: "1"})
    serve_entsoe_no_data(entsoe_service, NO_DATA.read_text())
    caplog.set_level(logging.DEBUG)
    lo, hi = "2020-12-31T23:00Z", "2021-01-01T23:00Z"
    s = Entsoe(country_code="DE_LU", series="price", site="de", timeout_s=5.0).fetch(lo, hi)
    got = s.frame[("de", "price_per_mwh")]
    hourly = _xml_points(text, "PT60M")
    assert len(got) == 24
    np.testing.assert_allclose(got.to_numpy(), hourly.loc[got.index].to_numpy())
    assert TEST_KEY not in caplog.text
    # the document at offset 0, "no data" at offset 100: paging ends there
    offsets = [q["offset"] for _, q, _ in entsoe_service.requests]
    assert offsets == [["0"], ["100"]]


@pytest.mark.filterwarnings(ENTSOE_XML_WARNING)
def test_entsoe_recorded_actual_load(entsoe_service: FakeService) -> None:
    # DK1 actual total load (A65, process A16), recorded 2023-12-30: hourly, 47 points
    text = (RECORDED / "entsoe_A65_load_DK1.xml").read_text()
    serve_entsoe(entsoe_service, "A65", text, paged=False, processType="A16")
    serve_entsoe_no_data(entsoe_service, NO_DATA.read_text())
    points = _xml_points(text, "PT60M")
    lo, hi = points.index[0], points.index[-1] + pd.Timedelta("1h")
    s = Entsoe(country_code="DK_1", series="load", site="dk", timeout_s=5.0).fetch(lo, hi)
    np.testing.assert_allclose(s.frame[("dk", "load_mw")].to_numpy(), points.to_numpy())
    assert len(entsoe_service.requests) == 1


@pytest.mark.filterwarnings(ENTSOE_XML_WARNING)
def test_entsoe_recorded_no_data_answer(entsoe_service: FakeService) -> None:
    serve_entsoe_no_data(entsoe_service, NO_DATA.read_text())
    with pytest.raises(ProviderError, match="NL price: NoMatchingDataError") as info:
        Entsoe(country_code="NL", series="price", timeout_s=5.0).fetch(
            "2023-02-19T23:00Z", "2023-02-20T23:00Z")
    assert TEST_KEY not in str(info.value)


def test_openmeteo_refuses_recorded_answers_to_other_questions(service: FakeService) -> None:
    # A real answer for two locations (Berlin, Stuttgart; 2023-08-01), temperature and
    # precipitation: one size-prefixed message per location
    pytest.importorskip("openmeteo_requests", reason="openmeteo-requests not installed")
    body = (RECORDED / "openmeteo_forecast_flatbuffers_2loc_2023-08-01.bin").read_bytes()
    first = body[: SIZE_PREFIX.size + SIZE_PREFIX.unpack_from(body)[0]]  # Berlin's message

    def fetch(answer: bytes) -> None:
        service.serve("/v1/forecast", body=answer, Content_Type="application/octet-stream")
        OpenMeteo(latitude=52.52, longitude=13.41, base_url=service.url, timeout_s=5.0).fetch(
            "2023-08-01T00:00Z", "2023-08-01T12:00Z")

    with pytest.raises(ProviderError, match="messages: 2"):
        fetch(body)  # gridrl asks for one location
    # gridrl asks for temperature, wind and radiation
    with pytest.raises(ProviderError, match="2 hourly variables where 5 were asked"):
        fetch(first)


@pytest.fixture()
def nyiso_service(service: FakeService, monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """``service`` as NYISO's file host for gridstatus (its own HTTP and parsing)."""
    nyiso = pytest.importorskip("gridstatus.nyiso", reason="gridstatus not installed (gridrl[iso])")
    monkeypatch.setattr(nyiso, "OASIS_POSTINGS_URL", service.url)
    return service


def _held_hourly_means(times: pd.Series, values: pd.Series, end: pd.Timestamp) -> np.ndarray:
    """Hourly means of readings each held until the next, second by second."""
    start = times.iloc[0]
    seconds = int((end - start).total_seconds())
    offset = ((times - start).dt.total_seconds()).to_numpy(int)
    held = values.to_numpy()[np.searchsorted(offset, np.arange(seconds), side="right") - 1]
    return held.reshape(-1, 3600).mean(axis=1)


# gridrl asks every ISO through get_lmp; NYISO's per-market replacement also fetches the
# generators' prices, which are not asked for
@pytest.mark.filterwarnings("ignore:NYISO.get_lmp is deprecated:DeprecationWarning")
def test_gridstatus_nyiso_recorded_day(nyiso_service: FakeService) -> None:
    # NYISO's files of 2017-11-22 (EST, UTC-5): real-time load of the 11 zones every 5
    # minutes with off-cycle readings between (00:07:34, 00:09:40, ...), and the
    # day-ahead zonal prices; gridstatus also asks for the next day's files (404 here)
    load_name, price_name = "nyiso_pal_2017-11-22.csv", "nyiso_damlbmp_zone_2017-11-22.csv"
    nyiso_service.serve_file("/RT_ACTUAL_LOAD/CSV/2017/11/22/pal-20171122.csv",
                             f"recorded/{load_name}")
    nyiso_service.serve_file("/DAM_LBMP_ZONE/CSV/2017/11/22/damlbmp_zone-20171122.csv",
                             f"recorded/{price_name}")
    lo, hi = pd.Timestamp("2017-11-22T05:00Z"), pd.Timestamp("2017-11-23T05:00Z")
    got = GridStatus(iso="NYISO", location="N.Y.C.", site="nyc").fetch(lo, hi).site("nyc")

    pal = pd.read_csv(RECORDED / load_name)
    assert set(pal["Time Zone"]) == {"EST"}
    total = pal.groupby("Time Stamp", sort=False)["Load"].sum()  # the state's load
    times = pd.to_datetime(pd.Series(total.index), format="%m/%d/%Y %H:%M:%S") + pd.Timedelta(
        hours=5)
    assert len(total) == 290 and (times.dt.second != 0).any()  # off-cycle readings
    want = _held_hourly_means(times.dt.tz_localize("UTC"), total, hi)
    np.testing.assert_allclose(got["load_mw"].to_numpy(), want, rtol=1e-9)

    lbmp = pd.read_csv(RECORDED / price_name)
    nyc = lbmp[lbmp["Name"] == "N.Y.C."]
    assert list(got.index) == list(pd.date_range(lo, hi, freq="h", inclusive="left"))
    np.testing.assert_allclose(got["price_per_mwh"].to_numpy(), nyc["LBMP ($/MWHr)"].to_numpy())
    paths = [path for path, _, _ in nyiso_service.requests]
    assert "/RT_ACTUAL_LOAD/CSV/2017/11/22/pal-20171122.csv" in paths

    # a reading missing from the day leaves a hole, never held over
    rows = pal["Time Stamp"] != "11/22/2017 13:35:00"
    nyiso_service.serve("/RT_ACTUAL_LOAD/CSV/2017/11/22/pal-20171122.csv",
                        body=pal[rows].to_csv(index=False), Content_Type="text/csv")
    with pytest.raises(ProviderError, match=r"NYISO load: hour 2017-11-22 18:00:00\+00:00 is "
                       "covered for 55 of 60 minutes"):
        GridStatus(iso="NYISO", site="nyc").fetch(lo, hi)
