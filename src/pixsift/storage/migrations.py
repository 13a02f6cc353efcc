"""Numbered schema migrations, tracked in SQLite's `user_version`.

Each migration is frozen DDL: once released it never changes, and a new schema change is a new
entry at the end of `MIGRATIONS`. A library made by a newer pixsift is refused, not altered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from pixsift.errors import LibraryFormatError

if TYPE_CHECKING:  # the quick query path reads SCHEMA_VERSION without SQLAlchemy
    from sqlalchemy import Connection


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Sequence[str]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "images, embeddings, vector change log, roots, model, settings",
        (
            """
            CREATE TABLE images (
                id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
                path BLOB NOT NULL UNIQUE,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                content_hash VARCHAR(64),
                width INTEGER,
                height INTEGER,
                format VARCHAR(16),
                error TEXT,
                indexed_at VARCHAR(32) NOT NULL
            )
            """,
            "CREATE INDEX ix_images_content_hash ON images (content_hash)",
            """
            CREATE TABLE embeddings (
                image_id INTEGER NOT NULL PRIMARY KEY
                    REFERENCES images (id) ON DELETE CASCADE,
                vector BLOB NOT NULL
            )
            """,
            """
            CREATE TABLE vector_changes (
                seq INTEGER NOT NULL PRIMARY KEY,
                generation INTEGER NOT NULL,
                image_id INTEGER NOT NULL
            )
            """,
            "CREATE INDEX ix_vector_changes_generation ON vector_changes (generation)",
            """
            CREATE TABLE roots (
                id INTEGER NOT NULL PRIMARY KEY,
                path BLOB NOT NULL UNIQUE,
                include_hidden BOOLEAN NOT NULL,
                follow_symlinks BOOLEAN NOT NULL,
                added_at VARCHAR(32) NOT NULL,
                last_indexed_at VARCHAR(32)
            )
            """,
            """
            CREATE TABLE model (
                id INTEGER NOT NULL PRIMARY KEY,
                name TEXT NOT NULL,
                pretrained TEXT NOT NULL,
                config_json TEXT,
                embed_dim INTEGER NOT NULL,
                fingerprint VARCHAR(64) NOT NULL,
                created_at VARCHAR(32) NOT NULL
            )
            """,
            """
            CREATE TABLE settings (
                key VARCHAR(64) NOT NULL PRIMARY KEY,
                value TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "images.taken_at: when the photo was taken (EXIF), for date filters",
        ("ALTER TABLE images ADD COLUMN taken_at VARCHAR(19)",),
    ),
    Migration(
        3,
        "images.error_retry: the file could not be read (not bad content), so every run retries it",
        (
            "ALTER TABLE images ADD COLUMN error_retry BOOLEAN NOT NULL DEFAULT 0",
            # Failures recorded before, of the kinds that pass (their describe_error texts).
            """
            UPDATE images SET error_retry = 1
            WHERE error IN ('permission denied', 'not enough memory to decode',
                            'file disappeared before it could be read')
               OR error LIKE '[Errno %'
            """,
        ),
    ),
    Migration(
        4,
        "departed: images whose files an index run found gone, so a later run finding them moved "
        "gives back their ids and vectors",
        (
            """
            CREATE TABLE departed (
                image_id INTEGER NOT NULL PRIMARY KEY,
                content_hash VARCHAR(64) NOT NULL,
                size INTEGER NOT NULL,
                path BLOB NOT NULL,
                vector BLOB NOT NULL,
                width INTEGER,
                height INTEGER,
                format VARCHAR(16),
                taken_at VARCHAR(19),
                departed_at VARCHAR(32) NOT NULL
            )
            """,
            "CREATE INDEX ix_departed_content_hash ON departed (content_hash)",
            "CREATE INDEX ix_departed_size ON departed (size)",
            "CREATE INDEX ix_departed_departed_at ON departed (departed_at)",
        ),
    ),
    Migration(
        5,
        "indexes that count the images, those with a vector and the failed ones without reading "
        "every row: `pixsift status` read the whole embeddings table (4 GB at a million images)",
        (
            "CREATE INDEX ix_images_id ON images (id)",
            "CREATE INDEX ix_embeddings_image_id ON embeddings (image_id)",
            "CREATE INDEX ix_images_failed ON images (id) WHERE error IS NOT NULL",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(connection: Connection) -> int:
    return int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())


def check_supported(version: int) -> None:
    """Raise LibraryFormatError if schema `version` is newer than this pixsift knows."""
    if version > SCHEMA_VERSION:
        raise LibraryFormatError(
            f"This library uses schema version {version}, newer than this pixsift "
            f"understands ({SCHEMA_VERSION}). Upgrade pixsift to use it."
        )


def migrate(connection: Connection) -> list[Migration]:
    """Bring the schema up to `SCHEMA_VERSION` inside the caller's transaction.

    Returns the migrations applied. Raises LibraryFormatError for a newer, unknown schema, and
    for a database that is not a pixsift library (see `check_is_library`).
    """
    from sqlalchemy import text

    current = schema_version(connection)
    check_is_library(connection, current)
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        for statement in migration.statements:
            connection.execute(text(statement))
        # PRAGMA takes no bound parameters; the version is our own integer.
        connection.exec_driver_sql(f"PRAGMA user_version = {migration.version}")
        applied.append(migration)
    return applied


def check_is_library(connection: Connection, version: int) -> None:
    """Raise LibraryFormatError unless this database, at schema `version`, may be used (and at
    version 0 made, or below SCHEMA_VERSION migrated) as a pixsift library.

    SQLite's `user_version` is no mark of pixsift's: other programs set it too. A database
    that holds none of pixsift's tables is another program's (or none at all), whatever its
    version: it must not be migrated into, nor called a library too new for this pixsift.
    Before a migration writes, every table of the version must be there: the migrations
    assume them. A table's name is no mark either (`images`, `settings` are common ones):
    at least two of pixsift's tables must hold every column pixsift gives them. So a library
    missing a table or a column is still opened, and told as damaged (`pixsift doctor` names
    what differs), while another program's `images` table is refused, its file untouched."""
    tables = _tables(connection)
    if version == 0:
        if tables:
            _refuse(connection, f"it already holds tables of another program ({_shown(tables)})")
        return
    known = min(version, SCHEMA_VERSION)  # a newer pixsift's library holds this one's columns too
    ours = set(_columns_made(known))
    if not tables & ours:
        held = f"tables of another program ({_shown(tables)}), none of pixsift's," if tables else "no tables"
        _refuse(connection, f"it holds {held} under SQLite schema version {version}")
    missing = ours - tables
    if version < SCHEMA_VERSION and missing:
        _refuse(
            connection,
            f"it lacks the tables {_shown(missing)} of a pixsift library of schema version "
            f"{version}, so pixsift does not upgrade it. If it is a pixsift library, restore "
            "a backup of it, or index your folders into a new library",
            other=False,
        )
    if not _holds_our_columns(connection, tables & ours, known):
        _refuse(
            connection,
            f"its tables named as pixsift's ({_shown(tables & ours)}) do not hold pixsift's columns, "
            f"under SQLite schema version {version}",
        )
    check_supported(version)


_TABLE_NAMES = (
    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
)


def _tables(connection: Connection) -> set[str]:
    """The names of the tables and views in the database, SQLite's own left out."""
    rows = connection.exec_driver_sql(_TABLE_NAMES)
    return {str(row[0]) for row in rows}


# How many of pixsift's tables, each with every column pixsift gives it, mark a database as
# pixsift's: one alone could be another program's `settings (key, value)`; two let a library
# that lost a table or a column (damaged, for doctor to report) still be opened.
_TABLES_THAT_MARK_A_LIBRARY = 2


def _holds_our_columns(connection: Connection, named: set[str], version: int) -> bool:
    """Whether enough of the tables `named` as pixsift's, at schema `version`, hold every
    column pixsift's migrations give them (extra ones allowed: a newer pixsift's)."""
    expected = _columns_made(version)
    whole = 0
    for name in named:  # pixsift's own table names, safe to write into the PRAGMA
        found = {str(row[1]) for row in connection.exec_driver_sql(f'PRAGMA table_info("{name}")')}
        whole += expected[name] <= found
    return whole >= min(_TABLES_THAT_MARK_A_LIBRARY, len(expected))


@functools.cache
def _columns_made(version: int) -> dict[str, frozenset[str]]:
    """The tables pixsift's migrations up to `version` create, with their columns: the
    migrations run in an empty in-memory database, so every later ALTER counts."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            if migration.version <= version:
                for statement in migration.statements:
                    db.execute(statement)
        names = [str(row[0]) for row in db.execute(_TABLE_NAMES)]
        return {
            name: frozenset(str(row[1]) for row in db.execute(f'PRAGMA table_info("{name}")'))
            for name in names
        }
    finally:
        db.close()


def _shown(names: set[str]) -> str:
    return ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")


def _refuse(connection: Connection, why: str, *, other: bool = True) -> NoReturn:
    """Refuse the database as a library, `why` said; it is left as it is, unwritten. `other`:
    it is most likely another program's, so the user is sent to another folder."""
    named = _file_name(connection)
    if not other:
        raise LibraryFormatError(f"The database {named} cannot be used as a pixsift library: {why}.")
    lead = f"The database {named} is not a pixsift library: {why}."
    raise LibraryFormatError(
        f"{lead} Use another folder for the library.", command_line=f"{lead} Use another --library folder."
    )


def _file_name(connection: Connection) -> str:
    """The file of the connection's main database, as SQLite names it."""
    for row in connection.exec_driver_sql("PRAGMA database_list"):
        if row[1] == "main" and row[2]:
            return str(row[2])
    return "(in memory)"
