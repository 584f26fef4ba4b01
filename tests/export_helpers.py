"""Helpers for the export/serve/slurm tests: train tiny real SB3 policies and write
policy directories in the training runner's format (model.zip, vecnormalize.pkl, meta.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

ALGO_KWARGS: dict[str, dict[str, Any]] = {
    # Tiny budgets: the tests check the export, not the learning.
    "PPO": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
    "SAC": {"learning_starts": 64, "batch_size": 64, "buffer_size": 10_000},
}


def train_policy_dir(
    out_dir: Path,
    algo: str,
    make_env: Callable[[], gym.Env],
    *,
    steps: int,
    seed: int = 0,
    meta_extra: dict[str, Any] | None = None,
    net_arch: list[int] | None = None,
) -> tuple[Path, Any, Any]:
    """Train ``algo`` for ``steps`` on ``make_env`` under VecNormalize and save it as a
    policy directory. Returns (folder, model, vecnormalize)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([make_env]), norm_obs=True, norm_reward=True)
    cls = getattr(sb3, algo)
    kwargs = dict(ALGO_KWARGS[algo])
    if net_arch is not None:
        kwargs["policy_kwargs"] = {"net_arch": net_arch}
    model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.zip")
    venv.save(str(out_dir / "vecnormalize.pkl"))
    meta = {
        "algo": algo,
        "scenario_path": None,
        "scenario_hash": None,
        "forecast_mode": None,
        "training": {"steps": steps, "seed": seed},
    }
    meta.update(meta_extra or {})
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir, model, venv


def record_observations(make_env: Callable[[], gym.Env], n: int, seed: int = 0) -> np.ndarray:
    """Raw observations seen along random-action episodes of the environment."""
    env = make_env()
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    while len(rows) < n:
        rows.append(np.asarray(obs, dtype=np.float32))
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(rows)
