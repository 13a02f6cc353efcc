"""The quick query path: a cold `pixsift search` without SQLAlchemy or torch, giving exactly
what `Library.search` gives, and handing over to the library whenever it cannot.

Every comparison checks first that the quick path did answer (`answer_quickly` is not None),
so that the equality is not the library compared with itself.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine

from conftest import TinyModel
from pixsift import Library, SearchFilters
from pixsift.errors import EmptyLibraryError, LibraryNotFoundError, PixsiftError, QueryError
from pixsift.models.loading import load_embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.onnx_export import export_folder
from pixsift.search import QueryTerm, SearchResult
from pixsift.search.engine import ranked_hits
from pixsift.search.quick import answer_quickly, search_once
from pixsift.storage import Catalog
from pixsift.storage.catalog_reader import COLUMNS, CatalogReader
from pixsift.storage.index_choice import IndexKind, IndexThresholds
from pixsift.storage.index_header import REPLAY_FLOOR
from pixsift.storage.schema import Base
from pixsift.storage.vector_index import VectorIndex, read_header
from pixsift.synthetic.vectors import clustered_vectors

TEXTS = ["a photo of a dog", "Red car, parked by the sea!", "café au lait", "&amp; html"]
ANN_THRESHOLDS = {
    IndexKind.hnsw: IndexThresholds(flat_max=500, exact_filter_max=100),
    IndexKind.ivfpq: IndexThresholds(flat_max=500, hnsw_max=1_000, exact_filter_max=100),
}


@pytest.fixture
def indexed(photos: Path, tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A library of the twelve photos, indexed with the tiny model; its FAISS file saved."""
    folder = tmp_path / "library"
    with Library.open(folder) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    return folder


def library_answer(folder: Path, text: str, k: int = 10, **options: object) -> list[SearchResult]:
    with Library.open(folder, create=False) as library:
        return library.search(text, k, **options)  # type: ignore[arg-type]


def quick_answer(folder: Path, text: str, k: int = 10, **options: object) -> list[SearchResult]:
    answer = answer_quickly(text, k, library=folder, **options)  # type: ignore[arg-type]
    assert answer is not None, "the quick path handed over to the library"
    return answer


# ---- the reader and the schema ------------------------------------------------------------------


def test_the_reader_names_only_tables_and_columns_of_the_orm_schema() -> None:
    tables = Base.metadata.tables
    for table, columns in COLUMNS.items():
        assert table in tables, table
        assert set(columns) <= {column.name for column in tables[table].columns}, table


def test_every_reader_query_runs_on_a_database_made_from_the_orm_schema(tmp_path: Path) -> None:
    db_path = tmp_path / "orm.db"
    engine = create_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    with CatalogReader.open(db_path) as reader, reader.snapshot():
        # A misspelt table or column would raise sqlite3.OperationalError here.
        assert reader.model() is None
        assert reader.generation() == 0
        assert reader.setting("index_type") is None
        assert reader.images([1, 2]) == {}
        assert reader.vectors([1, 2]) == {}


def test_the_reader_reads_what_the_catalog_reads(indexed: Path) -> None:
    catalog = Catalog.open(indexed / "library.db")
    try:
        ids = catalog.embedded_ids().tolist()
        with CatalogReader.open(indexed / "library.db") as reader, reader.snapshot():
            assert reader.model() == catalog.model() is not None
            assert reader.generation() == catalog.generation() > 0
            assert reader.setting("vector_generation") == catalog.setting("vector_generation")
            assert reader.images([*ids, 10_000]) == catalog.images(ids)
            ours, theirs = reader.vectors([*ids, 10_000]), catalog.vectors(ids)
            assert sorted(ours) == sorted(theirs) == sorted(ids)
            assert all(np.array_equal(ours[i], theirs[i]) for i in ids)
    finally:
        catalog.close()


