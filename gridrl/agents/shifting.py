"""Temporal-shifting scenarios on a real carbon-intensity series (Wiesner et al. 2021).

"Let's Wait Awhile" (Middleware 2021), scenario I: a job that runs every night at a
fixed hour may instead run anywhere within ``+- W`` hours of it; how much carbon does
that save? :func:`shifting_case` turns a one-site scenario (``envs/entsoe_shift_*.yaml``)
and an hourly carbon series into environment inputs for one ``W``:

- one job of ``job.gpu_h`` GPU-hours arrives every day at ``job.hour_utc - W`` with a
  slack of ``2 W`` hours (so it may run in hours ``hour - W .. hour + W``);
- the carbon intensity is the series; there is no PV, wind, battery, inference or
  price; headroom is the site's feeder capacity (never binding);
- jobs whose widest window (``max_window_h``) crosses a test-block boundary are left
  out, for every ``W`` alike, so every policy and every ``W`` sees the same jobs;
- episodes start at the first job's arrival in each block and follow one another every
  ``env.episode_hours`` (a week): no episode boundary cuts a job's window.

``W = 0`` is the status quo: ``run_now`` runs each job at its hour. :func:`direct_min_carbon` is the
same question answered directly: the least carbon intensity inside each job's window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from gridrl.agents.evaluate import EvalSetup
from gridrl.env.core import EXO_SIGNALS
from gridrl.env.episodes import EpisodeWindows
from gridrl.env.inputs import EnvData
from gridrl.env.params import build_params
from gridrl.scenario import Scenario, ScenarioError

__all__ = ["ShiftCase", "ShiftJob", "direct_min_carbon", "shifting_case"]

_K = {name: k for k, name in enumerate(EXO_SIGNALS)}
HOURS_PER_DAY = 24


class ShiftJob(BaseModel):
    """The nightly job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Nominal start hour (UTC); Wiesner et al. 2021 scenario I runs its job at 01:00.
    hour_utc: Annotated[int, Field(ge=0, lt=24)] = 1
    # Work of one job (GPU-h); at the site's busy power it is the job's energy.
    gpu_h: Annotated[float, Field(gt=0.0)] = 1.0


@dataclass(eq=False)
class ShiftCase:
    """Inputs of one window size.

    Attributes
    ----------
    setup : EvalSetup
        Scenario (slack ``2 W``), parameters, inputs and the test period's blocks.
    starts : list of int
        Episode start rows (evaluate with ``starts=``).
    arrivals : ndarray
        Data row at which each job arrives (``hour_utc - W`` of its day).
    window_h : int
        ``W``.
    """

    setup: EvalSetup
    starts: list[int]
    arrivals: np.ndarray
    window_h: int


def _with_slack(scenario: Scenario, slack_h: int) -> Scenario:
    data = scenario.model_dump(mode="json")
    if len(data["sites"]) != 1 or data.get("site_groups"):
        raise ScenarioError(f"{scenario.name}: a shifting scenario has exactly one site")
    data["sites"][0]["workload"]["deadline_slack_h_min"] = slack_h
    data["sites"][0]["workload"]["deadline_slack_h_max"] = slack_h
    return Scenario.model_validate(data)


def shifting_case(scenario: Scenario, carbon_g_per_kwh: pd.Series, window_h: int, *,
                  job: ShiftJob | None = None, max_window_h: int | None = None) -> ShiftCase:
    """Environment inputs of the shifting check for window ``+- window_h`` hours.

    Parameters
    ----------
    scenario : Scenario
        One site (``envs/entsoe_shift_*.yaml``).
    carbon_g_per_kwh : pandas.Series
        Hourly carbon intensity with a UTC index covering ``scenario.year``.
    window_h : int
        ``W`` (0: the job runs at its hour).
    job : ShiftJob, optional
    max_window_h : int, optional
        Widest window of the comparison (default ``window_h``): it decides which jobs
        fit inside a block, the same for every ``W``.

    Raises
    ------
    ScenarioError
        More than one site, a window that does not fit a day, or carbon data that does
        not cover the scenario year (names the first missing hour).
    """
    job = job or ShiftJob()
    widest = window_h if max_window_h is None else max_window_h
    if window_h < 0 or widest < window_h or 2 * widest + 1 > HOURS_PER_DAY:
        raise ScenarioError(f"window +-{window_h} h (widest +-{widest} h): expected "
                            f"0 <= W <= widest and 2 widest + 1 <= {HOURS_PER_DAY} hours")
    # The schema wants a slack of at least 1 h; W = 0 is the status quo, run at arrival
    # by run_now, which never uses it.
    sc = _with_slack(scenario, max(2 * window_h, 1))
    params = build_params(sc)
    year = pd.date_range(f"{sc.year}-01-01", f"{sc.year + 1}-01-01", freq="h", tz="UTC",
                         inclusive="left", name="time")
    series = carbon_g_per_kwh.astype(np.float64)
    missing = year[~year.isin(series.index)]
    if len(missing):
        raise ScenarioError(f"{sc.name}: carbon series lacks {len(missing)} hours of "
                            f"{sc.year}, first {missing[0]}")
    t_len = len(year)
    exo = np.zeros((t_len, 1, len(EXO_SIGNALS)))
    exo[:, 0, _K["carbon_g_per_kwh"]] = series.reindex(year).to_numpy()
    exo[:, 0, _K["headroom_kw"]] = sc.sites[0].grid.feeder_capacity_kw
    windows = EpisodeWindows(year, sc, "test")
    nominal = np.flatnonzero(year.hour == job.hour_utc)  # each day's nominal hour
    arrivals, starts = [], []
    for a, b in windows.blocks:
        inside = nominal[(nominal - widest >= a) & (nominal + widest < b)]
        if not len(inside):
            continue
        arrivals.append(inside - window_h)
        first = int(inside[0] - window_h)
        starts += list(range(first, b, windows.episode_steps))
    arrive = np.concatenate(arrivals)
    exo[arrive, 0, _K["flexible_gpu_h"]] = job.gpu_h
    data = EnvData.from_arrays(year, exo, list(params.site_names))
    setup = EvalSetup(sc, params, data, windows, "perfect")
    return ShiftCase(setup, starts, arrive, window_h)


def direct_min_carbon(carbon: np.ndarray, arrivals: np.ndarray, window_h: int) -> np.ndarray:
    """Least carbon intensity in each job's window ``[arrival, arrival + 2 W]`` (numpy):
    the carbon of a job that runs in its cleanest allowed hour, per kWh."""
    offsets = np.arange(2 * window_h + 1)
    return carbon[arrivals[:, None] + offsets[None, :]].min(axis=1)
