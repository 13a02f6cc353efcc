"""Ctrl-C held back while a write transaction runs, then delivered; and told apart before and
after a change commits.

A KeyboardInterrupt raised inside SQLAlchemy while a statement is running leaves the SQLite
connection invalidated but not closed: its unfinished statement, referenced from the
interrupt's traceback, keeps the write lock, and the library's next write (saving the search
index after an interrupted run) waits for it until SQLite gives up ("database is locked").
Holding Ctrl-C until the transaction has committed or rolled back avoids that; a batch is a
fraction of a second of work, so the wait is not felt.

A Ctrl-C held back until a transaction committed comes after the change it made, so it is
raised as `InterruptedAfterCommit`: a short write (relocate, forget, repair) can then say that
its change is kept, where a plain KeyboardInterrupt would leave the user guessing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C that came once a change was committed, or while it was being committed (held
    back until it had): the change is kept. `result` is what the interrupted call returns when
    it is not interrupted, or what it had done so far (None where that is not known)."""

    def __init__(self, result: object = None) -> None:
        super().__init__("interrupted once the change was committed")
        self.result = result


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run the block (a transaction) with SIGINT held back; deliver it, if it came, when the
    block ends: as InterruptedAfterCommit when the block ended normally (committed), else as a
    KeyboardInterrupt in place of the block's exception (rolled back).

    Only the main thread receives signals, and only it may install handlers: in any other
    thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[FrameType | None] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(frame)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        if received:
            _deliver(previous, received[-1], KeyboardInterrupt())
        raise
    signal.signal(signal.SIGINT, previous)
    if received:
        _deliver(previous, received[-1], InterruptedAfterCommit())


def _deliver(
    handler: signal.Handlers | object, frame: FrameType | None, interrupt: KeyboardInterrupt
) -> None:
    """Do what SIGINT would have done under `handler`, the one in place before the block:
    Python's default raises `interrupt`; another handler (an outer block's, or a server's that
    stops itself) is called."""
    if handler is signal.SIG_IGN:
        return
    if handler is signal.default_int_handler or not callable(handler):  # or SIG_DFL, or foreign
        raise interrupt
    handler(signal.SIGINT, frame)


class Change:
    """A short write (a relocate, a forget, a repair) that may commit more than once, for
    `kept_on_interrupt`: `committed` once its first transaction has, `result` what to report."""

    def __init__(self) -> None:
        self.committed = False
        self.result: object = None

    @contextmanager
    def transaction(self, write: AbstractContextManager[T]) -> Iterator[T]:
        """Run `write`, a transaction that holds Ctrl-C back (`Catalog.write()`), and note
        whether it committed: it did when it ended normally or with InterruptedAfterCommit."""
        try:
            with write as batch:
                yield batch
        except InterruptedAfterCommit:
            self.committed = True
            raise
        self.committed = True


@contextmanager
def kept_on_interrupt() -> Iterator[Change]:
    """Within the block, a Ctrl-C once the change has committed (or held back while it did) is
    raised as InterruptedAfterCommit(change.result); one before is a plain KeyboardInterrupt,
    and nothing was changed. A later step (saving the search index, a final check) is cut
    short without making the change look undone."""
    change = Change()
    try:
        yield change
    except KeyboardInterrupt:
        if not change.committed:
            raise
        raise InterruptedAfterCommit(change.result) from None
