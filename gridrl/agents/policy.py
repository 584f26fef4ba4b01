"""The policy protocol every controller is evaluated through.

A policy maps a batch of observations (``[B, D]`` float32, the environment's observation
vector) to a batch of normalised actions (``[B, N * A]`` in [-1, 1], the environment's
action vector). Reference controllers also read a :class:`StepContext`: the structured
state of the core, the parameters, the exogenous rows of the hour and a
:class:`ForecastView` of the forecasts they may use. SB3 models ignore the context
(:class:`SB3Policy` wraps them: deterministic ``predict`` on observations normalised with
the saved ``VecNormalize`` statistics).

``reset(batch)`` is called before the first step of a batch of episodes. A policy with
``is_bound = True`` is not stepped: the harness asks it for the episodes' optimum
(:meth:`gridrl.agents.bound.LPBound.solve_episode`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gridrl.env import physics
from gridrl.env.clock import hour_phase, hours_to_steps, step_hours, steps_per_hour
from gridrl.env.episodes import Window
from gridrl.env.inputs import EnvData
from gridrl.env.kernel import EXO_SIGNALS, Act, Exo, PackedParams, pack
from gridrl.env.params import EnvParams
from gridrl.env.state import EnvState

__all__ = [
    "EpisodeBatch", "ForecastView", "Policy", "SB3Policy", "StepContext", "actions_from",
    "as_policy",
]

HOURS_PER_DAY = 24


class ForecastView:
    """Median forecasts of every exogenous signal for the next steps, as references see
    them.

    ``p50(rows, steps)`` returns ``[B, steps, N, K]``: entry ``h = 0`` is the step being
    decided (its signals are observed), ``h >= 1`` the forecast issued at that row for
    ``h`` steps (``h step_h`` hours) ahead (``core.EXO_SIGNALS`` order). At sub-hourly
    steps the cube is the one issued at the start of the step's hour, and step ``h`` of
    a row ``p`` steps into its hour reads the cube's horizon ``(p + h) // k`` hours
    (``k`` steps an hour; 0 is the observed value): the env holds an hour's value over
    its steps.

    - ``perfect``: the true rows (an oracle).
    - a forecast cube (``persistence``, ``noisy(sigma)``, ``lightgbm``): the cube's P50
      of each signal it holds, linear in the horizon between the observed value
      (``h = 0``) and the cube's horizons, held flat after the longest one. Signals the
      cube does not hold (flexible arrivals, temperature) use the seasonal naive
      forecast (the same hour of the latest day already observed). Grid events are
      what is announced at the row (``physics.announced_events``): the current or next
      demand-response event, headroom 0 in an announced outage.
    - ``none`` or no cube: persistence of the observed value for the cube's signals,
      seasonal naive for the others (the references need *some* forecast; ``none``
      gives them only what they observe).

    Parameters
    ----------
    data : EnvData
    mode : str
        Forecast mode of the cube (``data.forecast.mode``) or ``perfect``.
    """

    def __init__(self, data: EnvData, mode: str | None) -> None:
        self.data = data
        self.exo = data.exo
        self.mode = "perfect" if mode == "perfect" else (mode or "none")
        cube = data.forecast
        self._cube_k: list[int] = []
        self._cube_p50: np.ndarray | None = None
        self._cube_h = np.zeros(0, dtype=np.int64)
        if cube is not None and self.mode != "perfect":
            pos_site = [cube.sites.index(s) for s in data.site_names]
            ks = [k for k, name in enumerate(EXO_SIGNALS) if name in cube.signals]
            qs = np.asarray(cube.quantiles, dtype=float)
            q50 = int(np.argmin(np.abs(qs - 0.5)))
            if abs(qs[q50] - 0.5) > 1e-9:
                raise ValueError(f"forecast cube has no 0.5 quantile: {cube.quantiles}")
            sig = [cube.signals.index(EXO_SIGNALS[k]) for k in ks]
            self._cube_k = ks
            # [T, N, Kc, Hc]
            self._cube_p50 = np.asarray(cube.values[:, pos_site][:, :, sig][..., q50],
                                        dtype=np.float64)
            self._cube_h = np.asarray(cube.horizons_h, dtype=np.int64)
        self._use_cube = self._cube_p50 is not None and self.mode != "none"
        self.step_h = step_hours(data.step_minutes)
        self._k = steps_per_hour(data.step_minutes)

    def p50(self, rows: np.ndarray, steps: int) -> np.ndarray:
        """``[B, steps, N, K]`` median forecasts issued at ``rows`` ``[B]`` (see class doc)."""
        rows = np.asarray(rows, dtype=np.int64)
        t_len = self.exo.shape[0]
        h = np.arange(steps)
        target = np.minimum(rows[:, None] + h[None, :], t_len - 1)  # [B, H]
        if self.mode == "perfect":
            return self.exo[target]
        # seasonal naive for every signal: same step of the latest observed day
        day = HOURS_PER_DAY * self._k
        back = day * np.ceil(h / day).astype(np.int64)
        naive = np.clip(rows[:, None] + h[None, :] - back[None, :], 0, t_len - 1)
        out = self.exo[naive].copy()  # [B, H, N, K]; h = 0 is the observed row
        if not self._cube_k:
            return physics.announced_events(self.exo[rows], out, self.step_h)
        now = self.exo[rows][:, :, self._cube_k]  # [B, N, Kc]
        if not self._use_cube:
            out[:, :, :, self._cube_k] = now[:, None]
            return physics.announced_events(self.exo[rows], out, self.step_h)
        cube = self._cube_p50[rows]  # [B, N, Kc, Hc]
        xp = np.concatenate([[0], self._cube_h]).astype(np.float64)
        fp = np.concatenate([now[..., None], cube], axis=-1)  # [B, N, Kc, 1 + Hc]
        # the env holds each hour's value over its steps: step h of a row in phase p lies
        # in the hour (p + h) // k after the row's (0: the observed hour), and the cube
        # was issued at the start of the row's hour; linear between the cube's horizons
        phase = hour_phase(rows, self.data.step_minutes)
        hh = np.minimum((phase[:, None] + h[None, :]) // self._k, self._cube_h[-1])  # [B, H]
        j = np.clip(np.searchsorted(xp, hh, side="right") - 1, 0, len(xp) - 2)
        frac = (hh - xp[j]) / (xp[j + 1] - xp[j])
        b_ix = np.arange(len(rows))[:, None]
        lo = fp[b_ix, :, :, j]  # [B, H, N, Kc]
        hi = fp[b_ix, :, :, j + 1]
        out[:, :, :, self._cube_k] = lo + (hi - lo) * frac[:, :, None, None]
        return physics.announced_events(self.exo[rows], out, self.step_h)


@dataclass(eq=False)
class EpisodeBatch:
    """Episodes evaluated together.

    Attributes
    ----------
    params : EnvParams
    data : EnvData
    windows : list of Window
        Data rows of each episode (batch order).
    forecasts : ForecastView
    seed : int
        Evaluation seed (stochastic policies draw from it).
    """

    params: EnvParams
    data: EnvData
    windows: list[Window]
    forecasts: ForecastView
    seed: int = 0

    @functools.cached_property
    def packed(self) -> PackedParams:
        """The parameters packed for the compiled step (:func:`gridrl.env.kernel.pack`)."""
        return pack(self.params)

    @property
    def size(self) -> int:
        """Number of episodes ``B``."""
        return len(self.windows)

    @property
    def starts(self) -> np.ndarray:
        """``[B]`` first data row of each episode."""
        return np.array([w.start for w in self.windows], dtype=np.int64)

    @property
    def ends(self) -> np.ndarray:
        """``[B]`` end row (exclusive) of each episode."""
        return np.array([w.start + w.steps for w in self.windows], dtype=np.int64)


@dataclass(eq=False)
class StepContext:
    """What a reference controller may read at a step.

    Attributes
    ----------
    batch : EpisodeBatch
    state : EnvState
        Core state at the start of the step (live: copy what you keep).
    rows : ndarray
        ``[B]`` data row of the step being decided.
    step : int
        Steps since the episodes began.
    """

    batch: EpisodeBatch
    state: EnvState
    rows: np.ndarray
    step: int
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def params(self) -> EnvParams:
        """Scenario parameters."""
        return self.batch.params

    @property
    def exo_t(self) -> np.ndarray:
        """``[B, N, K]`` observed signals of the step."""
        return self.batch.data.exo[self.rows]

    @property
    def steps_left_in_hour(self) -> np.ndarray:
        """``[B]`` steps of the current hour from this one on (1 at hourly steps): work
        due this hour may run in any of them."""
        data = self.batch.data
        return (steps_per_hour(data.step_minutes)
                - hour_phase(self.rows, data.step_minutes))

    @property
    def remaining(self) -> np.ndarray:
        """``[B]`` steps left in each episode, this one included."""
        return self.batch.ends - self.rows

    def set_battery(self, actions: np.ndarray, setpoint_kw: np.ndarray | None = None
                    ) -> np.ndarray:
        """``actions`` ``[B, N * A]`` with the battery asked for ``setpoint_kw``
        ``[B, N]`` (kW, + charges; None or NaN entries: the dispatch rule), through
        ``physics.encode_battery_kw``. Unchanged without a battery action."""
        p = self.params
        if not p.battery_action:
            return actions
        a = actions.reshape(len(self.rows), p.n_sites, p.n_actions_per_site)
        a = physics.encode_battery_kw(p, self.state, a, self.exo_t, setpoint_kw,
                                      self.batch.packed)
        return a.reshape(actions.shape)

    def forecast(self, hours: int) -> np.ndarray:
        """``[B, steps, N, K]`` median forecasts for ``hours`` (as many steps) from this
        step on (``ForecastView.p50``)."""
        return self.forecast_steps(
            hours_to_steps(hours, self.batch.data.step_minutes, "forecast window"))

    def forecast_steps(self, steps: int) -> np.ndarray:
        """``[B, steps, N, K]`` median forecasts for ``steps`` steps from this one."""
        key = ("p50", steps)
        if key not in self._cache:
            self._cache[key] = self.batch.forecasts.p50(self.rows, steps)
        return self._cache[key]

    def queue_after_arrivals(self) -> np.ndarray:
        """``[B, N, S + 1]`` queue the step starts from: queued + arriving transit + this
        step's arrivals (equation 1 of the core)."""
        p = self.params
        a = self.exo_t[..., Exo.FLEXIBLE_GPU_H]
        return self.state.queue_gpu_h + self.state.transit_gpu_h + a[..., None] * p.arrival_split


