"""A library database that cannot be read as pixsift expects: one line that says what to do,
never a traceback, and a PixsiftError for programs.

A lock is held the way another program holds one (an SQLite connection in exclusive locking
mode with a write under way); a schema is changed by hand through sqlite3.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TinyModel, run_cli
from pixsift import Library, LibraryFormatError, LibraryReadError
from pixsift.cli import app
from pixsift.storage import database
from pixsift.storage.migrations import MIGRATIONS, SCHEMA_VERSION


@pytest.fixture
def indexed(library_dir: Path, photos: Path, tiny_model: TinyModel) -> Path:
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    return library_dir


def change_schema(library_dir: Path, statement: str) -> None:
    with sqlite3.connect(library_dir / "library.db") as db:
        db.execute(statement)


RENAMED = ("ALTER TABLE images RENAME COLUMN width TO w", "no such column: images.width")
DROPPED = ("DROP TABLE roots", "no such table: roots")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("statement", "missing", "command"),
    [(*RENAMED, ["search", "a photo"]), (*RENAMED, ["similar", "PHOTO"]), (*DROPPED, ["status"])],
)
def test_a_schema_changed_by_hand_is_one_line_not_a_traceback(
    indexed: Path, photos: Path, statement: str, missing: str, command: list[str]
) -> None:
    change_schema(indexed, statement)
    args = [str(photos / "photo_0100.jpg") if arg == "PHOTO" else arg for arg in command]
    result = run_cli(*args, "--library", str(indexed))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == (
        f"error: The library database at {indexed} lacks a table or column this pixsift needs "
        f"({missing}); was it changed by another program? Run pixsift doctor to see what "
        "differs; restore a backup, or index your folders into a new library.\n"
    )


def test_a_schema_changed_by_hand_is_a_library_format_error(indexed: Path, photos: Path) -> None:
    change_schema(indexed, "ALTER TABLE images RENAME COLUMN width TO w")
    with Library.open(indexed) as library, pytest.raises(LibraryFormatError, match="no such column"):
        library.similar(photos / "photo_0100.jpg")


@contextmanager
def held_by_another_program(library_dir: Path) -> Iterator[None]:
    """The database locked against readers and writers, as a database browser with unsaved
    changes in exclusive mode holds it."""
    db = sqlite3.connect(library_dir / "library.db", isolation_level=None)
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("UPDATE settings SET value = value")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def test_a_database_locked_by_another_program_is_a_read_error(
    indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)  # SQLite's wait, 30 s otherwise
    with held_by_another_program(indexed), pytest.raises(LibraryReadError) as caught:
        Library.open(indexed)
    assert str(caught.value).startswith(
        f"The library database at {indexed} is locked by another program (database is locked)."
    )
    with Library.open(indexed) as library:  # released: as it was
        assert library.check().healthy


def test_the_cli_says_when_another_program_holds_the_database(
    indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    with held_by_another_program(indexed):
        for command in (["status"], ["doctor"], ["similar", "1"]):
            result = CliRunner().invoke(app, [*command, "--library", str(indexed)])
            assert (result.exit_code, result.stdout) == (1, ""), result.output
            assert result.stderr == (
                f"error: The library database at {indexed} is locked by another program (database "
                "is locked). Close the program that holds it (a database browser, say) and run the "
                "command again.\n"
            )


def test_a_library_not_yet_in_wal_read_by_another_program_is_a_read_error(
    indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching a library to WAL (on its first open, or after sqlite3 turned it back) needs
    the database to itself: another program reading it for longer than SQLite's wait made the
    open fail with a bare "sqlite3.OperationalError: database is locked" traceback."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    change_schema(indexed, "PRAGMA journal_mode = DELETE")
    reader = sqlite3.connect(indexed / "library.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM images").fetchone()  # holds its read lock
        with pytest.raises(LibraryReadError) as caught:
            Library.open(indexed)
        assert str(caught.value).startswith(
            f"The library database at {indexed} is locked by another program (database is locked)."
        )
        result = CliRunner().invoke(app, ["status", "--library", str(indexed)])
        assert (result.exit_code, result.stdout) == (1, ""), result.output
        assert result.stderr.startswith(f"error: The library database at {indexed} is locked")
        reader.execute("ROLLBACK")
    finally:
        reader.close()
    with Library.open(indexed) as library:  # released: switched, and as it was
        assert library.check().healthy
    with sqlite3.connect(indexed / "library.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


@contextmanager
def write_held_by_another_program(library_dir: Path) -> Iterator[None]:
    """A write transaction of another program left open: pixsift still reads (WAL), but cannot write."""
    db = sqlite3.connect(library_dir / "library.db", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def test_a_write_locked_out_by_another_program_says_so_not_disk_full(
    indexed: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    locked = f"The library database at {indexed} is locked by another program (database is locked)."
    with Library.open(indexed) as library:
        image_id = library.search("a photo", k=1)[0].id
        with write_held_by_another_program(indexed), pytest.raises(LibraryReadError) as caught:
            library.delete(image_id)
        assert str(caught.value).startswith(locked)
        assert library.image(image_id).id == image_id  # nothing was removed
    (photos / "photo_0100.jpg").touch()  # changed: the run must write
    with write_held_by_another_program(indexed):
        result = CliRunner().invoke(app, ["index", str(photos), "--library", str(indexed)])
    assert result.exit_code == 1, result.output
    assert locked in result.stderr and "disk full" not in result.stderr


def test_an_up_to_date_library_opens_and_answers_beside_another_programs_write(
    indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening checks the schema with a read: WAL lets it, and searches, go on beside a long
    write transaction (a large forget, a batch commit) instead of waiting for it to end."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)  # waiting for the lock would fail
    with Library.open(indexed) as library:
        expected = library.search("a photo", k=3)
    with write_held_by_another_program(indexed):
        with Library.open(indexed) as library:
            assert library.search("a photo", k=3) == expected
            assert library.status().counts.indexed == 12
        status = CliRunner().invoke(app, ["status", "--library", str(indexed)])
        assert status.exit_code == 0, status.output


def old_library(path: Path, version: int) -> None:
    """A database as pixsift made it at schema `version`, from the frozen DDL."""
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:version]:
            for statement in migration.statements:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
    db.close()


def test_a_library_to_migrate_waits_for_the_write_lock_and_says_who_holds_it(
    library_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    library_dir.mkdir()
    old_library(library_dir / "library.db", 2)
    with write_held_by_another_program(library_dir), pytest.raises(LibraryReadError) as caught:
        Library.open(library_dir)
    assert str(caught.value).startswith(
        f"The library database at {library_dir} is locked by another program (database is locked)."
    )
    with sqlite3.connect(library_dir / "library.db") as db:  # refused untouched
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    with Library.open(library_dir) as library:  # released: migrated now
        assert library.check().healthy
    with sqlite3.connect(library_dir / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
