"""Episode windows inside a scenario period (train or test blocks).

An episode lies inside one block of the period: ``env.episode_hours`` hours of rows
(steps, :mod:`gridrl.env.clock`), or the whole block when the block is shorter (such an
episode is truncated at the block end).

- ``random`` starts: uniform over every valid start step of every block (a block with
  ``len`` steps offers ``len - episode_steps + 1`` starts, a short block one).
- a given start (``reset(options={"start": ...})`` of both environments): a data row
  (an integer) or a timestamp (an hour of the data; naive means UTC), resolved by
  :meth:`EpisodeWindows.start_at`.
- ``fixed`` starts: each block tiled from its first step by whole episodes (a block
  shorter than an episode gives one short episode; a remainder shorter than an episode
  after the last whole one is not used), in block order. Evaluation cycles through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridrl.env.clock import hours_to_steps
from gridrl.errors import GridrlError
from gridrl.scenario import Period, Scenario, ScenarioError

__all__ = ["EpisodeStartError", "EpisodeWindows", "Window"]


class EpisodeStartError(GridrlError, ValueError):
    """An episode start that is not a data row or hour inside the period."""


@dataclass(frozen=True)
class Window:
    """Rows (steps) ``start .. start + steps - 1`` of the data."""

    start: int
    steps: int


class EpisodeWindows:
    """The episodes a period allows.

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Rows of the data (UTC, one a step).
    scenario : Scenario
    period : {"train", "validation", "test"}
        Which ``scenario.periods`` entry.

    Raises
    ------
    ScenarioError
        Unknown period, or a block with no hour inside the data (names the block).
    """

    def __init__(self, index: pd.DatetimeIndex, scenario: Scenario, period: str) -> None:
        self.index = index
        self.period = period
        if period not in ("train", "validation", "test"):
            raise ScenarioError(
                f"period must be 'train', 'validation' or 'test', got {period!r}")
        blocks: list[Period] = getattr(scenario.periods, period)
        self.episode_hours = int(scenario.env.episode_hours)
        self.episode_steps = n_ep = hours_to_steps(
            self.episode_hours, scenario.env.step_minutes, "env.episode_hours")
        self.blocks: list[tuple[int, int]] = []
        for j, block in enumerate(blocks):
            rows = block.hours(index)
            if rows.size == 0:
                raise ScenarioError(
                    f"periods.{period}[{j}] ({block.start} .. {block.end}) has no hour inside "
                    f"the data ({index[0]} .. {index[-1]})"
                )
            if rows.size != rows[-1] - rows[0] + 1:
                raise ScenarioError(f"periods.{period}[{j}]: data rows are not contiguous")
            self.blocks.append((int(rows[0]), int(rows[-1]) + 1))
        counts = np.array([max(b - a - n_ep + 1, 1) for a, b in self.blocks])
        self._cum = np.cumsum(counts)
        self.fixed: list[Window] = []
        for a, b in self.blocks:
            if b - a < n_ep:
                self.fixed.append(Window(a, b - a))
                continue
            for s in range(a, b - n_ep + 1, n_ep):
                self.fixed.append(Window(s, n_ep))

    @property
    def n_starts(self) -> int:
        """Number of distinct random starts."""
        return int(self._cum[-1])

    def sample(self, rng: np.random.Generator) -> Window:
        """A uniformly random episode window."""
        u = int(rng.integers(self.n_starts))
        j = int(np.searchsorted(self._cum, u, side="right"))
        a, b = self.blocks[j]
        offset = u - (int(self._cum[j - 1]) if j else 0)
        return Window(a + offset, min(self.episode_steps, b - a))

    def at(self, start: int) -> Window:
        """The episode starting at data row ``start`` (must lie inside a block).

        Raises
        ------
        EpisodeStartError
            When ``start`` is outside every block of the period.
        """
        for a, b in self.blocks:
            if a <= start < b:
                return Window(start, min(self.episode_steps, b - start))
        raise EpisodeStartError(
            f"start row {start} lies outside every block of the {self.period} period "
            f"(rows {', '.join(f'{a}..{b - 1}' for a, b in self.blocks)})")

    def start_at(self, start: object) -> Window:
        """The episode starting at ``start``: a data row (``int``) or a timestamp
        (``str``, ``datetime``, ``pandas.Timestamp``, ``numpy.datetime64``; naive means
        UTC) that is a step of the data. Both environments resolve
        ``reset(options={"start": ...})`` here.

        Raises
        ------
        EpisodeStartError
            Another type, a timestamp that is not an hour of the data, or a start
            outside every block of the period.
        """
        if isinstance(start, (int, np.integer)) and not isinstance(start, (bool, np.bool_)):
            return self.at(int(start))
        if not isinstance(start, (str, pd.Timestamp, np.datetime64)) and not hasattr(
                start, "isoformat"):
            raise EpisodeStartError(
                f"start {start!r}: expected a data row (int) or a timestamp, got "
                f"{type(start).__name__}")
        try:
            ts = pd.Timestamp(start)
        except ValueError as exc:
            raise EpisodeStartError(f"start {start!r} is not a timestamp: {exc}") from None
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        pos = self.index.get_indexer([ts])[0]
        if pos < 0:
            raise EpisodeStartError(f"start {start!r} is not a step of the data "
                                    f"({self.index[0]} .. {self.index[-1]})")
        return self.at(int(pos))
