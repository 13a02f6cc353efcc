"""Numbered schema migrations, tracked in SQLite's `user_version`.

Each migration is frozen DDL: once released it never changes, and a new schema change is a new
entry at the end of `MIGRATIONS`. A library made by a newer pixsift is refused, not altered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    Returns the migrations applied. Raises LibraryFormatError for a newer, unknown schema.
    """
    from sqlalchemy import text

    current = schema_version(connection)
    check_supported(current)
    if current == 0:
        _check_no_foreign_tables(connection)
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


def _check_no_foreign_tables(connection: Connection) -> None:
    """Refuse a database at version 0 that already holds tables: pixsift makes its own tables
    and version together, so those are another program's, and must not be written into."""
    tables = [
        row[0]
        for row in connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    ]
    if tables:
        shown = ", ".join(sorted(tables)[:5])
        lead = (
            f"This database is not a pixsift library: it already holds tables of another program ({shown})."
        )
        raise LibraryFormatError(
            f"{lead} Use another folder for the library.",
            command_line=f"{lead} Use another --library folder.",
        )
