"""Errors raised by pixsift's core, with messages written for the people who read them.

The core raises; only the command line prints them and chooses exit codes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixsift.indexer.report import IndexReport


class PixsiftError(Exception):
    """Base class: anything a user can cause and fix. `str(error)` is the message to show to
    a program's user and to the HTTP service's clients.

    Advice differs by face: a Python caller passes `device="cpu"` where the command line takes
    `--device cpu`. A message whose advice names what to pass says it in the API's words, and
    `command_line` holds the same message in the `pixsift` command's words (None: the message
    reads the same on both faces); only the command line prints it (`for_command_line`).

    An error that stops an index run part-way (a full disk, a model that fails) carries in
    `report` the IndexReport of what the run had committed before it, which stays in the
    library (`report.kept` images); None when no run had begun, and on every other error.
    """

    report: IndexReport | None = None

    def __init__(self, *args: object, command_line: str | None = None) -> None:
        super().__init__(*args)
        self.command_line = command_line

    def for_command_line(self) -> str:
        """The message as the `pixsift` command shows it."""
        return str(self) if self.command_line is None else self.command_line


class LibraryClosedError(RuntimeError):
    """A `Library` used after `close()` (or after its `with` block). A mistake of the calling
    program, which no user can fix, so not a PixsiftError: open the library again instead."""


class LibraryNotFoundError(PixsiftError):
    """A command that reads a library was pointed at a folder that holds none."""


class LibraryBusyError(PixsiftError):
    """Another process holds the library's write lock (an index run is going on)."""


class BusyError(PixsiftError):
    """Too much work of one kind is under way at once (large images being decoded for
    thumbnails): nothing is wrong with the request, and the same one succeeds a little later."""


class LibraryWriteError(PixsiftError):
    """The library could not be written: a full disk, a read-only folder, an I/O error.

    What was committed before stays; the library is usable once the cause is fixed. A library
    that could not be made is not left behind, half made, to pass for one.

    `problem` is the message less its last sentence, which says what became of the library
    ("Everything saved before is kept"); None when the message has no such sentence. The
    command prints it instead when a line of its own says what an index run kept.
    """

    def __init__(self, *args: object, command_line: str | None = None, problem: str | None = None) -> None:
        super().__init__(*args, command_line=command_line)
        self.problem = problem


class LibraryReadError(PixsiftError):
    """The library's database could not be read: another program holds it locked, or an I/O
    error. Nothing stored is changed; the library is usable once the cause is gone."""


class LibraryFormatError(PixsiftError):
    """The library's database is from a newer pixsift or is not a pixsift library."""


class EmptyLibraryError(PixsiftError):
    """A search was asked of a library that has no images indexed yet."""


class ModelError(PixsiftError):
    """A model could not be named, found, downloaded or loaded."""


class ModelMismatchError(ModelError):
    """The model asked for is not the one the library's vectors were made with."""


class ExportCacheError(ModelError):
    """A model's ONNX export could not be written into the cache folder (a full disk, a
    read-only or misnamed folder): the model can still run on torch."""


class InvalidPathError(PixsiftError):
    """A path given by the user does not exist or is not what the command needs."""


class ImageError(PixsiftError):
    """One image file could not be read or decoded; indexing records it and goes on."""


class InvalidOptionError(PixsiftError):
    """An option's value is out of range (a batch size or worker count of 0)."""


class QueryError(PixsiftError):
    """A search query is empty or malformed."""


class ImageFileMissingError(ImageError):
    """An indexed image whose file is no longer on disk (the next index run drops it)."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the limit allowed for it (a possible decompression bomb)."""


class ImageNotFoundError(PixsiftError):
    """An image id that the library does not hold (never indexed, or removed since)."""


def given_path(path: str | os.PathLike[str]) -> str:
    """A path the user gave, as a message names it. The rule for every message about a path
    given on the command line or to the library: the path as written, followed by the absolute
    path it was read as when the two differ (a relative path, `~`, `..`), so the user sees
    both what they typed and where pixsift looked: "./Photso (/home/me/Photso)". Links are not
    resolved: the user did not write where they lead. (A library's own folder, and folders
    the library stores, are named as the library holds them: absolute.)"""
    written = os.fspath(path)
    absolute = os.path.abspath(os.path.expanduser(written))
    return written if absolute == written else f"{written} ({absolute})"


class AccessDeniedError(InvalidPathError):
    """A path outside the library's indexed folders, which pixsift will not read or serve."""
