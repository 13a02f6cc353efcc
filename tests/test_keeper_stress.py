"""One `Library` shared by many threads at once, as the service shares it: searches, `similar`,
reads of `loaded_index()`, deletes, an index run of new photos (which outgrows the flat index
and rebuilds it as HNSW) and forced rebuilds. The index keeper writes the index file outside
its lock while searches read the index; this checks, on real photos, a real catalog and real
FAISS, that no search ever fails or returns an image deleted before it began, that the
published summary describes the index searches use once all is quiet, and that the file saved
last loads and passes `pixsift doctor`. A second test races a catch-up applied in tiny slices
(see `IndexKeeper`) with searches, deletes and another process's commits.

Bounded: fixed iteration counts, every thread joined with a deadline; no sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from conftest import TinyModel, run_cli
from pixsift import Library
from pixsift.storage.index_choice import IndexThresholds
from pixsift.storage.vector_index import VectorIndex
from sample_photos import write_photos

BEFORE, ADDED = 150, 60  # the index run's 60 take the library past flat_max: rebuilt as HNSW
THRESHOLDS = IndexThresholds(flat_max=180, exact_filter_max=10)
SEARCHES = 60  # per search thread
DELETES = 25
DEADLINE_S = 180


class Run:
    """What the threads share: the ids deleted so far, and every failure, by thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deleted: set[int] = set()
        self.failures: list[str] = []
        self.returned: set[int] = set()
        self.go = threading.Event()

    def deleted_now(self) -> set[int]:
        with self.lock:
            return set(self.deleted)

    def thread(self, name: str, work: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            self.go.wait(DEADLINE_S)
            try:
                work()
            except BaseException as error:  # any: reported together below
                with self.lock:
                    self.failures.append(f"{name}: {error!r}")

        return threading.Thread(target=guarded, name=name, daemon=True)

    def all(self, threads: list[threading.Thread], started: float) -> None:
        """Start `threads` together, wait for them until the deadline (counted from `started`),
        and fail if one hung or failed."""
        for thread in threads:
            thread.start()
        self.go.set()
        for thread in threads:
            thread.join(max(1.0, DEADLINE_S - (time.monotonic() - started)))
        assert not [thread.name for thread in threads if thread.is_alive()], "a thread hung"
        assert not self.failures, self.failures


def searcher(
    library: Library, run: Run, anchor: int, query: np.ndarray, under: Path, seed: int
) -> Callable[[], None]:
    asks = [
        lambda: library.search("a red square on grass", k=30),
        lambda: library.similar(anchor, k=30),
        lambda: library.search_vector(query, k=30),
        lambda: library.search_vector(query, k=30, under=under),  # a filter: the ids allowed
    ]

    def work() -> None:
        rng = np.random.default_rng(seed)
        for _ in range(SEARCHES):
            gone = run.deleted_now()  # deleted before this search began
            hits = asks[int(rng.integers(len(asks)))]()
            ids = [hit.id for hit in hits]
            assert len(set(ids)) == len(ids), f"duplicates: {ids}"
            assert not gone & set(ids), f"deleted before the search: {sorted(gone & set(ids))}"
            assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
            with run.lock:
                run.returned |= set(ids)

    return work


def summary_reader(library: Library) -> Callable[[], None]:
    def work() -> None:
        for _ in range(20 * SEARCHES):
            loaded = library.loaded_index()
            summary = loaded.summary
            if summary is not None:
                assert summary.kind in ("flat", "hnsw"), summary
                assert 0 < summary.vectors <= BEFORE + ADDED, summary

    return work


def deleter(library: Library, run: Run, victims: list[int]) -> Callable[[], None]:
    def work() -> None:
        for image_id in victims:
            library.delete(image_id, wait=None)
            with run.lock:
                run.deleted.add(image_id)

    return work


def test_one_library_under_searches_deletes_an_index_run_and_rebuilds_at_once(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    started = time.monotonic()
    photos = tmp_path / "photos"
    write_photos(photos / "before", BEFORE, size=(64, 48), seed=7000)
    library = Library.open(tmp_path / "library", index_thresholds=THRESHOLDS)
    library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    first = library.search("a photo", k=BEFORE)
    initial = {hit.id for hit in first}
    assert len(initial) == BEFORE and library.index_summary().kind == "flat"
    anchor = first[0].id
    query = library.similar(anchor, k=1)[0].id  # another image: its stored vector is a query
    vector = _stored_vector(library, query)
    victims = sorted(initial - {anchor})[:DELETES]
    added = tmp_path / "added"  # a folder of its own: a run of `photos` would add the deleted again
    write_photos(added, ADDED, size=(64, 48), seed=7500)

    run = Run()
    threads = [
        run.thread("search-1", searcher(library, run, anchor, vector, photos / "before", 1)),
        run.thread("search-2", searcher(library, run, anchor, vector, photos / "before", 2)),
        run.thread("loaded_index", summary_reader(library)),
        run.thread("delete", deleter(library, run, victims)),
        run.thread("index", lambda: _index(library, tiny_model, added)),
        run.thread("rebuild", lambda: _rebuilds(library)),
    ]
    run.all(threads, started)

    # Quiet now: what is published is the index searches use, and holds what the catalog does.
    indexed = library.status().counts.indexed
    assert indexed == BEFORE + ADDED - DELETES
    published = library.loaded_index()
    assert not published.loading and published.summary is not None
    with library._index.in_memory() as held:
        assert held is not None
        assert held.count == published.summary.vectors == indexed
    final = {hit.id for hit in library.search("a photo", k=2 * indexed)}
    assert len(final) == indexed and not final & set(victims)
    assert run.returned <= initial | final  # every id returned was in the catalog at some point
    library.close()

    # The file saved last reads whole; deletes since it leave it behind (replayed on load).
    saved = VectorIndex.load(tmp_path / "library" / "vectors.faiss")
    assert saved is not None and saved.count >= indexed
    with Library.open(tmp_path / "library", create=False, index_thresholds=THRESHOLDS) as again:
        assert again.index_summary().vectors == indexed
        assert {hit.id for hit in again.search_vector(vector, k=2 * indexed)} == final
    checked = run_cli("doctor", "--library", str(tmp_path / "library"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _stored_vector(library: Library, image_id: int) -> np.ndarray:
    with library._index.in_memory() as held:
        assert held is not None
        return held.vector(image_id)


def _index(library: Library, tiny_model: TinyModel, folder: Path) -> None:
    report = library.index(
        folder, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), wait=None
    )
    assert report.added == ADDED, report


def _rebuilds(library: Library) -> None:
    for kind in ("hnsw", "flat", "auto"):
        assert library.rebuild_index(kind, wait=None).kind in ("flat", "hnsw")


# ---- a long catch-up in slices, raced by searches and deletes ----------------------------------

SLICED = IndexThresholds(flat_max=100, exact_filter_max=10, catch_up_slice=3)
SLICE_DIM = 32
COMMITS = 40  # another process's, of 5 new images each; every 4th also deletes 2 older ones


def test_a_catch_up_in_slices_under_searches_deletes_and_another_process_writing(tmp_path: Path) -> None:
    """Another process adds images in 40 commits (half before the searches begin) and deletes
    some while searches in three threads catch the index up 3 changes at a time (one catches
    up, the others answer from the index as it is) and a fourth thread deletes through the
    library (its catch-up waits for the one under way and finishes it). No search fails or
    returns an image deleted before it began or never stored; the index caught up at the end
    holds the ids a rebuild does."""
    from filelock import FileLock

    from pixsift.models.spec import ModelRecord, ModelSpec
    from pixsift.storage import Catalog
    from pixsift.storage.index_lifecycle import rebuild
    from pixsift.synthetic.vectors import clustered_vectors

    started = time.monotonic()
    folder = tmp_path / "library"
    folder.mkdir()
    writer = Catalog.open(folder / "library.db")  # as an index run in another process has it
    stream = np.concatenate(list(clustered_vectors(150 + 5 * COMMITS, SLICE_DIM, clusters=8, seed=3)))
    with writer.write() as batch:
        batch.set_model(ModelRecord(ModelSpec("synthetic", "none"), SLICE_DIM, "0" * 64))
        first = batch.add_embedded_images([f"/s/before/{i}.jpg" for i in range(150)], stream[:150])
    library = Library.open(folder, create=False, index_thresholds=SLICED)
    assert len(library.search_vector(stream[0], k=10)) == 10 and library.index_summary().kind == "hnsw"

    run = Run()
    stored = set(first)  # every id ever stored
    theirs, ours = first[: 2 * (COMMITS // 4)], first[-DELETES:]

    def write(commits: range) -> None:
        for n in commits:
            chunk = stream[150 + 5 * n : 155 + 5 * n]
            with FileLock(folder / "library.lock"), writer.write() as batch:
                new = batch.add_embedded_images([f"/s/{n}/{i}.jpg" for i in range(5)], chunk)
                gone = theirs[n // 2 : n // 2 + 2] if n % 4 == 3 else []
                batch.delete_images(gone)
                with run.lock:
                    stored.update(new)
            with run.lock:
                run.deleted.update(gone)

    def search(seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = np.random.default_rng(seed)
            for _ in range(SEARCHES):
                gone = run.deleted_now()
                hits = library.search_vector(stream[int(rng.integers(len(stream)))], k=30)
                ids = [hit.id for hit in hits]
                assert len(set(ids)) == len(ids), f"duplicates: {ids}"
                assert not gone & set(ids), f"deleted before the search: {sorted(gone & set(ids))}"
                with run.lock:
                    assert set(ids) <= stored, f"never stored: {sorted(set(ids) - stored)}"
                assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)

        return work

    write(range(COMMITS // 2))  # before the searches: the first has 100 changes to catch up
    threads = [
        run.thread("other-process", lambda: write(range(COMMITS // 2, COMMITS))),
        *(run.thread(f"search-{n}", search(n)) for n in range(3)),
        run.thread("delete", deleter(library, run, ours)),
    ]
    run.all(threads, started)

    # Quiet now: the next search catches up whole, to what a rebuild from the catalog holds.
    everything = library.search_vector(stream[0], k=len(stream))
    remaining = stored - run.deleted
    assert {hit.id for hit in everything} == remaining
    with library._index.in_memory() as held:
        assert held is not None and held.generation == writer.generation()
        fresh = rebuild(writer, SLICE_DIM, library._index.policy())
        assert set(held.ids().tolist()) == set(fresh.ids().tolist()) == remaining
    library.close()
    writer.close()

    # The file saved last reads whole; another process loading it catches up to the same ids.
    assert VectorIndex.load(folder / "vectors.faiss") is not None
    with Library.open(folder, create=False, index_thresholds=SLICED) as again:
        assert {hit.id for hit in again.search_vector(stream[0], k=len(stream))} == remaining
