"""Progress bars for index runs on a terminal (rich): count, rate and time left.

Used only by the command line, and only when stderr is a terminal.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TerminalProgress:
    """An `IndexProgress` that draws one bar per phase on stderr."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<20}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]:>13} {task.fields[rate]:>9}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> TerminalProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._progress.stop()

    def start(self, phase: str, total: int | None = None) -> None:
        self.stop()
        self._task = self._progress.add_task(phase, total=total, rate="", count="")

    def advance(self, steps: int = 1) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, steps)
        task = self._progress.tasks[self._task]
        count = f"{task.completed:,.0f}" + (f"/{task.total:,.0f}" if task.total is not None else "")
        rate = f"{task.speed:,.1f}/s" if task.speed and task.total is not None else ""
        self._progress.update(self._task, count=count, rate=rate)

    def stop(self) -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        if task.total is None:  # a phase of unknown length shows as complete when it ends
            self._progress.update(self._task, total=task.completed)
        self._progress.stop_task(self._task)
        self._task = None
