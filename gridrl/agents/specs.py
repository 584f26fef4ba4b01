"""What an SB3 agent is and how it trains: the models a study's YAML validates into.

:class:`SB3AgentSpec` (algorithm, policy, hyperparameters), :class:`TrainingSpec`
(budget, checkpoints, logging) and :class:`VecNormalizeSpec` are read by
:func:`gridrl.agents.train.train_policy` and embedded in a study
(:mod:`gridrl.experiments.schema`), so the training code never depends on the study
layer. Every agent entry shares :class:`AgentBase` (name, seeds, battery control).
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gridrl.config import Count, PositiveCount, drop_unused
from gridrl.errors import GridrlError

SB3_ALGOS = ("PPO", "SAC", "TD3", "A2C", "RecurrentPPO")
# Algorithms whose policy scores given actions (``evaluate_actions``): they can imitate.
IMITATING_ALGOS = ("PPO", "A2C")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
# Constructor arguments train_policy sets itself: not hyperparameters of a study.
RESERVED_ARGUMENTS = frozenset(
    {"self", "policy", "env", "seed", "policy_kwargs", "tensorboard_log"}
)


class AlgorithmError(GridrlError, ValueError):
    """An algorithm name that is not one of :data:`SB3_ALGOS`."""


class StrictSpec(BaseModel):
    """Frozen, and unknown keys are errors (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_name(value: str) -> str:
    """``value`` if it can name a folder (letters, digits, '_' or '.')."""
    if not NAME_RE.match(value):
        raise ValueError("expected letters, digits, '_' or '.' (it names folders)")
    return value


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class for an algorithm name (``"PPO"``, ``"RecurrentPPO"``)."""
    if algo not in SB3_ALGOS:
        raise AlgorithmError(f"unknown algorithm {algo!r}; expected one of {SB3_ALGOS}")
    # deferred: stable-baselines3 imports torch, which validating a study does not need
    # unless an SB3 agent is named
    if algo == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    import stable_baselines3

    return getattr(stable_baselines3, algo)


class AgentBase(StrictSpec):
    """What every agent entry has: its name, seeds and battery control."""

    name: str
    seeds: list[Count] | None = None  # overrides the study's seeds for this agent
    # Override of the scenario's env.battery_control for this agent ("rule": the site
    # rule dispatches the batteries and the agent controls the workload only; in a
    # "residual" scenario that is the same as holding the battery action at 0).
    battery_control: Literal["rule", "setpoint", "residual"] | None = None
    # Overrides of the study's evaluation episodes (test, validation) for this agent: a
    # costly reference on a declared subset, drawn with the evaluation seed like the
    # study's own; the report pairs its rows with the others' on those weeks.
    episodes: Annotated[Count, Field(gt=0)] | None = None
    validation_episodes: Annotated[Count, Field(gt=0)] | None = None

    # Keys added after hashes of entries were first recorded (run folders' study hash,
    # unit keys): they count only when set, so an entry that does not use them keeps
    # its hash.
    LATER_KEYS: ClassVar[tuple[tuple[tuple[str, ...], Any], ...]] = (
        (("imitation", "fit_std"), False), (("imitation",), None))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    def key_values(self) -> dict[str, Any]:
        """The entry as hashes see it: every value, except :attr:`LATER_KEYS` unset."""
        data = self.model_dump(mode="json")
        for path, unused in self.LATER_KEYS:
            drop_unused(data, path, unused)
        return data


class ImitationSpec(StrictSpec):
    """Behaviour cloning of a reference controller before RL training
    (:mod:`gridrl.agents.imitation`).

    The ``expert`` (a reference name with ``params``) runs ``episodes`` windows of the
    training period, drawn with ``seed`` (the same for every training seed), in the
    agent's scenario and forecasts, then labels the states of ``rounds`` DAgger rounds.
    The policy's action mean is fitted to its actions and the value function to the
    discounted returns of its normalised rewards, for ``epochs`` passes in minibatches
    of ``batch_size`` with Adam at ``learning_rate``. The expert must act step by step
    (not a bound, which plans whole episodes at once): checked with the registry by
    :func:`gridrl.agents.registry.check_expert` (a study checks it on loading).
    """

    expert: str = "mpc"
    params: dict[str, Any] = Field(default_factory=dict)
    episodes: PositiveCount = 16
    # DAgger rounds after the expert's own episodes: in each, the policy cloned so far
    # acts on ``episodes`` other training windows and the expert labels every state it
    # visits (a cloned policy drifts into states the expert never showed it)
    rounds: Count = 0
    seed: Count = 0
    epochs: PositiveCount = 30
    batch_size: PositiveCount = 256
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    # fit the action log-std too (maximum likelihood: about the clone's error): RL then
    # explores around the clone at the scale of its error, not at the initial std
    fit_std: bool = False


class SB3AgentSpec(AgentBase):
    """An SB3 agent: algorithm, policy, constructor hyperparameters and ``policy_kwargs``.

    ``timesteps`` and ``n_envs`` override the study's training budget for this agent
    (``timesteps: 0`` with ``imitation``: the cloned policy itself, no RL).
    ``hyperparameters`` are passed to the algorithm's constructor; their names are
    checked against it before any work starts. ``imitation`` starts the policy from a
    reference controller's behaviour (PPO and A2C).
    """

    algo: Literal["PPO", "SAC", "TD3", "A2C", "RecurrentPPO"]
    policy: str | None = None  # default: MlpPolicy (MlpLstmPolicy for RecurrentPPO)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    timesteps: Annotated[Count, Field(ge=0)] | None = None
    n_envs: Annotated[Count, Field(gt=0)] | None = None
    vecnormalize: bool = True
    imitation: ImitationSpec | None = None

    @model_validator(mode="after")
    def _imitation(self) -> SB3AgentSpec:
        if self.imitation is not None and self.algo not in IMITATING_ALGOS:
            raise ValueError(f"imitation: {self.algo} cannot imitate; expected one of "
                             f"{IMITATING_ALGOS}")
        if self.timesteps == 0 and self.imitation is None:
            raise ValueError("timesteps: 0 trains nothing; it needs imitation (the cloned "
                             "policy alone)")
        return self

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algo = info.data.get("algo")
        if algo is None:
            return v  # the algo error is reported on its own key
        params = inspect.signature(algo_class(algo).__init__).parameters
        accepted = {p for p in params if not p.startswith("_")} - RESERVED_ARGUMENTS
        unknown = sorted(set(v) - accepted)
        if unknown:
            raise ValueError(
                f"unknown {algo} hyperparameter(s) {unknown}; accepted: {sorted(accepted)}"
            )
        return v

    @property
    def kind(self) -> str:
        """``"sb3"``."""
        return "sb3"

    @property
    def policy_name(self) -> str:
        """SB3 policy class name used for this agent."""
        if self.policy:
            return self.policy
        return "MlpLstmPolicy" if self.algo == "RecurrentPPO" else "MlpPolicy"


class VecNormalizeSpec(StrictSpec):
    """Arguments of SB3's ``VecNormalize`` (used by agents with ``vecnormalize: true``)."""

    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: Annotated[float, Field(gt=0.0)] = 10.0
    clip_reward: Annotated[float, Field(gt=0.0)] = 10.0
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99


class TrainingSpec(StrictSpec):
    """Training budget and logging shared by every SB3 agent of the study.

    ``timesteps``, ``checkpoint_every_steps``, the algorithms' ``gamma`` (a
    hyperparameter) and ``vecnormalize.gamma`` count env steps, not hours: at
    ``env.step_minutes`` 15 the same budget covers a quarter of the hours and the same
    discount looks a quarter as far ahead. Nothing is converted: for the hourly horizon
    use ``gamma_step = gamma_hour ** step_h`` (0.99 an hour is 0.99749 a quarter hour)
    and ``1 / step_h`` times the timesteps.
    """

    timesteps: Annotated[Count, Field(gt=0)] = 100_000
    n_envs: Annotated[Count, Field(gt=0)] = 16  # episodes stepped together by the VecEnv
    # null: no checkpoints (a short benchmark run)
    checkpoint_every_steps: Annotated[Count, Field(gt=0)] | None = 50_000
    progress_bar: bool = True
    tensorboard: bool = True
    vecnormalize: VecNormalizeSpec = VecNormalizeSpec()
    torch_threads: Annotated[Count, Field(gt=0)] = 1  # per unit: workers share the cores

    def budget(self, agent: SB3AgentSpec) -> tuple[int, int]:
        """``(timesteps, n_envs)`` of ``agent``: its own overrides, else the study's."""
        timesteps = self.timesteps if agent.timesteps is None else agent.timesteps
        return timesteps, agent.n_envs or self.n_envs

    def normalization(self, agent: SB3AgentSpec) -> VecNormalizeSpec | None:
        """The ``VecNormalize`` arguments ``agent`` trains with (None: raw observations)."""
        return self.vecnormalize if agent.vecnormalize else None
