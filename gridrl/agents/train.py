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
from typing import TYPE_CHECKING, Any

import numpy as np

from gridrl import __version__
from gridrl.agents.specs import SB3AgentSpec, TrainingSpec, algo_class
from gridrl.env.inputs import EnvData, load_env_data
from gridrl.errors import GridrlError
from gridrl.forecast.config import ForecastConfig, load_forecast_config
from gridrl.io import write_json_atomic, write_with
from gridrl.scenario import load_scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv, VecNormalize

    from gridrl.env.vec_env import GridVecEnv

__all__ = ["SB3Policy", "algo_class", "env_inputs", "load_policy", "train_policy"]

MODEL_FILE = "model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
META_FILE = "meta.json"
PROGRESS_EVERY_FRACTION = 0.01  # share of the budget between two progress reports


Pretrain = Callable[["BaseAlgorithm", "VecEnv"], dict[str, Any]]


class TrainingError(GridrlError, ValueError):
    """An agent that cannot be trained as asked (names the agent and what is missing)."""


class TrainedPolicyError(GridrlError, FileNotFoundError):
    """A folder that is not a policy directory (names the folder and the missing file)."""


def load_forecaster(forecast_config: str | Path | None) -> ForecastConfig | None:
    """The forecaster config object of a ``forecasts/*.yaml`` path (None: defaults)."""
    if forecast_config is None:
        return None
    return load_forecast_config(forecast_config)


def env_inputs(
    scenario_path: str | Path, forecast_mode: str, forecast_config: str | Path | None
) -> EnvData:
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
) -> EnvData:
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
) -> GridVecEnv:
    """The native batched VecEnv of the scenario: ``n_envs`` episodes stepped together,
    random episode starts in ``period`` seeded by ``seed``, per-step infos only at
    episode ends."""
    # deferred: the VecEnv subclasses stable-baselines3's, which imports torch
    from gridrl.env.vec_env import GridVecEnv

    return GridVecEnv(
        scenario_path,
        n_envs,
        data=env_inputs(scenario_path, forecast_mode, forecast_config),
        period=period,
        start="random",
        info_mode="episode",  # training reads rewards only; KPIs come from evaluation
        seed=seed,
    )


def _make_progress_callback(
    report: Callable[[int, int], None], total: int, every_steps: int
) -> BaseCallback:
    from stable_baselines3.common.callbacks import BaseCallback  # deferred: torch

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
    agent: SB3AgentSpec,
    training: TrainingSpec,
    out_dir: str | Path,
    *,
    seed: int,
    forecast_mode: str,
    forecast_config: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    pretrain: Pretrain | None = None,
) -> dict[str, Any]:
    """Train one SB3 agent on the scenario's training period and save a policy directory.

    Parameters
    ----------
    scenario_path
        Scenario YAML.
    agent
        Algorithm, policy, hyperparameters, ``policy_kwargs`` and the agent's own
        budget overrides (``timesteps``, ``n_envs``) and ``vecnormalize`` switch.
    training
        The study's budget, checkpoint interval, ``VecNormalize`` arguments, logging
        (``tensorboard``) and ``progress_bar`` (shown only without ``progress``).
    out_dir
        The policy directory to write (created).
    seed
        Seeds SB3, torch, numpy and the environment's episode draws.
    forecast_mode
        Forecast mode of the observations (``lightgbm``, ``perfect``, ``none``, ...).
    forecast_config
        Forecaster config YAML (mode ``lightgbm``); None: the built-in defaults.
    progress
        Called with ``(done_steps, total_steps)`` about every
        :data:`PROGRESS_EVERY_FRACTION` of the budget (run-level progress display).
    pretrain
        ``pretrain(model, env)`` before RL, returning a record for ``meta.json``: how an
        agent with ``imitation`` is started (:func:`gridrl.agents.imitation.train_imitating`
        passes it; this module does not import the evaluation harness it needs).

    Returns
    -------
    dict
        Training metadata (also in ``meta.json["training"]``): ``timesteps``,
        ``wall_time_s``, ``env_steps_per_s``, ``seed``, ``n_envs``, ...
    """
    from stable_baselines3.common.utils import set_random_seed  # deferred: torch

    if agent.imitation is not None and pretrain is None:
        raise TrainingError(f"agent {agent.name!r} imitates {agent.imitation.expert!r}: "
                            "train it with gridrl.agents.imitation.train_imitating "
                            "(a study does)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timesteps, n_envs = training.budget(agent)
    set_random_seed(seed)
    venv = make_training_env(
        scenario_path, n_envs=n_envs, seed=seed,
        forecast_mode=forecast_mode, forecast_config=forecast_config,
    )  # fmt: skip
    layouts = {
        "observation_layout": venv.observation_layout.to_dict(),
        "action_layout": venv.action_layout.to_dict(),
    }
    model, wrapped = _build_model(agent, training, venv, out, seed)
    imitation = None if pretrain is None else pretrain(model, wrapped)
    callbacks = _callbacks(agent, training, out, timesteps, n_envs, progress)
    t0 = time.perf_counter()
    if timesteps > 0:  # 0: the cloned policy alone
        model.learn(
            total_timesteps=timesteps, callback=callbacks,
            progress_bar=training.progress_bar and progress is None,
        )  # fmt: skip
    wall_s = time.perf_counter() - t0
    _save_model(model, out, normalized=training.normalization(agent) is not None)
    record = _training_record(agent, training, model, seed=seed, wall_s=wall_s)
    if imitation is not None:
        record["imitation"] = imitation
    meta = {
        "algo": agent.algo,
        "scenario_path": str(Path(scenario_path).resolve()),
        "scenario_hash": load_scenario(scenario_path).content_hash(),
        "step_minutes": load_scenario(scenario_path).env.step_minutes,
        "forecast_mode": forecast_mode,
        "forecast_config": None if forecast_config is None else str(forecast_config),
        **layouts,
        "training": record,
    }
    write_json_atomic(out / META_FILE, meta)
    wrapped.close()
    return record


def _build_model(
    agent: SB3AgentSpec, training: TrainingSpec, venv: VecEnv, out: Path, seed: int
) -> tuple[BaseAlgorithm, VecEnv]:
    """The SB3 model on the monitored (and normalised) VecEnv, logging into ``out/logs``."""
    from stable_baselines3.common.logger import configure  # deferred: torch
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    wrapped: VecEnv = VecMonitor(venv, filename=str(out / "monitor.csv"))
    norm = training.normalization(agent)
    if norm is not None:
        wrapped = VecNormalize(wrapped, **norm.model_dump())
    model = algo_class(agent.algo)(
        agent.policy_name,
        wrapped,
        seed=seed,
        policy_kwargs=agent.policy_kwargs or None,
        device="cpu",
        verbose=0,
        **agent.hyperparameters,
    )
    formats = ["csv", "tensorboard"] if training.tensorboard else ["csv"]
    model.set_logger(configure(str(out / "logs"), formats))
    return model, wrapped


def _callbacks(
    agent: SB3AgentSpec,
    training: TrainingSpec,
    out: Path,
    timesteps: int,
    n_envs: int,
    progress: Callable[[int, int], None] | None,
) -> BaseCallback:
    """Periodic checkpoints (model and VecNormalize statistics) and progress reports."""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

    callbacks: list[BaseCallback] = []
    if training.checkpoint_every_steps:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(training.checkpoint_every_steps // n_envs, 1),
                save_path=str(out / "checkpoints"),
                name_prefix="model",
                save_vecnormalize=training.normalization(agent) is not None,
            )
        )
    if progress is not None:
        every = max(int(timesteps * PROGRESS_EVERY_FRACTION), n_envs)
        callbacks.append(_make_progress_callback(progress, timesteps, every))
    return CallbackList(callbacks)


