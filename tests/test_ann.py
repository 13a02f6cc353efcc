"""The search index at scale: choosing its kind, keeping it current, tuning it for recall.

Libraries here are filled with synthetic clustered vectors through the catalog's bulk write
path (no images), and searched through `Library` as an application would. Small thresholds
put a 2,000-vector library on HNSW or IVF-PQ so every kind runs in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TinyModel, run_cli
from pixsift import Library
from pixsift.errors import QueryError
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.storage import Catalog
from pixsift.storage.index_choice import (
    GIB,
    IndexKind,
    IndexThresholds,
    choose_index,
    drifted,
    flat_bytes,
    hnsw_bytes,
    parse_memory_budget,
)
from pixsift.storage.vector_index import VectorIndex, read_header
from pixsift.synthetic.vectors import clustered_vectors

DIM = 32
COUNT = 2_000
CLUSTERS = 40
RECALL_TARGET = 0.95
# Below these, a library of COUNT vectors is put on the kind named.
THRESHOLDS = {
    IndexKind.flat: IndexThresholds(),
    IndexKind.hnsw: IndexThresholds(flat_max=500, exact_filter_max=100),
    IndexKind.ivfpq: IndexThresholds(flat_max=500, hnsw_max=1_000, exact_filter_max=100),
}


# ---- index selection: a pure function ------------------------------------------------------------


def test_small_collections_are_searched_exactly() -> None:
    assert choose_index(0, 512).kind is IndexKind.flat
    assert choose_index(20_000, 512).kind is IndexKind.flat


def test_the_middle_goes_to_hnsw_while_it_fits_the_budget() -> None:
    assert choose_index(20_001, 512).kind is IndexKind.hnsw
    assert choose_index(500_000, 512).kind is IndexKind.hnsw
    tight = hnsw_bytes(100_000, 512) - 1
    assert choose_index(100_000, 512, memory_budget=tight).kind is IndexKind.ivfpq


def test_millions_go_to_ivfpq_sized_for_their_training_sample() -> None:
    plan = choose_index(1_000_000, 512)
    assert plan.kind is IndexKind.ivfpq
    assert plan.nlist <= plan.train_size // 39  # k-means gets enough points per centroid
    assert (plan.pq_m, plan.pq_bits, plan.train_size) == (64, 8, 100_000)
    # 64-byte codes: far below a quarter of the 2 KB a flat index keeps per vector
    assert plan.pq_m * plan.pq_bits // 8 * 4 <= flat_bytes(1, 512)


def test_thresholds_and_forcing_move_the_choice() -> None:
    small = IndexThresholds(flat_max=100, hnsw_max=1_000)
    assert choose_index(100, 64, thresholds=small).kind is IndexKind.flat
    assert choose_index(101, 64, thresholds=small).kind is IndexKind.hnsw
    assert choose_index(1_001, 64, thresholds=small).kind is IndexKind.ivfpq
    assert choose_index(10, 64, forced=IndexKind.ivfpq).kind is IndexKind.ivfpq
    assert choose_index(10**7, 64, forced=IndexKind.flat).kind is IndexKind.flat


def test_a_flat_index_over_budget_is_not_chosen() -> None:
    assert choose_index(10_000, 512, memory_budget=flat_bytes(10_000, 512) - 1).kind is not IndexKind.flat


def test_drift_is_growth_or_shrinkage_by_the_factor() -> None:
    assert not drifted(1_000, 2_000) and drifted(1_000, 2_001)
    assert not drifted(1_000, 500) and drifted(1_000, 499)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2GB", 2 * GIB), ("512M", 512 * 1024**2), ("1.5GiB", int(1.5 * GIB)), ("3000000", 3_000_000)],
)
def test_memory_budgets_are_read_in_units_of_1024(text: str, expected: int) -> None:
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2 parsecs", "-1GB", "10"])
def test_bad_memory_budgets_are_refused_clearly(text: str) -> None:
    with pytest.raises(QueryError, match="Memory budget"):
        parse_memory_budget(text)


# ---- libraries of synthetic vectors ---------------------------------------------------------------


def fill(folder: Path, count: int, *, seed: int = 1, prefix: str = "/synthetic") -> list[int]:
    """Add `count` clustered vectors to the library in `folder` (made if needed); their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(folder / "library.db")
    try:
        if catalog.model() is None:
            with catalog.write() as batch:
                batch.set_model(ModelRecord(ModelSpec("synthetic", "none"), DIM, "0" * 64))
        ids: list[int] = []
        for n, chunk in enumerate(clustered_vectors(count, DIM, clusters=CLUSTERS, seed=seed)):
            paths = [f"{prefix}/{seed}-{n}/{i:06d}.jpg" for i in range(len(chunk))]
            with catalog.write() as batch:
                ids += batch.add_embedded_images(paths, chunk, width=640, height=480, format="JPEG")
        return ids
    finally:
        catalog.close()


