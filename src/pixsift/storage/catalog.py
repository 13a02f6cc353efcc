"""The catalog: everything the library knows, read from and written to SQLite.

Reads run in short snapshot transactions; writes go through `Catalog.write()`, one
transaction per batch, which also appends every vector change to the change log that the
FAISS index replays to catch up (see `vector_index.py`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from pixsift.errors import LibraryClosedError, LibraryNotFoundError
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.storage import departed
from pixsift.storage.catalog_reader import GENERATION_KEY, LOG_FLOOR_KEY, blob_to_vector, sql_chunks
from pixsift.storage.database import (
    failed_write_error,
    is_damage,
    open_engine,
    read_error,
    writer,
)
from pixsift.storage.interrupts import interrupts_deferred
from pixsift.storage.records import (
    CatalogCounts,
    Failure,
    FreshEmbedding,
    ImageCriteria,
    ImageInfo,
    KnownFile,
    RootInfo,
    StoredEmbedding,
    VectorDelta,
)
from pixsift.storage.schema import (
    Base,
    Embedding,
    Image,
    ModelRow,
    Root,
    Setting,
    VectorChange,
    utcnow,
)

_SQLITE_INT_MIN, _SQLITE_INT_MAX = -(2**63), 2**63 - 1  # the ids SQLite can store


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at `path`: `(0, 0)` when there is none, None when it
    cannot be told (no permission, an I/O error; SQLite reports those itself)."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return (0, 0)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def folder_prefix_range(folder: str) -> tuple[bytes, bytes]:
    """The byte range [low, high) holding every path strictly inside `folder`.

    Paths are stored as bytes (see `FsPath`), so "under this folder" is a range scan on the
    unique index: from "folder/" up to "folder0" ("0" is the byte after "/").
    """
    low = os.fsencode(os.path.join(folder, ""))
    return low, low[:-1] + bytes([low[-1] + 1])


class Catalog:
    """Metadata, vectors and the model record of one library, in one SQLite file."""

    def __init__(self, engine: Engine, folder: Path, db_path: Path | None = None) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._folder = folder  # named in errors
        self._closed = False
        # Held by `close` and around each commit: a commit under way ends before the close,
        # and none happens after it (see `write`).
        self._closing = threading.Lock()
        # The file opened, to notice it deleted or replaced under a long-lived process (a server)
        self._db_path = db_path
        self._db_identity = None if db_path is None else _file_identity(db_path)

    @classmethod
    def open(cls, db_path: Path) -> Catalog:
        return cls(open_engine(db_path), db_path.parent, db_path)

    def close(self) -> None:
        """Close the database's connections. Every later use raises LibraryClosedError: the
        engine would open new connections silently, and keep them. A write transaction open
        meanwhile in another thread is rolled back, not committed, when it ends."""
        with self._closing:
            self._closed = True
        self._engine.dispose()

    def _check_open(self) -> None:
        if self._closed:
            raise LibraryClosedError(
                f"The library at {self._folder} was closed; open it again with Library.open to use it."
            )

    def check_in_place(self) -> None:
        """Raise LibraryNotFoundError if the database file opened is no longer the one at its
        path (the library folder deleted, moved away or made anew). Connections already open
        would go on reading and writing the old file unseen, and new ones would create an
        empty database there: every read and write checks first."""
        if self._db_path is None or self._db_identity is None:
            return
        if _file_identity(self._db_path) in (self._db_identity, None):
            return
        gone = (
            f"The library at {self._folder} was deleted, moved or replaced after it was opened: "
            "nothing more is read from or written to it here."
        )
        raise LibraryNotFoundError(
            f"{gone} Open it again with Library.open (a service that has it open: restart it).",
            command_line=f"{gone} Run the command again.",
        )

    @contextmanager
    def _read(self) -> Iterator[Session]:
        self._check_open()
        self.check_in_place()
        try:
            with Session(self._engine) as session, session.begin():
                yield session
        except DatabaseError as exc:  # locked, damaged, changed by hand, an I/O error
            raise read_error(self._folder, exc) from exc

    @contextmanager
    def write(self) -> Iterator[CatalogWriter]:
        """One write transaction; its vector changes are logged under a new generation.

        A write that fails (full disk, read-only folder, I/O error) is rolled back whole and
        raised as LibraryWriteError (a lock held by another program, damage or a changed schema
        as a read's error); the transactions committed before it are kept. Ctrl-C
        during the transaction is delivered when it has ended (see `interrupts.py`). A catalog
        closed by another thread before the commit rolls it back (LibraryClosedError).
        """
        self._check_open()
        self.check_in_place()
        try:
            with (
                interrupts_deferred(),
                Session(self._writer, expire_on_commit=False) as session,
                session.begin(),
            ):
                batch = CatalogWriter(session)
                yield batch
                batch._log_vector_changes()
                with self._closing:
                    # Closed while this ran: a service stopped under a request it has answered
                    # 503 `shutting_down` ("could not finish"), whose thread went on (SQLite's
                    # lock waited for, say). Rolled back, so that answer stays true.
                    self._check_open()
                    session.commit()
        except DatabaseError as exc:  # a full disk, a read-only folder, a lock, damage
            raise failed_write_error(self._folder, exc) from exc

    # ---- the model and settings ------------------------------------------------------------

    def model(self) -> ModelRecord | None:
        with self._read() as session:
            row = session.get(ModelRow, 1)
            if row is None:
                return None
            spec = ModelSpec(row.name, row.pretrained, row.config_json)
            return ModelRecord(spec, row.embed_dim, row.fingerprint)

    def setting(self, key: str) -> str | None:
        """A library-wide setting stored as text (such as the chosen index type), or None."""
        with self._read() as session:
            return session.scalar(select(Setting.value).where(Setting.key == key))

    def generation(self) -> int:
        with self._read() as session:
            return _int_setting(session, GENERATION_KEY)

    # ---- roots and files --------------------------------------------------------------------

    def roots(self) -> list[RootInfo]:
        with self._read() as session:
            rows = session.scalars(select(Root).order_by(Root.path))
            return [
                RootInfo(r.path, r.include_hidden, r.follow_symlinks, r.added_at, r.last_indexed_at)
                for r in rows
            ]

    def known_files(self, folder: str) -> dict[str, KnownFile]:
        """Every file the catalog holds under `folder`, keyed by path."""
        # Plain SQL rather than a compiled select: an index run reads every row of its roots
        # here, and the ORM's processing of each row cost as much as the query itself.
        with self._read() as session:
            rows = session.connection().exec_driver_sql(_KNOWN_FILES_UNDER, folder_prefix_range(folder))
            fsdecode = os.fsdecode
            known = {}
            for image_id, raw_path, size, mtime_ns, content_hash, has_vector, error, retry in rows:
                path = fsdecode(raw_path)
                known[path] = KnownFile(
                    image_id, path, size, mtime_ns, content_hash, bool(has_vector), error, bool(retry)
                )
            return known

    def known_file(self, path: str) -> KnownFile | None:
        with self._read() as session:
            found = list(_known_files(session.execute(_known_file_query().where(Image.path == path))))
        return found[0] if found else None

    def embedded_files_with_hashes(self, hashes: Iterable[str]) -> list[KnownFile]:
        """Every embedded image whose content hash is one of `hashes`, wherever it lies."""
        wanted = list(set(hashes))
        query = _known_file_query().where(Embedding.image_id.is_not(None))
        found: list[KnownFile] = []
        with self._read() as session:
            for chunk in sql_chunks(wanted):
                found.extend(_known_files(session.execute(query.where(Image.content_hash.in_(chunk)))))
        return found

    def sizes_with_vectors(self) -> set[int]:
        """File sizes of embedded images: only a file of one of these sizes can be a move."""
        query = select(Image.size).join(Embedding, Embedding.image_id == Image.id).distinct()
        with self._read() as session:
            return set(session.scalars(query))

    def departed_sizes(self) -> set[int]:
        """File sizes of departed images (see `departed.py`): a file of one may be coming back."""
        with self._read() as session:
            return departed.sizes(session)

    def departed_with_hashes(self, hashes: Iterable[str]) -> dict[str, list[departed.DepartedImage]]:
        """The departed images of each of these content hashes, the latest departed first."""
        with self._read() as session:
            return departed.with_hashes(session, hashes, utcnow())

    def embeddings_by_hash(self, hashes: Iterable[str]) -> dict[str, StoredEmbedding]:
        """For each content hash, the vector and metadata of one embedded image that has it, or
        else of a departed image (see `departed.py`) that had it.

        A snapshot: writes made afterwards (even to that image) do not change what it holds.
        """
        wanted = list(set(hashes))
        found: dict[str, StoredEmbedding] = {}
        query = select(
            Image.content_hash, Embedding.vector, Image.width, Image.height, Image.format, Image.taken_at
        )
        query = query.join(Embedding, Embedding.image_id == Image.id)
        with self._read() as session:
            for chunk in sql_chunks(wanted):
                for content_hash, vector, width, height, image_format, taken in session.execute(
                    query.where(Image.content_hash.in_(chunk))
                ):
                    stored = StoredEmbedding(vector, width, height, image_format, taken)
                    found.setdefault(str(content_hash), stored)
            # Two copies of a departed image found in one run: the first takes its id back, the
            # second is a copy of it, whose vector is known without the model.
            unknown = [content_hash for content_hash in wanted if content_hash not in found]
            found.update(departed.embeddings_by_hash(session, unknown, utcnow()))
        return found

    def images(self, ids: Iterable[int], matching: Sequence[ImageCriteria] = ()) -> dict[int, ImageInfo]:
        """The records of `ids` that exist and, when `matching` is given, meet one of its
        criteria now: a search names its hits this way, in the same statement that checks its
        filter again, so an image moved out of the folder searched (or rewritten smaller) while
        the search ran is not returned under a filter it no longer meets."""
        wanted = _storable_ids(ids)
        meets = or_(*(and_(true(), *_criteria(one)) for one in matching)) if matching else true()
        found: dict[int, ImageInfo] = {}
        with self._read() as session:
            for chunk in sql_chunks(wanted):
                for row in session.scalars(select(Image).where(Image.id.in_(chunk), meets)):
                    found[row.id] = _image_info(row)
        return found

    def image(self, image_id: int) -> ImageInfo | None:
        return self.images([image_id]).get(image_id)

    def ids_under(self, folder: str) -> np.ndarray:
        """Ids of the images inside `folder` (recursively), as `ids_matching` gives them."""
        return self.ids_matching(ImageCriteria(folder=folder))

    def ids_matching(self, criteria: ImageCriteria) -> np.ndarray:
        """Ids of the images that meet `criteria`.

        Images that failed to index are among them: a search restricted to these ids finds
        only those it holds vectors for. Asking SQLite for the vectors' presence as well would
        walk the whole vector table (2 KB rows): three to four times the cost of the filter.
        """
        query = select(Image.id).where(*_criteria(criteria))
        with self._read() as session:  # Core rows, not the ORM's: 15% less time for 200,000 ids
            return np.fromiter(session.connection().execute(query).scalars(), dtype=np.int64)

    def embedded_paths(self) -> list[str]:
        """Paths of every image that has a vector, i.e. every image a search can return."""
        query = select(Image.path).join(Embedding, Embedding.image_id == Image.id).order_by(Image.path)
        with self._read() as session:
            return list(session.scalars(query))

    def counts(self) -> CatalogCounts:
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(Image)) or 0
            indexed = session.scalar(select(func.count()).select_from(Embedding)) or 0
            failed = session.scalar(select(func.count()).where(Image.error.is_not(None))) or 0
        return CatalogCounts(total=total, indexed=indexed, failed=failed)

    def failures(self, limit: int | None = None, after: str | None = None) -> list[Failure]:
        """Failed files by path (bytewise, as stored), only those after `after` when given: a
        cursor that stays right while failures are added or cleared between two pages."""
        query = select(Image.path, Image.error).where(Image.error.is_not(None)).order_by(Image.path)
        if after is not None:
            query = query.where(Image.path > after)
        with self._read() as session:
            return [Failure(path, error or "") for path, error in session.execute(query.limit(limit))]

    # ---- integrity (for `pixsift doctor`) -------------------------------------------------------

    def integrity_errors(self) -> list[str]:
        """What SQLite's own integrity check finds wrong in the file; empty when sound."""
        self._check_open()
        try:
            with Session(self._engine) as session, session.begin():
                rows = [str(row[0]) for row in session.execute(text("PRAGMA integrity_check"))]
        except DatabaseError as exc:  # damaged where the check itself must read
            if not is_damage(exc):  # held by another program: no finding about the file
                raise read_error(self._folder, exc) from exc
            return [str(exc.orig)]
        return [] if rows == ["ok"] else rows

    def schema_differences(self) -> list[str]:
        """Tables or columns that differ from what this pixsift expects."""
        differences = []
        for name, found, expected in self._tables():
            if not found:
                differences.append(f"table {name} is missing")
            elif found != expected:
                differences.append(f"table {name} has columns {sorted(found)}, not {sorted(expected)}")
        return differences

    def lacks_schema(self) -> bool:
        """Whether a table or column this pixsift reads is missing (an extra one is harmless):
        then most reads fail, and nothing else about the library can be checked."""
        return any(not expected <= found for _, found, expected in self._tables())

    def _tables(self) -> list[tuple[str, set[str], set[str]]]:
        """(name, columns found, columns expected) of every table of the schema."""
        tables = []
        with self._read() as session:
            for table in Base.metadata.sorted_tables:
                info = session.execute(text(f"PRAGMA table_info({table.name})"))  # our own names
                found = {str(row[1]) for row in info}
                tables.append((table.name, found, {column.name for column in table.columns}))
        return tables

    def orphan_vector_ids(self) -> list[int]:
        """Vectors whose image row is gone (the foreign key should make this impossible)."""
        query = select(Embedding.image_id).where(
            ~select(Image.id).where(Image.id == Embedding.image_id).exists()
        )
        with self._read() as session:
            return list(session.scalars(query))

    def misfit_vector_ids(self, dim: int) -> list[int]:
        """Vectors whose size is not `dim` float32 values."""
        query = select(Embedding.image_id).where(func.length(Embedding.vector) != 4 * dim)
        with self._read() as session:
            return list(session.scalars(query))

    def image_paths(self) -> list[tuple[int, str]]:
        """(id, path) of every image row."""
        with self._read() as session:
            return [(int(i), str(p)) for i, p in session.execute(select(Image.id, Image.path))]

    def embedded_ids(self) -> np.ndarray:
        with self._read() as session:
            return np.fromiter(session.scalars(select(Embedding.image_id)), dtype=np.int64)

    # ---- vectors ----------------------------------------------------------------------------

    def vector(self, image_id: int) -> np.ndarray | None:
        with self._read() as session:
            blob = session.scalar(select(Embedding.vector).where(Embedding.image_id == image_id))
        return None if blob is None else blob_to_vector(blob)

    def vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The stored vectors of the images among `ids` that have one, by id."""
        wanted = _storable_ids(ids)
        found: dict[int, np.ndarray] = {}
        # Plain SQL rather than a compiled select: this runs for every search that re-ranks,
        # where building and processing the statement was most of the cost.
        with self._read() as session:
            connection = session.connection()
            for chunk in sql_chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                rows = connection.exec_driver_sql(
                    f"SELECT image_id, vector FROM embeddings WHERE image_id IN ({marks})", tuple(chunk)
                )
                for image_id, blob in rows:
                    found[int(image_id)] = blob_to_vector(blob)
        return found

    def all_vectors(self, chunk_size: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every vector, as chunks of (ids, vectors), from one consistent snapshot."""
        with self._read() as session:
            query = select(Embedding.image_id, Embedding.vector).order_by(Embedding.image_id)
            result = session.execute(query.execution_options(yield_per=chunk_size))
            for rows in result.partitions():
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                yield ids, np.stack([blob_to_vector(r[1]) for r in rows])

    def changes_since(self, since: int) -> int | None:
        """How many vector changes the log holds after generation `since` (what loading an
        index file saved at `since` replays), or None if the log no longer reaches back to it
        (or `since` is ahead of the database): such a file is rebuilt when loaded."""
        with self._read() as session:
            if since < _int_setting(session, LOG_FLOOR_KEY) or since > _int_setting(session, GENERATION_KEY):
                return None
            query = select(func.count()).where(VectorChange.generation > since)
            return int(session.scalar(query) or 0)

    def vectors_added_since(self, since: int) -> bool:
        """Whether the log after generation `since` holds an image whose vector is in the
        database: added or re-embedded by an index run that stopped before saving the index
        file (each run saves it at its end). Deletes are cheap to replay on load; additions
        to an HNSW graph are not, and would be replayed by every process that loads it."""
        added = exists().where(VectorChange.generation > since, VectorChange.image_id == Embedding.image_id)
        with self._read() as session:
            return bool(session.scalar(select(added)))

    def vector_delta(self, since: int, max_changes: int | None = None) -> VectorDelta | None:
        """What changed after generation `since`, or None if the log no longer reaches back.

        `max_changes`: only the first generations after `since` whose logged changes add up to
        at most that many (always at least one whole generation, however large), to replay a
        long log in slices; the delta's `generation` is the last one it covers. An image
        changed again after the slice is read as it is now, as a whole delta reads it."""
        with self._read() as session:
            if since < _int_setting(session, LOG_FLOOR_KEY):
                return None
            generation = _int_setting(session, GENERATION_KEY)
            if since > generation:  # an index file from some other database
                return None
            if max_changes is not None:
                generation = _slice_end(session, since, generation, max_changes)
            window = (VectorChange.generation > since) & (VectorChange.generation <= generation)
            changed = list(session.scalars(select(VectorChange.image_id).where(window).distinct()))
            upserted: list[tuple[int, bytes]] = []
            for chunk in sql_chunks(changed):
                query = select(Embedding.image_id, Embedding.vector).where(Embedding.image_id.in_(chunk))
                upserted.extend((row[0], row[1]) for row in session.execute(query))
        present = {image_id for image_id, _ in upserted}
        removed = np.array([i for i in changed if i not in present], dtype=np.int64)
        ids = np.array([image_id for image_id, _ in upserted], dtype=np.int64)
        vectors = (
            np.stack([blob_to_vector(blob) for _, blob in upserted])
            if upserted
            else np.empty((0, 0), np.float32)
        )
        return VectorDelta(generation, removed, ids, vectors)


def _slice_end(session: Session, since: int, generation: int, max_changes: int) -> int:
    """The last generation after `since` (up to `generation`) at which the changes logged
    since add up to at most `max_changes`; the first one after `since` if it alone has more.
    Read generation by generation, in order: a long log is not counted whole."""
    query = (
        select(VectorChange.generation, func.count())
        .where(VectorChange.generation > since, VectorChange.generation <= generation)
        .group_by(VectorChange.generation)
        .order_by(VectorChange.generation)
    )
    end, total = since, 0
    for step, count in session.execute(query):
        total += int(count)
        if total > max_changes and end > since:
            return end
        end = int(step)
    return generation  # the rest of the log fits (or the last generations logged nothing)


class CatalogWriter:
    """Writes inside one transaction. Vector changes are collected and logged on commit."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._changed_ids: set[int] = set()

    # ---- model, roots, settings -------------------------------------------------------------

    def set_model(self, record: ModelRecord) -> None:
        """Record the library's model, dropping every vector made with another one."""
        existing = self._session.get(ModelRow, 1)
        if existing is not None:
            self._changed_ids.update(self._session.scalars(select(Embedding.image_id)))
            self._session.execute(delete(Embedding))
            departed.forget_all(self._session)  # made by that model too: never to come back
            self._session.delete(existing)
            self._session.flush()
        spec = record.spec
        self._session.add(
            ModelRow(
                id=1,
                name=spec.name,
                pretrained=spec.pretrained,
                config_json=spec.config_json,
                embed_dim=record.embed_dim,
                fingerprint=record.fingerprint,
                created_at=utcnow(),
            )
        )

    def upsert_root(self, path: str, *, include_hidden: bool, follow_symlinks: bool) -> None:
        root = self._session.scalar(select(Root).where(Root.path == path))
        if root is None:
            root = Root(path=path, added_at=utcnow(), last_indexed_at=None)
            self._session.add(root)
        root.include_hidden = include_hidden
        root.follow_symlinks = follow_symlinks

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a library-wide setting as text; None removes it."""
        if value is None:
            self._session.execute(delete(Setting).where(Setting.key == key))
        else:
            _set_setting(self._session, key, value)

    def mark_root_indexed(self, path: str) -> None:
        self._session.execute(update(Root).where(Root.path == path).values(last_indexed_at=utcnow()))

    def truncate_vector_log(self, upto_generation: int) -> None:
        """Forget logged changes up to a generation that a saved FAISS index already holds."""
        self._session.execute(delete(VectorChange).where(VectorChange.generation <= upto_generation))
        floor = max(upto_generation, _int_setting(self._session, LOG_FLOOR_KEY))
        _set_setting(self._session, LOG_FLOOR_KEY, floor)

    # ---- images -----------------------------------------------------------------------------

    def add_image(self, path: str, size: int, mtime_ns: int, content_hash: str | None) -> int:
        image = Image(path=path, size=size, mtime_ns=mtime_ns, content_hash=content_hash, indexed_at=utcnow())
        self._session.add(image)
        self._session.flush()
        return image.id

    def add_images(self, files: Sequence[tuple[str, int, int]]) -> list[int]:
        """Add images not embedded yet, given as (path, size, mtime_ns), in one statement;
        returns their ids in the same order."""
        if not files:
            return []
        now = utcnow()
        rows = [
            {"path": path, "size": size, "mtime_ns": mtime_ns, "content_hash": None, "indexed_at": now}
            for path, size, mtime_ns in files
        ]
        query = insert(Image).returning(Image.id, sort_by_parameter_order=True)
        return [int(i) for i in self._session.scalars(query, rows)]

    def save_embedding(
        self,
        image_id: int,
        vector: np.ndarray,
        *,
        content_hash: str,
        width: int | None,
        height: int | None,
        format: str | None,
        size: int,
        mtime_ns: int,
        taken_at: str | None = None,
    ) -> None:
        """Store a freshly computed vector and the metadata the decode found."""
        metadata = (content_hash, width, height, format, taken_at, size, mtime_ns)
        self.save_embeddings([FreshEmbedding(image_id, vector, *metadata)])

    def save_embeddings(self, fresh: Sequence[FreshEmbedding]) -> None:
        """Store freshly computed vectors and what decoding found, in a few bulk statements
        (an index run stores a whole batch at once: per-row statements cost more CPU than
        decoding does)."""
        if not fresh:
            return
        now = utcnow()
        rows = [
            {
                "id": item.image_id,
                "content_hash": item.content_hash,
                "width": item.width,
                "height": item.height,
                "format": item.format,
                "taken_at": item.taken_at,
                "size": item.size,
                "mtime_ns": item.mtime_ns,
                "error": None,
                "error_retry": False,
                "indexed_at": now,
            }
            for item in fresh
        ]
        self._session.execute(update(Image), rows)  # executemany, by primary key
        ids = [item.image_id for item in fresh]
        for chunk in sql_chunks(ids):
            self._session.execute(delete(Embedding).where(Embedding.image_id.in_(chunk)))
        vectors = [{"image_id": item.image_id, "vector": vector_to_blob(item.vector)} for item in fresh]
        self._session.execute(insert(Embedding), vectors)
        self._changed_ids.update(ids)

    def copy_embedding(self, image_id: int, source: StoredEmbedding, *, content_hash: str) -> None:
        """Give `image_id` the vector and metadata of identical content embedded before."""
        self._update(
            image_id,
            content_hash=content_hash,
            width=source.width,
            height=source.height,
            format=source.format,
            taken_at=source.taken_at,
            error=None,
            error_retry=False,
            indexed_at=utcnow(),
        )
        self._put_vector(image_id, source.vector)

    def record_failure(
        self,
        image_id: int,
        error: str,
        *,
        size: int,
        mtime_ns: int,
        content_hash: str | None,
        retry: bool = False,
    ) -> None:
        """Mark an image as unreadable; it keeps no vector until the file changes, or (with
        `retry`, for a file that could not be read) until a later run reads it."""
        self._update(
            image_id,
            error=error,
            error_retry=retry,
            size=size,
            mtime_ns=mtime_ns,
            content_hash=content_hash,
            width=None,
            height=None,
            format=None,
            taken_at=None,
            indexed_at=utcnow(),
        )
        self._drop_vector(image_id)

    def add_embedded_images(
        self,
        paths: Sequence[str],
        vectors: np.ndarray,
        *,
        width: int | None = None,
        height: int | None = None,
        format: str | None = None,
        mtime_ns: int = 0,
        taken_at: str | None = None,
    ) -> list[int]:
        """Add many images with their vectors at once, in two bulk inserts; returns their ids.

        For libraries filled without decoding files (imports, synthetic benchmark libraries).
        """
        if not len(paths):
            return []
        now = utcnow()
        rows = [
            {
                "path": path,
                "size": 0,
                "mtime_ns": mtime_ns,
                "width": width,
                "height": height,
                "format": format,
                "taken_at": taken_at,
                "indexed_at": now,
            }
            for path in paths
        ]
        query = insert(Image).returning(Image.id, sort_by_parameter_order=True)
        ids = [int(i) for i in self._session.scalars(query, rows)]
        self._session.execute(
            insert(Embedding),
            [{"image_id": i, "vector": vector_to_blob(v)} for i, v in zip(ids, vectors, strict=True)],
        )
        self._changed_ids.update(ids)
        return ids

    def move_image(self, image_id: int, new_path: str, *, size: int, mtime_ns: int) -> None:
        """A file that moved keeps its row, id and vector: only the path changes."""
        self._update(image_id, path=new_path, size=size, mtime_ns=mtime_ns)

    def touch_image(self, image_id: int, *, size: int, mtime_ns: int) -> None:
        """A file whose timestamp changed but whose bytes did not."""
        self._update(image_id, size=size, mtime_ns=mtime_ns)

    def drop_vectors(self, ids: Iterable[int]) -> None:
        """Forget these vectors; their images are embedded again by the next index run."""
        for chunk in sql_chunks([int(i) for i in ids]):
            self._session.execute(delete(Embedding).where(Embedding.image_id.in_(chunk)))
            self._changed_ids.update(chunk)

    def delete_root(self, path: str) -> None:
        """Forget an indexed folder (its images are deleted with `delete_images`)."""
        self._session.execute(delete(Root).where(Root.path == path))

    def move_paths(self, old: str, new: str, roots: Sequence[tuple[str, str]]) -> int:
        """Move every image inside the folder `old` ("/a/Photos") to the same place inside
        `new`, and rename `roots` (old path, new path); ids, vectors and every other column
        stay, so the search index needs no change. Returns how many images moved.

        Done on the stored bytes, so a name that is not UTF-8 keeps its bytes. The caller
        makes sure nothing lies under `new` yet (a path there would collide).

        The departed records under `old` move too: `forget` of the folder at its new place
        must drop them, as it drops those of a folder never moved."""
        moved = self._move_prefix("images", "id", old, new)
        self._move_prefix("departed", "image_id", old, new)
        for before, after in roots:
            self._session.execute(update(Root).where(Root.path == before).values(path=after))
        return moved

    def _move_prefix(self, table: str, key: str, old: str, new: str) -> int:
        """Rewrite the paths of `table` inside the folder `old` to lie inside `new` instead;
        returns how many rows changed. (`table` and `key` are ours, never user input.)"""
        connection = self._session.connection()
        low, high = folder_prefix_range(old)  # "/a/Photos/" up to "/a/Photos0"
        prefix = os.fsencode(os.path.join(new, ""))  # "/" stays "/"
        rows = connection.exec_driver_sql(
            f"SELECT {key}, path FROM {table} WHERE path >= ? AND path < ?", (low, high)
        ).all()
        if rows:
            moved = [(prefix + bytes(path)[len(low) :], row_id) for row_id, path in rows]
            connection.exec_driver_sql(f"UPDATE {table} SET path = ? WHERE {key} = ?", moved)
        return len(rows)

    def depart_images(self, ids: Iterable[int]) -> None:
        """Delete the images of files found gone from disk, keeping a departed record of each
        embedded one, so that a later run finding its file moved gives back its id and vector."""
        wanted = [int(i) for i in ids]
        departed.record(self._session, wanted)
        self.delete_images(wanted)

    def restore_departed(self, image: departed.DepartedImage, path: str, *, size: int, mtime_ns: int) -> None:
        """Bring a departed image back at `path`, under its old id, with its old vector."""
        departed.restore(self._session, image, path, size=size, mtime_ns=mtime_ns)
        self._changed_ids.add(image.id)

    def purge_departed(self) -> None:
        """Drop the departed records past their retention or beyond the cap (see `departed.py`)."""
        departed.purge(self._session, utcnow())

    def forget_departed_under(self, folder: str, keep: Sequence[str] = ()) -> None:
        """Drop the departed records of images that were inside `folder`, except inside `keep`."""
        departed.forget_under(self._session, *folder_prefix_range(folder), keep)

    def delete_images(self, ids: Iterable[int]) -> None:
        wanted = [int(i) for i in ids]
        for chunk in sql_chunks(wanted):
            self._changed_ids.update(
                self._session.scalars(select(Embedding.image_id).where(Embedding.image_id.in_(chunk)))
            )
            self._session.execute(delete(Image).where(Image.id.in_(chunk)))

    # ---- internals ----------------------------------------------------------------------------

    def _update(self, image_id: int, **values: object) -> None:
        self._session.execute(update(Image).where(Image.id == image_id).values(**values))

    def _put_vector(self, image_id: int, blob: bytes) -> None:
        self._session.execute(delete(Embedding).where(Embedding.image_id == image_id))
        self._session.execute(insert(Embedding).values(image_id=image_id, vector=blob))
        self._changed_ids.add(image_id)

    def _drop_vector(self, image_id: int) -> None:
        deleted = self._session.execute(delete(Embedding).where(Embedding.image_id == image_id))
        if deleted.rowcount:  # type: ignore[attr-defined]
            self._changed_ids.add(image_id)

    def _log_vector_changes(self) -> None:
        if not self._changed_ids:
            return
        generation = _int_setting(self._session, GENERATION_KEY) + 1
        self._session.execute(
            insert(VectorChange),
            [{"generation": generation, "image_id": i} for i in sorted(self._changed_ids)],
        )
        _set_setting(self._session, GENERATION_KEY, generation)
        self._changed_ids.clear()


_NS = 1_000_000_000  # nanoseconds in a second


def _criteria(criteria: ImageCriteria) -> list[ColumnElement[bool]]:
    """`criteria` as SQL conditions on the images table (all to be met)."""
    conditions: list[ColumnElement[bool]] = []
    if criteria.folder is not None:
        low, high = folder_prefix_range(criteria.folder)
        conditions += [Image.path >= low, Image.path < high]
    if criteria.formats:
        conditions.append(Image.format.in_(list(criteria.formats)))
    if criteria.min_width is not None:
        conditions.append(Image.width >= criteria.min_width)
    if criteria.min_height is not None:
        conditions.append(Image.height >= criteria.min_height)
    if criteria.taken_after is not None:
        conditions.append(_taken_on_or_after(criteria.taken_after))
    if criteria.taken_before is not None:
        conditions.append(not_(_taken_on_or_after(criteria.taken_before)))
    return conditions


def _taken_on_or_after(moment: str) -> ColumnElement[bool]:
    """Whether an image was taken at or after `moment` ("YYYY-MM-DD HH:MM:SS[.ffffff]", local
    time, as `SearchFilters.taken_range` writes it), to the microsecond. The date taken is the
    EXIF one, else the file's mtime. Compared to the second, as text, and only within the
    bound's own second by the microseconds: so a bound of whole seconds (a date, the common
    case) costs what the comparison always did, where building the full text for every row
    made a date filter three times slower."""
    second, _, fraction = moment.partition(".")
    taken = _taken_second()
    if not fraction.strip("0"):
        return taken >= second
    micro = int(fraction[:6].ljust(6, "0"))
    return or_(taken > second, and_(taken == second, _taken_microsecond() >= micro))


def _taken_second() -> ColumnElement[str]:
    """The second an image was taken: EXIF's, else its file's mtime in local time (the second
    it began in, also before 1970, where SQLite's / rounds towards zero), both as
    "YYYY-MM-DD HH:MM:SS" text so they compare as dates."""
    whole_seconds = (Image.mtime_ns - _ns_into_second()) // _NS
    modified = func.datetime(whole_seconds, "unixepoch", "localtime", type_=String)
    return func.coalesce(Image.taken_at, modified)


def _taken_microsecond() -> ColumnElement[int]:
    """The microseconds past `_taken_second`: none for an EXIF date, which has none."""
    return case((Image.taken_at.is_not(None), 0), else_=_ns_into_second() // 1000)


def _ns_into_second() -> ColumnElement[int]:
    """The nanoseconds of an image's mtime since its last whole second (SQLite's % keeps the
    sign of a time before 1970: counted from below here)."""
    return (Image.mtime_ns % _NS + _NS) % _NS


# What `_known_file_query` selects, for the rows under a folder (a range of stored paths)
_KNOWN_FILES_UNDER = (
    "SELECT images.id, images.path, images.size, images.mtime_ns, images.content_hash, "
    "embeddings.image_id IS NOT NULL, images.error, images.error_retry "
    "FROM images LEFT OUTER JOIN embeddings ON embeddings.image_id = images.id "
    "WHERE images.path >= ? AND images.path < ?"
)


def _known_file_query() -> Select[int, str, int, int, str | None, bool, str | None, bool]:
    return select(
        Image.id,
        Image.path,
        Image.size,
        Image.mtime_ns,
        Image.content_hash,
        Embedding.image_id.is_not(None),
        Image.error,
        Image.error_retry,
    ).outerjoin(Embedding, Embedding.image_id == Image.id)


def _known_files(rows: Iterable[Sequence[Any]]) -> Iterator[KnownFile]:
    for image_id, path, size, mtime_ns, content_hash, has_vector, error, retry in rows:
        yield KnownFile(image_id, path, size, mtime_ns, content_hash, bool(has_vector), error, bool(retry))


def _image_info(row: Image) -> ImageInfo:
    return ImageInfo(
        row.id, row.path, row.size, row.mtime_ns, row.width, row.height, row.format, row.indexed_at, row.error
    )


def _int_setting(session: Session, key: str) -> int:
    value = session.scalar(select(Setting.value).where(Setting.key == key))
    return int(value) if value is not None else 0


def _set_setting(session: Session, key: str, value: int | str) -> None:
    setting = session.get(Setting, key)
    if setting is None:
        session.add(Setting(key=key, value=str(value)))
    else:
        setting.value = str(value)


def _storable_ids(ids: Iterable[int]) -> list[int]:
    """The ids an image may have: SQLite's integers. A caller's 2**64 is no image's id, not
    an OverflowError from the driver."""
    return [int(i) for i in ids if _SQLITE_INT_MIN <= int(i) <= _SQLITE_INT_MAX]
