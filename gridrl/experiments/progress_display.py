"""The terminal display of ``gridrl run``: rich messages and live progress bars.

Imported by the CLI only; the runner sees it as a
:class:`~gridrl.experiments.progress.RunProgress`.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gridrl.experiments.progress import Level

_STYLES = {"info": "", "warning": "yellow", "error": "red"}


class RichProgress:
    """One bar for the study's units and one per training unit, above the messages."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._units: dict[str, TaskID] = {}

    def message(self, text: str, level: Level = "info") -> None:
        """Print ``text`` (red for errors, yellow for warnings)."""
        style = _STYLES[level]
        line = escape(text)
        self.console.print(f"[{style}]{line}[/]" if style else line, highlight=False)

    def units_started(self, total: int, finished: int) -> None:
        """Start the live bars."""
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._overall = self._progress.add_task("units", total=total, completed=finished)

    def unit_progress(self, unit_id: str, done_steps: int, total_steps: int) -> None:
        """Add or move the unit's training bar."""
        if self._progress is None:
            return
        if unit_id not in self._units:
            self._units[unit_id] = self._progress.add_task(f"  train {unit_id}", total=total_steps)
        self._progress.update(self._units[unit_id], completed=done_steps, total=total_steps)

    def unit_finished(self, unit_id: str, error: str | None) -> None:
        """Drop the unit's bar and advance the overall one."""
        if self._progress is None:
            return
        if unit_id in self._units:
            self._progress.remove_task(self._units.pop(unit_id))
        if self._overall is not None:
            self._progress.advance(self._overall)

    def units_ended(self) -> None:
        """Stop the live bars (they stay on screen)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
