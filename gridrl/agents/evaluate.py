"""The evaluation harness: every policy is judged here, the same way.

``evaluate(policy, scenario, period="test", episodes=N, seed=S, forecast_mode=...)``
returns one row per episode: the episode number and start, every KPI of
:mod:`gridrl.env.kpis` (fleet totals, computed by the env's own ``episode_kpis``) and
the objective ``J`` (the sum of the env's rewards, terminal charge included), and
:data:`SITE_KPIS` per site as ``<kpi>@<site>`` columns.

Episodes are chosen from the period by the seed alone, so every policy evaluated with
the same seed sees the same episodes: with ``episodes=None`` all of the period's fixed
windows (``env.episode_hours`` tiles of each block); with ``episodes <= `` their number,
that many of them drawn without replacement; with more, all of them plus random
windows. Stepped policies run through the env's batched simulator (``BatchSim``), all
episodes of one length in one batch. ``lp_bound`` is not stepped: its row holds the
LP's optimum and the KPIs of its optimal plan.

``gap_closed(J, J_run_now, J_lp_bound) = (J - J_run_now) / (J_lp_bound - J_run_now)``;
:func:`compare_with_references` evaluates a policy beside both references on the same
episodes (``gridrl evaluate``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from gridrl.agents.policy import EpisodeBatch, ForecastView, Policy, StepContext, as_policy
from gridrl.agents.registry import REFERENCES, load_policy
from gridrl.agents.train import META_FILE
from gridrl.env import core
from gridrl.env.batch import BatchSim
from gridrl.env.episodes import EpisodeWindows, Window
from gridrl.env.gym_env import make_data, resolve_scenario
from gridrl.env.inputs import EnvData
from gridrl.env.kpis import KPIS, episode_kpis
from gridrl.env.params import EnvParams, build_params
from gridrl.errors import GridrlError
from gridrl.forecast.config import ForecastConfig
from gridrl.io import write_with
from gridrl.scenario import Scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from gridrl.env.gym_env import GridEnv
    from gridrl.env.vec_env import GridVecEnv

# What an evaluation runs on: a scenario (file or model), a ready setup, an env (its
# scenario and inputs are taken), or a factory of one.
ScenarioSource: TypeAlias = (
    "str | Path | Scenario | EvalSetup | GridEnv | GridVecEnv | Callable[[], GridEnv]"
)
# A policy: a reference name or trained policy folder, a policy object or an SB3 model.
PolicySource: TypeAlias = "str | Path | Policy | BaseAlgorithm"
#: ``record(obs, action, reward, step)`` of :func:`evaluate_detailed`
Recorder: TypeAlias = Callable[[np.ndarray, np.ndarray, np.ndarray, int], None]
ForecastConfigSource: TypeAlias = "str | Path | ForecastConfig | None"

__all__ = [
    "Comparison", "EvalResult", "EvalSetup", "EvaluationError", "Trace",
    "compare_with_references", "evaluate", "evaluate_detailed", "forecast_for", "gap_closed",
    "make_setup", "select_windows",
]

#: Columns of an evaluation table besides the KPIs.
ID_COLUMNS = ("episode", "start")
OBJECTIVE = "J"
# |J_lp_bound - J_run_now| below this (reward units) leaves no gap to close.
_NO_GAP = 1e-12
#: The references gap closed runs between: 0 at the first's J, 1 at the second's.
GAP_REFERENCES = ("run_now", "lp_bound")
#: KPIs of a comparison's summary (mean per policy), in display order.
SUMMARY_KPIS = (
    "J", "carbon_kg", "cost", "energy_kwh", "grid_import_kwh", "renewable_share",
    "energy_per_useful_gpu_h", "carbon_per_useful_gpu_h", "work_done_gpu_h",
    "deadline_miss_gpu_h", "overdue_gpu_h", "slo_violation_gpu_h", "headroom_violation_h",
    "overdraw_kwh", "mean_cap", "leftover_gpu_h", "work_lost_gpu_h",
)
DEFAULT_FORECAST_MODE = "perfect"  # of a reference evaluated without --forecast
#: KPIs also reported per site, as ``<kpi>@<site>`` columns (per-site savings)
SITE_KPIS = ("carbon_kg", "cost", "energy_kwh", "overdraw_kwh")
SITE_SEP = "@"


class EvaluationError(GridrlError, ValueError):
    """An evaluation asked for something the period cannot give (names the argument)."""


@dataclass(eq=False)
class EvalSetup:
    """A scenario's parameters, inputs and period windows, built once and reused by
    every policy of a comparison.

    Attributes
    ----------
    scenario : Scenario
    params : EnvParams
    data : EnvData
    windows : EpisodeWindows
    forecast_mode : str or None
    """

    scenario: Scenario
    params: EnvParams
    data: EnvData
    windows: EpisodeWindows
    forecast_mode: str | None

    @property
    def forecasts(self) -> ForecastView:
        """What references see of the forecasts."""
        mode = getattr(self.data.forecast, "mode", None) or self.forecast_mode
        return ForecastView(self.data, mode)


def make_setup(scenario: ScenarioSource, *, period: str = "test",
               forecast_mode: str | None = "perfect",
               forecast_config: ForecastConfigSource = None, data: EnvData | None = None,
               seed: int = 0) -> EvalSetup:
    """Build (or take) what an evaluation needs.

    Parameters
    ----------
    scenario
        A scenario YAML path or :class:`Scenario`; an :class:`EvalSetup` (returned as
        is); a ``GridEnv`` / ``GridVecEnv`` (its scenario and inputs are used); or a
        callable returning one of these (an env factory).
    period : {"train", "test"}
    forecast_mode, forecast_config
        Used when the inputs are built here (``gridrl.env.inputs.load_env_data``; noisy
        and LightGBM forecasts are seeded with the scenario's ``seed``).
    seed
        Unused (kept for call compatibility): episodes are chosen by the caller.
    data : EnvData, optional
        Inputs to use instead of building them.
    """
    if isinstance(scenario, EvalSetup):
        return scenario
    if callable(scenario) and not isinstance(scenario, (str, Path, Scenario)):
        scenario = scenario()
    if hasattr(scenario, "params") and hasattr(scenario, "data") and hasattr(scenario, "scenario"):
        sc, data = scenario.scenario, data if data is not None else scenario.data
        mode = getattr(scenario, "forecast_mode", None) or getattr(data.forecast, "mode", None)
    else:
        sc, base = resolve_scenario(scenario)
        if data is None:
            # forecasts are part of the scenario's data: seeded by the scenario, not by
            # the evaluation seed, so every policy and seed sees the same ones
            data = make_data(sc, forecast_mode=forecast_mode, base_dir=base,
                             forecast_config=forecast_config, seed=sc.seed)
        mode = getattr(data.forecast, "mode", None) or forecast_mode
    data = data.at_step(sc.env.step_minutes)  # hourly inputs as the scenario's steps
    params = build_params(sc)
    windows = EpisodeWindows(data.index, sc, period)
    return EvalSetup(sc, params, data, windows, mode)


def select_windows(windows: EpisodeWindows, episodes: int | None, seed: int,
                   within: int | None = None) -> list[Window]:
    """The evaluation episodes: a function of the period and the seed only (module doc).

    With ``within``, ``episodes`` of the ``within`` windows the same seed selects (an
    agent's subset of a study's episodes, so that its rows pair with the others');
    ``within=None`` draws among every fixed window, as without it.
    """
    fixed = list(windows.fixed) if within is None else select_windows(windows, within, seed)
    if episodes is None:
        return fixed
    if episodes < 1:
        raise EvaluationError(f"episodes must be >= 1, got {episodes}")
    rng = np.random.default_rng(seed)
    if episodes <= len(fixed):
        pick = np.sort(rng.choice(len(fixed), size=episodes, replace=False))
        return [fixed[k] for k in pick]
    if within is not None:
        raise EvaluationError(f"episodes ({episodes}) must not exceed the {len(fixed)} "
                              "windows they are drawn within")
    return fixed + [windows.sample(rng) for _ in range(episodes - len(fixed))]


@dataclass(eq=False)
class Trace:
    """Hour-by-hour record of one episode (for dispatch plots).

    Attributes
    ----------
    index : pandas.DatetimeIndex
        The episode's hours.
    site_names : tuple of str
    values : ndarray
        ``[L, N, F]`` step outputs (``core.OUTPUT_FIELDS``).
    exo : ndarray
        ``[L, N, K]`` exogenous signals (``core.EXO_SIGNALS``).
    policy : str
    """

    index: pd.DatetimeIndex
    site_names: tuple[str, ...]
    values: np.ndarray
    exo: np.ndarray
    policy: str

    def field(self, name: str) -> np.ndarray:
        """``[L, N]`` one output field."""
        return self.values[..., core.OUTPUT_FIELDS.index(name)]

    def signal(self, name: str) -> np.ndarray:
        """``[L, N]`` one exogenous signal."""
        return self.exo[..., core.EXO_SIGNALS.index(name)]


@dataclass(eq=False)
class EvalResult:
    """What :func:`evaluate_detailed` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per episode (see the module docstring).
    traces : dict
        Episode number -> :class:`Trace`, for the episodes asked for.
    policy_s_per_step : float
        Mean wall time of the policy's decision per hour and episode (the whole solve
        per episode for ``lp_bound``).
    """

    table: pd.DataFrame
    traces: dict[int, Trace] = field(default_factory=dict)
    policy_s_per_step: float = float("nan")


def gap_closed(
    j: npt.ArrayLike, j_run_now: npt.ArrayLike, j_lp_bound: npt.ArrayLike
) -> float | np.ndarray:
    """``(J - J_run_now) / (J_lp_bound - J_run_now)``, elementwise; NaN where the bound
    does not improve on ``run_now``."""
    j, j0, j1 = (np.asarray(x, dtype=np.float64) for x in (j, j_run_now, j_lp_bound))
    den = j1 - j0
    ok = np.abs(den) > _NO_GAP
    out = np.divide(j - j0, den, out=np.full(np.broadcast(j, den).shape, np.nan), where=ok)
    return float(out) if out.ndim == 0 else out


def forecast_for(
    policy: str | Path, mode: str | None, config: str | None
) -> tuple[str, str | None]:
    """Forecast mode and forecaster config to evaluate ``policy`` with: the given ones,
    else those it was trained with (its ``meta.json``), else perfect forecasts."""
    meta_path = Path(policy) / META_FILE
    if str(policy) not in REFERENCES and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        mode = mode or meta.get("forecast_mode")
        config = config or meta.get("forecast_config")
    return mode or DEFAULT_FORECAST_MODE, config


@dataclass(eq=False)
class Comparison:
    """A policy (``label``) evaluated beside :data:`GAP_REFERENCES` on the same episodes.

    ``results`` holds the policy's result first, then the references' (a reference
    compared with itself appears once).
    """

    label: str
    results: dict[str, EvalResult]

    def _reference_j(self, name: str) -> np.ndarray:
        return self.results[name].table[OBJECTIVE].to_numpy()

    @property
    def kpis(self) -> pd.DataFrame:
        """Every episode of every policy: ``policy``, the KPIs, ``J`` and ``gap_closed``."""
        tables = [res.table.assign(policy=name) for name, res in self.results.items()]
        rows = pd.concat(tables, ignore_index=True)
        rows = rows[["policy", *[c for c in rows.columns if c != "policy"]]]
        n = len(self.results)
        j0, j1 = (np.tile(self._reference_j(r), n) for r in GAP_REFERENCES)
        rows["gap_closed"] = gap_closed(rows[OBJECTIVE].to_numpy(), j0, j1)
        return rows

    def summary(self) -> pd.DataFrame:
        """Mean of :data:`SUMMARY_KPIS` per policy (one row each, the policy first)."""
        return self.kpis.groupby("policy", sort=False)[list(SUMMARY_KPIS)].mean()

    def gap_closed_mean(self) -> float:
        """Gap closed by the policy's mean ``J`` between the references' mean ``J``."""
        j = self.results[self.label].table[OBJECTIVE].mean()
        return gap_closed(j, *(self._reference_j(r).mean() for r in GAP_REFERENCES))

    def gap_closed_per_episode(self) -> np.ndarray:
        """Gap closed by the policy in each episode (paired with the references')."""
        j = self.results[self.label].table[OBJECTIVE].to_numpy()
        return gap_closed(j, *(self._reference_j(r) for r in GAP_REFERENCES))

    def write_tables(self, folder: Path) -> list[Path]:
        """``kpis.csv``, ``kpis.parquet`` (every episode) and ``summary.csv`` (means)."""
        folder.mkdir(parents=True, exist_ok=True)
        rows, means = self.kpis, self.summary()
        paths = [folder / "kpis.csv", folder / "kpis.parquet", folder / "summary.csv"]
        write_with(paths[0], lambda p: rows.to_csv(p, index=False))
        write_with(paths[1], lambda p: rows.to_parquet(p, index=False))
        write_with(paths[2], lambda p: means.to_csv(p))
        return paths


def compare_with_references(
    policy: PolicySource, label: str, setup: EvalSetup, *, period: str = "test",
    episodes: int | None = None, seed: int = 0, progress: bool = False,
) -> Comparison:
    """Evaluate ``policy`` (named ``label``; its first episode traced) and the
    :data:`GAP_REFERENCES` on the same episodes of ``setup``."""
    runs = {label: policy}
    runs.update({ref: load_policy(ref) for ref in GAP_REFERENCES if ref != label})
    results = {
        name: evaluate_detailed(
            pol, setup, period=period, episodes=episodes, seed=seed, progress=progress,
            trace_episodes=(0,) if name == label else (),
        )
        for name, pol in runs.items()
    }
    return Comparison(label, results)


def evaluate(policy: PolicySource, scenario: ScenarioSource, *, period: str = "test",
             episodes: int | None = None, seed: int = 0,
             forecast_mode: str | None = "perfect", forecast_config: ForecastConfigSource = None,
             data: EnvData | None = None, deterministic: bool = True,
             backend: str = "numba", progress: bool = False,
             starts: list[int] | None = None, within: int | None = None) -> pd.DataFrame:
    """Evaluate a policy; one row per episode (see the module docstring).

    Parameters
    ----------
    policy
        A policy object (:mod:`gridrl.agents.policy`), an SB3 model, a reference name
        (``"mpc"``) or a trained policy folder.
    scenario
        Scenario path or object, :class:`EvalSetup`, env, or env factory
        (:func:`make_setup`).
    period, episodes, seed, within
        Which episodes (:func:`select_windows`).
    forecast_mode, forecast_config, data
        Inputs (:func:`make_setup`); the observations carry the forecasts of this mode,
        and references read them through :class:`ForecastView`.
    deterministic
        For trained policies loaded by name here.
    backend
        ``numba`` (compiled kernel) or ``numpy`` (reference core).
    progress
        Show a progress bar.
    starts : list of int, optional
        Explicit episode start rows (each inside a block of the period) instead of
        ``episodes``.
    """
    return evaluate_detailed(policy, scenario, period=period, episodes=episodes, seed=seed,
                             forecast_mode=forecast_mode, forecast_config=forecast_config,
                             data=data, deterministic=deterministic, backend=backend,
                             progress=progress, starts=starts,
                             within=within).table


def _resolve_policy(policy: PolicySource, deterministic: bool) -> Policy:
    if isinstance(policy, (str, Path)):
        return load_policy(policy, deterministic=deterministic)
    return as_policy(policy)


def _row(k: int, window: Window, setup: EvalSetup, kpis: dict[str, float], j: float,
         charge: float, per_site: dict[str, dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"episode": k, "start": setup.data.index[window.start]}
    row.update({kpi.name: kpis[kpi.name] for kpi in KPIS})
    row[OBJECTIVE] = j
    row["terminal_charge"] = charge
    for site, site_kpis in per_site.items():
        row.update({f"{name}{SITE_SEP}{site}": site_kpis[name] for name in SITE_KPIS})
    return row


def _bound_sites(setup: EvalSetup, values: np.ndarray, steps: int) -> dict[str, dict]:
    """Per-site KPIs of an LP plan ``[L, N, F]`` (work terms left at zero)."""
    sums = values.sum(0)
    step_h = setup.params.step_h
    return {name: episode_kpis(sums[i], steps * step_h, 0.0, 0.0, step_h)
            for i, name in enumerate(setup.params.site_names)}


def evaluate_detailed(policy: PolicySource, scenario: ScenarioSource, *,
                      period: str = "test", episodes: int | None = None, seed: int = 0,
                      forecast_mode: str | None = "perfect",
                      forecast_config: ForecastConfigSource = None,
                      data: EnvData | None = None, deterministic: bool = True,
                      backend: str = "numba", progress: bool = False,
                      trace_episodes: tuple[int, ...] = (),
                      on_step: Callable[[int, int], None] | None = None,
                      starts: list[int] | None = None,
                      within: int | None = None,
                      record: Recorder | None = None) -> EvalResult:
    """:func:`evaluate` plus hour-by-hour traces of ``trace_episodes`` (episode numbers)
    and the policy's decision time. ``on_step(done, total)`` reports progress;
    ``record(obs, action, reward, step)`` sees every step of a stepped policy: the
    observations ``[B, D]`` it decided on, its actions ``[B, A]``, the rewards ``[B]``
    and the step number in the batch of episodes (batches of equal-length episodes
    come one after another, each from step 0)."""
    setup = make_setup(scenario, period=period, forecast_mode=forecast_mode,
                       forecast_config=forecast_config, data=data, seed=seed)
    pol = _resolve_policy(policy, deterministic)
    if starts is not None:
        windows = [setup.windows.at(int(s)) for s in starts]
    else:
        windows = select_windows(setup.windows, episodes, seed, within)
    view = setup.forecasts
    name = getattr(pol, "name", type(pol).__name__)
    rows: list[dict[str, Any]] = [{} for _ in windows]
    traces: dict[int, Trace] = {}
    total_steps = sum(w.steps for w in windows)
    done_steps = 0
    policy_s = 0.0
    bar = _progress(progress, f"evaluating {name}", total_steps)
    try:
        if getattr(pol, "is_bound", False):
            batch = EpisodeBatch(setup.params, setup.data, windows, view, seed)
            pol.reset(batch)
            for k, w in enumerate(windows):
                t0 = time.perf_counter()
                res = pol.solve_episode(batch, k)
                policy_s += time.perf_counter() - t0
                step_h = setup.params.step_h
                kpis = episode_kpis(res.values.sum(0), w.steps * step_h, 0.0,
                                    res.leftover_gpu_h, step_h)
                rows[k] = _row(k, w, setup, kpis, res.J, res.terminal_charge,
                               _bound_sites(setup, res.values, w.steps))
                if k in trace_episodes:
                    traces[k] = _trace(setup, w, res.values, name)
                done_steps += w.steps
                _advance(bar, on_step, done_steps, total_steps, w.steps)
        else:
            by_len: dict[int, list[int]] = {}
            for k, w in enumerate(windows):
                by_len.setdefault(w.steps, []).append(k)
            for steps, ks in by_len.items():
                group = [windows[k] for k in ks]
                t_pol, done_steps = _run_group(pol, setup, view, group, ks, steps, seed,
                                               backend, rows, traces, trace_episodes, name,
                                               bar, on_step, done_steps, total_steps,
                                               record)
                policy_s += t_pol
    finally:
        if bar is not None:
            bar[0].stop()
    table = pd.DataFrame(rows)
    return EvalResult(table=table, traces=traces,
                      policy_s_per_step=policy_s / max(total_steps, 1))


def _run_group(pol, setup, view, group, ks, steps, seed, backend, rows, traces,
               trace_episodes, name, bar, on_step, done_steps, total_steps, recorder=None):
    params = setup.params
    n_b = len(group)
    sim = BatchSim(params, setup.data, n_b, backend)
    sim.begin(list(range(n_b)), group)
    batch = EpisodeBatch(params, setup.data, group, view, seed)
    pol.reset(batch)
    want = [j for j, k in enumerate(ks) if k in trace_episodes]
    record = np.zeros((steps, len(want), params.n_sites, len(core.OUTPUT_FIELDS)))
    expect = (n_b, params.n_sites * params.n_actions_per_site)
    obs = sim.observe()
    policy_s = 0.0
    for step in range(steps):
        ctx = StepContext(batch, sim.state, sim.rows.copy(), step)
        t0 = time.perf_counter()
        action = np.asarray(pol.act(obs, ctx), dtype=np.float64)
        policy_s += time.perf_counter() - t0
        if action.shape != expect:
            raise ValueError(f"policy {name!r} returned actions of shape {action.shape}, "
                             f"expected {expect}")
        sim.set_action(action)
        sim.advance()
        if recorder is not None:
            recorder(obs, action, sim.reward, step)
        if want:
            record[step] = sim.values[want]
        obs = sim.obs_buffer.copy()
        done_steps += n_b
        _advance(bar, on_step, done_steps, total_steps, n_b)
    for j, (k, w) in enumerate(zip(ks, group, strict=True)):
        summary = sim.episode_summary(j)
        rows[k] = _row(k, w, setup, summary["kpis"], summary["kpis"]["return"],
                       summary["kpis"]["terminal_charge"], summary["kpis_per_site"])
    for j_rec, j in enumerate(want):
        traces[ks[j]] = _trace(setup, group[j], record[:, j_rec], name)
    return policy_s, done_steps


def _trace(setup: EvalSetup, w: Window, values: np.ndarray, name: str) -> Trace:
    rows = slice(w.start, w.start + w.steps)
    return Trace(setup.data.index[rows], tuple(setup.params.site_names), np.array(values),
                 setup.data.exo[rows].copy(), name)


def _progress(show: bool, label: str, total: int):
    if not show:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task


def _advance(bar, on_step, done: int, total: int, by: int) -> None:
    if bar is not None:
        bar[0].advance(bar[1], by)
    if on_step is not None:
        on_step(done, total)
