"""Calendar features of a step: hour of day and weekday on the unit circle.

One definition for the environment's observations (:mod:`gridrl.env.layout`, every hour
of the data at once) and for a scheduler building the same observation from the clock
(:mod:`gridrl.integrations.slurm_observation`, one instant). The hour of day is the UTC
time of the step's start in hours (whole hours at hourly steps, ``14.25`` for the
15-minute step from 14:15); Monday is weekday 0.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from numpy.typing import ArrayLike

#: Observation keys of the calendar features, in observation order.
CALENDAR_FIELDS = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos")
HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7


def calendar_features(hour: ArrayLike, weekday: ArrayLike) -> np.ndarray:
    """``[..., 4]`` float64: :data:`CALENDAR_FIELDS` of UTC ``hour`` (0 to 24, fractional
    within the hour) and ``weekday`` (0 = Monday), elementwise."""
    ang_h = 2 * np.pi * np.asarray(hour) / HOURS_PER_DAY
    ang_d = 2 * np.pi * np.asarray(weekday) / DAYS_PER_WEEK
    return np.stack([np.sin(ang_h), np.cos(ang_h), np.sin(ang_d), np.cos(ang_d)], axis=-1)


def calendar_at(now_s: float, step_minutes: int = 60) -> dict[str, float]:
    """``{feature: value}`` of the UTC step of ``step_minutes`` that contains the Unix
    time ``now_s``."""
    t = datetime.fromtimestamp(now_s, tz=timezone.utc)
    minute = t.minute // step_minutes * step_minutes
    values = calendar_features(t.hour + minute / 60, t.weekday())
    return {name: float(v) for name, v in zip(CALENDAR_FIELDS, values, strict=True)}