def write_vector(folder: Path, image_id: int | None, vector: np.ndarray) -> int:
    """Store `vector` for an existing image id, or for a new image when `image_id` is None."""
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            if image_id is None:
                return batch.add_embedded_images([f"/synthetic/new/{id(vector)}.jpg"], vector[None, :])[0]
            batch.save_embedding(
                image_id, vector, content_hash="x", width=1, height=1, format="PNG", size=1, mtime_ns=1
            )
            return image_id
    finally:
        catalog.close()


def queries(count: int = 100) -> np.ndarray:
    """Queries from the same mixture as the data, not part of it."""
    return next(clustered_vectors(count, DIM, clusters=CLUSTERS, seed=999))


def stored_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    catalog = Catalog.open(folder / "library.db")
    try:
        chunks = list(catalog.all_vectors())
    finally:
        catalog.close()
    return np.concatenate([ids for ids, _ in chunks]), np.concatenate([v for _, v in chunks])


def exact_top(folder: Path, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[int]:
    ids, vectors = stored_vectors(folder)
    if keep is not None:
        mask = np.isin(ids, keep)
        ids, vectors = ids[mask], vectors[mask]
    order = np.argsort(-(vectors @ query), kind="stable")[:k]
    return [int(i) for i in ids[order]]


def recall_at_10(library: Library, folder: Path, batch: np.ndarray) -> float:
    hits = 0
    for query in batch:
        found = [r.id for r in library.search_vector(query, k=10)]
        hits += len(set(found) & set(exact_top(folder, query, 10)))
    return hits / (10 * len(batch))


@pytest.fixture(params=[IndexKind.flat, IndexKind.hnsw, IndexKind.ivfpq], ids=lambda kind: kind.value)
def kind(request: pytest.FixtureRequest) -> IndexKind:
    return IndexKind(request.param)


@pytest.fixture
def synthetic(tmp_path: Path, kind: IndexKind) -> Iterator[tuple[Library, Path]]:
    folder = tmp_path / "library"
    fill(folder, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        yield library, folder


def test_each_kind_is_chosen_by_size_and_reaches_its_recall_target(
    synthetic: tuple[Library, Path], kind: IndexKind
) -> None:
    library, folder = synthetic
    summary = library.index_summary()
    assert (summary.kind, summary.vectors) == (kind.value, COUNT)
    if kind is not IndexKind.flat:  # tuned on held-out sample queries when built
        assert summary.recall is not None and summary.recall >= RECALL_TARGET
        assert summary.search_param is not None
    assert recall_at_10(library, folder, queries()) >= RECALL_TARGET


@pytest.mark.parametrize("kind", [IndexKind.hnsw, IndexKind.ivfpq], ids=lambda kind: kind.value)
def test_a_library_of_copies_is_tuned_as_one_without(tmp_path: Path, kind: IndexKind) -> None:
    """Every photo twice (a backup indexed beside the originals): a copy found in place of the
    other is as good a result, and a tuning query's copy must not lead the search to it, so
    tuning settles where it does without copies, not at its widest search."""
    folder = tmp_path / "library"
    fill(folder, COUNT // 2)
    fill(folder, COUNT // 2, prefix="/backup")  # the same seed: the same vectors again
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        summary = library.index_summary()
        assert summary.kind == kind.value and summary.vectors == COUNT
        assert summary.recall is not None and summary.recall >= RECALL_TARGET
        assert summary.search_param is not None and summary.search_param <= 64
        _, vectors = stored_vectors(folder)
        hits = 0  # and searches reach the recall tuned for, a copy counting as the other
        for query in queries():
            tenth = np.sort(vectors @ query)[-10]
            hits += sum(r.score >= tenth - 1e-5 for r in library.search_vector(query, k=10))
        assert hits / (10 * len(queries())) >= RECALL_TARGET


def test_scores_are_exact_cosines_even_from_compressed_codes(synthetic: tuple[Library, Path]) -> None:
    library, folder = synthetic
    ids, vectors = stored_vectors(folder)
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    query = queries(1)[0]
    for result in library.search_vector(query, k=10):
        assert result.score == pytest.approx(float(by_id[result.id] @ query), abs=1e-5)


def test_a_deleted_image_is_never_returned_and_a_new_one_is_found(
    synthetic: tuple[Library, Path], kind: IndexKind
) -> None:
    library, folder = synthetic
    ids, vectors = stored_vectors(folder)
    victim, victim_vector = int(ids[7]), vectors[7]
    assert library.search_vector(victim_vector, k=1)[0].id == victim
    library.delete(victim)
    assert victim not in [r.id for r in library.search_vector(victim_vector, k=50)]

    fresh = next(clustered_vectors(1, DIM, clusters=CLUSTERS, seed=4242))[0]
    new_id = write_vector(folder, None, fresh)  # another process adds an image
    assert library.search_vector(fresh, k=1)[0].id == new_id
    assert library.index_summary().kind == kind.value  # changed in place, not rebuilt


def test_a_replaced_vector_is_found_by_its_new_value_only(synthetic: tuple[Library, Path]) -> None:
    library, folder = synthetic
    ids, vectors = stored_vectors(folder)
    target = int(ids[3])
    replacement = next(clustered_vectors(1, DIM, clusters=CLUSTERS, seed=777))[0]
    library.search_vector(replacement, k=1)  # the index is loaded before the change
    write_vector(folder, target, replacement)
    assert library.search_vector(replacement, k=1)[0].id == target
    found = library.search_vector(vectors[3], k=COUNT)
    assert [r.id for r in found].count(target) == 1  # one entry, never the old one twice


def test_an_image_that_departs_and_comes_back_is_found_under_its_id(
    synthetic: tuple[Library, Path], kind: IndexKind
) -> None:
    """An index run drops an image whose file is gone (one change of the search index), and a
    later run gives it back its id and vector (another): each kind follows both, in place."""
    library, folder = synthetic
    ids, vectors = stored_vectors(folder)
    target, vector = int(ids[5]), vectors[5]
    write_vector(folder, target, vector)  # as an index run stores it: with a content hash ("x")
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            batch.depart_images([target])
        assert target not in [r.id for r in library.search_vector(vector, k=50)]
        [gone] = catalog.departed_with_hashes(["x"])["x"]
        with catalog.write() as batch:
            batch.restore_departed(gone, "/synthetic/moved/a.jpg", size=1, mtime_ns=1)
    finally:
        catalog.close()
    found = library.search_vector(vector, k=COUNT)
    assert found[0].id == target and str(found[0].path) == "/synthetic/moved/a.jpg"
    assert [r.id for r in found].count(target) == 1
    assert library.index_summary().kind == kind.value  # changed in place, not rebuilt


def test_the_index_survives_a_reopen_with_its_kind_and_tuning(
    synthetic: tuple[Library, Path], kind: IndexKind
) -> None:
    library, folder = synthetic
    batch = queries(20)
    before = [[r.id for r in library.search_vector(q, k=10)] for q in batch]
    summary = library.index_summary()
    library.close()
    header = read_header(folder / "vectors.faiss")
    assert header is not None and header["plan"]["kind"] == kind.value
    loaded = VectorIndex.load(folder / "vectors.faiss")
    assert loaded is not None and (loaded.kind, loaded.count) == (kind, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as reopened:
        assert reopened.index_summary() == summary
        assert [[r.id for r in reopened.search_vector(q, k=10)] for q in batch] == before


# ---- life cycle: drift, forced kinds, background rebuilds -------------------------------------------


def index_run(library: Library, tmp_path: Path) -> None:
    """An index run that embeds nothing: the search index is caught up and checked for drift."""
    empty = tmp_path / "empty-root"
    empty.mkdir(exist_ok=True)
    library.index(empty)


def test_growth_past_the_drift_factor_rebuilds_at_the_next_index_run(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, COUNT)
    thresholds = THRESHOLDS[IndexKind.hnsw]
    with Library.open(folder, index_thresholds=thresholds) as library:
        assert library.index_summary().trained_count == COUNT
        fill(folder, COUNT // 2, seed=2)
        index_run(library, tmp_path)
        assert library.index_summary().trained_count == COUNT  # 1.5x: caught up, not rebuilt
        fill(folder, COUNT, seed=3)
        index_run(library, tmp_path)
        summary = library.index_summary()
        assert (summary.kind, summary.trained_count, summary.vectors) == ("hnsw", 2.5 * COUNT, 2.5 * COUNT)
        assert recall_at_10(library, folder, queries(50)) >= RECALL_TARGET


def test_crossing_a_threshold_changes_the_kind_at_the_next_index_run(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, 400)
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.ivfpq]) as library:
        assert library.index_summary().kind == "flat"
        fill(folder, 400, seed=2)  # 800: past flat_max
        index_run(library, tmp_path)
        assert library.index_summary().kind == "hnsw"
        fill(folder, 1_200, seed=3)  # 2,000: past hnsw_max
        index_run(library, tmp_path)
        assert library.index_summary().kind == "ivfpq"
        assert recall_at_10(library, folder, queries(50)) >= RECALL_TARGET


def test_a_library_hovering_at_a_threshold_is_not_rebuilt_at_every_run(tmp_path: Path) -> None:
    """A larger kind as soon as the library outgrows the smaller, a smaller one only once the
    library is 10% below the threshold: 20 images added and removed around 20,000 must not
    rebuild the index flat, HNSW, flat at every index run."""
    folder = tmp_path / "library"
    fill(folder, 490)
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.hnsw]) as library:  # flat_max 500
        assert library.index_summary().kind == "flat"
        added = fill(folder, 20, seed=2)  # 510
        index_run(library, tmp_path)
        assert library.index_summary().kind == "hnsw"
        delete_behind_the_graph(library, added)  # 490: under the threshold, not 10% under
        index_run(library, tmp_path)
        summary = library.index_summary()
        assert (summary.kind, summary.trained_count, summary.vectors) == ("hnsw", 510, 490)
        assert recall_at_10(library, folder, queries(20)) >= RECALL_TARGET
        ids, _ = stored_vectors(folder)
        delete_behind_the_graph(library, [int(i) for i in ids[:50]])  # 440: 440 * 1.1 <= 500
        index_run(library, tmp_path)
        assert (library.index_summary().kind, library.index_summary().vectors) == ("flat", 440)


def delete_behind_the_graph(library: Library, ids: list[int]) -> None:
    """Delete `ids` from the catalog of `library` (an HNSW one) after its graph holds them,
    as another process would: the graph keeps them as tombstones."""
    library.search_vector(queries(1)[0])  # the graph is built for every image
    catalog = Catalog.open(library.path / "library.db")
    with catalog.write() as batch:
        batch.delete_images(ids)
    catalog.close()


def test_hnsw_tombstones_are_compacted_by_a_rebuild(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    ids = fill(folder, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.hnsw]) as library:
        delete_behind_the_graph(library, ids[: COUNT // 3])
        library.search_vector(queries(1)[0])  # caught up: a third of the graph is tombstones
        assert library.index_summary().tombstones == COUNT // 3
        index_run(library, tmp_path)
        summary = library.index_summary()
        assert (summary.tombstones, summary.vectors) == (0, COUNT - COUNT // 3)


def test_asking_for_every_image_past_tombstones_returns_every_image(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    ids = fill(folder, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.hnsw]) as library:
        delete_behind_the_graph(library, ids[::2])
        left = set(ids) - set(ids[::2])
        for query in queries(5):  # half the graph is tombstones
            assert library.index_summary().tombstones == len(ids[::2])
            assert {hit.id for hit in library.search_vector(query, k=len(left))} == left


def test_a_graph_mostly_of_tombstones_keeps_its_recall_until_the_next_index_run(tmp_path: Path) -> None:
    """Deleting most images (forget, delete, another process) leaves them in the graph until
    the next index run; searches walk past them and must still find the live neighbours."""
    folder = tmp_path / "library"
    ids = fill(folder, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.hnsw]) as library:
        gone = np.random.default_rng(0).choice(ids, int(0.8 * COUNT), replace=False)
        delete_behind_the_graph(library, sorted(gone.tolist()))
        assert library.index_summary().tombstones == len(gone)
        assert recall_at_10(library, folder, queries()) >= RECALL_TARGET


def test_a_forced_kind_is_kept_and_auto_releases_it(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, COUNT)
    with Library.open(folder) as library:
        assert library.index_summary().kind == "flat"
        summary = library.rebuild_index("ivfpq", "1GB")
        assert summary.kind == "ivfpq" and summary.recall is not None and summary.recall >= RECALL_TARGET
        index_run(library, tmp_path)
        assert library.index_summary().kind == "ivfpq"  # forced: no drift back to flat
    with Library.open(folder) as reopened:  # the choice is the library's, not the process's
        assert reopened.index_summary().kind == "ivfpq"
        assert reopened.rebuild_index("auto").kind == "flat"


def test_bad_rebuild_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, 100)
    with Library.open(folder) as library:
        with pytest.raises(QueryError, match="is not one of auto, flat, hnsw, ivfpq"):
            library.rebuild_index("annoy")
        with pytest.raises(QueryError, match="Memory budget"):
            library.rebuild_index("hnsw", "a lot")
        with pytest.raises(QueryError, match="at least 256 images"):
            library.rebuild_index("ivfpq")
        assert library.index_summary().kind == "flat"


def test_searches_keep_answering_while_a_rebuild_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search from another thread, started in the middle of a rebuild, finishes before the
    rebuild does: the rebuild does not hold the search lock, and the old index answers."""
    from pixsift.storage import index_build

    folder = tmp_path / "library"
    fill(folder, COUNT)
    answered: list[list[int]] = []
    real_build = index_build.build_index

    def build_with_a_search_meanwhile(*args: Any, **kwargs: Any) -> VectorIndex:
        searcher = threading.Thread(
            target=lambda: answered.append([r.id for r in library.search_vector(queries(1)[0], k=5)])
        )
        searcher.start()
        searcher.join(timeout=60)
        assert not searcher.is_alive(), "a search waited for the rebuild"
        return real_build(*args, **kwargs)

    with Library.open(folder) as library:
        expected = [r.id for r in library.search_vector(queries(1)[0], k=5)]
        monkeypatch.setattr(index_build, "build_index", build_with_a_search_meanwhile)
        library.rebuild_index("hnsw")
        assert answered == [expected]
        assert library.index_summary().kind == "hnsw"


@pytest.mark.parametrize("kind", [IndexKind.hnsw, IndexKind.ivfpq], ids=lambda kind: kind.value)
def test_doctor_checks_an_ann_index_against_the_catalog(tmp_path: Path, kind: IndexKind) -> None:
    folder = tmp_path / "library"
    files = tmp_path / "files"
    ids = fill(folder, COUNT, prefix=str(files))
    catalog = Catalog.open(folder / "library.db")
    for _, path in catalog.image_paths():  # doctor also checks that indexed files exist
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    catalog.close()
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        library.index_summary()  # builds and saves the index file
        library.delete(ids[0])  # a tombstone in HNSW, a removal in IVF-PQ, replayed on load
        report = library.check()
        assert report.healthy, report.problems
        assert report.index_vectors == COUNT - 1
        index = VectorIndex.load(folder / "vectors.faiss")
        assert index is not None
        index.remove(np.array(ids[1:3]))  # the saved index loses two images the catalog has
        index.save(folder / "vectors.faiss")
        problems = library.check().problems
        assert [p.kind for p in problems] == ["index-mismatch"]
        assert "2 vector(s) stored are missing from the search index" in problems[0].message
        assert library.repair().healthy
        assert library.index_summary().kind == kind.value  # repaired with the library's policy


@pytest.mark.slow
def test_reindex_and_status_on_the_command_line(photos: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    library = str(tmp_path / "library")
    assert run_cli("index", str(photos), "--library", library, *tiny_model.index_args()).returncode == 0
    done = run_cli("reindex", "--index-type", "hnsw", "--memory-budget", "1GB", "--library", library)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Index    hnsw, 12 vectors") and "efSearch" in done.stdout
    status = run_cli("status", "--library", library)
    assert "up to date (generation" in status.stdout and ", hnsw (efSearch" in status.stdout
    found = run_cli("search", "x", "-k", "3", "--library", library, "-f", "paths")
    assert found.returncode == 0 and len(found.stdout.split()) == 3
    bad = run_cli("reindex", "--index-type", "annoy", "--library", library)
    assert bad.returncode == 1 and "error: Index type 'annoy' is not one of" in bad.stderr
    small = run_cli("reindex", "--index-type", "ivfpq", "--library", library)
    assert small.returncode == 1 and "needs at least 256 images" in small.stderr
    assert ", hnsw (" in run_cli("status", "--library", library).stdout  # the refusal changed nothing
    # A new budget, or a plain rebuild, keeps the kind forced before; only auto undoes it.
    budget = run_cli("reindex", "--memory-budget", "2GB", "--library", library)
    assert budget.returncode == 0 and budget.stdout.startswith("Index    hnsw, 12 vectors"), budget.stdout
    again = run_cli("reindex", "--library", library)
    assert again.returncode == 0 and again.stdout.startswith("Index    hnsw, 12 vectors"), again.stdout
    back = run_cli("reindex", "--index-type", "auto", "--library", library)
    assert back.returncode == 0 and back.stdout.startswith("Index    flat, 12 vectors")
    assert run_cli("reindex", "--library", library).stdout.startswith("Index    flat, 12 vectors")


def test_an_ivfpq_index_mostly_forgotten_keeps_its_recall_until_the_next_index_run(tmp_path: Path) -> None:
    """`pixsift forget` of most of the library leaves its IVF-PQ index in place until the next
    index run picks a kind for what is left. The cells tuned for the whole library are mostly
    empty then: the nprobe tuned for them reached too few of the rest, and recall@10 of the
    images kept fell to 0.90."""
    folder = tmp_path / "library"
    fill(folder, 20_000, prefix="/synthetic/old")
    fill(folder, 1_000, seed=2, prefix="/synthetic/kept")
    catalog = Catalog.open(folder / "library.db")
    with catalog.write() as batch:
        for root in ("/synthetic/old", "/synthetic/kept"):
            batch.upsert_root(root, include_hidden=False, follow_symlinks=False)
    catalog.close()
    with Library.open(folder, index_thresholds=THRESHOLDS[IndexKind.ivfpq]) as library:
        library.search_vector(queries(1)[0])  # the index is built for every image
        assert library.index_summary().kind == "ivfpq"
        assert library.forget("/synthetic/old") == 20_000
        summary = library.index_summary()
        assert (summary.kind, summary.vectors, summary.trained_count) == ("ivfpq", 1_000, 21_000)
        assert recall_at_10(library, folder, queries(50)) >= RECALL_TARGET
