"""The catalog read through the standard library's `sqlite3`, read-only, for the quick query path.

Importing SQLAlchemy and mapping the schema costs a cold `pixsift search` about half a second,
more than the query itself. A search on a library whose FAISS file is up to date needs only a
handful of reads (the model record, the generation, a few settings, the hits' rows and, for a
compressed index, their vectors), so `pixsift.search.quick` reads them here instead, with plain
SQL on a read-only connection (`mode=ro`): it never writes, migrates or checkpoints.

`storage/schema.py` stays the one definition of the tables: every table and column named below
is listed in `COLUMNS`, and a test checks them against the ORM metadata. The records returned
are the ones `Catalog` returns for the same rows (a test compares them on a real library).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import numpy as np

from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.regular_file import other_than_a_file
from pixsift.storage.records import ImageInfo, VectorDelta

GENERATION_KEY = "vector_generation"  # catalog setting: the generation of the latest vector change
LOG_FLOOR_KEY = "vector_log_floor"  # catalog setting: the change log holds every change after it
BUSY_TIMEOUT_S = 30.0
SQL_CHUNK = 500  # ids per IN (...) clause, well below SQLite's variable limit
T = TypeVar("T")

# Every table and the columns of it this module names (a test checks them against schema.py).
COLUMNS: dict[str, tuple[str, ...]] = {
    "images": ("id", "path", "size", "mtime_ns", "width", "height", "format", "indexed_at", "error"),
    "embeddings": ("image_id", "vector"),
    "model": ("id", "name", "pretrained", "config_json", "embed_dim", "fingerprint"),
    "settings": ("key", "value"),
    "vector_changes": ("generation", "image_id"),
}
_IMAGE_COLUMNS = ", ".join(COLUMNS["images"])


def blob_to_vector(blob: bytes) -> np.ndarray:
    """A stored vector (little-endian float32 bytes) as an array."""
    return np.frombuffer(blob, dtype="<f4")


class CatalogReader:
    """Read-only access to a library's `library.db`; errors are `sqlite3.Error`s, left to the
    caller, which falls back to the full `Catalog` path that reports them to users."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @classmethod
    def open(cls, db_path: Path) -> CatalogReader:
        """Open `db_path` read-only; sqlite3.OperationalError if it is not there or unreadable."""
        if other_than_a_file(db_path) is not None:  # a named pipe: SQLite would wait on it for good
            raise sqlite3.OperationalError(f"{db_path} is no regular file")
        # A URI, so that `mode=ro` applies; `as_uri` escapes any character (?, #, odd bytes).
        uri = f"{db_path.absolute().as_uri()}?mode=ro"
        # isolation_level=None: no implicit transactions; `snapshot` begins one explicitly.
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        return cls(connection)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CatalogReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside it sees the same state of the database,
        whatever an index run commits meanwhile (WAL)."""
        self._connection.execute("BEGIN")
        try:
            yield
        finally:
            self._connection.execute("COMMIT")  # a read transaction: nothing to keep or lose

    def schema_version(self) -> int:
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    def model(self) -> ModelRecord | None:
        """The model every vector was made with, as `Catalog.model` returns it."""
        row = self._connection.execute(
            "SELECT name, pretrained, config_json, embed_dim, fingerprint FROM model WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        name, pretrained, config_json, embed_dim, fingerprint = row
        return ModelRecord(ModelSpec(name, pretrained, config_json), int(embed_dim), str(fingerprint))

    def setting(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def generation(self) -> int:
        value = self.setting(GENERATION_KEY)
        return int(value) if value is not None else 0

    def changes_since(self, since: int) -> int | None:
        """`Catalog.changes_since`: the logged vector changes after `since`, None if the log
        no longer reaches back to it."""
        floor = int(self.setting(LOG_FLOOR_KEY) or 0)
        if since < floor or since > self.generation():
            return None
        query = "SELECT COUNT(*) FROM vector_changes WHERE generation > ?"
        return int(self._connection.execute(query, (since,)).fetchone()[0])

    def vectors_added_since(self, since: int) -> bool:
        """`Catalog.vectors_added_since`."""
        query = (
            "SELECT EXISTS (SELECT 1 FROM vector_changes c JOIN embeddings e ON e.image_id = c.image_id "
            "WHERE c.generation > ?)"
        )
        return bool(self._connection.execute(query, (since,)).fetchone()[0])

    def vector_delta(self, since: int) -> VectorDelta | None:
        """`Catalog.vector_delta`: what changed after generation `since`, to replay on an index
        file saved then; None if the log no longer reaches back to it."""
        if self.changes_since(since) is None:
            return None
        query = "SELECT DISTINCT image_id FROM vector_changes WHERE generation > ?"
        changed = [int(row[0]) for row in self._connection.execute(query, (since,))]
        upserted = self.vectors(changed)
        removed = np.array([i for i in changed if i not in upserted], dtype=np.int64)
        ids = np.array(list(upserted), dtype=np.int64)
        vectors = np.stack(list(upserted.values())) if upserted else np.empty((0, 0), np.float32)
        return VectorDelta(self.generation(), removed, ids, vectors)

    def images(self, ids: Iterable[int]) -> dict[int, ImageInfo]:
        """The rows of the images among `ids`, by id, as `Catalog.images` returns them."""
        found: dict[int, ImageInfo] = {}
        for chunk in sql_chunks([int(i) for i in ids]):
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id IN ({marks})"
            rows = self._connection.execute(query, chunk)
            for image_id, path, size, mtime_ns, width, height, fmt, indexed_at, error in rows:
                found[int(image_id)] = ImageInfo(
                    int(image_id),
                    os.fsdecode(bytes(path)),  # paths are stored as their raw bytes (FsPath)
                    size,
                    mtime_ns,
                    width,
                    height,
                    fmt,
                    datetime.fromisoformat(indexed_at),  # UtcDateTime: ISO-8601 text
                    error,
                )
        return found

    def vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The stored vectors of the images among `ids` that have one, by id."""
        found: dict[int, np.ndarray] = {}
        for chunk in sql_chunks([int(i) for i in ids]):
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT image_id, vector FROM embeddings WHERE image_id IN ({marks})"
            for image_id, blob in self._connection.execute(query, chunk):
                found[int(image_id)] = blob_to_vector(blob)
        return found


def sql_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """`items` in slices of `SQL_CHUNK`, one IN (...) clause each (the `Catalog` and
    `storage/departed.py` use it too)."""
    for start in range(0, len(items), SQL_CHUNK):
        yield items[start : start + SQL_CHUNK]