def test_the_reader_never_writes(indexed: Path) -> None:
    with CatalogReader.open(indexed / "library.db") as reader, pytest.raises(sqlite3.OperationalError):
        reader._connection.execute("DELETE FROM images")  # mode=ro: refused by SQLite itself
    with Library.open(indexed, create=False) as library:
        assert library.status().counts.indexed == 12


# ---- the same answers as the library --------------------------------------------------------------


def test_quick_answers_equal_the_librarys(indexed: Path) -> None:
    for text in TEXTS:
        assert quick_answer(indexed, text, 5) == library_answer(indexed, text, 5)
    combined = {"plus": ["sunset", QueryTerm(text="sea", weight=0.5)], "minus": ["0.3*a dark room"]}
    assert quick_answer(indexed, "a beach", 4, **combined) == library_answer(
        indexed, "a beach", 4, **combined
    )
    every = library_answer(indexed, "a photo", 1000)
    assert len(every) == 12  # k larger than the library: all of it, in the same order
    assert quick_answer(indexed, "a photo", 1000) == every
    cut = (every[3].score + every[4].score) / 2
    assert quick_answer(indexed, "a photo", 10, min_score=cut) == every[:4]


def test_copies_of_a_photo_are_listed_by_id_on_both_paths(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Copies share one vector, so one score: their order is the ids', not FAISS's heap's."""
    original = sorted(photos.glob("*.jpg"))[0]
    for number in range(5):
        shutil.copy2(original, photos / f"copy_{number}.jpg")
    folder = tmp_path / "with-copies"
    with Library.open(folder) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    for text in TEXTS:
        every = library_answer(folder, text, 1000)
        assert quick_answer(folder, text, 1000) == every
        twins = [hit for hit in every if hit.path.name.startswith("copy_") or hit.path == original]
        assert len(twins) == 6 and len({hit.score for hit in twins}) == 1
        for before, after in itertools.pairwise(every):
            assert (-before.score, before.id) < (-after.score, after.id)


def test_equal_scores_are_ordered_by_id() -> None:
    scores = np.array([0.9, 0.9, 0.9, 0.5, 0.5], dtype=np.float32)
    ids = np.array([7, 3, 5, 9, 1])
    hits = ranked_hits(scores, ids, exclude_ids={5}, min_score=None)
    assert [image_id for _, image_id in hits] == [3, 7, 1, 9]


@pytest.mark.parametrize("kind", [IndexKind.hnsw, IndexKind.ivfpq], ids=lambda kind: kind.value)
def test_quick_answers_equal_the_librarys_on_approximate_indexes(
    tiny_model: TinyModel, tmp_path: Path, kind: IndexKind
) -> None:
    """2,000 stored vectors of the tiny model's size, on HNSW or IVF-PQ (re-ranked from the
    stored vectors, which the quick path reads through the reader)."""
    record = load_embedder(
        resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint)), "cpu"
    ).record
    folder = tmp_path / "library"
    folder.mkdir()
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            batch.set_model(record)
        for n, chunk in enumerate(clustered_vectors(2_000, record.embed_dim, clusters=40, seed=3)):
            with catalog.write() as batch:
                paths = [f"/synthetic/{n}/{i:05d}.jpg" for i in range(len(chunk))]
                batch.add_embedded_images(paths, chunk, width=64, height=48, format="PNG")
    finally:
        catalog.close()
    with Library.open(folder, index_thresholds=ANN_THRESHOLDS[kind]) as library:
        assert library.index_summary().kind == kind.value  # built and saved
        expected = {text: library.search(text, 25) for text in TEXTS}
    header = read_header(folder / "vectors.faiss")
    assert header is not None and header["plan"]["kind"] == kind.value
    for text, results in expected.items():
        assert len(results) == 25
        assert quick_answer(folder, text, 25) == results


# ---- handing over to the library ----------------------------------------------------------------


