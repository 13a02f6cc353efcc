"""A library folder made by a first index run that failed is removed again.

A mistyped folder, an unknown model or weights missing offline must not leave an empty library
behind, or `pixsift status` would show one instead of saying there is none. Only what the run
created goes, and only while no image got into the database.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path

from pixsift.config import DB_NAME, resolve_library_dir
from pixsift.errors import PixsiftError

# What a first index run puts in a library folder; nothing else is ever removed.
LIBRARY_FILES = ("library.db", "library.db-wal", "library.db-shm", "library.lock", "vectors.faiss")


@contextmanager
def discarded_if_nothing_indexed(library: Path | None) -> Iterator[None]:
    """Remove again the library a failed first index run made (a mistyped folder, an unknown
    model, weights missing offline), so that `status` still says there is no library rather
    than showing an empty one. Only files and folders this run created go, and only when no
    image got into the database."""
    folder = resolve_library_dir(library)
    if (folder / DB_NAME).exists() or folder.is_file():
        yield
        return
    new_folders = list(itertools.takewhile(lambda path: not path.exists(), (folder, *folder.parents)))
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        yield
    except PixsiftError:
        if _holds_no_images(folder / DB_NAME):
            _remove_new_library(folder, before, new_folders)
        raise


def _holds_no_images(db_path: Path) -> bool:
    """True only when the database surely has no image row (any doubt keeps it)."""
    if not db_path.is_file():
        return True
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as connection:
            return int(connection.execute("SELECT count(*) FROM images").fetchone()[0]) == 0
    except sqlite3.Error:
        return False


def _remove_new_library(folder: Path, before: set[str], new_folders: list[Path]) -> None:
    """Best effort: the run's own error is what the user must see, not one from tidying up."""
    for name in LIBRARY_FILES:
        if name not in before:
            with suppress(OSError):
                (folder / name).unlink()
    for path in new_folders:  # innermost first; a folder something else wrote into stays
        try:
            path.rmdir()
        except OSError:
            break
