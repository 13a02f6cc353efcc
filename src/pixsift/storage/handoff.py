"""Turns at a lock for the threads that wait on it while one thread works under it in slices.

Python's locks are not fair: a thread that releases a lock and takes it again at once mostly
gets it back before any thread waiting on it wakes up, so releasing the lock between slices of
a long job would let no one in. `HandOff` counts the threads that come to the lock through it,
and `let_waiters_in` waits, with the lock released, until every thread that came before has
taken it: each waits at most about one slice (and the searches ahead of it), and threads that
keep coming cannot hold the job back for ever, as only those already waiting are let in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


class HandOff:
    """Numbers the threads that come to a lock, and knows which have not taken it yet (see the
    module's doc): by ticket, as a thread that takes the lock again and again must not stand
    for another that still waits."""

    def __init__(self) -> None:
        self._counts = threading.Condition(threading.Lock())
        self._tickets = 0  # handed out so far
        self._waiting: set[int] = set()  # of the threads that came and have not taken the lock

    @contextmanager
    def holding(self, lock: Lock) -> Iterator[None]:
        """`lock` held for the block, taken in turn with `let_waiters_in`."""
        with self._counts:
            ticket = self._tickets
            self._tickets += 1
            self._waiting.add(ticket)
            self._counts.notify_all()
        try:
            lock.acquire()
        finally:  # counted as in even if interrupted: no one may wait for this thread
            with self._counts:
                self._waiting.discard(ticket)
                self._counts.notify_all()
        try:
            yield
        finally:
            lock.release()

    def let_waiters_in(self, lock: Lock) -> None:
        """Release `lock` (which the caller took once, through `holding`) until every thread
        that came to `holding` before now has taken it, then take it again."""
        with self._counts:
            came = set(self._waiting)
        lock.release()
        try:
            with self._counts:
                self._counts.wait_for(lambda: not came & self._waiting)
        finally:
            lock.acquire()

    def wait_for_waiters(self, count: int, timeout: float) -> bool:
        """Whether at least `count` threads wait to take the lock (came, not yet in), waited
        for up to `timeout` seconds: lets a test put a search in line at a chosen moment."""
        with self._counts:
            return self._counts.wait_for(lambda: len(self._waiting) >= count, timeout)
