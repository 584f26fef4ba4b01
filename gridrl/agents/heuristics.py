"""Heuristic reference controllers, vectorised over episodes and sites.

All of them read the structured state and the forecasts of the :class:`StepContext`
(never the observation vector), and act through the environment's action semantics
(``core.physical_action``): ``run`` a share of the queue earliest deadline first, a
power ``cap``, ``route`` preferences, a ``migrate`` share.

- :class:`RunNow` — the status quo: all queued work now, uncapped, no migration.
- :class:`CarbonAware` — temporal shifting (Wiesner et al. 2021): run the queue when the
  hour's carbon intensity is at or below a quantile of the forecast over the hours the
  queued work can still wait; otherwise run only what is due (overdue and slack 0).
- :class:`FollowRenewables` — geographic shifting: route migrations to the site with the
  most forecast spare generation and send it, from sites in deficit, as much work as
  that generation can run; run everything now.
- :class:`HeadroomGuard` — throttle, then defer, to keep the facility's draw under the
  headroom (times a safety margin) plus local generation and what the battery can
  give; due work always runs.
- :class:`DRCap` — run now, but hold import to a demand-response event's level while
  it lasts (cap, then defer).
- :class:`RandomPolicy` — uniform actions (a floor for tests and reports).

Parameters come from pydantic models whose defaults are documented on their fields.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gridrl.agents.policy import EpisodeBatch, StepContext, actions_from
from gridrl.env import physics
from gridrl.env.kernel import Exo, discharge_available_kw, dr_event_on
from gridrl.errors import GridrlError

__all__ = [
    "CarbonAware", "CarbonAwareParams", "DRCap", "DRCapParams", "FollowRenewables",
    "FollowRenewablesParams", "HeadroomGuard", "HeadroomGuardParams", "RandomPolicy",
    "RandomParams", "RunNow", "RunNowParams",
]

# Queue buckets holding less than this (GPU-h) count as empty.
_EMPTY_GPU_H = 1e-9


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _actions(ctx: StepContext, run: np.ndarray, cap: np.ndarray,
             route: np.ndarray | None = None, migrate: np.ndarray | None = None) -> np.ndarray:
    """Env actions for physical decisions ``[B, N]``. A battery action, if the scenario
    has one, asks for what the env's dispatch rule wants for the facility power these
    decisions draw: the status-quo battery."""
    return ctx.set_battery(actions_from(ctx.params, run, cap, route=route, migrate=migrate))


def _due_share(q1: np.ndarray, steps_left: np.ndarray | int = 1) -> np.ndarray:
    """``[B, N]`` share of the queue that is overdue or due this step (EDF takes it
    first): overdue work and this hour's slack-0 work over the ``steps_left`` ``[B, 1]``
    steps of the hour (all of it at hourly steps)."""
    total = q1.sum(-1)
    due = q1[..., 0] + q1[..., 1] / steps_left
    return np.divide(due, total, out=np.zeros_like(total), where=total > _EMPTY_GPU_H)


def _wait_steps(ctx: StepContext, q1: np.ndarray, n_steps: int) -> np.ndarray:
    """``[B, N]`` steps from this one to the deadline of the longest-waiting queued work
    (at most ``n_steps``): slack bucket ``s`` is due by the end of the hour ``s`` hours
    after this step's, ``s k`` steps after this hour's ``steps_left_in_hour``."""
    present = q1[..., 1:] > _EMPTY_GPU_H
    longest = np.where(present.any(-1), (present * np.arange(present.shape[-1])).max(-1), 0)
    steps = longest * ctx.params.steps_per_hour + ctx.steps_left_in_hour[:, None]
    return np.minimum(steps, n_steps)


# --------------------------------------------------------------------------- run_now


class RunNowParams(_Params):
    """``run_now`` has no parameters."""


class RunNow:
    """Status quo: run all queued work now at full power, no migration; the battery
    follows the env's dispatch rule (also with a battery action)."""

    name = "run_now"
    is_bound = False

    def __init__(self, params: RunNowParams | None = None) -> None:
        self.params = params or RunNowParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Run share 1, cap 1, neutral route, no migration."""
        ones = np.ones((len(ctx.rows), ctx.params.n_sites))
        return _actions(ctx, ones, ones)


# --------------------------------------------------------------------------- carbon_aware


class CarbonAwareParams(_Params):
    """``carbon_aware`` parameters."""

    # Run when carbon is at or below this quantile of the forecast window.
    quantile: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    # Longest window (h) looked at; shorter when the queued work cannot wait that long.
    window_h: Annotated[int, Field(ge=1)] = 24


class CarbonAware:
    """Defer flexible work while the hour's carbon intensity is above the ``quantile`` of
    the forecast over the hours the queued work can still wait (at most ``window_h``);
    run what is due (overdue and slack 0) regardless. Cap 1, no migration."""

    name = "carbon_aware"
    is_bound = False

    def __init__(self, params: CarbonAwareParams | None = None) -> None:
        self.params = params or CarbonAwareParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Run everything in a low-carbon hour, only due work otherwise."""
        hw = self.params.window_h
        fc = ctx.forecast(hw)[..., Exo.CARBON_G_PER_KWH]  # [B, H, N]
        q1 = ctx.queue_after_arrivals()  # [B, N, S+1]
        # the window: the steps to the deadline of the longest slack queued
        n_steps = fc.shape[1]
        length = _wait_steps(ctx, q1, n_steps)  # [B, N]
        h = np.arange(n_steps)
        window = np.where(h[None, :, None] < length[:, None, :], fc, np.nan)
        threshold = np.nanquantile(window, self.params.quantile, axis=1)  # [B, N]
        now = ctx.exo_t[..., Exo.CARBON_G_PER_KWH]
        run = np.where(now <= threshold, 1.0, _due_share(q1, ctx.steps_left_in_hour[:, None]))
        return _actions(ctx, run, np.ones_like(run))