@runtime_checkable
class Policy(Protocol):
    """A controller: ``act(obs [B, D], ctx) -> actions [B, N * A]`` in [-1, 1]."""

    name: str

    def reset(self, batch: EpisodeBatch) -> None:
        """Prepare for a batch of episodes."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Actions of every episode for the hour ``ctx.rows``."""


def actions_from(params: EnvParams, run: np.ndarray, cap: np.ndarray,
                 route: np.ndarray | None = None, migrate: np.ndarray | None = None,
                 ) -> np.ndarray:
    """Normalised actions ``[B, N * A]`` from physical values ``[B, N]`` (inverse of
    ``core.physical_action``).

    Parameters
    ----------
    run : share of the queue to run, [0, 1]
    cap : power cap fraction, [cap_min, 1]
    route : normalised route preference in [-1, 1] (default 0: all equal)
    migrate : share of the queue to send away, [0, max_migration_fraction] (default 0)

    A battery component, if the scenario has one, is 0 (an idle setpoint, or the rule
    under ``residual``); :meth:`StepContext.set_battery` sets it.
    """
    p = params
    run = np.asarray(run, dtype=np.float64)
    b, n = run.shape
    out = np.zeros((b, n, p.n_actions_per_site))
    out[..., Act.RUN] = 2.0 * np.clip(run, 0.0, 1.0) - 1.0
    span = 1.0 - p.cap_min
    cap_u = (2.0 * (np.asarray(cap, float) - p.cap_min) / span - 1.0) if span > 0 else 1.0
    out[..., Act.CAP] = np.clip(cap_u, -1.0, 1.0)
    out[..., Act.ROUTE] = 0.0 if route is None else np.clip(route, -1.0, 1.0)
    m_max = p.max_migration_fraction
    if migrate is None or m_max <= 0 or n == 1:
        out[..., Act.MIGRATE] = -1.0
    else:
        out[..., Act.MIGRATE] = np.clip(2.0 * np.asarray(migrate, float) / m_max - 1.0, -1.0, 1.0)
    return out.reshape(b, n * p.n_actions_per_site)


