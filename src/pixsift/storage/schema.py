"""The library's tables, mapped with SQLAlchemy's ORM.

The database is the source of truth: image metadata, every embedding, the model that made
them and a log of vector changes that lets the FAISS index catch up without a full rebuild.
The DDL that creates these tables lives in `migrations.py`; a test checks the two agree.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class FsPath(TypeDecorator[str]):
    """A filesystem path stored as its raw bytes.

    File names are bytes on POSIX and need not be valid UTF-8; Python carries the odd bytes as
    surrogate escapes, which SQLite TEXT cannot hold. Bytes round-trip exactly, and compare
    bytewise, which keeps folder-prefix range queries correct and indexed.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else os.fsdecode(bytes(value))


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp stored as ISO-8601 text (sortable, readable in sqlite3)."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat()

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """One file found under an indexed root, indexed or failed."""

    __tablename__ = "images"
    __table_args__ = (
        # Count the images, and the failed ones, without reading every row or path
        # (`Catalog.counts`): SQLite counts from the smallest index that holds them.
        Index("ix_images_id", "id"),
        Index("ix_images_failed", "id", sqlite_where=text("error IS NOT NULL")),
        {"sqlite_autoincrement": True},  # ids are FAISS ids: never reuse them
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int]
    mtime_ns: Mapped[int]
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # The error is a failure to read the file (permission, I/O, memory), not bad content:
    # every index run tries the file again, even when its size and mtime are unchanged.
    error_retry: Mapped[bool] = mapped_column(default=False, server_default="0")
    indexed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When the photo was taken, from EXIF, as "YYYY-MM-DD HH:MM:SS" in the camera's local time
    # (EXIF has no time zone). NULL when the file has none, or was indexed before this column
    # existed: date filters then use the file's modification time (see Catalog.ids_matching).
    taken_at: Mapped[str | None] = mapped_column(String(19), default=None)


class Embedding(Base):
    """The L2-normalised float32 vector of one image."""

    __tablename__ = "embeddings"
    # Counts the vectors from this small index: counting the table itself read every row, each
    # a 4 KB page with its vector (4 GB and seconds for `pixsift status` at a million images).
    __table_args__ = (Index("ix_embeddings_image_id", "image_id"),)

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Departed(Base):
    """An embedded image that an index run found gone from disk, kept a while so that a later
    run finding its content at a new path gives it back its id and vector (see `departed.py`).

    Its id is no live image's: ids are never reused, and it is removed when the image returns.
    """

    __tablename__ = "departed"

    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(index=True)
    path: Mapped[str] = mapped_column(FsPath)  # where it was: a name to pair identical copies by
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # the bytes it had in `embeddings`
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[str | None] = mapped_column(String(19))
    departed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class VectorChange(Base):
    """One image whose vector was added, replaced or removed at a given generation."""

    __tablename__ = "vector_changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(index=True)
    image_id: Mapped[int]


class Root(Base):
    """A folder the user asked to index, with the walk options it was indexed with."""

    __tablename__ = "roots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    include_hidden: Mapped[bool]
    follow_symlinks: Mapped[bool]
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_indexed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ModelRow(Base):
    """The model every vector in this library was made with (at most one row)."""

    __tablename__ = "model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    pretrained: Mapped[str] = mapped_column(Text)
    config_json: Mapped[str | None] = mapped_column(Text)
    embed_dim: Mapped[int]
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Setting(Base):
    """Small library-wide values, such as the vector generation counter."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
