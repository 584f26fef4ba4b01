"""Behaviour cloning: start an actor-critic policy from a reference controller's behaviour.

A learned agent trained from scratch must find by trial what MPC computes each hour; an
agent that starts from MPC's decisions only has to improve on them, and runs as a small
network (exported like any policy) where MPC solves a linear program every step.

1. **Demonstrations** (:func:`demonstrations`): the expert (``imitation.expert``, a
   reference controller) runs ``imitation.episodes`` windows of the *training* period,
   drawn with ``imitation.seed``, in the scenario and forecasts the agent trains on,
   through the evaluation harness; every step's observation, action and reward is kept.
   Then ``imitation.rounds`` DAgger rounds (Ross et al. 2011, "A reduction of imitation
   learning and structured prediction to no-regret online learning", AISTATS): a
   policy cloned on everything so far acts on ``episodes`` further windows (seed
   ``seed + round``) while the expert, stepped beside it on the same states, labels
   each with its own action; the labelled steps join the data. A cloned policy's small
   errors take it to states the expert never visits, where it has no example (J far
   below the expert's on geo3 with 4 episodes fitted to 0.05 mean action error); the
   rounds show it those states. The learner of the rounds is a network of the agent's
   architecture initialised with ``imitation.seed``, so the demonstrations depend on
   the scenario, forecasts, architecture and imitation entry only, not on the training
   seed: they are cached (``<cache>/demonstrations/<key>.npz``, the cache folder of the
   forecast cubes; :data:`DEMO_CODE_VERSION` stands for the code) and a study's training
   seeds share them; a file lock lets one unit collect while the others wait.
2. **Normalisation**: the ``VecNormalize`` statistics start from the demonstrations
   (observation mean and variance; the discounted-return variance that scales rewards),
   so the cloned policy sees the inputs the RL phase will give it.
3. **Cloning** (:func:`clone`): minibatch Adam on ``-log pi(a_expert | s)`` plus
   ``vf_coef`` times the squared error of the value function against the discounted
   returns of the normalised rewards within each demonstrated episode (the algorithm's
   ``gamma``; an episode's end is not bootstrapped). The action log-std is fitted only
   with ``imitation.fit_std``: fixed, the log-likelihood is a scaled squared error of
   the action mean and the RL phase explores at its configured initial std (1 for
   SB3's PPO, the whole action range, which takes a clone's first rollouts far from
   it); fitted (after the mean: its maximum-likelihood value, each action's RMS error
   on the demonstrations), RL explores around the clone at the scale of its error.

The expert's actions are the environment's normalised actions in [-1, 1], the space the
policy acts in (SB3 clips the Gaussian's samples to it). A round's rewards are the
learner's (it acted); its value targets are therefore the learner's returns, which is
what the RL phase's critic estimates.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridrl.agents.evaluate import evaluate_detailed, make_setup, select_windows
from gridrl.agents.policy import StepContext
from gridrl.agents.registry import check_expert, make_policy
from gridrl.agents.specs import ImitationSpec, SB3AgentSpec, TrainingSpec
from gridrl.agents.train import SB3Policy, env_inputs, load_forecaster, train_policy
from gridrl.env.inputs import EnvData
from gridrl.forecast.cache import key_hash
from gridrl.io import default_cache_dir, write_with
from gridrl.scenario import load_scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.vec_env import VecEnv, VecNormalize

__all__ = [
    "Demonstrations", "clone", "collect", "demonstrations", "discounted_returns",
    "train_imitating",
]

DEMO_FOLDER = "demonstrations"
# Imitation keys the demonstrations do not depend on (the learner of the rounds acts on
# its mean): left out of their cache key.
DEMO_FREE = {"fit_std"}
# Part of the demonstrations' cache key: bump it when the environment, the experts or
# the collection change what demonstrations hold (the code is not hashed; the forecast
# cubes keep their own version the same way).
DEMO_CODE_VERSION = 1
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Demonstrations:
    """Labelled steps, each episode's steps contiguous and in order.

    ``obs`` ``[M, D]`` float32, ``actions`` ``[M, A]`` float32 (the expert's),
    ``rewards`` ``[M]`` (of whoever acted), ``episode`` ``[M]`` the episode number of
    each step, ``round`` ``[M]`` 0 for the expert's own episodes, ``r`` for DAgger
    round ``r``.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode: np.ndarray
    round: np.ndarray

    def save(self, path: Path) -> None:
        """Write an ``.npz`` atomically."""
        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez(fh, **self.__dict__)

        write_with(path, write)

    @classmethod
    def load(cls, path: Path) -> Demonstrations:
        """Read what :meth:`save` wrote (no pickles)."""
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})

    def __add__(self, other: Demonstrations) -> Demonstrations:
        shift = int(self.episode.max()) + 1 if len(self.episode) else 0
        return Demonstrations(*(np.concatenate([a, b + shift if k == "episode" else b])
                                for k, a, b in zip(self.__dict__, self.__dict__.values(),
                                                   other.__dict__.values(), strict=True)))