# --------------------------------------------------------------------------- follow_renewables


class FollowRenewablesParams(_Params):
    """``follow_renewables`` parameters."""

    # Hours of forecast averaged into each site's surplus.
    window_h: Annotated[int, Field(ge=1)] = 6
    # A site migrates only while at most this share of its queue is due within an hour
    # (the env moves a share of every bucket; urgent work would arrive late).
    max_urgent_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1


class FollowRenewables:
    """Geographic shifting towards local generation.

    Each site's forecast spare generation over ``window_h`` hours is ``pv + wind`` minus
    the power of what it must run anyway: idle GPUs, inference and its own queue
    (uncapped). The site with the most spare generation is every route's destination;
    sites with a deficit send it work (the same share of each queue, at most
    ``max_migration_fraction``), as much as that spare generation can run, while
    little of their queue is urgent. Everything runs now, uncapped."""

    name = "follow_renewables"
    is_bound = False

    def __init__(self, params: FollowRenewablesParams | None = None) -> None:
        self.params = params or FollowRenewablesParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Route to the site with the most spare generation, migrate from deficit sites."""
        p = ctx.params
        fc = ctx.forecast(self.params.window_h)  # [B, H, N, K]
        pue = physics.pue_of(p, fc).mean(axis=1)  # [B, N]
        gen = (fc[..., Exo.PV_KW] + fc[..., Exo.WIND_KW]).mean(axis=1)
        demand = fc[..., Exo.INFERENCE_GPUS].mean(axis=1)
        q1 = ctx.queue_after_arrivals()
        queue = q1.sum(-1)
        kw_per_gpu_h = physics.it_kwh_per_gpu_h(p, 1.0)  # uncapped
        # GPUs the own queue (GPU-h) would occupy over a step, at most the free ones
        own = np.minimum(queue / p.step_h, np.maximum(p.gpus - demand, 0.0))
        spare = gen - physics.facility_kw(p, pue, physics.it_kw(p, demand, own, 1.0))  # kW
        b, n = spare.shape
        best = spare.argmax(-1)
        rows = np.arange(b)
        is_best = np.arange(n)[None, :] == best[:, None]
        route = np.where(is_best, 1.0, -1.0)
        # GPU-h the best site's spare generation (and free GPUs) can run
        free = np.maximum(p.gpus - demand - own, 0.0)[rows, best]
        absorb = np.minimum(np.maximum(spare[rows, best], 0.0)
                            / (pue[rows, best] * kw_per_gpu_h[best]), free) * p.step_h
        urgent = _due_share(q1) + np.divide(q1[..., 2], queue, out=np.zeros_like(queue),
                                            where=queue > _EMPTY_GPU_H)
        send = (~is_best) & (spare < 0.0) & (urgent <= self.params.max_urgent_fraction)
        pool = np.where(send, queue, 0.0).sum(-1)
        share = np.divide(absorb, pool, out=np.zeros_like(pool), where=pool > _EMPTY_GPU_H)
        migrate = np.where(send, np.minimum(share, p.max_migration_fraction)[:, None], 0.0)
        ones = np.ones((b, n))
        return _actions(ctx, ones, ones, route=route, migrate=migrate)


# --------------------------------------------------------------------------- headroom_guard


class HeadroomGuardParams(_Params):
    """``headroom_guard`` parameters."""

    # Share of the hour's headroom the site plans to use (the rest is a safety margin).
    margin_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95


class HeadroomGuard:
    """Keep the facility's draw under ``margin_fraction x headroom + pv + wind + battery
    discharge available``: run everything at the highest cap (throttle curve point) that
    fits; if even ``cap_min`` does not fit, defer flexible work beyond what is due. No
    migration."""

    name = "headroom_guard"
    is_bound = False

    def __init__(self, params: HeadroomGuardParams | None = None) -> None:
        self.params = params or HeadroomGuardParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Highest cap that fits, then a run share that fits."""
        run, cap = _fit_import(ctx, self.params.margin_fraction * ctx.exo_t[..., Exo.HEADROOM_KW])
        return _actions(ctx, run, cap)


