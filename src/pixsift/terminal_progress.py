"""Progress bars for index runs on a terminal (rich): count, rate and time left, and a line
under them with the files that failed so far, once there are any.

Used only by the command line, and only when stderr is a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pixsift.indexer.report import IndexReport


class _BarsAndFailures(Progress):
    """The bars, then a line with the files that failed so far when some did. A line of its
    own, not a column: a column takes its width on every row, and an 80-column terminal would
    cut the bars' times short."""

    failed = 0

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.failed:
            yield Text(f"  {self.failed:,} file(s) failed so far", style="red")  # under the phases


class TerminalProgress:
    """An `IndexProgress` (and `CountsListener`) that draws one bar per phase on stderr, and
    the files that failed so far: a run over 50,000 photos, many of them unreadable, says so
    while it goes, not only in its summary at the end."""

    def __init__(self, console: Console) -> None:
        self._progress = _BarsAndFailures(
            SpinnerColumn(),
            TextColumn("{task.description:<21}"),  # the longest usual phase: "Building search index"
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

    def counted(self, report: IndexReport) -> None:
        # The run's own count, as its summary gives it: files of this run that could not be
        # read (unchanged ones that failed in an earlier run are not tried again, nor counted).
        self._progress.failed = report.failed

    def stop(self) -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        if task.total is None:  # a phase of unknown length shows as complete when it ends
            self._progress.update(self._task, total=task.completed)
        self._progress.stop_task(self._task)
        self._task = None
