"""The library's write lock, `library.lock`: one process indexes a library at a time.

What else changes the library (a rebuild of the search index, a repair, a delete, a forget) or
needs it settled (a check) takes the same lock, so it waits for a running index run as another
index run does: up to a given time, showing that it waits, then with LibraryBusyError.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from pixsift.errors import InvalidOptionError, LibraryBusyError
from pixsift.indexer.progress import IndexProgress

LOCK_NAME = "library.lock"


class WriteLock:
    """The write lock of the library in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file_lock = FileLock(folder / LOCK_NAME)

    @contextmanager
    def held(self, wait: float | None, doing: str, progress: IndexProgress | None = None) -> Iterator[None]:
        """Hold the library's write lock, waiting up to `wait` seconds (None: for ever); while
        it waits, `progress` shows a waiting phase, so a wait never looks like a hang."""
        from pixsift.storage.database import write_error

        check_wait(wait)
        try:
            self.file_lock.acquire(timeout=0)
        except Timeout:
            self._wait(wait, doing, progress)
        except OSError as exc:  # a lock file this user may not write (another user made it)
            raise write_error(self.folder, exc) from exc
        try:
            yield
        finally:
            self.file_lock.release()

    def _wait(self, wait: float | None, doing: str, progress: IndexProgress | None) -> None:
        if progress is not None and wait != 0:
            progress.start("Waiting for another index run")
        try:
            self.file_lock.acquire(timeout=-1 if wait is None else max(0.0, wait))
        except Timeout:
            waited = "" if not wait else f" (waited {wait:g} s)"
            raise LibraryBusyError(
                # "run", not "process": it may be a job of this very server, or another thread
                f"Another pixsift run is indexing or repairing the library at {self.folder}"
                f"{waited}; {doing} needs the library to itself. Try again when it has finished."
            ) from None
        finally:
            if progress is not None and wait != 0:
                progress.stop()


def check_wait(wait: object) -> None:
    """Refuse a wait that is no number of seconds: NaN and negatives would have meant "do not
    wait" without a word, and -1, which means "for ever" to filelock, is None here."""
    if wait is None:
        return
    if (
        isinstance(wait, bool)
        or not isinstance(wait, (int, float))
        or (isinstance(wait, float) and math.isnan(wait))  # an int too large for a float is no NaN
        or wait < 0
    ):
        raise InvalidOptionError(
            "wait is the seconds to wait for another run (0 or more; None: as long as it takes), "
            f"not {wait!r}."
        )
