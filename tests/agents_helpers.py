"""Tiny scenarios and synthetic inputs for the reference-controller tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from env_helpers import THROTTLE, with_grid_events
from env_helpers import site as env_site

from gridrl.env.core import EXO_SIGNALS
from gridrl.env.gym_env import GridEnv
from gridrl.env.inputs import EnvData
from gridrl.scenario import Scenario

K = {s: i for i, s in enumerate(EXO_SIGNALS)}

# The agents' tiny sites are the environment tests' sites with a wider slack range.
AGENT_WORKLOAD = {"deadline_slack_h_min": 1, "deadline_slack_h_max": 6}


def site(name: str, **over: Any) -> dict[str, Any]:
    """A site with small round numbers; ``over`` replaces top-level keys."""
    return env_site(name, **{"workload": AGENT_WORKLOAD, **over})


def scenario(sites: list[dict], *, env: dict | None = None, reward: dict | None = None,
             throttle: dict | None = None, test: tuple[str, str] = ("2021-01-11", "2021-01-14"),
             **over: Any) -> Scenario:
    """A validated scenario; test period ``test``, train the days before."""
    data: dict[str, Any] = {
        "name": "tiny",
        "sites": sites,
        "throttle": throttle or THROTTLE,
        "env": {"slack_buckets": 8, "episode_hours": 24, "forecast_horizons_h": [1, 2, 4, 8],
                "observation_slack_edges_h": [2, 4], "cap_min_fraction": 0.5, **(env or {})},
        "reward": reward or {"carbon_per_kg": 1.0, "cost_per_unit": 1.0, "slo_per_gpu_h": 10.0,
                             "overdue_per_gpu_h": 2.0, "overdraw_per_kwh": 5.0, "scale": 10.0},
        "periods": {"train": [{"start": "2021-01-01", "end": "2021-01-10"}],
                    "test": [{"start": test[0], "end": test[1]}]},
    }
    data.update(over)
    return Scenario.model_validate(data)


def index(hours: int, start: str = "2021-01-01") -> pd.DatetimeIndex:
    """Hourly UTC index."""
    return pd.date_range(start, periods=hours, freq="h", tz="UTC", name="time")


def synthetic_exo(n_sites: int, hours: int, seed: int = 0, *, gpus: float = 10.0) -> np.ndarray:
    """Plausible random signals ``[T, N, K]``: daily PV and carbon, wind, headroom that
    binds at times, outages, inference demand and flexible arrivals."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)[:, None]
    hod = t % 24
    sun = np.clip(np.sin((hod - 6) / 12 * np.pi), 0, None)
    x = np.zeros((hours, n_sites, len(EXO_SIGNALS)))
    x[..., K["pv_kw"]] = 6.0 * sun * rng.uniform(0.3, 1.0, (hours, n_sites))
    x[..., K["wind_kw"]] = rng.uniform(0.0, 3.0, (hours, n_sites))
    x[..., K["headroom_kw"]] = rng.uniform(3.0, 12.0, (hours, n_sites))
    x[rng.random((hours, n_sites)) < 0.04, K["headroom_kw"]] = 0.0  # outages
    x[..., K["carbon_g_per_kwh"]] = np.clip(
        300 + 150 * np.cos(hod / 24 * 2 * np.pi) + rng.normal(0, 30, (hours, n_sites)), 20, None)
    x[..., K["price_per_mwh"]] = 60 + 40 * sun + rng.normal(0, 10, (hours, n_sites))
    x[..., K["inference_gpus"]] = rng.uniform(0.1, 0.5, (hours, n_sites)) * gpus
    x[..., K["flexible_gpu_h"]] = rng.uniform(0.0, 0.6, (hours, n_sites)) * gpus
    x[..., K["temp_c"]] = rng.normal(18, 8, (hours, n_sites))
    return with_grid_events(x, rng)


def make_env(sc: Scenario, exo: np.ndarray, *, forecast: str | None = "perfect",
             start: str = "2021-01-01", **kwargs: Any) -> GridEnv:
    """A GridEnv on given exogenous arrays (and a cube of mode ``forecast``)."""
    names = [s.name for s in sc.expanded_sites()]
    data = EnvData.from_arrays(index(exo.shape[0], start), exo, names)
    if forecast is not None:
        from gridrl.env.inputs import make_forecast

        signals = _signals(data)
        data = EnvData.from_arrays(data.index, data.exo, names,
                                   make_forecast(sc, signals, forecast))
    return GridEnv(sc, data=data, **kwargs)


def _signals(data: EnvData):
    from gridrl.data.signals import Signals

    cols = pd.MultiIndex.from_tuples(
        [(s, k) for s in data.site_names for k in EXO_SIGNALS], names=["site", "signal"])
    frame = pd.DataFrame(data.exo.reshape(data.steps, -1), index=data.index, columns=cols)
    return Signals.from_frame(frame, source="synthetic")


def bound_and_random_returns(params, data, window, n_episodes: int,
                             rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """The LP bound's J on ``window`` and the returns of ``n_episodes`` random action
    sequences on it (a random level per episode, some lazy, some busy, some extreme,
    plus noise each step)."""
    from gridrl.agents.lp import LPInputs, LPStructure, Solver
    from gridrl.env import core, physics
    from gridrl.env.batch import BatchSim

    exo = data.exo[window.start : window.start + window.steps]
    st = core.reset(params, 1)
    sol = Solver(LPStructure(params, window.steps)).solve(LPInputs(
        exo, st.queue_gpu_h[0], st.transit_gpu_h[0],
        physics.initial_soc_kwh(params, [window.start])[0],
        physics.terminal_value_per_gpu_h(params, exo),
        battery_value=physics.battery_value_per_kwh(params, exo)))
    sim = BatchSim(params, data, n_episodes)
    sim.begin(list(range(n_episodes)), [window] * n_episodes)
    bias = rng.uniform(-1, 1, (n_episodes, params.n_actions_per_site * params.n_sites))
    for _ in range(window.steps):
        sim.set_action(np.clip(bias + rng.normal(0, 0.7, bias.shape), -1, 1))
        sim.advance()
    return sol.J, sim.returns.copy()