class SB3Policy:
    """A stable-baselines3 model as a policy: deterministic ``predict`` on observations
    normalised with saved ``VecNormalize`` statistics (if given).

    Parameters
    ----------
    model
        A loaded SB3 model (``PPO.load(...)``), or an object with ``predict(obs,
        episode_start=...)`` such as :class:`gridrl.agents.train.SB3Policy`.
    vecnormalize : VecNormalize, optional
        Its ``normalize_obs`` is applied (statistics frozen).
    deterministic : bool
        Mean action (default) or a sample.
    name : str
    """

    is_bound = False

    def __init__(self, model: Any, vecnormalize: Any = None, deterministic: bool = True,
                 name: str | None = None) -> None:
        self.model = model
        self.vecnormalize = vecnormalize
        if vecnormalize is not None:
            vecnormalize.training = False
        self.deterministic = deterministic
        self.name = name or getattr(model, "name", None) or type(model).__name__
        self._state: Any = None
        self._recurrent = "Recurrent" in type(getattr(model, "policy", model)).__name__ or (
            "Recurrent" in type(model).__name__)
        # train.SB3Policy normalises itself and tracks its recurrent state
        self._wrapper = hasattr(model, "obs_normalizer") and hasattr(model, "reset")

    def reset(self, batch: EpisodeBatch) -> None:
        """New episodes: forget any recurrent state."""
        self._state = None
        if self._wrapper:
            self.model.reset()

    def act(self, obs: np.ndarray, ctx: StepContext | None = None) -> np.ndarray:
        """Actions ``[B, N * A]`` for raw observations ``[B, D]``."""
        obs = np.asarray(obs, dtype=np.float32)
        start = None
        if ctx is not None:
            start = np.full(len(obs), ctx.step == 0)
        if self._wrapper:
            return np.asarray(self.model.predict(obs, episode_start=start))
        x = self.vecnormalize.normalize_obs(obs) if self.vecnormalize is not None else obs
        if self._recurrent:
            if start is None:
                start = np.full(len(x), self._state is None)
            action, self._state = self.model.predict(
                x, state=self._state, episode_start=start, deterministic=self.deterministic)
        else:
            action, _ = self.model.predict(x, deterministic=self.deterministic)
        return np.asarray(action)


def as_policy(obj: Any) -> Any:
    """``obj`` as a policy: policies pass through; SB3 models and trained-policy
    wrappers (anything with ``predict``) are wrapped in :class:`SB3Policy`.

    Raises
    ------
    TypeError
        For an object that is neither.
    """
    if hasattr(obj, "act") and hasattr(obj, "reset"):
        return obj
    if hasattr(obj, "predict"):
        return SB3Policy(obj, name=getattr(obj, "name", None))
    raise TypeError(f"{type(obj).__name__} is not a policy (no act/reset) nor an SB3 model "
                    "(no predict)")