def add_photo_row(folder: Path) -> np.ndarray:
    """Another process stores a vector (returned: a unit vector of the model's size): the
    catalog moves on, the FAISS file does not."""
    catalog = Catalog.open(folder / "library.db")
    try:
        model = catalog.model()
        assert model is not None
        vector: np.ndarray = np.ones(model.embed_dim, dtype=np.float32) / np.sqrt(model.embed_dim)
        with catalog.write() as batch:
            batch.add_embedded_images(
                ["/elsewhere/new.jpg"], vector[None, :], width=8, height=8, format="PNG"
            )
    finally:
        catalog.close()
    return vector


def test_a_search_index_a_little_behind_is_caught_up_on_the_quick_path(indexed: Path) -> None:
    """A file behind by a few deletes is answered quickly, the deletes replayed as the library
    replays them (which leaves the file unsaved too): a deleted image never comes back."""
    before = quick_answer(indexed, "a dog", 20)
    saved = read_header(indexed / "vectors.faiss")
    with Library.open(indexed, create=False) as library:
        library.delete(before[0].id)
        library.delete(before[-1].id)
    after = quick_answer(indexed, "a dog", 20)
    assert after == library_answer(indexed, "a dog", 20)
    paths = {str(r.path) for r in after}
    assert str(before[0].path) not in paths and str(before[-1].path) not in paths
    assert len(after) == len(before) - 2
    assert read_header(indexed / "vectors.faiss") == saved  # neither path rewrote the file


def test_vectors_an_index_run_left_unsaved_are_saved_by_the_library(indexed: Path) -> None:
    """An added vector in the log (a run killed before its save) is not replayed on every
    load, as a delete is: the quick path leaves it to the library, which saves the file."""
    before = quick_answer(indexed, "a dog", 20)
    add_photo_row(indexed)
    assert answer_quickly("a dog", 20, library=indexed) is None
    after = search_once("a dog", 20, library=indexed)
    assert len(after) == len(before) + 1 and "/elsewhere/new.jpg" in {str(r.path) for r in after}
    assert quick_answer(indexed, "a dog", 20) == after  # saved meanwhile: quick again


def test_a_stale_far_behind_or_missing_search_index_is_left_to_the_library(indexed: Path) -> None:
    before = quick_answer(indexed, "a dog", 20)
    query = add_photo_row(indexed)
    catalog = Catalog.open(indexed / "library.db")
    try:  # another process saved an index and trimmed the log, then that file was lost
        with catalog.write() as batch:
            batch.truncate_vector_log(catalog.generation())
    finally:
        catalog.close()
    assert answer_quickly("a dog", 20, library=indexed) is None  # stale: the library rebuilds it
    after = search_once("a dog", 20, library=indexed)
    assert len(after) == len(before) + 1 and "/elsewhere/new.jpg" in {str(r.path) for r in after}
    assert after == library_answer(indexed, "a dog", 20)
    # The library saved the rebuilt index meanwhile: quick again, with the new image.
    assert quick_answer(indexed, "a dog", 20) == after

    catalog = Catalog.open(indexed / "library.db")
    try:  # more changes than a file is left behind by (a killed index run): saved by the library
        many = REPLAY_FLOOR + 1
        with catalog.write() as batch:
            paths = [f"/elsewhere/far-{n}.jpg" for n in range(many)]
            batch.add_embedded_images(paths, np.tile(-query, (many, 1)), width=8, height=8, format="PNG")
    finally:
        catalog.close()
    assert answer_quickly("a dog", 20, library=indexed) is None
    far = search_once("a dog", 20, library=indexed)
    assert far == library_answer(indexed, "a dog", 20) and far != after
    assert quick_answer(indexed, "a dog", 20) == far

    (indexed / "vectors.faiss").unlink()
    assert answer_quickly("a dog", 20, library=indexed) is None
    assert search_once("a dog", 20, library=indexed) == far


