"""The typed contract between the env, a bundle's manifest and the Slurm adapter:
observation fields carry their meaning as metadata, and calendar features have one
definition."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from export_helpers import geo_env, random_policy_dir
from pydantic import ValidationError

from gridrl.calendar import CALENDAR_FIELDS, calendar_at, calendar_features
from gridrl.env.kernel import EXO_SIGNALS
from gridrl.export.bundle import export_bundle
from gridrl.export.manifest import (
    CHECKSUM_FILE,
    MANIFEST_FILE,
    ObservationField,
    ObservationLayout,
    checksum_text,
)
from gridrl.export.runtime import BundleError, PolicyRuntime
from gridrl.integrations.slurm_observation import queue_features, source_of
from gridrl.integrations.slurm_plan import managed_jobs
from gridrl.integrations.slurm_queue import SlurmJob
from gridrl.integrations.slurm_sites import SitesConfig

METADATA = ("kind", "signal", "horizon_h", "statistic", "slack_h_min", "slack_h_max")


@pytest.fixture(scope="module")
def env():
    return geo_env(2)


@pytest.fixture(scope="module")
def layout(env) -> ObservationLayout:
    """The env's layout as a manifest reads it (names and keys only: metadata derived)."""
    return ObservationLayout.model_validate(env.observation_layout.to_dict())


def test_env_calendar_is_the_shared_definition(env) -> None:
    obs, _ = env.reset(seed=4)
    t = env.unwrapped.data.index[env.unwrapped.window.start]
    want = calendar_at(t.timestamp())
    assert [want[k] for k in CALENDAR_FIELDS] == pytest.approx(obs[:4].tolist(), abs=1e-7)
    hours = np.arange(24 * 7)
    week = calendar_features(hours % 24, hours // 24)
    assert week.shape == (168, 4)
    np.testing.assert_allclose(week[:, 0] ** 2 + week[:, 1] ** 2, 1.0)
    assert calendar_at(pd.Timestamp("2021-03-01 06:30", tz="UTC").timestamp()) == pytest.approx(
        {"hour_sin": 1.0, "hour_cos": 0.0, "weekday_sin": 0.0, "weekday_cos": 1.0}, abs=1e-12
    )  # Monday, 06:00 UTC


def test_every_field_of_the_env_layout_has_its_meaning(env, layout) -> None:
    kinds = Counter(f.kind for f in layout.fields)
    sc_env = env.unwrapped.scenario.env
    n_forecast = len(sc_env.forecast_targets) * len(sc_env.forecast_horizons_h) * 2
    groups = len(sc_env.observation_slack_edges_h) + 1
    assert kinds == {"calendar": 4, "signal": 2 * len(EXO_SIGNALS), "forecast": 2 * n_forecast,
                     "queue_slack": 2 * groups, "overdue": 2, "transit": 2, "soc": 2, "cap": 2}
    miami = [f for f in layout.fields if f.site == "miami"]
    slack = [(f.slack_h_min, f.slack_h_max) for f in miami if f.kind == "queue_slack"]
    assert slack == [(0.0, 2.0), (2.0, 6.0), (6.0, 12.0), (12.0, None)]
    forecasts = [f for f in miami if f.kind == "forecast"]
    assert {f.horizon_h for f in forecasts} == set(sc_env.forecast_horizons_h)
    assert {f.signal for f in forecasts} == set(sc_env.forecast_targets)
    carbon = next(f for f in forecasts if f.signal == "carbon_g_per_kwh" and f.horizon_h == 4
                  and f.statistic == "spread")
    assert carbon.unit == "g/kWh" and carbon.site == "miami"
    assert {source_of(f) for f in layout.fields if f.kind == "calendar"} == {"clock"}


def test_a_new_bundle_writes_the_metadata_and_an_old_one_gets_it_on_load(env, tmp_path) -> None:
    pdir = random_policy_dir(tmp_path / "policy", env, seed=1)
    bundle = tmp_path / "bundle"
    export_bundle(pdir, bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    written = manifest["observation"]["fields"]
    assert all(f["kind"] for f in written)
    # a manifest from before the metadata: the same fields without it
    for f in written:
        for key in METADATA:
            f.pop(key)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    (bundle / CHECKSUM_FILE).write_text(checksum_text(bundle))
    old = PolicyRuntime(bundle).manifest.observation.fields
    assert [f.model_dump() for f in old] == [
        ObservationField.model_validate(f).model_dump()
        for f in json.loads(json.dumps(written))  # derived the same way
    ]
    assert old[4].kind == "signal" and old[4].signal == old[4].key
    # a key outside the env's vocabulary cannot be derived: refused, naming the field
    written[0]["key"] = "moon_phase"
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    (bundle / CHECKSUM_FILE).write_text(checksum_text(bundle))
    with pytest.raises(BundleError, match=r"observation field 'hour_sin': key 'moon_phase'"):
        PolicyRuntime(bundle)


def test_inconsistent_metadata_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind 'forecast' needs"):
        ObservationField(name="a.x", key="x", site="a", kind="forecast", signal="pv_kw")
    with pytest.raises(ValidationError, match="only they have no site"):
        ObservationField(name="x", key="x", kind="signal", signal="pv_kw")
    with pytest.raises(ValidationError, match="calendar key 'hour_sin' belongs to no site"):
        ObservationField(name="a.hour_sin", key="hour_sin", site="a")


def test_the_slurm_adapter_reads_metadata_not_names() -> None:
    """A queue group the env never named this way is still answered from its range."""
    now = 1_800_000_000.0
    cfg = SitesConfig.model_validate(
        {"sites": [{"name": "a", "partitions": ["p"], "gpus": 8}], "decision_interval_s": 3600}
    )
    fields = [
        ObservationField(name="a.short", key="backlog_short", site="a", kind="queue_slack",
                         slack_h_min=0.0, slack_h_max=3.0, unit="GPU h"),
        ObservationField(name="a.long", key="backlog_long", site="a", kind="queue_slack",
                         slack_h_min=3.0, unit="GPU h"),
    ]
    assert [source_of(f) for f in fields] == ["slurm", "slurm"]
    jobs = [_pending(1, gpus=2, deadline_h=2.0, now=now), _pending(2, gpus=1, deadline_h=9.0,
                                                                   now=now)]
    managed = managed_jobs(jobs, cfg, now)
    values = queue_features(cfg.sites[0], managed, jobs, fields, cfg, now)
    assert values == pytest.approx({"backlog_short": 2.0, "backlog_long": 1.0})
    assert not math.isnan(sum(values.values()))


def _pending(job_id: int, *, gpus: int, deadline_h: float, now: float) -> SlurmJob:
    """A pending one-hour job on partition ``p`` with a deadline ``deadline_h`` from now."""
    return SlurmJob(
        job_id=job_id, name=f"j{job_id}", partition="p", state="PENDING", reason="Priority",
        qos="normal", submit_time=now - 7200, eligible_time=now - 7200,
        deadline=now + deadline_h * 3600.0, time_limit_s=3600.0, gpus=gpus, cpus=1,
        comment="",
    )  # fmt: skip
