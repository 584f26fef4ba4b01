"""The environment on the geo3 scenario: checkers, forecast modes, training with SB3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from gridrl.env.gym_env import GridEnv
from gridrl.env.inputs import EnvData, load_env_data, make_forecast
from gridrl.env.vec_env import GridVecEnv
from gridrl.scenario import load_scenario

GEO3 = Path(__file__).resolve().parents[1] / "envs" / "geo3.yaml"


@pytest.fixture(scope="module")
def geo3():
    sc = load_scenario(GEO3)
    return sc, load_env_data(sc, "perfect", base_dir=GEO3.parent)


def test_checkers_pass_on_geo3(geo3):
    sc, data = geo3
    env = GridEnv(sc, data=data, seed=0)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    assert env.observation_space.shape == (env.observation_layout.dim,)
    assert env.action_space.shape == (3 * 5,)  # run, cap, route, migrate, battery per site


@pytest.mark.parametrize("mode", ["persistence", "none"])
def test_forecast_modes_share_one_layout(geo3, mode):
    sc, data = geo3
    from gridrl.data.build import build_signals

    signals = build_signals(sc, base_dir=GEO3.parent)
    cube = make_forecast(sc, signals, mode)
    other = EnvData.from_arrays(data.index, data.exo, data.site_names, cube)
    env_p = GridEnv(sc, data=data, period="test", start="fixed")
    env_m = GridEnv(sc, data=other, period="test", start="fixed")
    assert env_m.observation_layout == env_p.observation_layout
    o_p, _ = env_p.reset()
    o_m, _ = env_m.reset()
    names = env_p.observation_layout.names
    current = [i for i, n in enumerate(names) if ".fc_" not in n]
    np.testing.assert_array_equal(o_p[current], o_m[current])
    fc = [i for i, n in enumerate(names) if ".fc_" in n]
    assert not np.array_equal(o_p[fc], o_m[fc])
    if mode == "none":
        assert (o_m[fc] == 0).all()


def test_geo3_week_of_status_quo_conserves_work(geo3):
    sc, data = geo3
    env = GridEnv(sc, data=data, period="test", start="fixed")
    env.reset()
    run_now = np.tile([1.0, 1.0, 0.0, -1.0, 0.0], 3).astype(np.float32)  # battery 0: the rule
    while True:
        *_, trunc, info = env.step(run_now)
        if trunc:
            break
    k = info["episode_summary"]["kpis"]
    assert k["hours"] == sc.env.episode_hours
    assert k["work_lost_gpu_h"] == pytest.approx(0.0, abs=1e-6 * k["arrived_gpu_h"])
    assert k["migrated_gpu_h"] == 0.0 and k["deadline_miss_gpu_h"] == 0.0
    assert 0.0 < k["renewable_share"] < 1.0
    # running at full power: energy per useful GPU-h is at least PUE x (max - idle share)
    assert k["energy_per_useful_gpu_h"] > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("algo", [PPO, A2C, SAC, TD3])
def test_sb3_algorithms_train_2000_steps_on_geo3(geo3, algo, tmp_path):
    sc, data = geo3
    torch.set_num_threads(1)
    if algo in (PPO, A2C):
        env = GridVecEnv(sc, 4, data=data, seed=0)
        kw = {"n_steps": 128} if algo is PPO else {}
        model = algo("MlpPolicy", env, seed=0, device="cpu", **kw)
    else:
        env = GridEnv(sc, data=data, seed=0)
        model = algo("MlpPolicy", env, seed=0, device="cpu", learning_starts=200,
                     buffer_size=5000, batch_size=64)
    model.learn(total_timesteps=2000)
    assert model.num_timesteps >= 2000
    model.save(tmp_path / "model")
    obs = env.reset()
    obs = obs[0] if isinstance(obs, tuple) else obs
    action, _ = model.predict(obs, deterministic=True)
    assert np.isfinite(action).all()
