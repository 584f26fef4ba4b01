"""OpenADR events -> event signal rows, and the Slurm adapter's event cap rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from gridrl.export.runtime import SiteDecision
from gridrl.integrations.openadr_events import (
    NO_EVENT,
    OpenADRError,
    opt_reason,
    parse_event,
    signal_frame,
    write_event_signal,
)
from gridrl.integrations.slurm_events import (
    active_limits,
    cap_for_events,
    event_cap_fraction,
)
from gridrl.integrations.slurm_observation import ObservationError
from gridrl.integrations.slurm_sites import SitesConfig

T0 = datetime(2026, 7, 1, 14, 0, tzinfo=timezone.utc)
FULL_KW = 64 * 0.7  # 64 GPUs x 0.7 kW


def _event(
    payloads=(30.0,),
    kind="setpoint",
    name="LOAD_DISPATCH",
    unit="W",
    scale="k",
    start=T0,
    status="far",
    event_id="ev1",
    measurement=True,
):
    intervals = [
        {"dtstart": start + timedelta(hours=k), "duration": timedelta(hours=1), "uid": k,
         "signal_payload": p}
        for k, p in enumerate(payloads)
    ]  # fmt: skip
    signal = {"intervals": intervals, "signal_name": name, "signal_type": kind, "signal_id": "s"}
    if measurement:
        signal["measurement"] = {"name": "powerReal", "unit": unit, "scale": scale}
    return {
        "event_descriptor": {"event_id": event_id, "modification_number": 0,
                             "event_status": status},
        "active_period": {"dtstart": start, "duration": timedelta(hours=len(payloads))},
        "event_signals": [signal],
        "response_required": "always",
    }  # fmt: skip


def test_setpoint_and_delta_become_limits_in_kw():
    ev = parse_event(_event((30.0, 25.0)), FULL_KW, T0 - timedelta(hours=24))
    assert [i.limit_kw for i in ev.intervals] == [30.0, 25.0]
    assert ev.notice_h == pytest.approx(24.0) and ev.request == "limit"
    assert ev.end - ev.start == pd.Timedelta(hours=2)
    shed = parse_event(_event((10_000.0,), kind="delta", scale="none"), FULL_KW, T0)
    assert shed.intervals[0].limit_kw == pytest.approx(FULL_KW - 10.0)  # 10 000 W shed
    assert shed.request == "shed" and shed.notice_h == 0.0
    mw = parse_event(_event((0.03,), scale="M"), FULL_KW, T0)
    assert mw.intervals[0].limit_kw == pytest.approx(30.0)
    nested = _event((30.0,))
    nested["event_signals"] = {"event_signals": nested["event_signals"]}
    assert parse_event(nested, FULL_KW, T0).intervals[0].limit_kw == 30.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "SIMPLE", "kind": "level"}, "expected one LOAD_DISPATCH signal"),
        ({"kind": "multiplier"}, "signal type 'multiplier'"),
        ({"measurement": False}, "measurement None: expected 'powerReal'"),
        ({"unit": "VA"}, "unit 'VA' scale 'k'"),
        ({"payloads": (-1.0,)}, "interval 0: payload -1.0"),
    ],
)
def test_events_not_understood_name_what(kwargs, message):
    with pytest.raises(OpenADRError, match=message) as err:
        parse_event(_event(**kwargs), FULL_KW, T0)
    assert "event 'ev1'" in str(err.value)


def test_opt_in_only_when_the_lowest_cap_meets_every_limit():
    min_kw = FULL_KW * 0.3  # 13.44 kW with every GPU at 30 %
    assert opt_reason(parse_event(_event((30.0, 14.0)), FULL_KW, T0), min_kw) is None
    why = opt_reason(parse_event(_event((30.0, 12.0)), FULL_KW, T0), min_kw)
    assert why is not None and "12.000 kW is below the 13.440 kW" in why


def test_signal_rows_before_during_and_after_an_event():
    ev = parse_event(_event((30.0, 25.0)), FULL_KW, T0 - timedelta(hours=1))
    times = pd.DatetimeIndex(
        [T0 - timedelta(minutes=30), T0, T0 + timedelta(minutes=90), T0 + timedelta(hours=2)]
    )
    f = signal_frame([ev], times, FULL_KW)
    assert f["dr_active"].tolist() == [0, 1, 1, 0]
    assert f["dr_limit_kw"].tolist() == [30.0, 30.0, 25.0, FULL_KW]
    assert f["dr_shed_kw"].tolist() == pytest.approx([FULL_KW - 30, FULL_KW - 30, FULL_KW - 25, 0])
    assert f["dr_starts_in_h"].tolist() == [0.5, 0.0, 0.0, 0.0]
    assert f["dr_remaining_h"].tolist() == [2.0, 2.0, 0.5, 0.0]
    assert f["dr_notice_h"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert f["dr_event_id"].tolist() == ["ev1", "ev1", "ev1", NO_EVENT]
    assert f["dr_start"].iloc[0] == pd.Timestamp(T0).isoformat()


def test_cancelled_event_leaves_no_stale_row(tmp_path):
    out = tmp_path / "dr.csv"
    now = pd.Timestamp(T0 - timedelta(hours=3))
    ev = parse_event(_event((30.0,), start=T0 + timedelta(minutes=7)), FULL_KW, now)
    write_event_signal(out, [ev], now, FULL_KW, step_s=900, horizon_s=6 * 3600)
    first = pd.read_csv(out)
    assert first["dr_active"].sum() > 0
    assert (pd.to_datetime(first["time"]) == pd.Timestamp(T0 + timedelta(minutes=7))).any()
    write_event_signal(out, [], now + pd.Timedelta(minutes=20), FULL_KW, 900, 6 * 3600)
    after = pd.read_csv(out)
    assert after["dr_active"].sum() == 0  # the boundary row off the grid was rewritten too
    assert len(after) >= len(first)  # rows before now are kept
    assert after["dr_limit_kw"].max() == FULL_KW


@pytest.mark.parametrize(
    "limit_kw, expected",
    [
        (44.8, 1.0),  # the full power: no cap needed
        (100.0, 1.0),  # above it
        (22.4, 0.5),  # half the power: cap 0.5 exactly
        (30.0, 0.669),  # 30 / 44.8 = 0.66964..., rounded down so power stays below
        (5.0, 0.3),  # cannot be met: the GPUs' lowest cap
    ],
)
def test_event_cap_fraction(limit_kw, expected):
    cap = event_cap_fraction(limit_kw, 64, 0.7, 0.3, 3)
    assert cap == pytest.approx(expected)
    if expected > 0.3:
        assert 64 * 0.7 * cap <= limit_kw + 1e-12


def _cfg(tmp_path, rows: str | None, **site) -> SitesConfig:
    events = None
    if rows is not None:
        (tmp_path / "dr.csv").write_text(rows)
        events = {"file": str(tmp_path / "dr.csv")}
    return SitesConfig.model_validate(
        {"sites": [{"name": "a", "partitions": ["p"], "gpus": 64, "gpu_max_kw": 0.7,
                    "events": events, **site}]}
    )  # fmt: skip


def test_active_event_lowers_only_a_looser_cap(tmp_path):
    now_s = T0.timestamp()
    stamp = T0.isoformat()
    cfg = _cfg(tmp_path, f"time,dr_active,dr_limit_kw,dr_event_id\n{stamp},1,30.0,ev1\n")
    limits = active_limits(cfg, now_s + 60)
    assert limits == {"a": 30.0}
    loose = [SiteDecision("a", 1.0, 0.9, 1.0, 0.0)]
    (d,), notes = cap_for_events(loose, limits, cfg)
    assert d.power_cap_fraction == pytest.approx(0.669)
    assert "30.000 kW: cap 0.900 -> 0.669" in notes[0]
    tight = [SiteDecision("a", 1.0, 0.6, 1.0, 0.0)]
    (d,), _ = cap_for_events(tight, limits, cfg)
    assert d.power_cap_fraction == 0.6  # the policy's cap is already below the limit
    idle = _cfg(tmp_path, f"time,dr_active,dr_limit_kw\n{stamp},0,44.8\n")
    assert active_limits(idle, now_s) == {}


def test_bad_event_signal_is_an_observation_error(tmp_path):
    stamp = T0.isoformat()
    cfg = _cfg(tmp_path, f"time,dr_active,dr_limit_kw\n{stamp},0.5,30\n")
    with pytest.raises(ObservationError, match=r"row 2, column 'dr_active': expected 0 or 1"):
        active_limits(cfg, T0.timestamp())
    cfg = _cfg(tmp_path, f"time,dr_active\n{stamp},1\n")
    with pytest.raises(ObservationError, match=r"no column \['dr_limit_kw'\]"):
        active_limits(cfg, T0.timestamp())


def test_events_need_the_gpu_power(tmp_path):
    with pytest.raises(ValueError, match="events needs gpu_max_kw"):
        _cfg(tmp_path, "time,dr_active\n", gpu_max_kw=None)


def test_a_bundle_observing_dr_keys_reads_them_from_the_event_signal(tmp_path):
    from gridrl.export.manifest import ObservationField
    from gridrl.integrations.slurm_observation import raw_observation

    stamp = T0.isoformat()
    cfg = _cfg(tmp_path, f"time,dr_active,dr_limit_kw,dr_event_id\n{stamp},1,30.0,ev1\n")
    fields = [
        ObservationField(name=f"a/{k}", key=k, site="a", unit=u, kind="signal", signal=k)
        for k, u in (("dr_active", "1"), ("dr_limit_kw", "kW"))
    ]
    raw = raw_observation(fields, cfg, [], [], T0.timestamp() + 60)
    assert raw == {"a/dr_active": 1.0, "a/dr_limit_kw": 30.0}


def test_ven_security_comes_from_the_environment_and_hides_the_passphrase(tmp_path):
    from gridrl.integrations.openadr import SECURITY_ENV, VenSecurity

    assert VenSecurity.from_env({}) == VenSecurity()
    with pytest.raises(OpenADRError, match="set both GRIDRL_OPENADR_CERT and GRIDRL_OPENADR_KEY"):
        VenSecurity.from_env({SECURITY_ENV["cert"]: str(tmp_path / "c.pem")})
    with pytest.raises(OpenADRError, match="GRIDRL_OPENADR_CERT: no file"):
        VenSecurity.from_env(
            {SECURITY_ENV["cert"]: str(tmp_path / "c.pem"), SECURITY_ENV["key"]: "k.pem"}
        )
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    env = {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem"),
           "passphrase": "s3cret-phrase"}  # fmt: skip
    sec = VenSecurity.from_env({SECURITY_ENV[k]: v for k, v in env.items()})
    assert sec.passphrase == "s3cret-phrase" and "s3cret" not in repr(sec)


def test_ven_command_names_a_wrong_site_and_an_unreachable_vtn(tmp_path):
    import socket

    from typer.testing import CliRunner

    from gridrl.cli import app

    pytest.importorskip("openleadr", reason="openleadr not installed (the openadr extra)")
    sites = tmp_path / "sites.yaml"
    sites.write_text("sites: [{name: a, partitions: [p], gpus: 64, gpu_max_kw: 0.7}]\n")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vtn = f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
    out = str(tmp_path / "dr.csv")
    base = ["openadr-ven", "--vtn", vtn, "--ven-name", "v", "--out", out, "--sites", str(sites)]
    wrong = CliRunner().invoke(app, [*base, "--site", "b"])
    said = " ".join(wrong.output.split())  # rich wraps long lines
    assert wrong.exit_code == 2 and "no site 'b'; sites are ['a']" in said
    down = CliRunner().invoke(app, [*base, "--site", "a"])
    assert down.exit_code == 2, down.output
    assert "the VTN did not register this VEN" in " ".join(down.output.split())
    # unregistered, the VEN does not know the events in force: it leaves the file alone
    assert not (tmp_path / "dr.csv").exists()


def test_the_event_signal_file_is_a_scenario_event_file(tmp_path):
    """The VEN's signal CSV is read as ``demand_response.file``: one event per id, its
    start, end, notice and tightest level."""
    from gridrl.data.sources.events import read_dr_events

    ev = parse_event(_event((30.0, 25.0)), FULL_KW, T0 - timedelta(hours=24))
    other = parse_event(_event((20.0,), start=T0 + timedelta(hours=5), event_id="ev2"),
                        FULL_KW, T0 + timedelta(hours=4))
    out = tmp_path / "events.csv"
    write_event_signal(out, [ev, other], pd.Timestamp(T0) - pd.Timedelta(hours=2), FULL_KW,
                       step_s=900, horizon_s=12 * 3600)
    hours = pd.date_range(pd.Timestamp(T0) - pd.Timedelta(hours=24), periods=48, freq="h")
    first, second = read_dr_events(out, hours)
    assert (first.announced, first.start, first.end, first.limit_kw) == (0, 24, 26, 25.0)
    assert (second.announced, second.start, second.end, second.limit_kw) == (28, 29, 30, 20.0)
