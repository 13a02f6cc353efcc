"""The catalog and the FAISS index file, on a real SQLite database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pytest

from pixsift.errors import LibraryFormatError
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.storage import Catalog
from pixsift.storage.index_choice import IndexKind, IndexPlan
from pixsift.storage.index_header import MAGIC
from pixsift.storage.index_lifecycle import catch_up, open_vector_index
from pixsift.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from pixsift.storage.schema import Base
from pixsift.storage.vector_index import IndexMeta, VectorIndex, read_generation

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog.open(tmp_path / "library.db")
    with catalog.write() as batch:
        batch.set_model(ModelRecord(ModelSpec("test", "none"), DIM, "f" * 16))
    return catalog


def add(catalog: Catalog, path: str, seed: int) -> int:
    with catalog.write() as batch:
        image_id = batch.add_image(path, 1, 1, None)
        batch.save_embedding(
            image_id,
            unit(seed),
            content_hash=f"h{seed}",
            width=1,
            height=1,
            format="JPEG",
            size=1,
            mtime_ns=1,
        )
    return image_id


def test_migrated_schema_matches_the_orm_tables(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "library.db").close()
    with sqlite3.connect(tmp_path / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for table in Base.metadata.sorted_tables:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table.name})")}
            assert columns == {column.name for column in table.columns}, table.name


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "library.db").close()
    with sqlite3.connect(tmp_path / "library.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = (tmp_path / "library.db").read_bytes()
    with pytest.raises(LibraryFormatError, match="newer"):
        Catalog.open(tmp_path / "library.db")
    assert (tmp_path / "library.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["library.db"]  # no journal left open


def test_a_library_is_kept_in_wal_mode(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "library.db").close()
    with sqlite3.connect(tmp_path / "library.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_file_that_is_not_a_library_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LibraryFormatError, match="file is not a database"):
        Catalog.open(tmp_path / "garbage.db")
    assert (tmp_path / "garbage.db").read_bytes() == b"this is not a database" * 100

    with sqlite3.connect(tmp_path / "other-app.db") as db:
        db.execute("CREATE TABLE images (name TEXT)")
    with pytest.raises(LibraryFormatError, match=r"not a pixsift library: .*\(images\)"):
        Catalog.open(tmp_path / "other-app.db")


def test_paths_that_are_not_utf8_round_trip(catalog: Catalog) -> None:
    odd = os.fsdecode(b"/photos/caf\xe9 \n new.jpg")  # Latin-1 byte, a space and a newline
    image_id = add(catalog, odd, 1)
    assert catalog.images([image_id])[image_id].path == odd
    assert set(catalog.known_files("/photos")) == {odd}


def test_folder_ranges_do_not_leak_into_sibling_folders(catalog: Catalog) -> None:
    inside = [add(catalog, p, i) for i, p in enumerate(["/a/b/1.jpg", "/a/b/c/2.jpg"])]
    for i, path in enumerate(["/a/b2/3.jpg", "/a/b.jpg", "/a/ba/4.jpg", "/a/b!/5.jpg"]):
        add(catalog, path, 10 + i)
    assert sorted(catalog.ids_under("/a/b")) == inside
    assert sorted(catalog.known_files("/a/b")) == ["/a/b/1.jpg", "/a/b/c/2.jpg"]


def test_ids_are_never_reused(catalog: Catalog) -> None:
    first = add(catalog, "/p/1.jpg", 1)
    with catalog.write() as batch:
        batch.delete_images([first])
    assert add(catalog, "/p/2.jpg", 2) > first


def test_every_vector_change_is_logged_and_replayed(catalog: Catalog, tmp_path: Path) -> None:
    ids = [add(catalog, f"/p/{i}.jpg", i) for i in range(5)]
    index = open_vector_index(catalog, tmp_path / "v.faiss", DIM)
    assert (index.count, index.generation) == (5, catalog.generation())
    index.save(tmp_path / "v.faiss")

    with catalog.write() as batch:
        batch.delete_images(ids[:2])
        batch.save_embedding(
            ids[2], unit(99), content_hash="x", width=1, height=1, format="PNG", size=2, mtime_ns=2
        )
    delta = catalog.vector_delta(index.generation)
    assert delta is not None
    assert sorted(delta.removed_ids) == ids[:2] and list(delta.upserted_ids) == [ids[2]]

    caught_up = catch_up(catalog, VectorIndex.load(tmp_path / "v.faiss"))  # type: ignore[arg-type]
    scores, found = caught_up.search(unit(99)[None], 1)
    assert (caught_up.count, int(found[0][0])) == (3, ids[2])
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_a_truncated_log_forces_a_rebuild(catalog: Catalog, tmp_path: Path) -> None:
    for i in range(3):
        add(catalog, f"/p/{i}.jpg", i)
    old = VectorIndex.empty(DIM, generation=1)
    with catalog.write() as batch:
        batch.truncate_vector_log(catalog.generation())
    assert catalog.vector_delta(1) is None
    assert catch_up(catalog, old).count == 3


def test_saved_index_round_trip_and_damaged_files(tmp_path: Path) -> None:
    index = VectorIndex.empty(DIM, generation=7)
    index.add(np.array([3, 9]), np.stack([unit(3), unit(9)]))
    index.save(tmp_path / "v.faiss")
    assert read_generation(tmp_path / "v.faiss") == 7
    loaded = VectorIndex.load(tmp_path / "v.faiss")
    assert loaded is not None and (loaded.count, loaded.generation, loaded.dim) == (2, 7, DIM)
    assert list(tmp_path.iterdir()) == [tmp_path / "v.faiss"]  # no temporary file left

    data = (tmp_path / "v.faiss").read_bytes()
    (tmp_path / "v.faiss").write_bytes(data[: len(data) // 2])
    assert VectorIndex.load(tmp_path / "v.faiss") is None
    (tmp_path / "v.faiss").write_bytes(b"not an index")
    assert VectorIndex.load(tmp_path / "v.faiss") is None
    assert read_generation(tmp_path / "v.faiss") is None
    assert VectorIndex.load(tmp_path / "missing.faiss") is None


def test_ctrl_c_inside_a_write_is_delivered_after_its_commit(catalog: Catalog) -> None:
    """Ctrl-C mid-transaction must not leave SQLite's write lock behind (the next write, such
    as saving the search index after an interrupted run, would wait and fail)."""
    # Python's own Ctrl-C handler, as in a terminal (a test run started in the background
    # inherits Ctrl-C ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), catalog.write() as batch:
            batch.add_images([("/photos/a.jpg", 1, 1)])
            signal.raise_signal(signal.SIGINT)  # as a user's Ctrl-C, in the middle of the batch
            batch.add_images([("/photos/b.jpg", 1, 1)])  # the batch still completes
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(catalog.known_files("/photos")) == ["/photos/a.jpg", "/photos/b.jpg"]
    add(catalog, "/photos/c.jpg", 1)  # no lock left: this would wait 30 s and fail
    assert len(catalog.known_files("/photos")) == 3


def test_ctrl_c_ignored_before_a_write_stays_ignored(catalog: Catalog) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with catalog.write() as batch:
            batch.add_images([("/photos/a.jpg", 1, 1)])
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(catalog.known_files("/photos")) == ["/photos/a.jpg"]


def test_an_index_file_cut_anywhere_or_padded_is_not_loaded(tmp_path: Path) -> None:
    """FAISS reads its part straight from the file: a file cut short at any point (as a full
    disk leaves it) or with bytes after its end is refused, never half-loaded."""
    path = tmp_path / "v.faiss"
    index = VectorIndex.empty(DIM, generation=3)
    index.add(np.arange(20), np.stack([unit(seed) for seed in range(20)]))
    index.save(path)
    data = path.read_bytes()
    loaded = VectorIndex.load(path)
    assert loaded is not None and np.array_equal(loaded.vector(11), index.vector(11))
    for cut in [*range(1, len(data), max(1, len(data) // 40)), len(data) - 1]:
        path.write_bytes(data[:cut])
        assert VectorIndex.load(path) is None, cut
    path.write_bytes(data + b"\0" * 8)
    assert VectorIndex.load(path) is None


def small_index(kind: IndexKind) -> VectorIndex:
    vectors = np.stack([unit(seed) for seed in range(20)])
    if kind is IndexKind.flat:
        index = VectorIndex.empty(DIM, generation=3)
    else:
        meta = IndexMeta(IndexPlan(kind, hnsw_m=8), trained_count=20, search_param=32, recall=0.97)
        index = VectorIndex(faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT), 3, meta)
    index.add(np.arange(100, 120), vectors)
    return index


@pytest.mark.parametrize("kind", [IndexKind.flat, IndexKind.hnsw])
def test_a_bit_flipped_anywhere_in_an_index_file_is_not_loaded(tmp_path: Path, kind: IndexKind) -> None:
    """A bit flipped on disk in the vectors or the ids loaded without complaint: other scores
    (one came out as 4.7e36) or other images, until the file happened to be rewritten."""
    path = tmp_path / "v.faiss"
    small_index(kind).save(path)
    data = path.read_bytes()
    loaded = VectorIndex.load(path)
    assert loaded is not None and np.array_equal(loaded.ids(), np.arange(100, 120))
    for position in range(len(MAGIC), len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        assert VectorIndex.load(path) is None, position


def test_filtered_search_matches_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1500)
    index = VectorIndex.empty(DIM)
    index.add(ids, vectors)
    allowed = ids[rng.random(500) < 0.1]
    query = vectors[0]

    _, found = index.search(query[None], 10, allowed)
    mask = np.isin(ids, allowed)
    expected = ids[mask][np.argsort(-(vectors[mask] @ query))][:10]
    assert list(found[0]) == list(expected)


@contextmanager
def old_library(path: Path, version: int) -> Iterator[sqlite3.Connection]:
    """A database as pixsift made it at schema `version` (the frozen DDL), to fill, committed
    and closed after the block."""
    db = sqlite3.connect(path)
    try:
        for migration in MIGRATIONS[:version]:
            for statement in migration.statements:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        yield db
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_a_library_of_every_older_schema_is_migrated_keeping_its_contents(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "library.db"
    vector = unit(7)
    with old_library(path, version) as db:
        db.execute(
            "INSERT INTO images (path, size, mtime_ns, content_hash, width, height, format, indexed_at) "
            "VALUES (?, 10, 20, 'h7', 640, 480, 'JPEG', '2024-05-01T10:00:00+00:00')",
            (b"/photos/a.jpg",),
        )
        db.execute("INSERT INTO embeddings VALUES (1, ?)", (vector.astype("<f4").tobytes(),))
        db.execute(
            "INSERT INTO model VALUES (1, 'test', 'none', NULL, ?, ?, '2024-05-01T10:00:00+00:00')",
            (DIM, "f" * 16),
        )
        db.execute("INSERT INTO roots VALUES (1, ?, 0, 0, '2024-05-01T10:00:00+00:00', NULL)", (b"/photos",))
        db.execute("INSERT INTO settings VALUES ('vector_generation', '1')")
    catalog = Catalog.open(path)
    try:
        assert catalog.schema_differences() == []
        assert catalog.model() == ModelRecord(ModelSpec("test", "none"), DIM, "f" * 16)
        assert [root.path for root in catalog.roots()] == ["/photos"]
        known = catalog.known_files("/photos")["/photos/a.jpg"]
        assert (known.id, known.size, known.has_vector, known.error, known.error_retry) == (
            1,
            10,
            True,
            None,
            False,
        )
        assert np.array_equal(catalog.vectors([1])[1], vector)
        assert catalog.generation() == 1
        add(catalog, "/photos/b.jpg", 8)  # and it takes new images, under new ids
        assert sorted(catalog.known_files("/photos")) == ["/photos/a.jpg", "/photos/b.jpg"]
    finally:
        catalog.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_failures_recorded_before_schema_3_that_may_pass_are_retried(tmp_path: Path) -> None:
    """Upgrading marks the failures to read a file (by their recorded reasons) for retry;
    failures of the content stay as they were."""
    path = tmp_path / "library.db"
    errors = ["permission denied", "[Errno 5] Input/output error", "image file is truncated"]
    with old_library(path, 2) as db:
        for number, error in enumerate(errors):
            db.execute(
                "INSERT INTO images (path, size, mtime_ns, error, indexed_at) VALUES (?, 1, 1, ?, '2024')",
                (os.fsencode(tmp_path / f"{number}.jpg"), error),
            )
    catalog = Catalog.open(path)
    try:
        known = catalog.known_files(str(tmp_path))
        assert [known[str(tmp_path / f"{n}.jpg")].error_retry for n in range(3)] == [True, True, False]
        assert catalog.schema_differences() == []
    finally:
        catalog.close()


def test_a_library_of_schema_3_keeps_departed_images_once_migrated(tmp_path: Path) -> None:
    """Schema 4 adds the table of departed images: an image of a migrated library leaves, is
    found by its content, and comes back under its id with its vector, as the search index's
    change log says (removed, then added again)."""
    path = tmp_path / "library.db"
    vector = unit(3)
    with old_library(path, 3) as db:
        db.execute(
            "INSERT INTO images (path, size, mtime_ns, content_hash, width, height, format, indexed_at) "
            "VALUES (?, 10, 20, 'h3', 640, 480, 'JPEG', '2024-05-01T10:00:00+00:00')",
            (b"/photos/a.jpg",),
        )
        db.execute("INSERT INTO embeddings VALUES (1, ?)", (vector.astype("<f4").tobytes(),))
        db.execute(
            "INSERT INTO model VALUES (1, 'test', 'none', NULL, ?, ?, '2024-05-01T10:00:00+00:00')",
            (DIM, "f" * 16),
        )
    catalog = Catalog.open(path)
    try:
        assert catalog.schema_differences() == []
        with catalog.write() as batch:
            batch.depart_images([1])
        assert catalog.images([1]) == {}
        [gone] = catalog.departed_with_hashes(["h3"])["h3"]
        assert (gone.id, gone.path, gone.size) == (1, "/photos/a.jpg", 10)
        assert catalog.departed_sizes() == {10}
        with catalog.write() as batch:
            batch.restore_departed(gone, "/photos/2024/a.jpg", size=10, mtime_ns=30)
        image = catalog.images([1])[1]
        assert (image.path, image.mtime_ns, image.width) == ("/photos/2024/a.jpg", 30, 640)
        assert np.array_equal(catalog.vectors([1])[1], vector)
        assert catalog.departed_with_hashes(["h3"]) == {}
        delta = catalog.vector_delta(0)
        assert delta is not None and delta.upserted_ids.tolist() == [1] and delta.removed_ids.size == 0
        assert add(catalog, "/photos/b.jpg", 8) == 2  # new images still take new ids
    finally:
        catalog.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_library_made_a_moment_ago_is_switched_to_wal_once_its_readers_let_it(tmp_path: Path) -> None:
    """The first open of a new library switches it to WAL, which needs the database to itself,
    and SQLite does not wait for that while another connection holds the write lock: another
    process opening the library at the same moment (checking its schema under that lock) made
    it fail with a bare "sqlite3.OperationalError: database is locked"."""
    path = tmp_path / "library.db"
    Catalog.open(path).close()
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode = DELETE")  # as it is made, before the switch
    setup.close()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process opening it, under the write lock to check
    releases = threading.Timer(0.5, other.execute, args=("COMMIT",))
    releases.start()
    try:
        Catalog.open(path).close()
    finally:
        releases.join()
        other.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


OPEN_AT_GO = """
import sys, time
from pathlib import Path
from pixsift.storage import Catalog
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
Catalog.open(Path(sys.argv[2])).close()
"""


def test_a_new_library_opened_by_many_processes_at_once_is_created_once(tmp_path: Path) -> None:
    """Each sees no schema with its plain read; only the first to take the write lock creates
    it, the others find it made when they look again under the lock."""
    go, path = tmp_path / "go", tmp_path / "library.db"
    children = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT_GO, str(go), str(path)], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    time.sleep(2)  # all started and waiting
    go.touch()
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr.decode()
    catalog = Catalog.open(path)
    try:
        assert catalog.schema_differences() == []
    finally:
        catalog.close()


def test_counting_a_library_reads_small_indexes_not_every_row(tmp_path: Path) -> None:
    """`Catalog.counts` (`pixsift status`, the service's GET /stats) counted the vectors by
    reading the whole embeddings table, a 4 KB page per image with its vector: 4 GB and seconds
    at a million images. A library of the schema before is given the indexes as it is migrated,
    and the counts stay right."""
    from sqlalchemy import event

    path = tmp_path / "library.db"
    with old_library(path, 4) as db:
        for number, error in enumerate([None, None, "not an image", None]):
            db.execute(
                "INSERT INTO images (path, size, mtime_ns, error, indexed_at) "
                "VALUES (?, 1, 1, ?, '2024-05-01T10:00:00+00:00')",
                (f"/photos/{number}.jpg".encode(), error),
            )
        for image_id in (1, 2):
            vector = unit(image_id).astype("<f4").tobytes()
            db.execute("INSERT INTO embeddings VALUES (?, ?)", (image_id, vector))
    catalog = Catalog.open(path)
    statements: list[str] = []
    event.listen(
        catalog._engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement),
    )
    try:
        counts = catalog.counts()
    finally:
        catalog.close()
    assert (counts.total, counts.indexed, counts.failed, counts.pending) == (4, 2, 1, 1)
    counting = [statement for statement in statements if "count(" in statement.lower()]
    assert len(counting) == 3
    with sqlite3.connect(path) as db:
        for statement in counting:
            plan = " ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {statement}"))
            # One of the small indexes (not the table, nor the index of the paths); "USING
            # INDEX ix_images_failed": the partial index holds the failed images alone.
            assert " INDEX ix_" in plan, (statement, plan)
    db.close()
