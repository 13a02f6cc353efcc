"""The SQLite engine: WAL mode, real transactions, and a schema brought up to date on open.

WAL lets searches read a consistent snapshot while an index run writes. `synchronous=FULL`
makes every commit durable across a power cut, which costs little because the indexer
commits in batches. pysqlite's own transaction handling is replaced by explicit BEGINs (the
recipe from SQLAlchemy's SQLite dialect documentation) so that DDL is transactional and
writers can take the write lock up front with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from pixsift.errors import LibraryFormatError
from pixsift.storage.migrations import migrate

BUSY_TIMEOUT_MS = 30_000
# Connections per process: an HTTP service reads from many threads at once; SQLite connections
# are cheap, and a thread must never wait for one while others read.
POOL_SIZE = 8
POOL_OVERFLOW = 64
_BEGIN_OPTION = "pixsift_begin"


def open_engine(db_path: Path) -> Engine:
    """An engine on the database file at `db_path`, created and migrated if needed."""
    engine = create_engine(
        URL.create("sqlite", database=str(db_path)), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
    )
    event.listen(engine, "connect", _configure_connection)
    event.listen(engine, "begin", _begin)
    try:
        with writer(engine).begin() as connection:
            migrate(connection)
    except DBAPIError as exc:  # not a database, another program's database, no permission
        engine.dispose()
        reason = str(exc.orig).strip() or type(exc.orig).__name__
        raise LibraryFormatError(f"Cannot use {db_path} as a pixsift library: {reason}.") from exc
    return engine


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
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
