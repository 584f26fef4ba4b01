"""How a study run reports what it does: a small interface the runner calls.

The runner knows nothing about terminals: it calls a :class:`RunProgress`. The library
default, :class:`LogProgress`, writes messages to the ``gridrl.experiments`` logger;
the ``gridrl run`` command passes a rich live display
(:mod:`gridrl.experiments.progress_display`).
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

Level = Literal["info", "warning", "error"]

_LOG = logging.getLogger("gridrl.experiments")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class RunProgress(Protocol):
    """What a study run tells its observer, in order: messages at any time, then
    ``units_started``, per-unit progress and ends, and ``units_ended``."""

    def message(self, text: str, level: Level = "info") -> None:
        """A line for the user (plan, rejected units, failures, timings)."""

    def units_started(self, total: int, finished: int) -> None:
        """Units are about to run: ``total`` planned, ``finished`` already done."""

    def unit_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        """Training progress of a running unit."""

    def unit_finished(self, unit_id: str, error: str | None) -> None:
        """A unit ended (``error``: its traceback text, else None)."""

    def units_ended(self) -> None:
        """No unit runs any more (also after an error)."""


class LogProgress:
    """:class:`RunProgress` to the ``gridrl.experiments`` logger (messages only)."""

    def message(self, text: str, level: Level = "info") -> None:
        """Log ``text`` at ``level``."""
        _LOG.log(_LEVELS[level], text)

    def units_started(self, total: int, finished: int) -> None:
        """Nothing to show: the plan message says it."""

    def unit_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        """Not logged (too frequent)."""

    def unit_finished(self, unit_id: str, error: str | None) -> None:
        """Log the unit's end."""
        _LOG.info("unit %s %s", unit_id, "failed" if error else "finished")

    def units_ended(self) -> None:
        """Nothing to close."""
