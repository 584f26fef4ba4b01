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


# --------------------------------------------------------------------------- layouts
# Until the multi-site environment's own layout is wired in, tests describe a
# two-site observation/action layout here in the manifest's format.

COMPONENTS = ("run", "cap", "route", "migrate")


def two_site_layouts(
    sites: tuple[str, ...] = ("dc_a", "dc_b"), cap_min: float = 0.6
) -> tuple[dict, dict]:
    """Observation and action layout dicts (manifest format) for ``sites``."""
    obs = [
        {"name": "hour_sin", "key": "hour_sin", "unit": "1"},
        {"name": "hour_cos", "key": "hour_cos", "unit": "1"},
    ]
    for s in sites:
        obs += [
            {
                "name": f"{s}.carbon_g_per_kwh",
                "key": "carbon_g_per_kwh",
                "site": s,
                "unit": "g/kWh",
                "offset": 300.0,
                "scale": 200.0,
            },
            {
                "name": f"{s}.headroom_kw",
                "key": "headroom_kw",
                "site": s,
                "unit": "kW",
                "scale": 1000.0,
            },
            {
                "name": f"{s}.queue_slack_0_2h",
                "key": "queue_slack_0_2h",
                "site": s,
                "unit": "GPU-h",
                "scale": 8.0,
            },
            {
                "name": f"{s}.queue_slack_2h_plus",
                "key": "queue_slack_2h_plus",
                "site": s,
                "unit": "GPU-h",
                "scale": 8.0,
            },
            {
                "name": f"{s}.overdue_gpu_h",
                "key": "overdue_gpu_h",
                "site": s,
                "unit": "GPU-h",
                "scale": 8.0,
            },
            {"name": f"{s}.cap", "key": "cap", "site": s, "unit": "1"},
        ]
    act = []
    ranges = {"run": (0.0, 1.0), "cap": (cap_min, 1.0), "route": (-2.0, 2.0), "migrate": (0.0, 0.5)}
    for s in sites:
        for c in COMPONENTS:
            lo, hi = ranges[c]
            act.append(
                {
                    "name": f"{s}.{c}",
                    "site": s,
                    "component": c,
                    "physical_low": lo,
                    "physical_high": hi,
                }
            )
    for f in obs:
        f.setdefault("site", None)
    return {"fields": obs}, {"sites": list(sites), "fields": act}


class SpacesEnv(gym.Env):
    """Carries Box spaces of a layout so an SB3 model can be built for it (not stepped)."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, True, {}


def fixed_action_policy_dir(
    out_dir: Path, layouts: tuple[dict, dict], action: np.ndarray, seed: int = 0
) -> Path:
    """A PPO policy directory whose deterministic action is ``action`` for every input.

    The action head's weights are zeroed and its bias set, so the exported graph is
    the real SB3 network with a known output (what the Slurm test needs to check every
    kind of decision)."""
    import torch
    from stable_baselines3 import PPO

    obs_layout, act_layout = layouts
    env = SpacesEnv(len(obs_layout["fields"]), len(act_layout["fields"]))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=seed, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.as_tensor(action, dtype=torch.float32))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.zip")
    meta = {
        "algo": "PPO",
        "scenario_path": None,
        "scenario_hash": None,
        "forecast_mode": None,
        "observation_layout": obs_layout,
        "action_layout": act_layout,
        "training": {"steps": 0, "seed": seed, "note": "fixed action"},
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def random_policy_dir(
    out_dir: Path, layouts: tuple[dict, dict], seed: int = 0, algo: str = "PPO"
) -> Path:
    """An untrained (randomly initialised) policy directory of the layout, with VecNormalize
    statistics drawn at random, so outputs vary with the observation."""
    import pickle

    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    obs_layout, act_layout = layouts
    d_obs, d_act = len(obs_layout["fields"]), len(act_layout["fields"])
    venv = VecNormalize(DummyVecEnv([lambda: SpacesEnv(d_obs, d_act)]))
    rng = np.random.default_rng(seed)
    venv.obs_rms.mean = rng.normal(size=d_obs)
    venv.obs_rms.var = rng.uniform(0.5, 2.0, size=d_obs)
    model = getattr(sb3, algo)(
        "MlpPolicy",
        venv,
        seed=seed,
        device="cpu",
        **({"n_steps": 64, "batch_size": 32} if algo == "PPO" else {}),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.zip")
    with open(out_dir / "vecnormalize.pkl", "wb") as fh:
        pickle.dump(venv, fh)
    meta = {
        "algo": algo,
        "scenario_path": None,
        "scenario_hash": None,
        "forecast_mode": None,
        "observation_layout": obs_layout,
        "action_layout": act_layout,
        "training": {"steps": 0, "seed": seed},
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir
