"""A long catch-up of the search index, applied in slices of whole catalog generations with the
keeper's lock released between them: a search that comes meanwhile answers from the index as
it is (a whole slice, never part of one) instead of waiting for all of it, never returns an
image deleted from the catalog, and the index caught up at the end holds what a rebuild does.

Real catalogs, real FAISS, real threads; the slices are made tiny through `catch_up_slice`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pixsift import Library
from pixsift.errors import InvalidOptionError
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.storage import Catalog, index_lifecycle
from pixsift.storage.handoff import HandOff
from pixsift.storage.index_choice import IndexThresholds
from pixsift.storage.index_keeper import IndexKeeper
from pixsift.storage.vector_index import VectorIndex
from pixsift.synthetic.vectors import clustered_vectors

DIM = 32
DEADLINE_S = 60
# HNSW from 100 vectors (the slow kind to add to); slices of at most 20 changes.
THRESHOLDS = IndexThresholds(flat_max=100, exact_filter_max=10, catch_up_slice=20)


def vectors(count: int, seed: int) -> np.ndarray:
    return np.concatenate(list(clustered_vectors(count, DIM, clusters=8, seed=seed)))


def add(catalog: Catalog, batch_vectors: np.ndarray, tag: str) -> list[int]:
    """One commit (one generation) of new images with these vectors; their ids."""
    paths = [f"/synthetic/{tag}/{i:04d}.jpg" for i in range(len(batch_vectors))]
    with catalog.write() as batch:
        return batch.add_embedded_images(paths, batch_vectors, width=64, height=48, format="JPEG")


def in_line_after_the_first_slice(
    monkeypatch: pytest.MonkeyPatch, keeper: IndexKeeper, thread: threading.Thread, what: str
) -> list[int]:
    """Each slice of the next catch-up recorded (its generation, in the list returned); after
    the first, `thread` is started and in line for the keeper's lock before the next one."""
    real_slice = index_lifecycle.catch_up_slice
    slices: list[int] = []

    def watched(*args: object, **kwargs: object) -> VectorIndex:
        caught = real_slice(*args, **kwargs)  # type: ignore[arg-type]
        slices.append(caught.generation)
        if len(slices) == 1:
            thread.start()
            assert keeper._handoff.wait_for_waiters(1, DEADLINE_S), f"the {what} never came"
        return caught

    monkeypatch.setattr(index_lifecycle, "catch_up_slice", watched)
    return slices


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    """The library's catalog, opened as another process opens it to index."""
    folder = tmp_path / "library"
    folder.mkdir()
    opened = Catalog.open(folder / "library.db")
    with opened.write() as batch:
        batch.set_model(ModelRecord(ModelSpec("synthetic", "none"), DIM, "0" * 64))
    yield opened
    opened.close()


def test_a_delta_is_read_in_slices_of_whole_generations(catalog: Catalog) -> None:
    start = catalog.generation()
    sizes = [3, 2, 4, 1]
    ids = [add(catalog, vectors(size, seed), f"g{seed}") for seed, size in enumerate(sizes)]

    first = catalog.vector_delta(start, max_changes=5)  # 3 + 2: the third would pass 5
    assert first is not None and first.generation == start + 2
    assert sorted(first.upserted_ids.tolist()) == sorted(ids[0] + ids[1])
    alone = catalog.vector_delta(start + 2, max_changes=1)  # a generation of 4 is never split
    assert alone is not None and alone.generation == start + 3
    assert sorted(alone.upserted_ids.tolist()) == sorted(ids[2])
    rest = catalog.vector_delta(start + 3, max_changes=100)
    assert rest is not None and rest.generation == catalog.generation() == start + 4
    assert rest.upserted_ids.tolist() == ids[3]

    # Deleted after the slice it was added in: that slice reads it as it is now, removed.
    with catalog.write() as batch:
        batch.delete_images([ids[0][0]])
    again = catalog.vector_delta(start, max_changes=3)
    assert again is not None and again.generation == start + 1
    assert again.removed_ids.tolist() == [ids[0][0]] and len(again.upserted_ids) == 2


def test_replaying_slice_by_slice_ends_where_a_whole_replay_does(catalog: Catalog) -> None:
    start = catalog.generation()
    ids = [i for n in range(6) for i in add(catalog, vectors(7, n), f"g{n}")]
    with catalog.write() as batch:
        batch.delete_images(ids[:5])
    sliced = VectorIndex.empty(DIM, generation=start)
    seen = []
    while sliced.generation != catalog.generation():
        sliced = index_lifecycle.catch_up_slice(catalog, sliced, max_changes=10)
        seen.append(sliced.generation)
    assert seen == sorted(set(seen)) and len(seen) == 7  # one generation of 7 at a time, then the delete
    whole = index_lifecycle.catch_up(catalog, VectorIndex.empty(DIM, generation=start))
    assert sorted(sliced.ids().tolist()) == sorted(whole.ids().tolist()) == sorted(ids[5:])


def test_a_slice_of_no_changes_is_refused_clearly() -> None:
    with pytest.raises(InvalidOptionError, match="catch_up_slice must be at least 1"):
        IndexThresholds(catch_up_slice=0)


def test_a_search_during_a_catch_up_answers_from_the_index_as_it_is(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process adds 200 images in ten commits and deletes one the index holds: the
    search that catches up applies 20 at a time, and a search from another thread, in line
    for the lock during the first slice, gets it before the second, at the first's generation.
    It does not return the deleted image, which the index it searched still holds."""
    before = add(catalog, vectors(150, 1), "before")
    library = Library.open(tmp_path / "library", create=False, index_thresholds=THRESHOLDS)
    keeper = library._index
    victim_vector = vectors(150, 1)[0]
    assert library.search_vector(victim_vector, k=1)[0].id == before[0]
    assert library.index_summary().kind == "hnsw"
    loaded_at = catalog.generation()
    added = [i for n in range(10) for i in add(catalog, vectors(20, 10 + n), f"added-{n}")]
    with catalog.write() as batch:
        batch.delete_images([before[0]])

    other: dict[str, object] = {}

    def meanwhile() -> None:
        with keeper.current(DIM) as held:  # in line during the first slice: answers after it
            other["generation"], other["count"] = held.generation, held.count
        other["hits"] = [hit.id for hit in library.search_vector(victim_vector, k=10)]

    searcher = threading.Thread(target=meanwhile)
    slices = in_line_after_the_first_slice(monkeypatch, keeper, searcher, "search")
    hits = library.search_vector(victim_vector, k=10)  # this search catches up, in 11 slices
    searcher.join(DEADLINE_S)
    assert not searcher.is_alive()

    # One generation a slice, in order (a search that finds the index caught up asks again).
    assert (
        sorted(set(slices))
        == slices[: len(set(slices))]
        == list(range(loaded_at + 1, catalog.generation() + 1))
    )
    assert other["generation"] == slices[0] and other["count"] == 150 + 20
    assert before[0] not in other["hits"] and before[0] not in [hit.id for hit in hits]  # type: ignore[operator]
    with keeper.in_memory() as held:
        assert held is not None and held.generation == catalog.generation()
        rebuilt = index_lifecycle.rebuild(catalog, DIM, keeper.policy())
        assert sorted(held.ids().tolist()) == sorted(rebuilt.ids().tolist()) == sorted(before[1:] + added)
    assert library.loaded_index().summary.vectors == 149 + 200  # type: ignore[union-attr]
    library.close()


def test_an_index_run_save_waits_for_a_search_catch_up_and_finishes_it(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of an index run must save an index caught up whole: a search's catch-up under
    way is waited for (never saved halfway), then the file is saved at the catalog's generation."""
    from pixsift.storage.index_header import read_generation

    add(catalog, vectors(150, 1), "before")
    library = Library.open(tmp_path / "library", create=False, index_thresholds=THRESHOLDS)
    keeper = library._index
    library.search_vector(vectors(1, 5)[0], k=1)
    loaded_at = catalog.generation()
    for n in range(5):
        add(catalog, vectors(20, 10 + n), f"added-{n}")

    saver = threading.Thread(target=lambda: keeper.save_current(DIM))
    slices = in_line_after_the_first_slice(monkeypatch, keeper, saver, "save")
    library.search_vector(vectors(1, 5)[0], k=1)
    saver.join(DEADLINE_S)
    assert not saver.is_alive()
    assert read_generation(tmp_path / "library" / "vectors.faiss") == catalog.generation()
    assert sorted(set(slices)) == list(range(loaded_at + 1, loaded_at + 6))
    library.close()


def test_the_lock_is_handed_to_every_thread_waiting_not_one_that_takes_it_again_and_again() -> None:
    """Between slices, each thread already waiting gets the lock once before the catch-up goes
    on: a search that takes it again at once must not stand for another still waiting."""
    handoff, lock = HandOff(), threading.RLock()
    stop, entered = threading.Event(), threading.Event()

    def again_and_again() -> None:
        while not stop.is_set():
            with handoff.holding(lock):
                pass

    def once() -> None:
        with handoff.holding(lock):
            entered.set()

    with handoff.holding(lock):
        eager = threading.Thread(target=again_and_again)
        eager.start()
        assert handoff.wait_for_waiters(1, DEADLINE_S)
        patient = threading.Thread(target=once)
        patient.start()
        assert handoff.wait_for_waiters(2, DEADLINE_S)
        handoff.let_waiters_in(lock)
        assert entered.is_set()  # before the lock came back: it had its turn
    stop.set()
    for thread in (eager, patient):
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
