"""``GridVecEnv``: a native stable-baselines3 ``VecEnv`` stepping B episodes in one call.

It is ``B`` copies of :class:`~gridrl.env.gym_env.GridEnv` simulated together by one
batched core call (:class:`~gridrl.env.batch.BatchSim`): same observations, actions,
rewards and episode ends. Env ``b`` draws its episode starts from its own generator,
seeded with ``seed + b`` (SB3's convention), so it reproduces a ``GridEnv`` reset with
seed ``seed + b``. Finished episodes restart at once (auto-reset); their last
observation is in ``info["terminal_observation"]``, with ``info["TimeLimit.truncated"]
= True`` (every episode end is a time limit) and ``info["episode_summary"]`` (KPIs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
    VecEnvWrapper,
)

from gridrl.env.batch import Backend, BatchSim, InvalidActionError
from gridrl.env.episodes import EpisodeWindows, Window
from gridrl.env.gym_env import make_data, resolve_scenario
from gridrl.env.inputs import EnvData
from gridrl.env.layout import ActionLayout, ObservationLayout, action_layout
from gridrl.env.params import build_params
from gridrl.env.wrappers import levels_to_box
from gridrl.scenario import Scenario

__all__ = ["DiscreteVecActions", "GridVecEnv"]

InfoMode = Literal["full", "episode"]


class GridVecEnv(VecEnv):
    """``n_envs`` episodes of a scenario as one SB3 ``VecEnv``.

    Parameters
    ----------
    scenario : path or Scenario
    n_envs : int
        Batch size ``B``.
    forecast_mode, period, start, data, signals, cube, backend, forecast_config
        As for :class:`~gridrl.env.gym_env.GridEnv` (inputs are built once and shared).
    info_mode : {"full", "episode"}
        ``full``: every step's info holds what ``GridEnv.step`` returns (all outputs
        summed over sites and the reward terms). ``episode``: per-step infos are empty
        except at episode ends (terminal observation, summary) — building ``B`` dicts of
        some 40 entries costs more than the simulation at large ``B``; the per-step
        numbers stay available as arrays in ``self.sim.totals`` (``[B, len(INFO_FIELDS)]``)
        and ``self.sim.values`` (``[B, N, F]``).
    seed : int, optional
        Same as calling ``seed(seed)`` before the first reset.
    """

    def __init__(
        self,
        scenario: str | Path | Scenario,
        n_envs: int,
        *,
        forecast_mode: str | None = "perfect",
        period: str = "train",
        start: Literal["random", "fixed"] = "random",
        data: EnvData | None = None,
        signals: Any = None,
        cube: Any = None,
        backend: Backend = "numba",
        info_mode: InfoMode = "full",
        forecast_config: Any = None,
        seed: int | None = None,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if info_mode not in ("full", "episode"):
            raise ValueError(f"info_mode must be 'full' or 'episode', got {info_mode!r}")
        if start not in ("random", "fixed"):
            raise ValueError(f"start must be 'random' or 'fixed', got {start!r}")
        sc, base = resolve_scenario(scenario)
        self.scenario = sc
        self.params = build_params(sc)
        self.data = make_data(sc, data=data, signals=signals, cube=cube,
                              forecast_mode=forecast_mode, base_dir=base,
                              forecast_config=forecast_config, seed=seed or 0)
        self.windows = EpisodeWindows(self.data.index, sc, period)
        self.period = period
        self.start_mode = start
        self.info_mode = info_mode
        self.sim = BatchSim(self.params, self.data, n_envs, backend)
        n_act = self.params.n_sites * self.params.n_actions_per_site
        self._act_shape = (n_envs, n_act)
        self.render_mode = None
        super().__init__(
            n_envs,
            gym.spaces.Box(-np.inf, np.inf, (self.sim.obs.dim,), dtype=np.float32),
            gym.spaces.Box(-1.0, 1.0, (n_act,), dtype=np.float32),
        )
        self._rngs = [gym.utils.seeding.np_random(None)[0] for _ in range(n_envs)]
        self._fixed_k = np.zeros(n_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None
        if seed is not None:
            self.seed(seed)

    # ---------------------------------------------------------------- layouts

    @property
    def observation_layout(self) -> ObservationLayout:
        """Names, units and scales of the observation entries."""
        return self.sim.obs.layout

    @property
    def action_layout(self) -> ActionLayout:
        """Names and physical ranges of the action entries."""
        return action_layout(self.params)

    # ---------------------------------------------------------------- episodes

    def _window(self, b: int) -> Window:
        opts = self._options[b] if self._options else {}
        if opts and opts.get("start") is not None:
            return self.windows.start_at(opts["start"])
        if self.start_mode == "fixed":
            fixed = self.windows.fixed
            w = fixed[(b + self._fixed_k[b] * self.num_envs) % len(fixed)]
            self._fixed_k[b] += 1
            return w
        return self.windows.sample(self._rngs[b])

    def reset(self) -> VecEnvObs:
        """Start a new episode in every env (seeds and options set before apply once)."""
        for b, s in enumerate(self._seeds):
            if s is not None:
                self._rngs[b] = gym.utils.seeding.np_random(s)[0]
                self._fixed_k[b] = 0
        windows = [self._window(b) for b in range(self.num_envs)]
        self.sim.begin(list(range(self.num_envs)), windows)
        self.reset_infos = [self._window_info(w) for w in windows]
        self._reset_seeds()
        self._reset_options()
        return self.sim.observe()

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions ``[B, N * A]`` of the next step."""
        self._actions = actions

    def _window_info(self, w: Window) -> dict:
        """Reset info of an episode window: its start, hours, steps and first row."""
        return {"start": str(self.data.index[w.start]), "hours": w.steps * self.params.step_h,
                "steps": w.steps, "row": w.start}

    def step_wait(self) -> VecEnvStepReturn:
        """Simulate one step for every env; auto-reset finished episodes."""
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        a = np.asarray(self._actions)
        self._actions = None
        if a.shape != self._act_shape:
            raise InvalidActionError(
                f"actions have shape {a.shape}, expected {self._act_shape} "
                f"({self.num_envs} envs x {self.params.n_sites} sites x "
                f"{self.params.action_names})"
            )
        sim = self.sim
        sim.set_action(a)
        done = sim.advance()
        obs = sim.obs_buffer.copy()
        rewards = sim.reward.astype(np.float32)
        if self.info_mode == "full":
            infos = [sim.step_info(b) for b in range(self.num_envs)]
            for info in infos:
                info["TimeLimit.truncated"] = False
        else:
            infos = [{} for _ in range(self.num_envs)]
        dones = done.copy()
        if sim.any_done:
            ended = np.flatnonzero(dones)
            summaries = sim.episode_summaries(ended)
            windows = []
            for b, summary in zip(ended.tolist(), summaries, strict=True):
                info = infos[b]
                info["terminal_observation"] = obs[b].copy()
                info["TimeLimit.truncated"] = True
                info["episode_summary"] = summary
                windows.append(self._window(b))
            sim.begin(ended, windows)
            obs[ended] = sim.observe_envs(ended)
            for b, w in zip(ended, windows, strict=True):
                self.reset_infos[b] = self._window_info(w)
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Nothing to release."""

    # ---------------------------------------------------------------- VecEnv plumbing

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the (shared) environment, once per index."""
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the shared environment."""
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None,
                   **method_kwargs) -> list[Any]:
        """Call a method of the shared environment once per index."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        """No gym wrappers inside."""
        return [False for _ in self._indices(indices)]


class DiscreteVecActions(VecEnvWrapper):
    """``MultiDiscrete`` actions for a :class:`GridVecEnv` (levels as in
    :mod:`gridrl.env.wrappers`)."""

    def __init__(self, venv: VecEnv, n_levels: int | None = None) -> None:
        if n_levels is None:
            n_levels = int(venv.unwrapped.scenario.env.discrete_action_levels)
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.n_levels = n_levels
        dim = venv.action_space.shape[0]
        space = gym.spaces.MultiDiscrete(np.full(dim, n_levels, dtype=np.int64))
        super().__init__(venv, action_space=space)

    def step_async(self, actions: np.ndarray) -> None:
        """Map levels to the Box actions of the wrapped env."""
        self.venv.step_async(levels_to_box(actions, self.n_levels))

    def step_wait(self) -> VecEnvStepReturn:
        """As the wrapped env."""
        return self.venv.step_wait()

    def reset(self) -> VecEnvObs:
        """As the wrapped env."""
        return self.venv.reset()
