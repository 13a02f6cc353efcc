"""The SQLite engine: WAL mode, real transactions, and a schema brought up to date on open.

WAL lets searches read a consistent snapshot while an index run writes. `synchronous=FULL`
makes every commit durable across a power cut, which costs little because the indexer
commits in batches. pysqlite's own transaction handling is replaced by explicit BEGINs (the
recipe from SQLAlchemy's SQLite dialect documentation) so that DDL is transactional and
writers can take the write lock up front with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from pixsift.config import INDEX_NAME, THUMBNAILS_DIR
from pixsift.errors import LibraryFormatError, LibraryReadError, LibraryWriteError, PixsiftError
from pixsift.storage.interrupts import interrupts_deferred
from pixsift.storage.migrations import SCHEMA_VERSION, check_is_library, migrate, schema_version

BUSY_TIMEOUT_MS = 30_000
# Connections per process: an HTTP service reads from many threads at once; SQLite connections
# are cheap, and a thread must never wait for one while others read.
POOL_SIZE = 8
POOL_OVERFLOW = 64
_BEGIN_OPTION = "pixsift_begin"
_LOCKED_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_WRITE_FAILED_CODES = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)


def open_engine(db_path: Path) -> Engine:
    """An engine on the database file at `db_path`, created and migrated if needed."""
    engine = create_engine(
        URL.create("sqlite", database=str(db_path)), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
    )
    event.listen(engine, "connect", _configure_connection)
    event.listen(engine, "begin", _begin)
    try:
        if not _up_to_date(engine):
            _create_or_migrate(engine, db_path)
    except DBAPIError as exc:  # not a database, another program's database, no permission
        engine.dispose()
        if not _writable(db_path):
            lead = (
                f"The library at {db_path.parent} is read-only. pixsift needs to write there, even "
                "to search (SQLite keeps its journal beside the database): make the folder "
                "writable, or copy the library to a writable place and"
            )
            raise LibraryWriteError(f"{lead} open it there.", command_line=f"{lead} use --library.") from exc
        if _sqlite_code(exc) in _LOCKED_CODES:  # a usable library, held by another program
            raise locked_error(db_path.parent, exc) from exc
        if _sqlite_code(exc) in _WRITE_FAILED_CODES:
            # Even a read makes SQLite's shared-memory file beside the database: on a full disk
            # that fails as an I/O error, which is no sign of a damaged library.
            raise write_error(db_path.parent, exc) from exc
        # exc.orig: SQLAlchemy's own text adds a second line pointing at its documentation.
        raise LibraryFormatError(f"Cannot use {db_path} as a pixsift library: {_reason(exc.orig)}.") from exc
    except BaseException:  # a newer schema, another program's tables: refused, nothing kept open
        engine.dispose()
        raise
    try:
        _use_wal(engine)
    except sqlite3.OperationalError as exc:  # held for longer than SQLite's wait, by another program
        engine.dispose()
        if exc.sqlite_errorcode & 0xFF in _LOCKED_CODES:
            raise locked_error(db_path.parent, exc) from exc
        raise write_error(db_path.parent, exc) from exc
    return engine


def _up_to_date(engine: Engine) -> bool:
    """Whether the schema is this pixsift's, seen with a plain read: the usual open (a search,
    a status) takes no write lock, so it does not wait for another process's long write
    transaction (a large forget, a migration), which WAL lets it read beside.

    Raises LibraryFormatError for a schema newer than this pixsift knows, and for a database
    that is no pixsift library at all (another program's, which also sets SQLite's version)."""
    with engine.begin() as connection:
        version = schema_version(connection)
        if version >= SCHEMA_VERSION:  # else checked under the write lock, before migrating
            check_is_library(connection, version)
    return version == SCHEMA_VERSION


def _create_or_migrate(engine: Engine, db_path: Path) -> None:
    """Create or migrate the schema under the write lock. The version is read again under it:
    another process may have created or migrated the library since `_up_to_date` looked, and
    a new library must be created, and orphan caches discarded, exactly once."""
    try:
        with interrupts_deferred(), writer(engine).begin() as connection:
            created = schema_version(connection) == 0  # no file, or an empty one
            migrate(connection)
            if created:
                _discard_orphan_caches(db_path.parent)
    except OperationalError as exc:
        # Writing the schema, not reading a damaged file: a full disk is said as such, not
        # as "Cannot use library.db as a pixsift library: disk I/O error".
        if _sqlite_code(exc) in _WRITE_FAILED_CODES:
            raise write_error(db_path.parent, exc) from exc
        raise


def _use_wal(engine: Engine) -> None:
    """Switch the database to WAL, once it is known to be a pixsift library.

    The journal mode is stored in the file, so it is set here rather than on every connect: a
    database that is refused (another program's, or a newer schema) is left in its own mode.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return  # every open but the first: switched when the library was made
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                # The switch needs the database to itself and SQLite does not wait for that:
                # other processes opening the new library at the same moment read its schema.
                if exc.sqlite_errorcode & 0xFF not in _LOCKED_CODES or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        connection.close()


def write_error(folder: Path, exc: BaseException) -> LibraryWriteError:
    """A user-facing error for a write to the library at `folder` that failed with `exc`."""
    reason = _reason(exc.orig if isinstance(exc, DBAPIError) else exc)
    problem = f"Cannot write to the library at {folder}: {reason}. Is the disk full, or the folder read-only?"
    return LibraryWriteError(
        f"{problem} Everything saved before is kept; fix that and run the command again.", problem=problem
    )


def not_made_error(error: LibraryWriteError) -> LibraryWriteError:
    """`error`, said of a new library that could not be made: nothing was saved before, and
    nothing of it was left behind. An error without a `problem` (a read-only folder) as it is."""
    if error.problem is None:
        return error
    return LibraryWriteError(
        f"{error.problem} No library was made; fix that and run the command again.", problem=error.problem
    )


def failed_write_error(folder: Path, exc: DBAPIError) -> PixsiftError:
    """A user-facing error for a write transaction SQLite refused: a lock held by another
    program, damage or a table changed by hand are told as a read's are (asking whether the
    disk is full would send the user the wrong way); anything else is the folder's."""
    told_as_read = _sqlite_code(exc) in (*_LOCKED_CODES, *_DAMAGED_CODES) or _lacks_table_or_column(exc)
    if isinstance(exc, OperationalError) and not told_as_read:
        return write_error(folder, exc)
    return read_error(folder, exc)


def damaged_error(folder: Path, exc: DBAPIError) -> LibraryFormatError:
    """A user-facing error for a database that SQLite finds damaged."""
    lead = f"The library database at {folder} is damaged ({_reason(exc.orig)})."
    rest = "to see what is wrong; restore a backup, or index your folders into a new library."
    return LibraryFormatError(
        f"{lead} Run Library.check() {rest}", command_line=f"{lead} Run pixsift doctor {rest}"
    )


def read_error(folder: Path, exc: DBAPIError) -> PixsiftError:
    """A user-facing error for a read of the library's database that SQLite refused.

    Every read goes through here, so that a user meets one line that says what to do, never
    SQLAlchemy's traceback."""
    code = _sqlite_code(exc)
    if code in _DAMAGED_CODES or not isinstance(exc, OperationalError):
        return damaged_error(folder, exc)
    if code in _LOCKED_CODES:
        return locked_error(folder, exc)
    if _lacks_table_or_column(exc):
        lead = (
            f"The library database at {folder} lacks a table or column this pixsift needs "
            f"({_reason(exc.orig)}); was it changed by another program? Run"
        )
        rest = "to see what differs; restore a backup, or index your folders into a new library."
        return LibraryFormatError(
            f"{lead} Library.check() {rest}", command_line=f"{lead} pixsift doctor {rest}"
        )
    return LibraryReadError(
        f"Cannot read the library at {folder}: {_reason(exc.orig)}. Nothing stored was changed; "
        "fix the cause (a failing disk, a network drive gone) and run the command again."
    )


def locked_error(folder: Path, exc: DBAPIError | sqlite3.Error) -> LibraryReadError:
    """The database held locked by another program for longer than SQLite's busy timeout: not
    a pixsift run (those commit in short transactions), so waiting on would not help."""
    reason = _reason(exc.orig if isinstance(exc, DBAPIError) else exc)
    return LibraryReadError(
        f"The library database at {folder} is locked by another program ({reason}). "
        "Close the program that holds it (a database browser, say) and run the command again."
    )


def is_damage(exc: DBAPIError) -> bool:
    """Whether SQLite refused because the file is damaged, rather than held or unreadable."""
    return _sqlite_code(exc) not in _LOCKED_CODES


def _lacks_table_or_column(exc: DBAPIError) -> bool:
    """Whether SQLite refused for a table or column it does not have ("no such column: ...")."""
    return _sqlite_code(exc) == sqlite3.SQLITE_ERROR and "no such" in _reason(exc.orig)


def _sqlite_code(exc: DBAPIError) -> int | None:
    """SQLite's primary result code for the failure (extended codes carry it in the low byte)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _discard_orphan_caches(folder: Path) -> None:
    """Remove the search index file and thumbnails that outlived their database (library.db
    deleted or emptied, the rest left). A new database gives ids and counts generations from
    the start again, so that index would pass for one merely behind, its vectors answering for
    other images under the same ids, and the thumbnails cached under an id would be shown for
    another image of the same file size and time. Both are caches, made again when needed.
    Called under the new database's write lock: no index or thumbnail of it can exist yet."""
    try:
        (folder / INDEX_NAME).unlink(missing_ok=True)
        if (folder / THUMBNAILS_DIR).exists():
            shutil.rmtree(folder / THUMBNAILS_DIR)
    except OSError as exc:  # a folder in the index's place, no permission
        raise write_error(folder, exc) from exc


def _writable(db_path: Path) -> bool:
    """Whether this process may write the database and create its journal files beside it.

    os.access also reports a read-only file system (EROFS), even to root.
    """
    folder_ok = os.access(db_path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not db_path.exists() or os.access(db_path, os.W_OK))


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip() if exc is not None else ""
    return text or type(exc).__name__


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take SQLite's write lock when they begin.

    A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY when
    another writer committed in between; BEGIN IMMEDIATE waits for the lock instead.
    """
    return engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})


def _configure_connection(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see _begin
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