def test_filters_images_and_other_engines_are_left_to_the_library(indexed: Path, photos: Path) -> None:
    jpegs = SearchFilters(formats=("jpg",))
    assert answer_quickly("a dog", library=indexed, filters=jpegs) is None
    assert search_once("a dog", library=indexed, filters=jpegs) == library_answer(
        indexed, "a dog", filters=jpegs
    )
    image_term = QueryTerm(image=str(sorted(photos.iterdir())[0]))
    assert answer_quickly("a dog", library=indexed, plus=[image_term]) is None
    assert answer_quickly("a dog", library=indexed, engine="torch") is None
    assert answer_quickly("a dog", library=indexed, device="cuda") is None
    assert answer_quickly("a dog", library=indexed, engine="onnx") is not None  # fp32 text tower
    # As typed: the names are taken in any case, by the quick path too (once left to the library).
    assert answer_quickly("a dog", library=indexed, device="CPU", engine="ONNX") is not None
    assert answer_quickly("a dog", library=indexed, device="CPU", engine="Auto") is not None


def test_other_engines_give_the_librarys_answers_too(indexed: Path) -> None:
    for engine in ("onnx", "onnx-int8"):
        with Library.open(indexed, create=False, engine=engine) as library:
            expected = library.search("a red car", 6)
        assert quick_answer(indexed, "a red car", 6, engine=engine) == expected


def test_a_damaged_text_tower_is_made_again_by_the_library(
    indexed: Path, tiny_model: TinyModel, shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(shared_cache, cache)  # a private copy of the export, to damage
    monkeypatch.setenv("PIXSIFT_CACHE_DIR", str(cache))
    expected = quick_answer(indexed, "a dog", 5)
    spec = resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))
    tower = export_folder(spec) / "text-int8.onnx"
    tower.write_bytes(b"\0" * tower.stat().st_size)  # same size, garbage inside
    assert answer_quickly("a dog", 5, library=indexed) is None  # ONNX Runtime refuses it
    assert search_once("a dog", 5, library=indexed) == expected  # the library exported it again
    assert quick_answer(indexed, "a dog", 5) == expected


def loads_left() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "pixsift-load"]


