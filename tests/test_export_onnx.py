"""ONNX graph vs stable-baselines3: deterministic actions agree within 1e-5 on 1,000
recorded observations, VecNormalize normalisation included, for PPO and SAC trained on
gridrl's environment (and on Pendulum, whose action box is not [-1, 1])."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
from export_helpers import geo_env, record_observations, train_policy_dir

from gridrl.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    build_module,
    export_onnx,
    load_obs_normalisation,
    load_sb3_model,
    sb3_actions,
)

TOLERANCE = 1e-5  # DESIGN.md section 9


def _pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


@pytest.mark.parametrize(("algo", "steps"), [("PPO", 256), ("SAC", 300)])
def test_onnx_matches_sb3_on_gridrl_env(tmp_path, algo, steps):
    env = geo_env(2, seed=0)
    pdir, _, venv = train_policy_dir(tmp_path / algo, algo, lambda: env, steps=steps)
    model = load_sb3_model(algo, pdir / "model.zip")
    norm = load_obs_normalisation(pdir / "vecnormalize.pkl")
    assert np.max(np.abs(norm.mean)) > 1e-3  # training moved the statistics
    # observations recorded along episodes of the environment (random actions)
    obs = record_observations(lambda: geo_env(2, seed=1), 1000, seed=1)
    assert obs.shape == (1000, env.observation_space.shape[0])
    export_onnx(build_module(model, algo, norm), obs.shape[1], tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    want = model.predict(venv.normalize_obs(obs), deterministic=True)[0]
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)
    assert got.shape == (1000, 8)
    assert np.abs(got).max() <= 1.0
    assert want.std(axis=0).min() > 0  # the actions do vary with the observation


@pytest.mark.parametrize(("algo", "steps"), [("PPO", 256), ("SAC", 300)])
def test_onnx_matches_sb3_on_pendulum_box(tmp_path, algo, steps):
    pdir, _, venv = train_policy_dir(tmp_path / algo, algo, _pendulum, steps=steps)
    # Loaded from disk exactly as the exporter does, not the in-memory objects.
    model = load_sb3_model(algo, pdir / "model.zip")
    norm = load_obs_normalisation(pdir / "vecnormalize.pkl")
    assert norm is not None
    # Training moved the statistics away from the identity, so normalisation matters.
    assert np.max(np.abs(norm.mean)) > 1e-3
    np.testing.assert_allclose(norm.var, venv.obs_rms.var)

    obs = record_observations(_pendulum, 1000, seed=1)
    export_onnx(build_module(model, algo, norm), obs.shape[1], tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    want = sb3_actions(model, norm, obs)
    # The reference is SB3's own path: VecNormalize.normalize_obs then predict.
    np.testing.assert_array_equal(
        want, model.predict(venv.normalize_obs(obs), deterministic=True)[0]
    )
    assert got.shape == (1000, 1)
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)
    # Pendulum's box is [-2, 2]: outputs must use it (SAC unscales, PPO clips).
    assert np.all(np.abs(got) <= 2.0 + 1e-6)
    # One observation at a time gives the same answers (dynamic batch axis).
    single = np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: obs[i : i + 1]})[0] for i in range(5)]
    )
    np.testing.assert_allclose(single, got[:5], atol=1e-6, rtol=0)


def test_unnormalised_policy_exports_without_statistics(tmp_path):
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", _pendulum(), n_steps=64, batch_size=32, seed=0, device="cpu")
    obs = record_observations(_pendulum, 200)
    export_onnx(build_module(model, "PPO", None), 3, tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    np.testing.assert_allclose(got, sb3_actions(model, None, obs), atol=TOLERANCE, rtol=0)


def test_recurrent_and_unknown_algorithms_are_refused(tmp_path):
    with pytest.raises(ExportError, match="RecurrentPPO"):
        load_sb3_model("RecurrentPPO", tmp_path / "model.zip")


def test_discrete_action_space_is_refused():
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, device="cpu")
    with pytest.raises(ExportError, match="Box action space"):
        build_module(model, "PPO", None)


@pytest.mark.parametrize("algo", ["PPO", "SAC"])
def test_training_runner_policy_dir_exports_exactly(tmp_path, algo):
    """The contract end to end: the training runner's policy directory (gridrl.agents)
    -> gridrl export -> torch-free runtime, equal to SB3 on recorded observations."""
    import pickle

    import torch

    from gridrl.agents.specs import SB3AgentSpec, TrainingSpec
    from gridrl.agents.train import train_policy
    from gridrl.export.bundle import export_bundle
    from gridrl.export.runtime import PolicyRuntime

    torch.set_num_threads(1)
    geo3 = Path(__file__).resolve().parents[1] / "envs" / "geo3.yaml"
    hyper = {
        "PPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        "SAC": {"learning_starts": 50, "batch_size": 32},
    }
    agent = SB3AgentSpec(name=algo.lower(), algo=algo, hyperparameters=hyper[algo])
    training = TrainingSpec(
        timesteps=256, n_envs=2, checkpoint_every_steps=None, progress_bar=False,
        tensorboard=False,
    )  # fmt: skip
    train_policy(geo3, agent, training, tmp_path / "policy", seed=0, forecast_mode="perfect")
    manifest = export_bundle(tmp_path / "policy", tmp_path / "bundle")
    assert manifest.scenario.path == str(geo3.resolve())
    rt = PolicyRuntime(tmp_path / "bundle")
    from gridrl.env.gym_env import GridEnv

    obs = record_observations(lambda: GridEnv(geo3, seed=3), 1000, seed=3)
    model = load_sb3_model(algo, tmp_path / "policy" / "model.zip")
    with open(tmp_path / "policy" / "vecnormalize.pkl", "rb") as fh:
        vecnorm = pickle.load(fh)
    want = model.predict(vecnorm.normalize_obs(obs), deterministic=True)[0]
    np.testing.assert_allclose(rt.decide(obs).action, want, atol=TOLERANCE, rtol=0)
