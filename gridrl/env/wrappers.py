"""Discrete (MultiDiscrete) action versions of the environments.

Every action component gets ``L`` levels (``env.discrete_action_levels`` unless given):
level ``j`` of ``0..L-1`` is the normalised action ``-1 + 2 j / (L - 1)``, i.e. the
physical range of the component split evenly (``run`` 0, 1/4, ... 1 for ``L = 5``).
A level outside ``0..L-1`` raises ``ValueError``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

__all__ = ["DiscreteActions", "levels_to_box"]


def levels_to_box(levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Map integer levels ``0..n_levels-1`` to [-1, 1] (float32).

    Raises
    ------
    ValueError
        For a level outside ``0..n_levels-1`` or a non-integer value.
    """
    a = np.asarray(levels)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"discrete actions must be integers, got {a!r}")
    if np.any(a < 0) or np.any(a >= n_levels):
        raise ValueError(f"discrete actions must lie in 0..{n_levels - 1}, got {a!r}")
    return (-1.0 + 2.0 * a.astype(np.float64) / (n_levels - 1)).astype(np.float32)


class DiscreteActions(gym.ActionWrapper):
    """``MultiDiscrete([L] * dim)`` actions for a :class:`~gridrl.env.gym_env.GridEnv`.

    Parameters
    ----------
    env : gym.Env
        A GridEnv (or a wrapper of one) with a Box(-1, 1) action space.
    n_levels : int, optional
        Levels per component; default ``scenario.env.discrete_action_levels``.
    """

    def __init__(self, env: gym.Env, n_levels: int | None = None) -> None:
        super().__init__(env)
        if n_levels is None:
            n_levels = int(env.unwrapped.scenario.env.discrete_action_levels)
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.n_levels = n_levels
        dim = env.action_space.shape[0]
        self.action_space = gym.spaces.MultiDiscrete(np.full(dim, n_levels, dtype=np.int64))

    def action(self, action: np.ndarray) -> np.ndarray:
        """Levels -> normalised Box action."""
        return levels_to_box(action, self.n_levels)