def test_the_index_file_is_read_beside_the_text_tower_checked_and_never_left_loading(
    indexed: Path, tiny_model: TinyModel, shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick path reads the index file (checksum, then FAISS) on a thread of its own while
    the text tower loads: the read grows with the library (0.24 s at 100,000 images). What it
    reads is checked as before, and it is done before anything else loads the index."""
    expected = quick_answer(indexed, "a dog", 5)
    loaded_on: list[str] = []
    load = VectorIndex.load.__func__  # type: ignore[attr-defined]

    def noted(cls: type[VectorIndex], path: Path) -> VectorIndex | None:
        loaded_on.append(threading.current_thread().name)
        return load(cls, path)  # type: ignore[no-any-return]

    monkeypatch.setattr(VectorIndex, "load", classmethod(noted))
    assert quick_answer(indexed, "a dog", 5) == expected
    assert loaded_on == ["pixsift-load"] and not loads_left()

    # A bit flipped inside the file, its size kept: its checksum refuses it on that thread too,
    # and the library rebuilds the index (and saves it).
    index_file = indexed / "vectors.faiss"
    damaged = bytearray(index_file.read_bytes())
    damaged[-100] ^= 0x01
    index_file.write_bytes(bytes(damaged))
    assert answer_quickly("a dog", 5, library=indexed) is None and not loads_left()
    assert search_once("a dog", 5, library=indexed) == expected
    assert quick_answer(indexed, "a dog", 5) == expected

    # A text tower that cannot be used: the library answers, once the read is done.
    cache = tmp_path / "cache"
    shutil.copytree(shared_cache, cache)
    monkeypatch.setenv("PIXSIFT_CACHE_DIR", str(cache))
    spec = resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))
    tower = export_folder(spec) / "text-int8.onnx"
    tower.write_bytes(b"\0" * tower.stat().st_size)
    loaded_on.clear()
    assert answer_quickly("a dog", 5, library=indexed) is None
    assert loaded_on == ["pixsift-load"] and not loads_left()


def test_errors_are_the_librarys(indexed: Path, tmp_path: Path) -> None:
    def error_of(call: object) -> str:
        with pytest.raises(PixsiftError) as raised:
            call()  # type: ignore[operator]
        return f"{type(raised.value).__name__}: {raised.value}"

    missing = tmp_path / "nowhere"
    quick = error_of(lambda: search_once("a dog", library=missing))
    assert quick.startswith(LibraryNotFoundError.__name__)
    assert quick == error_of(lambda: Library.open(missing, create=False))
    assert not missing.exists()  # nothing made where no library was

    empty = tmp_path / "empty"
    Library.open(empty).close()
    quick = error_of(lambda: search_once("a dog", library=empty))
    assert quick.startswith(EmptyLibraryError.__name__)
    assert quick == error_of(lambda: library_answer(empty, "a dog"))

    blank = error_of(lambda: search_once("   ", library=indexed))
    assert blank.startswith(QueryError.__name__)
    assert blank == error_of(lambda: library_answer(indexed, "   "))
    cancelled = error_of(lambda: search_once("a", library=indexed, minus=["a"]))
    assert cancelled.startswith(QueryError.__name__)
    assert cancelled == error_of(lambda: library_answer(indexed, "a", minus=["a"]))

    catalog = Catalog.open(indexed / "library.db")
    try:
        with catalog.write() as batch:
            batch.set_setting("index_type", "no-such-kind")  # as a newer pixsift might store
    finally:
        catalog.close()
    bad_setting = error_of(lambda: search_once("a dog", library=indexed))
    assert bad_setting.startswith("LibraryFormatError")
    assert bad_setting == error_of(lambda: library_answer(indexed, "a dog"))

    not_a_db = tmp_path / "not-a-library"
    not_a_db.mkdir()
    (not_a_db / "library.db").write_bytes(b"this is no SQLite file" * 100)
    assert error_of(lambda: search_once("a dog", library=not_a_db)) == error_of(
        lambda: Library.open(not_a_db, create=False)
    )


def test_an_index_run_writing_meanwhile_is_not_seen_half_done(indexed: Path) -> None:
    """WAL: while a writer holds an open transaction, the quick path reads the last committed
    state, which is what the FAISS file holds."""
    before = library_answer(indexed, "a dog", 20)
    catalog = Catalog.open(indexed / "library.db")
    try:
        with catalog.write() as batch:
            dim = len(catalog.vectors([before[0].id])[before[0].id])
            vector = np.ones(dim, dtype=np.float32) / np.sqrt(dim)
            batch.add_embedded_images(
                ["/elsewhere/half.jpg"], vector[None, :], width=8, height=8, format="PNG"
            )
            assert quick_answer(indexed, "a dog", 20) == before  # uncommitted: not there yet
    finally:
        catalog.close()
    # Committed: the index file is behind by an added vector, which the library saves.
    assert answer_quickly("a dog", 20, library=indexed) is None
    assert len(search_once("a dog", 20, library=indexed)) == len(before) + 1


# ---- a cold process -----------------------------------------------------------------------------

COLD_SEARCH = """
import sys
sys.argv = ["pixsift", "search", "a dog", "--library", sys.argv[1], "-k", "3", "--format", "paths"]
from pixsift.cli import main
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = [name for name in ("sqlalchemy", "torch", "open_clip", "ftfy") if name in sys.modules]
print("imported:", ",".join(heavy) or "-", file=sys.stderr)
"""


def cold_search(folder: Path) -> tuple[list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", COLD_SEARCH, str(folder)],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
        check=True,
    )
    imported = [line for line in done.stderr.splitlines() if line.startswith("imported:")]
    return done.stdout.splitlines(), imported[-1].removeprefix("imported: ")


@pytest.mark.slow
def test_a_cold_search_imports_neither_sqlalchemy_nor_torch(indexed: Path) -> None:
    expected = [str(result.path) for result in library_answer(indexed, "a dog", 3)]
    assert cold_search(indexed) == (expected, "-")
    (indexed / "vectors.faiss").unlink()  # the control: the library's path does import them
    paths, imported = cold_search(indexed)
    assert paths == expected
    assert "sqlalchemy" in imported.split(",")
