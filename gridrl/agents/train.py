"""Train stable-baselines3 agents on the native VecEnv and write a policy directory.

A policy directory (read by :mod:`gridrl.export` and by the evaluation harness)::

    model.zip           SB3 save of the trained model
    vecnormalize.pkl    VecNormalize statistics (when used)
    meta.json           algo, scenario path and content hash, forecast mode,
                        observation/action layout of the env, training metadata
    checkpoints/        periodic checkpoints (model and VecNormalize statistics)
    monitor.csv         one row per finished training episode (return, length, time)
    logs/progress.csv   SB3 logger output; logs/ also holds the TensorBoard events

Algorithms: PPO, SAC, TD3, A2C (stable-baselines3) and RecurrentPPO (sb3-contrib).
"""

from __future__ import annotations

import functools
import json
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gridrl.io import write_json_atomic, write_with

MODEL_FILE = "model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
META_FILE = "meta.json"


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class of an algorithm name (``"PPO"``, ``"RecurrentPPO"``)."""
    from gridrl.experiments.schema import algo_class as _algo_class

    return _algo_class(algo)


def load_forecaster(forecast_config: str | Path | None) -> Any:
    """The forecaster config object of a ``forecasts/*.yaml`` path (None: defaults)."""
    if forecast_config is None:
        return None
    from gridrl.forecast.config import load_forecast_config

    return load_forecast_config(forecast_config)


def env_inputs(
    scenario_path: str | Path, forecast_mode: str, forecast_config: str | Path | None
) -> Any:
    """Signals and forecast cube of a scenario (:class:`gridrl.env.EnvData`), built once.

    The forecast cube is seeded with the scenario's own ``seed``, not the training
    seed: forecasts are part of the scenario's data, so every training seed (and every
    policy) sees the same forecasts, and a LightGBM cube is fitted once per scenario,
    config and mode (then read from the disk cache). Within a process the inputs are
    kept for the next call with the same files (a worker runs many units), keyed by
    the files' modification times so an edited scenario is read again.
    """
    paths = [Path(scenario_path)] + ([Path(forecast_config)] if forecast_config else [])
    stamp = tuple(p.stat().st_mtime_ns for p in paths)
    return _env_inputs_cached(str(scenario_path), forecast_mode, forecast_config, stamp)


@functools.lru_cache(maxsize=2)
def _env_inputs_cached(
    scenario_path: str, forecast_mode: str, forecast_config: str | Path | None, stamp: tuple
) -> Any:
    from gridrl.env import load_env_data
    from gridrl.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    return load_env_data(
        scenario,
        forecast_mode,
        base_dir=Path(scenario_path).parent,
        forecast_config=load_forecaster(forecast_config),
        seed=scenario.seed,
    )


def make_training_env(
    scenario_path: str | Path,
    *,
    n_envs: int,
    seed: int,
    forecast_mode: str,
    forecast_config: str | Path | None,
    period: str = "train",
) -> Any:
    """The native batched VecEnv of the scenario: ``n_envs`` episodes stepped together,
    random episode starts in ``period`` seeded by ``seed``, per-step infos only at
    episode ends."""
    from gridrl.env import GridVecEnv

    return GridVecEnv(
        scenario_path,
        n_envs,
        data=env_inputs(scenario_path, forecast_mode, forecast_config),
        period=period,
        start="random",
        info_mode="episode",  # training reads rewards only; KPIs come from evaluation
        seed=seed,
    )


def _layouts(venv: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return venv.observation_layout.to_dict(), venv.action_layout.to_dict()


def _make_progress_callback(
    report: Callable[[int, int], None], total: int, every_steps: int
) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        """Reports ``(done, total)`` steps every ``every_steps`` environment steps."""

        def __init__(self) -> None:
            super().__init__()
            self._next = 0

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                report(self.num_timesteps, total)
                self._next = self.num_timesteps + every_steps
            return True

        def _on_training_end(self) -> None:
            report(self.num_timesteps, total)

    return _Progress()


def train_policy(
    scenario_path: str | Path,
    algo: str,
    out_dir: str | Path,
    *,
    seed: int,
    timesteps: int,
    n_envs: int,
    forecast_mode: str,
    forecast_config: str | Path | None = None,
    policy: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    vecnormalize: Any = None,
    checkpoint_every_steps: int | None = None,
    tensorboard: bool = True,
    progress_bar: bool = True,
    progress: Callable[[int, int], None] | None = None,
    progress_every_fraction: float = 0.01,
) -> dict[str, Any]:
    """Train one SB3 agent on the scenario's training period and save a policy directory.

    Parameters
    ----------
    scenario_path
        Scenario YAML.
    algo
        ``PPO``, ``SAC``, ``TD3``, ``A2C`` or ``RecurrentPPO``.
    out_dir
        The policy directory to write (created).
    seed
        Seeds SB3, torch, numpy and the environment's episode draws.
    timesteps
        Training budget in environment steps (summed over the VecEnv's episodes).
    n_envs
        Episodes stepped together by the native VecEnv.
    forecast_mode
        Forecast mode of the observations (``lightgbm``, ``perfect``, ``none``, ...).
    policy, hyperparameters, policy_kwargs
        SB3 policy name (default ``MlpPolicy``, ``MlpLstmPolicy`` for RecurrentPPO),
        constructor keyword arguments and ``policy_kwargs``.
    vecnormalize
        A :class:`~gridrl.experiments.schema.VecNormalizeSpec` (or a dict of
        ``VecNormalize`` arguments); None trains on raw observations and rewards.
    checkpoint_every_steps
        Save a checkpoint every this many environment steps (None: no checkpoints).
    tensorboard
        Also write TensorBoard event files into ``logs/``.
    progress_bar
        Show SB3's rich progress bar (interactive runs).
    progress
        Called with ``(done_steps, total_steps)`` about every
        ``progress_every_fraction`` of the budget (run-level progress display).

    Returns
    -------
    dict
        Training metadata (also in ``meta.json["training"]``): ``timesteps``,
        ``wall_time_s``, ``env_steps_per_s``, ``seed``, ``n_envs``, ...
    """
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from gridrl import __version__
    from gridrl.scenario import load_scenario

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(scenario_path)
    cls = algo_class(algo)
    policy = policy or ("MlpLstmPolicy" if algo == "RecurrentPPO" else "MlpPolicy")
    set_random_seed(seed)
    venv = make_training_env(
        scenario_path,
        n_envs=n_envs,
        seed=seed,
        forecast_mode=forecast_mode,
        forecast_config=forecast_config,
    )
    obs_layout, act_layout = _layouts(venv)
    venv = VecMonitor(venv, filename=str(out / "monitor.csv"))
    norm_args: dict[str, Any] | None = None
    if vecnormalize is not None:
        norm_args = vecnormalize if isinstance(vecnormalize, dict) else vecnormalize.model_dump()
        venv = VecNormalize(venv, **norm_args)
    model = cls(
        policy,
        venv,
        seed=seed,
        policy_kwargs=policy_kwargs or None,
        device="cpu",
        verbose=0,
        **(hyperparameters or {}),
    )
    formats = ["csv", "tensorboard"] if tensorboard else ["csv"]
    model.set_logger(configure(str(out / "logs"), formats))
    callbacks = []
    if checkpoint_every_steps:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(checkpoint_every_steps // n_envs, 1),
                save_path=str(out / "checkpoints"),
                name_prefix="model",
                save_vecnormalize=norm_args is not None,
            )
        )
    if progress is not None:
        every = max(int(timesteps * progress_every_fraction), n_envs)
        callbacks.append(_make_progress_callback(progress, timesteps, every))
    t0 = time.perf_counter()
    model.learn(
        total_timesteps=timesteps,
        callback=CallbackList(callbacks),
        progress_bar=progress_bar,
    )
    wall = time.perf_counter() - t0
    done_steps = int(model.num_timesteps)
    write_with(out / MODEL_FILE, model.save)
    if norm_args is not None:
        write_with(out / VECNORMALIZE_FILE, model.get_vec_normalize_env().save)
    training = {
        "timesteps": done_steps,
        "timesteps_budget": int(timesteps),
        "seed": int(seed),
        "n_envs": int(n_envs),
        "wall_time_s": wall,
        "env_steps_per_s": done_steps / wall if wall > 0 else float("nan"),
        "policy": policy,
        "hyperparameters": hyperparameters or {},
        "policy_kwargs": policy_kwargs or {},
        "vecnormalize": norm_args,
        "versions": {
            "gridrl": __version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
        },
        "torch_threads": torch.get_num_threads(),
    }
    meta = {
        "algo": algo,
        "scenario_path": str(Path(scenario_path).resolve()),
        "scenario_hash": scenario.content_hash(),
        "forecast_mode": forecast_mode,
        "forecast_config": None if forecast_config is None else str(forecast_config),
        "observation_layout": obs_layout,
        "action_layout": act_layout,
        "training": training,
    }
    write_json_atomic(out / META_FILE, meta)
    venv.close()
    return training


class SB3Policy:
    """A trained policy directory as a policy: observation in, action out.

    Observations are normalised with the saved VecNormalize statistics (without
    updating them); recurrent policies keep their hidden state between calls and reset
    it where ``episode_start`` is true.

    Parameters
    ----------
    model
        A loaded SB3 model.
    obs_normalizer
        The unpickled ``VecNormalize`` (statistics only) or None.
    meta
        Content of ``meta.json``.
    deterministic
        Take the mean action (the default for evaluation and export).
    """

    def __init__(
        self, model: Any, obs_normalizer: Any, meta: dict[str, Any], deterministic: bool = True
    ) -> None:
        self.model = model
        self.obs_normalizer = obs_normalizer
        self.meta = meta
        self.deterministic = deterministic
        self.name = meta.get("algo", "sb3")
        self._state: Any = None
        self.recurrent = meta.get("algo") == "RecurrentPPO"

    def reset(self) -> None:
        """Forget the recurrent state (start of new episodes)."""
        self._state = None

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Observation as the network saw it in training (VecNormalize applied)."""
        if self.obs_normalizer is None:
            return obs
        return self.obs_normalizer.normalize_obs(obs)

    def predict(self, obs: np.ndarray, episode_start: np.ndarray | None = None) -> np.ndarray:
        """Actions for a batch of raw observations ``(B, obs_dim)`` -> ``(B, act_dim)``.

        ``episode_start`` (B,) marks episodes that begin at this step (recurrent state
        reset); None means "continuing", except for the first call after ``reset``.
        """
        obs = np.asarray(obs, dtype=np.float32)
        batched = obs.ndim == 2
        x = self.normalize(obs if batched else obs[None])
        if self.recurrent:
            if episode_start is None:
                episode_start = np.full(len(x), self._state is None)
            action, self._state = self.model.predict(
                x, state=self._state, episode_start=episode_start, deterministic=self.deterministic
            )
        else:
            action, _ = self.model.predict(x, deterministic=self.deterministic)
        return action if batched else action[0]

    __call__ = predict


def load_policy(path: str | Path, *, deterministic: bool = True) -> SB3Policy:
    """Load a policy directory written by :func:`train_policy`.

    Raises
    ------
    FileNotFoundError
        naming the directory and the missing file.
    """
    path = Path(path)
    for name in (MODEL_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: missing {name} (not a policy directory)")
    meta = json.loads((path / META_FILE).read_text())
    model = algo_class(meta["algo"]).load(path / MODEL_FILE, device="cpu")
    normalizer = None
    vn = path / VECNORMALIZE_FILE
    if vn.exists():
        with vn.open("rb") as fh:
            normalizer = pickle.load(fh)  # statistics only; the venv is not pickled
        normalizer.training = False
    return SB3Policy(model, normalizer, meta, deterministic)
