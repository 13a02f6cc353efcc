"""When the search index file is written: a delete does not rewrite it (every process replays
the change log on load), a long log does, and a delete never fails for want of a save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from pixsift import Library
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.storage import Catalog
from pixsift.storage.index_header import REPLAY_FLOOR, read_header
from pixsift.storage.vector_index import TMP_INFIX, VectorIndex

DIM = 16
COUNT = REPLAY_FLOOR + 200


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    """A library of `COUNT` random unit vectors (no image files: deletes and searches never
    open them), its index file saved by a first search."""
    folder = tmp_path / "library"
    folder.mkdir()
    vectors = np.random.default_rng(3).standard_normal((COUNT, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            batch.set_model(ModelRecord(ModelSpec("synthetic-16", "none"), DIM, "0" * 64))
        with catalog.write() as batch:
            batch.add_embedded_images([f"/synthetic/{n:05d}.jpg" for n in range(COUNT)], vectors)
    finally:
        catalog.close()
    with Library.open(folder) as library:
        library.search_vector(vectors[0], k=1)
    return folder


def file_state(path: Path) -> tuple[bytes, int, int]:
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_ino


def vector_of(folder: Path, image_id: int) -> np.ndarray:
    catalog = Catalog.open(folder / "library.db")
    try:
        return catalog.vectors([image_id])[image_id]
    finally:
        catalog.close()


FRESH_PROCESS_SEARCH = """
import json, sys
import numpy as np
from pixsift import Library
with Library.open(sys.argv[1], create=False) as library:
    query = np.array(json.loads(sys.argv[2]), dtype=np.float32)
    print(json.dumps([r.id for r in library.search_vector(query, k=20)]))
