"""Policies cloned from a reference controller (gridrl.agents.imitation), on geo3."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gridrl.agents.evaluate import evaluate
from gridrl.agents.imitation import Demonstrations, discounted_returns, train_imitating
from gridrl.agents.registry import check_expert
from gridrl.agents.specs import ImitationSpec, SB3AgentSpec, TrainingSpec
from gridrl.agents.train import TrainingError, load_policy, train_policy

GEO3 = Path(__file__).resolve().parents[1] / "envs" / "geo3.yaml"
EXPERT = "carbon_aware"  # state-dependent and cheap
SPEC = ImitationSpec(expert=EXPERT, episodes=2, rounds=1, epochs=60)
TRAINING = TrainingSpec(n_envs=4, checkpoint_every_steps=None, progress_bar=False,
                        tensorboard=False)


def clone_agent(imitation: ImitationSpec = SPEC) -> SB3AgentSpec:
    return SB3AgentSpec(name="clone", algo="PPO", timesteps=0, imitation=imitation,
                        hyperparameters={"n_steps": 32, "batch_size": 64, "n_epochs": 1})


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two training seeds of the same clone (the second reads the cached demonstrations)."""
    root = tmp_path_factory.mktemp("imitation")
    calls: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDRL_CACHE", str(root / "cache"))
        records = [train_imitating(GEO3, clone_agent(), TRAINING, root / f"seed{s}", seed=s,
                                   forecast_mode="perfect",
                                   progress=lambda d, t, s=s: calls[s].append((d, t)))
                   for s in (0, 1)]
    demos = Demonstrations.load(Path(records[0]["imitation"]["demonstrations"]["file"]))
    return {"root": root, "records": records, "demos": demos, "progress": calls}


def test_demonstrations_are_collected_once_and_shared(clones: dict) -> None:
    first, second = (r["imitation"]["demonstrations"] for r in clones["records"])
    assert not first["cached"] and second["cached"]
    assert first["key"] == second["key"]
    demos = clones["demos"]
    # the expert's 2 episodes, then 2 of one DAgger round, each a whole geo3 week
    assert sorted(np.unique(demos.round)) == [0, 1]
    assert np.unique(demos.episode).tolist() == [0, 1, 2, 3]
    steps = np.bincount(demos.episode)
    assert (steps == steps[0]).all() and first["steps"] == steps.sum()
    assert demos.obs.shape[0] == demos.actions.shape[0] == steps.sum()
    assert np.abs(demos.actions).max() <= 1.0


def test_collection_shows_progress_over_all_rounds(clones: dict) -> None:
    steps = len(clones["demos"].rewards)
    done = [d for d, t in clones["progress"][0]]
    assert {t for _, t in clones["progress"][0]} == {steps}
    assert done == sorted(done) and done[-1] == steps and len(done) > 2
    assert clones["progress"][1] == []  # read from the cache: nothing to show


def test_expert_episodes_are_recorded_as_played(clones: dict) -> None:
    """Round 0's rewards add up to the expert's returns on the same training windows,
    as the evaluation harness reports them without recording."""
    demos = clones["demos"]
    j = evaluate(EXPERT, GEO3, period="train", episodes=SPEC.episodes, seed=SPEC.seed,
                 forecast_mode="perfect")["J"].to_numpy()
    sums = np.bincount(demos.episode, weights=demos.rewards)[: SPEC.episodes]
    np.testing.assert_allclose(sums, j, rtol=1e-6)


def test_clone_acts_like_the_expert(clones: dict) -> None:
    demos = clones["demos"]
    for seed in (0, 1):
        policy = load_policy(clones["root"] / f"seed{seed}")
        error = np.abs(policy.predict(demos.obs) - demos.actions).mean()
        # an untrained network acts near 0: the clone is far closer to the expert
        assert error < 0.3 * np.abs(demos.actions).mean(), (seed, error)


def test_clone_alone_trains_no_steps_and_keeps_the_demonstrations_statistics(
        clones: dict) -> None:
    record = clones["records"][0]
    assert record["timesteps"] == 0
    assert record["imitation"]["nll_last"] < record["imitation"]["nll_first"]
    with (clones["root"] / "seed0" / "vecnormalize.pkl").open("rb") as fh:
        stats = pickle.load(fh)
    np.testing.assert_allclose(stats.obs_rms.mean, clones["demos"].obs.mean(0), atol=1e-3)


def test_fitted_std_is_about_the_clones_error(clones: dict) -> None:
    """Maximum likelihood puts the std near the RMS error of the mean (per action)."""
    agent = clone_agent(SPEC.model_copy(update={"fit_std": True}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDRL_CACHE", str(clones["root"] / "cache"))  # cached demonstrations
        train_imitating(GEO3, agent, TRAINING, clones["root"] / "std", seed=0,
                        forecast_mode="perfect")
    policy = load_policy(clones["root"] / "std")
    demos = clones["demos"]
    rms = np.sqrt(((policy.predict(demos.obs) - demos.actions) ** 2).mean())
    std = float(np.exp(policy.model.policy.log_std.detach().numpy()).mean())
    assert std < 0.5 and 0.3 * rms < std < 3 * rms, (std, rms)
    first = load_policy(clones["root"] / "seed0").model.policy.log_std.detach().numpy()
    np.testing.assert_array_equal(first, 0.0)  # not fitted: SB3's initial log-std


def test_discounted_returns_restart_at_each_episode() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    episode = np.array([0, 0, 0, 1, 1])
    g = 0.5
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 4 + g * 5, 5]
    np.testing.assert_allclose(discounted_returns(rewards, episode, g), expected)


def test_imitation_entries_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SAC cannot imitate"):
        SB3AgentSpec(name="a", algo="SAC", imitation=SPEC)
    with pytest.raises(ValidationError, match="timesteps: 0 trains nothing"):
        SB3AgentSpec(name="a", algo="PPO", timesteps=0)
    for expert in ("mcp", "lp_bound"):  # unknown; a bound plans whole episodes
        with pytest.raises(ValueError, match=f"step by step.*got '{expert}'"):
            check_expert(ImitationSpec(expert=expert))
    with pytest.raises(ValueError, match="horizon_h"):
        check_expert(ImitationSpec(expert="mpc", params={"horizon_h": -1}))
    with pytest.raises(TrainingError, match="train it with gridrl.agents.imitation"):
        train_policy(GEO3, clone_agent(), TRAINING, tmp_path / "policy", seed=0,
                     forecast_mode="perfect")
    assert not (tmp_path / "policy").exists()  # refused before any work
    assert TrainingSpec(timesteps=7).budget(clone_agent())[0] == 0


def test_entries_without_imitation_hash_as_before_it_existed() -> None:
    plain = SB3AgentSpec(name="a", algo="PPO")
    assert "imitation" not in plain.key_values()
    assert clone_agent().key_values()["imitation"]["expert"] == EXPERT
    assert "fit_std" not in clone_agent().key_values()["imitation"]
    fitted = clone_agent(SPEC.model_copy(update={"fit_std": True}))
    assert fitted.key_values()["imitation"]["fit_std"] is True
