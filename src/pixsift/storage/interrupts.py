"""Ctrl-C held back while a write transaction runs, then delivered.

A KeyboardInterrupt raised inside SQLAlchemy while a statement is running leaves the SQLite
connection invalidated but not closed: its unfinished statement, referenced from the
interrupt's traceback, keeps the write lock, and the library's next write (saving the search
index after an interrupted run) waits for it until SQLite gives up ("database is locked").
Holding Ctrl-C until the transaction has committed or rolled back avoids that; a batch is a
fraction of a second of work, so the wait is not felt.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run the block with SIGINT held back; deliver it, if it came, when the block ends.

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
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            _deliver(previous, received[-1])


def _deliver(handler: signal.Handlers | object, frame: FrameType | None) -> None:
    """Do what SIGINT would have done under `handler`, the one in place before the block."""
    if handler is signal.SIG_IGN:
        return
    if callable(handler):  # Python's default raises KeyboardInterrupt; a server's stops itself
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # SIG_DFL, or a handler installed outside Python