def _save_model(model: BaseAlgorithm, out: Path, *, normalized: bool) -> None:
    """``model.zip`` and, for a normalised env, its statistics (atomic writes)."""
    write_with(out / MODEL_FILE, model.save)
    if normalized:
        vec_normalize: VecNormalize = model.get_vec_normalize_env()
        write_with(out / VECNORMALIZE_FILE, vec_normalize.save)


def _training_record(
    agent: SB3AgentSpec, training: TrainingSpec, model: BaseAlgorithm, *, seed: int,
    wall_s: float,
) -> dict[str, Any]:
    """``meta.json["training"]``: budget, measured speed, arguments and versions."""
    import stable_baselines3  # deferred: torch
    import torch

    timesteps, n_envs = training.budget(agent)
    norm = training.normalization(agent)
    done_steps = int(model.num_timesteps)
    return {
        "timesteps": done_steps,
        "timesteps_budget": int(timesteps),
        "seed": int(seed),
        "n_envs": int(n_envs),
        "wall_time_s": wall_s,
        "env_steps_per_s": done_steps / wall_s if wall_s > 0 else float("nan"),
        "policy": agent.policy_name,
        "hyperparameters": dict(agent.hyperparameters),
        "policy_kwargs": dict(agent.policy_kwargs),
        "vecnormalize": None if norm is None else norm.model_dump(),
        "versions": {
            "gridrl": __version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
        },
        "torch_threads": torch.get_num_threads(),
    }


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
        self,
        model: BaseAlgorithm,
        obs_normalizer: VecNormalize | None,
        meta: dict[str, Any],
        deterministic: bool = True,
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
    TrainedPolicyError
        naming the directory and the missing file.
    """
    path = Path(path)
    for name in (MODEL_FILE, META_FILE):
        if not (path / name).is_file():
            raise TrainedPolicyError(f"{path}: missing {name} (not a policy directory)")
    meta = json.loads((path / META_FILE).read_text())
    model = algo_class(meta["algo"]).load(path / MODEL_FILE, device="cpu")
    normalizer = None
    vn = path / VECNORMALIZE_FILE
    if vn.exists():
        with vn.open("rb") as fh:
            normalizer = pickle.load(fh)  # statistics only; the venv is not pickled
        normalizer.training = False
    return SB3Policy(model, normalizer, meta, deterministic)
