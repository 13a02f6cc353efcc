"""Opening a file that must be a regular one, without waiting on whatever else is there.

Kept apart from the decoder (which imports Pillow): the search index file is opened this way
on the quick query path too.
"""

from __future__ import annotations

import errno
import io
import os
import stat

__all__ = ["NotRegularFileError", "open_regular", "other_than_a_file"]


class NotRegularFileError(OSError):
    """A path that was a file holds a named pipe, a socket or a device now."""


# O_NONBLOCK: opening a named pipe for reading returns at once instead of waiting for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | os.PathLike[str]) -> io.BufferedReader:
    """`open(path, "rb")`, for a regular file only, and never waiting.

    The scan keeps regular files, but something else may be at the path by the time it is
    read (or where the library keeps its search index): a named pipe, which a plain open()
    waits on until some program writes to it (a decode thread, and so the run, or a search,
    stuck for good), or a device that never ends. So the path
    is opened without waiting and the descriptor itself is looked at (no race between looking
    and opening): a folder is IsADirectoryError as open() says it, anything else that is not a
    regular file NotRegularFileError. A regular file is then read as usual.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"not a regular file (a {_kind(mode)} is in its place)")
        os.set_blocking(fd, True)  # no effect on a regular file's reads; as open() leaves it
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def other_than_a_file(path: str | os.PathLike[str]) -> str | None:
    """What stands at `path` when it is there but no regular file ("a folder", "a named pipe"),
    links followed; None for a regular file or nothing there. Looked at without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else f"a {_kind(mode)}"