def _fit_import(ctx: StepContext, import_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(run, cap)`` ``[B, N]`` that keep the facility's draw under ``import_kw + pv +
    wind + battery discharge available``: all work at the highest cap (throttle curve
    point) that fits; if even ``cap_min`` does not fit, flexible work beyond what is
    due is deferred."""
    p = ctx.params
    exo = ctx.exo_t  # [B, N, K]
    q1 = ctx.queue_after_arrivals()
    total = q1.sum(-1)
    pue = physics.pue_of(p, exo)
    st = ctx.state
    battery = np.minimum(p.battery_power_kw, discharge_available_kw(
        st.soc_kwh, p.soc_min_kwh, p.battery_eta) / p.step_h)  # kW over the step
    rate = total / p.step_h  # GPU-h per hour that runs the whole queue in the step
    limit = import_kw + exo[..., Exo.PV_KW] + exo[..., Exo.WIND_KW] + battery
    demand = exo[..., Exo.INFERENCE_GPUS]
    levels = p.throttle_cap[p.throttle_cap >= p.cap_min]
    levels = np.unique(np.concatenate([[p.cap_min], levels]))[::-1]  # 1 .. cap_min
    cap = np.full(total.shape, p.cap_min)
    fits_any = np.zeros(total.shape, dtype=bool)
    for c in levels:  # a handful of curve points
        inf, flex, _ = physics.dispatch(p, demand, rate, c)
        fac = physics.facility_kw(p, pue, physics.it_kw(p, inf, flex, c))
        ok = (fac <= limit) & ~fits_any
        cap = np.where(ok, c, cap)
        fits_any |= ok
    # at cap_min: flexible work that fits, never less than what is due
    per_gpu_h = pue * physics.it_kwh_per_gpu_h(p, p.cap_min)
    inf_m, _, _ = physics.dispatch(p, demand, 0.0, p.cap_min)
    # GPU-h of flexible work the limit leaves room for above idle power and inference
    base = physics.facility_kw(p, pue, physics.it_kw(p, inf_m, 0.0, p.cap_min))
    flex_ok = np.maximum((limit - base) / np.where(per_gpu_h > 0, per_gpu_h, 1.0), 0.0)
    share = np.divide(flex_ok, rate, out=np.ones_like(total), where=total > _EMPTY_GPU_H)
    due = _due_share(q1, ctx.steps_left_in_hour[:, None])
    run = np.where(fits_any, 1.0, np.maximum(np.minimum(share, 1.0), due))
    return run, cap


class DRCapParams(_Params):
    """``dr_cap`` parameters."""

    # Share of an event's level the site plans to import (the rest is a safety margin).
    margin_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95


class DRCap:
    """Run now, except in the hours of a demand-response event: then cap (and, if even
    ``cap_min`` is too much, defer) so that import stays under ``margin_fraction`` of the
    event's level, as :class:`HeadroomGuard` does with headroom. Acts only once the event
    has started; no planning ahead, no migration."""

    name = "dr_cap"
    is_bound = False

    def __init__(self, params: DRCapParams | None = None) -> None:
        self.params = params or DRCapParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Uncapped outside events, the event's level inside them."""
        exo = ctx.exo_t
        on = dr_event_on(exo[..., Exo.DR_STARTS_IN_H], exo[..., Exo.DR_REMAINING_H]) > 0
        run, cap = _fit_import(ctx, self.params.margin_fraction * exo[..., Exo.DR_LIMIT_KW])
        return _actions(ctx, np.where(on, run, 1.0), np.where(on, cap, 1.0))


# --------------------------------------------------------------------------- random


class RandomParams(_Params):
    """``random`` parameters."""

    seed: int = 0  # combined with the evaluation seed


class RandomPolicy:
    """Uniform random actions in [-1, 1], reproducible under the evaluation seed."""

    name = "random"
    is_bound = False

    def __init__(self, params: RandomParams | None = None) -> None:
        self.params = params or RandomParams()
        self._rng = np.random.default_rng(self.params.seed)

    def reset(self, batch: EpisodeBatch) -> None:
        """Reseed from the policy seed and the evaluation seed."""
        self._rng = np.random.default_rng([self.params.seed, batch.seed])

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Uniform actions ``[B, N * A]``."""
        p = ctx.params
        return self._rng.uniform(-1.0, 1.0, (len(ctx.rows), p.n_sites * p.n_actions_per_site))


# --------------------------------------------------------------------------- validation-tuned rules

__all__ += [
    "GreedySpatial", "GreedySpatialParams", "PriceThreshold", "PriceThresholdParams",
    "SiteSettingsError", "StaticParams", "StaticPolicy",
]
_Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class SiteSettingsError(GridrlError, ValueError):
    """Per-site settings whose count does not match the scenario's sites (names the key)."""


def _per_site(value: float | list[float], n: int, key: str) -> np.ndarray:
    """``[N]`` from one value for every site or one per site (length checked)."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.size == 1:
        return np.full(n, float(arr[0]))
    if arr.size != n:
        raise SiteSettingsError(
            f"{key}: expected one value or {n} (one per site), got {arr.size}")
    return arr


class StaticParams(_Params):
    """``static`` parameters: one value for every site or a list with one per site."""

    # Power cap fraction (values below the scenario's cap_min act as cap_min).
    cap: _Fraction | list[_Fraction] = 1.0
    # Share of the queue run each hour (due work always runs).
    run_share: _Fraction | list[_Fraction] = 1.0


class StaticPolicy:
    """A fixed power cap and run share per site, every hour: the best of these (chosen
    on the validation period) is the baseline a forecast-aware policy must beat. Work
    that is due runs regardless of the share (no rule should miss deadlines by design);
    no migration; the battery follows the env's rule."""

    name = "static"
    is_bound = False

    def __init__(self, params: StaticParams | None = None) -> None:
        self.params = params or StaticParams()
        self._cap = self._share = np.ones(1)

    def reset(self, batch: EpisodeBatch) -> None:
        """Broadcast the settings to the scenario's sites (length checked)."""
        n = batch.params.n_sites
        self._cap = np.maximum(_per_site(self.params.cap, n, "cap"), batch.params.cap_min)
        self._share = _per_site(self.params.run_share, n, "run_share")

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """The fixed settings, with at least the due share run."""
        run = np.maximum(self._share[None, :], _due_share(ctx.queue_after_arrivals(),
                                                           ctx.steps_left_in_hour[:, None]))
        return _actions(ctx, run, np.broadcast_to(self._cap, run.shape))


def _cheap_hour_run(ctx: StepContext, signal: str, quantile: float, window_h: int) -> np.ndarray:
    """``[B, N]`` run share: everything when the hour's ``signal`` is at or below its
    ``quantile`` over the forecast hours the queued work can still wait, else what is
    due (the rule of :class:`CarbonAware` for any signal)."""
    fc = ctx.forecast(window_h)[..., Exo[signal.upper()]]  # [B, H, N]
    q1 = ctx.queue_after_arrivals()
    n_steps = fc.shape[1]
    length = _wait_steps(ctx, q1, n_steps)
    window = np.where(np.arange(n_steps)[None, :, None] < length[:, None, :], fc, np.nan)
    threshold = np.nanquantile(window, quantile, axis=1)
    due = _due_share(q1, ctx.steps_left_in_hour[:, None])
    return np.where(ctx.exo_t[..., Exo[signal.upper()]] <= threshold, 1.0, due)


class PriceThresholdParams(_Params):
    """``price_threshold`` parameters."""

    # Run when the price is at or below this quantile of the forecast window.
    quantile: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    # Longest window (h) looked at; shorter when the queued work cannot wait that long.
    window_h: Annotated[int, Field(ge=1)] = 24


class PriceThreshold:
    """Defer flexible work while the hour's price is above the ``quantile`` of the
    forecast prices over the hours the queued work can still wait; run what is due
    regardless. Cap 1, no migration."""

    name = "price_threshold"
    is_bound = False

    def __init__(self, params: PriceThresholdParams | None = None) -> None:
        self.params = params or PriceThresholdParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Run everything in a cheap hour, only due work otherwise."""
        p = self.params
        run = _cheap_hour_run(ctx, "price_per_mwh", p.quantile, p.window_h)
        return _actions(ctx, run, np.ones_like(run))


class GreedySpatialParams(_Params):
    """``greedy_spatial`` parameters."""

    # Hours of forecast the cost is averaged over (at most the longest queued slack).
    window_h: Annotated[int, Field(ge=1)] = 12
    # A site sends work only when its cost exceeds the cheapest site's by this share.
    min_saving_fraction: Annotated[float, Field(ge=0.0)] = 0.1
    # ... and while at most this share of its queue is due within an hour.
    max_urgent_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1


class GreedySpatial:
    """Send flexible work to the site with the lowest forecast cost over the slack.

    A site's cost per kWh is the reward's price of grid energy, ``w_carbon x carbon +
    w_cost x price`` (per kWh) times its PUE, averaged over the forecast hours the queued
    work can wait (at most ``window_h``). The cheapest site is every route's
    destination; sites dearer by more than ``min_saving_fraction`` send it queued work
    (at most ``max_migration_fraction`` of their queue, no more than its free GPUs can
    take) while little of their queue is urgent. Everything runs now, uncapped."""

    name = "greedy_spatial"
    is_bound = False

    def __init__(self, params: GreedySpatialParams | None = None) -> None:
        self.params = params or GreedySpatialParams()

    def reset(self, batch: EpisodeBatch) -> None:
        """Nothing to prepare."""

    def _cost(self, ctx: StepContext, q1: np.ndarray) -> np.ndarray:
        p, hw = ctx.params, self.params.window_h
        fc = ctx.forecast(hw)  # [B, H, N, K]
        per_kwh = physics.import_price_per_kwh(
            p, fc[..., Exo.CARBON_G_PER_KWH], fc[..., Exo.PRICE_PER_MWH]
        ) * physics.pue_of(p, fc)
        n_steps = fc.shape[1]
        slack = _wait_steps(ctx, q1, n_steps).max(-1)  # [B]: the fleet's longest wait
        inside = np.arange(n_steps)[None, :, None] < slack[:, None, None]
        return np.nanmean(np.where(inside, per_kwh, np.nan), axis=1)  # [B, N]

    def act(self, obs: np.ndarray, ctx: StepContext) -> np.ndarray:
        """Route to the cheapest site; migrate from dear, non-urgent sites."""
        p = ctx.params
        q1 = ctx.queue_after_arrivals()
        queue = q1.sum(-1)
        cost = self._cost(ctx, q1)
        b, n = cost.shape
        rows, best = np.arange(b), cost.argmin(-1)
        is_best = np.arange(n)[None, :] == best[:, None]
        dear = cost > cost[rows, best][:, None] * (1.0 + self.params.min_saving_fraction)
        urgent = _due_share(q1) + np.divide(q1[..., 2], queue, out=np.zeros_like(queue),
                                            where=queue > _EMPTY_GPU_H)
        send = ~is_best & dear & (urgent <= self.params.max_urgent_fraction)
        demand = ctx.exo_t[..., Exo.INFERENCE_GPUS]
        # GPU-h the best site's GPUs left by inference and its own queue run in a step
        free = np.maximum(p.gpus - demand - queue / p.step_h, 0.0)[rows, best] * p.step_h
        pool = np.where(send, queue, 0.0).sum(-1)
        share = np.divide(free, pool, out=np.zeros_like(pool), where=pool > _EMPTY_GPU_H)
        migrate = np.where(send, np.minimum(share, p.max_migration_fraction)[:, None], 0.0)
        ones = np.ones((b, n))
        return _actions(ctx, ones, ones, route=np.where(is_best, 1.0, -1.0), migrate=migrate)