def train_imitating(scenario_path: str | Path, agent: SB3AgentSpec, training: TrainingSpec,
                    out_dir: str | Path, *, seed: int, forecast_mode: str,
                    forecast_config: str | Path | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """:func:`gridrl.agents.train.train_policy` for an agent with ``imitation``: the
    policy is cloned from the expert (module doc) before RL; ``meta.json`` records the
    demonstrations and the fit. ``progress`` first counts the demonstration steps (when
    they are collected), then the training steps."""
    spec = agent.imitation
    if spec is None:
        raise ValueError(f"agent {agent.name!r} has no imitation entry")
    check_expert(spec)

    def pretrain(model: BaseAlgorithm, wrapped: VecEnv) -> dict[str, Any]:
        from stable_baselines3.common.vec_env import VecNormalize  # deferred: torch

        data = env_inputs(scenario_path, forecast_mode, forecast_config)
        norm = wrapped if isinstance(wrapped, VecNormalize) else None
        demos, record = demonstrations(
            scenario_path, spec, data, model, norm, forecast_mode=forecast_mode,
            forecast_config=forecast_config, progress=progress)
        t0 = time.perf_counter()
        losses = clone(model, demos, spec, norm)
        return {"demonstrations": record, **losses,
                "clone_seconds": round(time.perf_counter() - t0, 1)}

    return train_policy(scenario_path, agent, training, out_dir, seed=seed,
                        forecast_mode=forecast_mode, forecast_config=forecast_config,
                        progress=progress, pretrain=pretrain)


class _Labelled:
    """Steps the expert beside the learner on the same states: the learner acts (None:
    the expert), the expert's action of the step is kept in ``label``."""

    def __init__(self, expert: Any, learner: Any | None) -> None:
        self.expert, self.learner = expert, learner
        self.name = f"dagger({getattr(expert, 'name', 'expert')})"
        self.label = np.zeros(0)

    def reset(self, batch: Any) -> None:
        self.expert.reset(batch)

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        self.label = np.asarray(self.expert.act(obs, ctx), dtype=np.float32)
        return self.label if self.learner is None else self.learner(obs)


def _run(scenario_path: str | Path, spec: ImitationSpec, data: EnvData, round_: int,
         learner: Any | None, progress: Progress | None) -> Demonstrations:
    """One round: ``spec.episodes`` training windows (seed ``spec.seed + round_``)."""
    setup = make_setup(scenario_path, period="train", data=data)
    windows = select_windows(setup.windows, spec.episodes, spec.seed + round_)
    pol = _Labelled(make_policy(spec.expert, **spec.params), learner)
    groups: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []

    def record(obs: np.ndarray, _action: np.ndarray, reward: np.ndarray, step: int) -> None:
        if step == 0:
            groups.append([])
        groups[-1].append((obs.astype(np.float32), pol.label,
                           np.asarray(reward, dtype=np.float64).copy()))

    def on_step(done: int, total: int) -> None:
        if progress is not None:  # steps of every round, this one's after the earlier
            progress(round_ * total + done, (spec.rounds + 1) * total)

    evaluate_detailed(pol, setup, starts=[w.start for w in windows], record=record,
                      on_step=on_step)
    out = None
    for g in groups:  # [S] steps of [B] episodes -> episode-major rows
        obs, act, rew = (np.stack(x, axis=1) for x in zip(*g, strict=True))
        n_ep, steps = obs.shape[:2]
        part = Demonstrations(obs.reshape(n_ep * steps, -1), act.reshape(n_ep * steps, -1),
                              rew.reshape(-1), np.repeat(np.arange(n_ep), steps),
                              np.full(n_ep * steps, round_))
        out = part if out is None else out + part
    assert out is not None
    return out


def collect(scenario_path: str | Path, spec: ImitationSpec, data: EnvData,
            model: OnPolicyAlgorithm, venv: VecNormalize | None,
            progress: Progress | None = None) -> Demonstrations:
    """The expert's episodes, then ``spec.rounds`` DAgger rounds (module doc). ``model``
    gives the learner's architecture, ``venv`` the normalisation (its statistics are
    set from each round's data; :func:`clone` sets them again from the final data).
    ``progress(done, total)`` counts the steps of all rounds."""
    import torch  # deferred: the package runs without torch

    demos = _run(scenario_path, spec, data, 0, None, progress)
    if spec.rounds == 0:
        return demos
    torch.manual_seed(spec.seed)
    learner: ActorCriticPolicy = model.policy_class(
        model.observation_space, model.action_space, model.lr_schedule, **model.policy_kwargs)
    # its mean action on observations normalised with venv's statistics of the moment
    act = SB3Policy(learner, venv, {"algo": "dagger learner"})
    for r in range(1, spec.rounds + 1):
        fit_policy(learner, demos, spec, model, venv)
        demos = demos + _run(scenario_path, spec, data, r, act, progress)
    return demos


def demonstrations(scenario_path: str | Path, spec: ImitationSpec, data: EnvData,
                   model: OnPolicyAlgorithm, venv: VecNormalize | None, *,
                   forecast_mode: str, forecast_config: str | Path | None,
                   cache_dir: str | Path | None = None,
                   progress: Progress | None = None) -> tuple[Demonstrations, dict]:
    """The demonstrations for this scenario, forecasts and architecture, from the cache
    or collected (and cached); also a record (key, file, whether cached, seconds)."""
    config = load_forecaster(forecast_config)  # by its values, as the cubes are keyed
    key = key_hash("demonstrations", DEMO_CODE_VERSION,
                   load_scenario(scenario_path).content_hash(), forecast_mode,
                   None if config is None else config.key_values(),
                   spec.model_dump(exclude=DEMO_FREE),
                   model.policy_kwargs if spec.rounds else None)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / DEMO_FOLDER / f"{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (path.parent / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one collector; the others wait and read it
        cached = path.exists()
        if cached:
            demos = Demonstrations.load(path)
        else:
            demos = collect(scenario_path, spec, data, model, venv, progress)
            demos.save(path)
    record = {"key": key, "file": str(path), "cached": cached, "steps": len(demos.rewards),
              "episodes": int(demos.episode.max()) + 1, "rounds": spec.rounds,
              "seconds": round(time.perf_counter() - t0, 1)}
    return demos, record


def discounted_returns(rewards: np.ndarray, episode: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}`` within each episode (0 after its last step)."""
    out = np.empty(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if t == len(rewards) - 1 or episode[t + 1] != episode[t]:
            acc = 0.0
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


def set_normalization(venv: VecNormalize, demos: Demonstrations) -> None:
    """``venv``'s statistics from the demonstrations alone: observations, and the
    discounted returns (VecNormalize's own recursion) whose variance scales rewards."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    venv.obs_rms = RunningMeanStd(shape=venv.obs_rms.mean.shape)
    venv.obs_rms.update(demos.obs.astype(np.float64))
    venv.ret_rms = RunningMeanStd(shape=())
    running = np.zeros(1)
    for t, r in enumerate(demos.rewards):
        if t > 0 and demos.episode[t] != demos.episode[t - 1]:
            running[:] = 0.0
        running = running * venv.gamma + r
        venv.ret_rms.update(running)


def fit_policy(policy: ActorCriticPolicy, demos: Demonstrations, spec: ImitationSpec,
               model: OnPolicyAlgorithm, venv: VecNormalize | None) -> dict[str, Any]:
    """Fit ``policy``'s action mean and value function to ``demos`` (module doc): set the
    normalisation from them, then ``spec.epochs`` passes of minibatch Adam."""
    import torch  # deferred: the package runs without torch

    obs, rewards = demos.obs, demos.rewards
    if venv is not None:
        set_normalization(venv, demos)
        obs = venv.normalize_obs(obs.astype(np.float64)).astype(np.float32)
        rewards = venv.normalize_reward(rewards)
    returns = discounted_returns(rewards, demos.episode, model.gamma)
    tensors = [torch.as_tensor(x, dtype=torch.float32) for x in (obs, demos.actions, returns)]
    params = [p for name, p in policy.named_parameters() if name != "log_std"]
    opt = torch.optim.Adam(params, lr=spec.learning_rate)
    gen = torch.Generator().manual_seed(spec.seed)
    history = []
    policy.set_training_mode(True)
    for _ in range(spec.epochs):
        totals = np.zeros(2)
        for idx in torch.randperm(len(returns), generator=gen).split(spec.batch_size):
            o, a, g = (x[idx] for x in tensors)
            values, log_prob, _ = policy.evaluate_actions(o, a)
            nll = -log_prob.mean()
            vf = torch.nn.functional.mse_loss(values.flatten(), g)
            opt.zero_grad()
            (nll + model.vf_coef * vf).backward()
            opt.step()
            totals += np.array([nll.item(), vf.item()]) * len(idx)
        history.append(totals / len(returns))
    policy.set_training_mode(False)
    if spec.fit_std:
        _set_std(policy, tensors[0], tensors[1])
    return {"epochs": spec.epochs, "nll_first": float(history[0][0]),
            "nll_last": float(history[-1][0]), "value_mse_first": float(history[0][1]),
            "value_mse_last": float(history[-1][1])}


def _set_std(policy: ActorCriticPolicy, obs: Any, actions: Any) -> None:
    """The log-std of maximum likelihood given the fitted mean: the log of each
    action's RMS error on the demonstrations (floored at 1e-3)."""
    import torch  # deferred: the package runs without torch

    with torch.no_grad():
        mean = policy.get_distribution(obs).distribution.mean
        rms = ((mean - actions) ** 2).mean(0).sqrt().clamp_min(1e-3)
        policy.log_std.copy_(rms.log())


def clone(model: OnPolicyAlgorithm, demos: Demonstrations, spec: ImitationSpec,
          venv: VecNormalize | None) -> dict[str, Any]:
    """Fit ``model``'s policy to the demonstrations; returns first and last epoch losses."""
    return fit_policy(model.policy, demos, spec, model, venv)