"""


def ids_in_a_fresh_process(folder: Path, query: np.ndarray) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SEARCH, str(folder), json.dumps(query.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(done.stdout))


def test_a_delete_leaves_the_index_file_unwritten_and_no_process_returns_the_image(
    library_dir: Path,
) -> None:
    index_file = library_dir / "vectors.faiss"
    before = file_state(index_file)
    victim = 7
    query, other = vector_of(library_dir, victim), vector_of(library_dir, 8)
    with Library.open(library_dir) as library:
        assert library.search_vector(query, k=1)[0].id == victim  # loaded: as a server holds it
        library.delete(victim)
        assert victim not in [r.id for r in library.search_vector(query, k=20)]
        status = library.status().index_file
    assert (status.state, status.changes) == ("caught up on load", 1)
    with Library.open(library_dir) as cold:  # a process that has not loaded the index
        cold.delete(8)
    assert file_state(index_file) == before  # neither delete rewrote it, nor the searches
    assert victim not in ids_in_a_fresh_process(library_dir, query)
    assert 8 not in ids_in_a_fresh_process(library_dir, other)
    with Library.open(library_dir) as library:
        found = [r.id for r in library.search_vector(query, k=COUNT)]
        assert victim not in found and 8 not in found and len(found) == COUNT - 2
        report = library.check()
    assert {problem.kind for problem in report.problems} == {"missing-files"}  # no image files here
    assert any("2 changes since are replayed as it is loaded" in str(note) for note in report.notes)
    assert file_state(index_file) == before


def test_deletes_past_the_replay_limit_save_the_index_file(library_dir: Path) -> None:
    index_file = library_dir / "vectors.faiss"
    before = file_state(index_file)
    first, second = vector_of(library_dir, 1), vector_of(library_dir, 2)
    catalog = Catalog.open(library_dir / "library.db")
    try:  # a forget of a large folder elsewhere: the log reaches the limit
        with catalog.write() as batch:
            batch.delete_images(list(range(100, 100 + REPLAY_FLOOR)))
    finally:
        catalog.close()
    with Library.open(library_dir) as library:
        library.delete(1)  # one more: past it
        assert file_state(index_file) != before
        status = library.status().index_file
        assert (status.state, status.changes) == ("up to date", None)
        catalog = Catalog.open(library_dir / "library.db")
        try:
            assert catalog.changes_since(status.generation or 0) == 0  # the log was trimmed
        finally:
            catalog.close()
        saved = file_state(index_file)
        library.delete(2)  # the next one is replayed again
        assert file_state(index_file) == saved
    assert 1 not in ids_in_a_fresh_process(library_dir, first)
    assert 2 not in ids_in_a_fresh_process(library_dir, second)


def test_a_delete_whose_index_save_fails_still_deletes(library_dir: Path) -> None:
    """The database delete is committed: a save of the index file that fails (a full disk, a
    read-only file; here its temporary file cannot be cleared) leaves the file behind, caught up
    from the log on load, and the delete answers as done rather than as an error."""
    catalog = Catalog.open(library_dir / "library.db")
    try:
        with catalog.write() as batch:
            batch.delete_images(list(range(100, 100 + REPLAY_FLOOR)))
    finally:
        catalog.close()
    obstacle = library_dir / f"vectors.faiss{TMP_INFIX}{os.getpid()}"
    obstacle.mkdir()
    (obstacle / "in-the-way").write_text("x")
    index_file = library_dir / "vectors.faiss"
    before = read_header(index_file)
    with Library.open(library_dir) as library:
        query = vector_of(library_dir, 5)
        assert library.delete(5).id == 5  # a save was due, and failed
        assert read_header(index_file) == before
        assert 5 not in [r.id for r in library.search_vector(query, k=20)]
    assert 5 not in ids_in_a_fresh_process(library_dir, query)


def test_a_save_that_waited_never_puts_an_older_index_over_a_newer_file(library_dir: Path) -> None:
    """A search that caught up (to generation G1) and only then got the write lock, after
    another process had saved the file at a later generation and trimmed the log up to it,
    leaves that file as it is: written over with G1, the log could no longer catch it up, and
    every process would rebuild the whole index (retraining an IVF-PQ one) as it loads it."""
    with Library.open(library_dir) as library:
        keeper = library._index
        library.search_vector(vector_of(library_dir, 1), k=1)  # loaded, as a server holds it
        catalog = Catalog.open(library_dir / "library.db")
        try:
            with catalog.write() as batch:  # past the limit: a save is due
                batch.delete_images(list(range(100, 100 + REPLAY_FLOOR + 1)))
            with FileLock(library_dir / "library.lock"), keeper.current(DIM) as caught_up:
                pass  # an index run holds the lock: the search leaves the save to it
            with catalog.write() as batch:  # meanwhile: one more change...
                batch.delete_images([5])
        finally:
            catalog.close()
        with Library.open(library_dir) as other:  # ...and another process saved the file
            other.delete(6)
            other.search_vector(vector_of(library_dir, 1), k=1)
        saved = read_header(library_dir / "vectors.faiss")
        assert saved is not None and int(saved["generation"]) > caught_up.generation
        newer = file_state(library_dir / "vectors.faiss")
        keeper._save(caught_up, holding_lock=False)  # the waiting search's save
        assert file_state(library_dir / "vectors.faiss") == newer
        assert library.status().index_file.state in ("up to date", "caught up on load")


def test_vectors_left_unsaved_by_a_run_that_died_are_saved_by_the_next_search(library_dir: Path) -> None:
    """Vectors committed by an index run killed before its save (written here through the
    catalog, as its batches are) are few, but adding them to an HNSW graph on every load costs
    more than one save: the first search that may write saves the file."""
    extra = np.random.default_rng(4).standard_normal((5, DIM)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    catalog = Catalog.open(library_dir / "library.db")
    try:
        with catalog.write() as batch:
            batch.add_embedded_images([f"/synthetic/new-{n}.jpg" for n in range(5)], extra)
        generation = catalog.generation()
    finally:
        catalog.close()
    header = read_header(library_dir / "vectors.faiss")
    assert header is not None and header["generation"] < generation  # 5 changes: few, but added
    found = ids_in_a_fresh_process(library_dir, extra[0])
    header = read_header(library_dir / "vectors.faiss")
    assert header is not None and header["generation"] == generation
    with Library.open(library_dir) as library:
        assert found[0] == library.search_vector(extra[0], k=1)[0].id
        assert library.status().index_file.state == "up to date"


@pytest.mark.parametrize("held", [True, False], ids=["index-held", "index-loaded-by-the-search"])
def test_a_search_save_never_undoes_a_reindex_done_since_it_decided(
    library_dir: Path, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    """A search that caught its flat index up and decided to save it, and only then got the
    write lock, after `pixsift reindex --index-type hnsw` in another process had saved an HNSW
    file at the same generation, leaves that file as it is: written over, the reindex was
    silently undone (a flat file under a library set to HNSW, until the next index run). So
    for a service that held the index, and for a search that has just loaded the file."""
    query = vector_of(library_dir, 1)
    with Library.open(library_dir) as library:
        if held:
            library.search_vector(query, k=1)  # loaded, as a server holds it
        catalog = Catalog.open(library_dir / "library.db")
        try:
            with catalog.write() as batch:  # past the limit: the next search saves the file
                batch.delete_images(list(range(100, 100 + REPLAY_FLOOR + 1)))
        finally:
            catalog.close()
        lock = library._write_lock.file_lock
        acquire = lock.acquire

        def reindexed_first(*args: object, **kwargs: object) -> object:
            """The search's try for the lock, just after another process's reindex."""
            monkeypatch.setattr(lock, "acquire", acquire)
            with Library.open(library_dir) as other:
                assert other.rebuild_index("hnsw").kind == "hnsw"
            return acquire(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(lock, "acquire", reindexed_first)
        assert [r.id for r in library.search_vector(query, k=1)] == [1]
        header = read_header(library_dir / "vectors.faiss")
        assert header is not None and header["plan"]["kind"] == "hnsw"
        assert library.index_summary().kind == "hnsw"  # the search adopts the rebuilt file
    with Library.open(library_dir) as fresh:
        status = fresh.status().index_file
        assert (status.state, status.kind) == ("up to date", "hnsw")


def test_a_search_while_a_rebuilt_index_is_swapped_in_does_not_read_its_file_again(
    library_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rebuild_index` saves the new index, then swaps it in: a search that took the lock in
    between found the file newer than the index it held (another kind) and read all of it,
    seconds and a third copy in memory at a million vectors while every other search waited,
    for the very index being swapped in. It now answers from the old index meanwhile."""
    query = vector_of(library_dir, 1)
    save, load = VectorIndex.save, VectorIndex.load.__func__  # type: ignore[attr-defined]
    saved = threading.Event()
    loads: list[Path] = []

    def signalled(index: VectorIndex, path: Path) -> None:
        save(index, path)
        saved.set()

    def counted(cls: type[VectorIndex], path: Path) -> VectorIndex | None:
        loads.append(path)
        return load(cls, path)  # type: ignore[no-any-return]

    with Library.open(library_dir) as library:
        assert [r.id for r in library.search_vector(query, k=1)] == [1]  # flat, in memory
        monkeypatch.setattr(VectorIndex, "save", signalled)
        monkeypatch.setattr(VectorIndex, "load", classmethod(counted))
        keeper = library._index
        with keeper.in_memory() as old:  # as a search under way holds the lock
            rebuild = threading.Thread(target=library.rebuild_index, args=("hnsw",))
            rebuild.start()
            assert saved.wait(60)  # the HNSW file is in place, not yet swapped in
            assert [r.id for r in library.search_vector(query, k=1)] == [1]
            with keeper.in_memory() as answering:
                assert answering is old
        rebuild.join(60)
        assert not rebuild.is_alive()
        assert loads == []
        assert library.index_summary().kind == "hnsw"
        summary = library.loaded_index().summary
        assert summary is not None and summary.kind == "hnsw"
