"""Helpers for the export/serve/slurm tests: train tiny real SB3 policies and write
policy directories in the training runner's format (model.zip, vecnormalize.pkl, meta.json).
"""

from __future__ import annotations

import functools
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
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    torch.set_num_threads(1)  # tiny networks: threads only add contention on shared cores
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


# --------------------------------------------------------------------------- gridrl env

REPO = Path(__file__).resolve().parents[1]
GEO3 = REPO / "envs" / "geo3.yaml"


@functools.lru_cache(maxsize=4)
def geo_env_data(n_sites: int, battery_control: str = "rule") -> tuple[Any, Any]:
    """The geo3 scenario cut to its first ``n_sites`` sites, and its environment inputs
    (real TMY-driven signals, perfect forecasts). The batteries follow the site rule
    unless ``battery_control`` says otherwise: schedulers decide the workload only."""
    import yaml

    from gridrl.env.inputs import load_env_data
    from gridrl.scenario import Scenario

    raw = yaml.safe_load(GEO3.read_text())
    raw["sites"] = raw["sites"][:n_sites]
    kept = {s["name"] for s in raw["sites"]}
    for key in ("coordinates_deg", "transfer_cost_regions"):  # network keys name sites
        entries = raw.get("network", {}).get(key, {})
        raw["network"][key] = {k: v for k, v in entries.items() if k in kept}
    raw["name"] = f"geo3_first{n_sites}"
    raw["env"]["battery_control"] = battery_control
    sc = Scenario.model_validate(raw)
    return sc, load_env_data(sc, "perfect", base_dir=GEO3.parent)


def geo_env(n_sites: int = 2, seed: int = 0) -> gym.Env:
    """A GridEnv on the first ``n_sites`` sites of geo3."""
    from gridrl.env.gym_env import GridEnv

    sc, data = geo_env_data(n_sites)
    return GridEnv(sc, data=data, seed=seed)


def env_meta(env: gym.Env, algo: str, steps: int, seed: int) -> dict[str, Any]:
    """meta.json content as the training runner writes it, for a GridEnv."""
    return {
        "algo": algo,
        "scenario_path": str(GEO3),
        "scenario_hash": env.unwrapped.scenario.content_hash(),
        "step_minutes": env.unwrapped.scenario.env.step_minutes,
        "forecast_mode": "perfect",
        "observation_layout": env.unwrapped.observation_layout.to_dict(),
        "action_layout": env.unwrapped.action_layout.to_dict(),
        "training": {"timesteps": steps, "seed": seed},
    }


def fixed_action_policy_dir(out_dir: Path, env: gym.Env, action: np.ndarray, seed: int = 0) -> Path:
    """A PPO policy directory for ``env`` whose deterministic action is ``action`` for
    every input (the action head's weights zeroed, its bias set): the real SB3 network
    with a known output, which the Slurm test needs to check every kind of decision."""
    import torch
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=seed, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.as_tensor(action, dtype=torch.float32))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.zip")
    meta = env_meta(env, "PPO", 0, seed)
    meta["training"]["note"] = "fixed action"
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def env_policy_dir(out_dir: Path, env: gym.Env, algo: str, *, steps: int, seed: int = 0) -> Path:
    """Train ``algo`` briefly on ``env`` under VecNormalize; write a policy directory with
    the environment's layouts in meta.json."""
    train_policy_dir(
        out_dir,
        algo,
        lambda: env,
        steps=steps,
        seed=seed,
        meta_extra=env_meta(env, algo, steps, seed),
    )
    return out_dir


def raw_signal_row(env: gym.Env, obs: np.ndarray, site: str) -> dict[str, float]:
    """Raw (unscaled) values of a site's observation fields in ``obs`` by key: what a
    site's signal file would hold at that hour."""
    out = {}
    for i, f in enumerate(env.unwrapped.observation_layout.fields):
        if f.site == site:
            out[f.key] = float(obs[i]) * f.scale + f.offset
    return out


def random_policy_dir(out_dir: Path, env: gym.Env, seed: int = 0, algo: str = "PPO") -> Path:
    """An untrained (randomly initialised) policy directory for ``env`` with VecNormalize
    statistics drawn at random, so that outputs vary with the observation."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: env]))
    d_obs = env.observation_space.shape[0]
    rng = np.random.default_rng(seed)
    venv.obs_rms.mean = rng.normal(size=d_obs)
    venv.obs_rms.var = rng.uniform(0.5, 2.0, size=d_obs)
    model = getattr(sb3, algo)("MlpPolicy", venv, seed=seed, device="cpu", **ALGO_KWARGS[algo])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.zip")
    venv.save(str(out_dir / "vecnormalize.pkl"))
    (out_dir / "meta.json").write_text(json.dumps(env_meta(env, algo, 0, seed), indent=2))
    return out_dir
