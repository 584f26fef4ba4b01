"""Scenario files: every shipped scenario loads; bad files fail naming the key's path."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gridrl.scenario import ScenarioError, load_scenario

ENVS = Path(__file__).resolve().parents[1] / "envs"
SCENARIO_FILES = sorted(ENVS.glob("*.yaml"))


def _raw(name: str) -> dict:
    return yaml.safe_load((ENVS / name).read_text())


def _load_modified(tmp_path: Path, raw: dict):
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_scenario(path)


def _expect_error(tmp_path: Path, raw: dict, key_path: str) -> str:
    with pytest.raises(ScenarioError) as err:
        _load_modified(tmp_path, raw)
    message = str(err.value)
    assert key_path in message, message
    return message


def test_the_three_scenarios_are_shipped():
    assert {p.name for p in SCENARIO_FILES} >= {"geo3.yaml", "edge24.yaml", "congested1.yaml"}


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_scenario_loads(path: Path):
    scenario = load_scenario(path)
    sites = scenario.expanded_sites()
    assert sites, path
    assert len({s.name for s in sites}) == len(sites)
    assert scenario.env.episode_hours == 168
    # Test blocks spread over the year: every month is in one (a block per month, or
    # whole test years).
    months = {
        m.month
        for p in scenario.periods.test
        for m in pd.date_range(p.start, p.end, freq="D")
    }
    assert months == set(range(1, 13))
    # Energy per unit of work (cap / throughput) falls from no cap down to the knee.
    cap = np.asarray(scenario.throttle.training.cap_fraction)
    thr = np.asarray(scenario.throttle.training.throughput_fraction)
    energy_per_work = cap / thr
    knee = int(np.argmin(energy_per_work))
    assert cap[knee] < 1.0
    assert np.all(np.diff(energy_per_work[knee:]) > 0)
    assert np.all(thr[knee:-1] / cap[knee:-1] > 1.0)
    assert "2205.09646" in scenario.throttle.training.source
    assert "2308.12908" in scenario.throttle.inference.source


def test_scenario_counts_match_the_brief():
    geo3 = load_scenario(ENVS / "geo3.yaml").expanded_sites()
    assert len(geo3) == 3
    assert {s.weather.file for s in geo3} == {"723170TYA.CSV", "703165TY.csv", "12839.tm2"}
    assert all(s.gpus >= 100 for s in geo3)
    edge = load_scenario(ENVS / "edge24.yaml").expanded_sites()
    assert len(edge) == 24
    assert all(isinstance(s.gpus, int) and 8 <= s.gpus <= 64 for s in edge)
    assert all(s.pv.kwp > 0 and s.battery.capacity_kwh > 0 for s in edge)
    assert len({s.gpus for s in edge}) > 10  # varied per site
    assert len(load_scenario(ENVS / "congested1.yaml").expanded_sites()) == 1


def test_unknown_key_names_its_path(tmp_path):
    raw = _raw("geo3.yaml")
    raw["sites"][0]["battery"]["capacity_kwhh"] = 10.0
    message = _expect_error(tmp_path, raw, "sites[0].battery.capacity_kwhh")
    assert "scenario.yaml" in message


def test_wrong_type_names_its_path(tmp_path):
    raw = _raw("geo3.yaml")
    raw["sites"][1]["gpus"] = "many"
    _expect_error(tmp_path, raw, "sites[1].gpus")


def test_negative_capacity_names_its_path(tmp_path):
    raw = _raw("geo3.yaml")
    raw["sites"][0]["battery"]["capacity_kwh"] = -5.0
    message = _expect_error(tmp_path, raw, "sites[0].battery.capacity_kwh")
    assert "-5.0" in message


def test_negative_feeder_capacity_in_group_template(tmp_path):
    raw = _raw("edge24.yaml")
    raw["site_groups"][0]["template"]["grid"]["feeder_capacity_kw"] = -1.0
    message = _expect_error(tmp_path, raw, "site_groups[0].template.grid.feeder_capacity_kw")
    assert "scenario.yaml" in message


def test_bad_vary_key_names_it(tmp_path):
    raw = _raw("edge24.yaml")
    raw["site_groups"][0]["vary"]["pv.kwpp"] = 0.1
    message = _expect_error(tmp_path, raw, "site_groups[0].vary.pv.kwpp")
    assert "scenario.yaml" in message


def test_vary_key_through_a_number_names_it(tmp_path):
    raw = _raw("edge24.yaml")
    raw["site_groups"][0]["vary"]["gpus.count"] = 0.1
    _expect_error(tmp_path, raw, "site_groups[0].vary.gpus.count")


def test_vary_of_a_text_value_names_it(tmp_path):
    raw = _raw("edge24.yaml")
    raw["site_groups"][0]["vary"]["weather.file"] = 0.1
    message = _expect_error(tmp_path, raw, "site_groups[0].vary.weather.file")
    assert "number" in message


def test_vary_spread_outside_0_1_names_it(tmp_path):
    raw = _raw("edge24.yaml")
    raw["site_groups"][0]["vary"]["pv.kwp"] = 1.5
    _expect_error(tmp_path, raw, "site_groups[0].vary.pv.kwp")


def test_bad_period_date_names_it(tmp_path):
    raw = _raw("geo3.yaml")
    raw["periods"]["train"][2]["start"] = "2021-02-29"
    _expect_error(tmp_path, raw, "periods.train[2]")


def test_carbon_model_that_could_go_negative_is_rejected(tmp_path):
    raw = _raw("geo3.yaml")
    raw["sites"][2]["carbon"]["wind_displacement_g_per_kwh"] = 900.0
    _expect_error(tmp_path, raw, "sites[2].carbon")


def test_csv_carbon_needs_file_and_column(tmp_path):
    raw = _raw("geo3.yaml")
    raw["sites"][0]["carbon"] = {"source": "csv", "file": "x.csv"}
    message = _expect_error(tmp_path, raw, "sites[0].carbon")
    assert "column" in message


def test_content_hash_is_stable_and_tracks_changes(tmp_path):
    a = load_scenario(ENVS / "geo3.yaml")
    b = load_scenario(ENVS / "geo3.yaml")
    assert a.content_hash() == b.content_hash()
    raw = copy.deepcopy(_raw("geo3.yaml"))
    raw["seed"] = raw["seed"] + 1
    assert _load_modified(tmp_path, raw).content_hash() != a.content_hash()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda raw: raw["sites"][0].__setitem__("gpus", True), "sites[0].gpus"),
        (lambda raw: raw["env"].__setitem__("episode_hours", False), "env.episode_hours"),
        (lambda raw: raw.__setitem__("seed", True), "seed"),
        (lambda raw: raw["sites"][0].__setitem__("gpus", 2.5), "sites[0].gpus"),
    ],
)
def test_a_boolean_or_fraction_is_not_a_count(tmp_path, edit, key):
    raw = _raw("geo3.yaml")
    raw.setdefault("env", {})
    edit(raw)
    message = _expect_error(tmp_path, raw, f"{key}: Input should be a valid integer")
    assert "(got True)" in message or "(got False)" in message or "(got 2.5)" in message
