"""``GridEnv``: the Gymnasium environment (one episode at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pandas as pd

from gridrl.env.batch import Backend, BatchSim, InvalidActionError
from gridrl.env.episodes import EpisodeWindows, Window
from gridrl.env.inputs import EnvData, load_env_data, make_forecast
from gridrl.env.layout import ActionLayout, ObservationLayout, action_layout
from gridrl.env.params import EnvParams, build_params
from gridrl.env.state import EnvState
from gridrl.scenario import Scenario, load_scenario

__all__ = ["GridEnv", "make_data", "resolve_scenario"]

StartMode = Literal["random", "fixed"]


def resolve_scenario(scenario: str | Path | Scenario) -> tuple[Scenario, Path | None]:
    """A validated scenario and the folder its relative paths are read from."""
    if isinstance(scenario, Scenario):
        return scenario, None
    path = Path(scenario)
    return load_scenario(path), path.parent


def make_data(scenario: Scenario, *, data: EnvData | None = None, signals: Any = None,
              cube: Any = None, forecast_mode: str | None = "perfect",
              base_dir: str | Path | None = None, forecast_config: Any = None,
              seed: int = 0) -> EnvData:
    """The environment inputs from whatever was given: ``data``; ``signals`` (with
    ``cube``, or a cube made in ``forecast_mode``); otherwise built from the scenario.
    Hourly rows become rows of ``env.step_minutes`` (:meth:`EnvData.at_step`)."""
    step_minutes = scenario.env.step_minutes
    if data is not None:
        return data.at_step(step_minutes)
    sites = [s.name for s in scenario.expanded_sites()]
    if signals is not None:
        if cube is None and forecast_mode is not None:
            cube = make_forecast(scenario, signals, forecast_mode,
                                 forecast_config=forecast_config, seed=seed)
        return EnvData.from_signals(signals, sites, cube).at_step(step_minutes)
    return load_env_data(scenario, forecast_mode, base_dir=base_dir,
                         forecast_config=forecast_config, seed=seed)


class GridEnv(gym.Env):
    r"""AI compute sites on constrained grids: defer, migrate and throttle flexible work.

    Each step lasts ``env.step_minutes`` (an hour by default) at every site of the
    scenario. The agent decides, per site, how much queued flexible work to start, the
    GPU power cap, where migrated work should go and how much of the queue to migrate
    (and the battery's power if it is an action). The physics, queues and curtailment are
    those of :mod:`gridrl.env.core` (its docstring lists every equation).

    **Action space** ``Box(-1, 1, (N * A,), float32)``, site after site, ``A = 4`` (5 when
    ``env.battery_control`` is ``setpoint`` or ``residual``). Values outside [-1, 1] are
    clipped (the count is ``info["action_clipped"]``); NaN raises ``InvalidActionError``;
    a wrong shape raises.

    ============  ==========================================  ==============================
    component     physical value                              meaning
    ============  ==========================================  ==============================
    ``run``       ``(a + 1) / 2`` in [0, 1]                   share of the site's queued
                                                              flexible work requested now,
                                                              earliest deadline first
    ``cap``       ``c_min + (a + 1)/2 (1 - c_min)``           GPU power cap fraction (all
                                                              GPUs of the site)
    ``route``     ``a * env.route_logit_scale``               softmax logit of the site as a
                                                              destination of migrated work
    ``migrate``   ``(a + 1)/2 * env.max_migration_fraction``  share of the queue sent to the
                                                              other sites (0 with one site)
    ``battery``   ``a * battery.power_kw`` (kW, + charges)    ``setpoint``: the setpoint
                  ``2 a * battery.power_kw`` (kW)             ``residual``: added to the
                                                              rule's setpoint (a = 0: rule)
    ============  ==========================================  ==============================

    **Observation space** ``Box(-inf, inf, (D,), float32)``: see :mod:`gridrl.env.layout`
    (``env.observation_layout`` names every entry with unit and scale).

    ===============================  =============  ======================================
    block                            size           content
    ===============================  =============  ======================================
    calendar                         4              hour-of-day and weekday sin/cos (UTC)
    per site: signals                8              pv, wind, headroom (/ site ref kW),
                                                    carbon, price, temperature (/ scales),
                                                    inference demand, arrivals (/ GPUs)
    per site: forecasts              2 K H          P50 and P10-P90 spread of K targets at
                                                    H horizons (if a forecast cube is used)
    per site: state                  E + 5          queue in E coarse slack groups,
                                                    overdue, in transit, SoC, cap
    ===============================  =============  ======================================

    **Reward** ``-(w_c carbon_kg + w_e cost + w_s slo_gpu_h + w_o overdue_gpu_h
    + w_g overdraw_kwh) / scale`` summed over sites (``scenario.reward``); at the last
    step, minus the charge for work left queued or in transit
    (``physics.terminal_value_per_gpu_h``). ``info`` holds every step output summed over
    sites (``core.OUTPUT_FIELDS``), the weighted reward terms (``reward_*``), the
    clipped-action count and the data row; the last step adds ``episode_summary``
    (KPIs of :mod:`gridrl.env.kpis`, fleet and per site). Per-site values of the hour
    are in ``env.sim.values[0]`` (``[N, len(core.OUTPUT_FIELDS)]``).

    **Episode end**: after ``env.episode_hours`` hours of steps, or earlier at the end of the
    period block the episode lies in. Both are time limits, reported as
    ``truncated=True``; ``terminated`` is always False (the process has no terminal
    state). Call ``reset()`` to continue.

    **Scenario keys** that shape it: ``sites[*]`` (GPUs, power, PUE, battery, workload
    deadlines), ``throttle``, ``reward``, ``env.*`` (``slack_buckets``,
    ``cap_min_fraction``, ``max_migration_fraction``, ``inference_remote_fraction_max``,
    ``route_logit_scale``, ``battery_control``, ``battery_discharge_threshold_fraction``,
    ``forecast_targets``, ``forecast_horizons_h``, ``forecast_quantiles``,
    ``observation_slack_edges_h``, ``obs_*_scale``, ``episode_hours``,
    ``terminal_queue_valuation``), ``network`` and ``periods``.

    Parameters
    ----------
    scenario : path or Scenario
        Scenario YAML (relative data paths are read from its folder) or object.
    forecast_mode : str or None
        Forecast cube mode (``perfect``, ``persistence``, ``none``, ``noisy(sigma)``,
        ``lightgbm``) when the env builds its inputs; None: no forecast fields.
    period : {"train", "test"}
    start : {"random", "fixed"}
        Random starts inside the period, or its fixed episode windows in order
        (:mod:`gridrl.env.episodes`). ``reset(options={"start": row or timestamp})``
        starts at a given hour.
    data : EnvData, optional
        Exogenous arrays (and cube) to use instead of building them.
    signals, cube : optional
        A :class:`~gridrl.data.signals.Signals` table and/or forecast cube to use.
    backend : {"numba"}
        The compiled kernel, the only stepping path (the numpy ``core.step`` is a test
        oracle; ``"numpy"`` is refused).
    fixed_offset, fixed_stride : int
        With ``start="fixed"``, the k-th reset uses window ``offset + k * stride``
        (cyclic); a VecEnv gives env ``b`` offset ``b`` and stride ``B``.
    forecast_config : ForecastConfig, optional
    seed : int, optional
        Seeds the episode starts (like ``reset(seed=...)``) and forecast noise.

    Attributes
    ----------
    params : EnvParams
    data : EnvData
    sim : BatchSim
        The batch-of-one simulator (state, rows, sums).
    window : Window
        The current episode's rows.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: str | Path | Scenario,
        *,
        forecast_mode: str | None = "perfect",
        period: str = "train",
        start: StartMode = "random",
        data: EnvData | None = None,
        signals: Any = None,
        cube: Any = None,
        backend: Backend = "numba",
        fixed_offset: int = 0,
        fixed_stride: int = 1,
        forecast_config: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        sc, base = resolve_scenario(scenario)
        if start not in ("random", "fixed"):
            raise ValueError(f"start must be 'random' or 'fixed', got {start!r}")
        self.scenario = sc
        self.params: EnvParams = build_params(sc)
        self.data: EnvData = make_data(sc, data=data, signals=signals, cube=cube,
                                       forecast_mode=forecast_mode, base_dir=base,
                                       forecast_config=forecast_config, seed=seed or 0)
        self.forecast_mode = getattr(self.data.forecast, "mode", forecast_mode)
        self.period = period
        self.windows = EpisodeWindows(self.data.index, sc, period)
        self.start_mode = start
        self._fixed_k = 0
        self._fixed_offset = int(fixed_offset)
        self._fixed_stride = int(fixed_stride)
        self.sim = BatchSim(self.params, self.data, 1, backend)
        n_act = self.params.n_sites * self.params.n_actions_per_site
        self._act_shape = (n_act,)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.sim.obs.dim,),
                                                dtype=np.float32)
        self.window = Window(0, 0)
        self._over = True
        if seed is not None:
            self.np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)

    # ---------------------------------------------------------------- layouts, access

    @property
    def observation_layout(self) -> ObservationLayout:
        """Names, units and scales of the observation entries."""
        return self.sim.obs.layout

    @property
    def action_layout(self) -> ActionLayout:
        """Names and physical ranges of the action entries."""
        return action_layout(self.params)

    @property
    def state(self) -> EnvState:
        """Live core state (batch of one; copy what you keep)."""
        return self.sim.state

    def episode_exo(self) -> np.ndarray:
        """``[L, N, K]`` exogenous rows of the current episode (``core.EXO_SIGNALS``)."""
        return self.sim.episode_exo(0)

    def episode_index(self) -> pd.DatetimeIndex:
        """Timestamps of the current episode's steps."""
        return self.data.index[self.window.start : self.window.start + self.window.steps]

    def _window(self, options: dict | None) -> Window:
        if options and options.get("start") is not None:
            return self.windows.start_at(options["start"])
        if self.start_mode == "fixed":
            fixed = self.windows.fixed
            w = fixed[(self._fixed_offset + self._fixed_k * self._fixed_stride) % len(fixed)]
            self._fixed_k += 1
            return w
        return self.windows.sample(self.np_random)

    # ---------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode. ``options={"start": row or timestamp}`` fixes its first step."""
        super().reset(seed=seed)
        if seed is not None:
            self._fixed_k = 0
        self.window = self._window(options)
        self.sim.begin([0], [self.window])
        self._over = False
        obs = self.sim.observe()[0]
        return obs, {"start": str(self.data.index[self.window.start]),
                     "hours": self.window.steps * self.sim.params.step_h,
                     "steps": self.window.steps, "row": self.window.start}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Simulate one step (see the class docstring)."""
        if self._over:
            raise RuntimeError("the episode is over (or never started): call reset()")
        a = np.asarray(action)
        if a.shape != self._act_shape:
            raise InvalidActionError(
                f"action has shape {a.shape}, expected {self._act_shape} "
                f"({self.params.n_sites} sites x {self.params.action_names})"
            )
        sim = self.sim
        sim.set_action(a.reshape(1, -1))
        done = bool(sim.advance()[0])
        obs = sim.obs_buffer[0].copy()
        info = sim.step_info(0)
        if done:
            info["episode_summary"] = sim.episode_summary(0)
            self._over = True
        return obs, float(sim.reward[0]), False, done, info
