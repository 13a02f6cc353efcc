"""An index run of a folder where nothing changed does not read the search index file: the
file is caught up, and its header alone says whether the index still suits the library (its
kind for the library's size, its drift since training, its HNSW tombstones). At a million
vectors the file is GBs: loading it cost seconds and as much memory, for a run that changed
nothing. A file whose header does not say all that (saved by an older pixsift) is still loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from conftest import run_cli
from pixsift import Library
from pixsift.storage import Catalog
from pixsift.storage.index_choice import IndexKind, IndexThresholds
from pixsift.storage.index_header import MAGIC, read_header, saved_shape
from pixsift.storage.index_keeper import IndexKeeper
from pixsift.storage.vector_index import VectorIndex
from test_ann import DIM, fill, queries

HNSW = IndexThresholds(flat_max=500, exact_filter_max=100)  # 2,000 vectors call for HNSW


def index_run(folder: Path, tmp_path: Path, thresholds: IndexThresholds | None = None) -> None:
    """An index run that embeds nothing, in a Library that has not loaded the index."""
    empty = tmp_path / "empty-root"
    empty.mkdir(exist_ok=True)
    with Library.open(folder, index_thresholds=thresholds) as library:
        library.index(empty)


def search_once(folder: Path, thresholds: IndexThresholds | None = None) -> None:
    """A search in a process of its own: it catches the file up and saves it when far behind."""
    with Library.open(folder, index_thresholds=thresholds) as library:
        library.search_vector(queries(1)[0])


def flip_inner_byte(path: Path) -> bytes:
    """Damage the file inside, its header, size and FAISS start kept (only its checksum tells);
    returns the damaged bytes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def test_an_unchanged_re_run_leaves_the_index_file_unread(photos: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    command = ("index", str(photos), "--library", str(library), "--model", "synthetic-tiny")
    assert run_cli(*command).returncode == 0
    index_file = library / "vectors.faiss"
    # A byte flipped inside: a run that loaded the file would find it damaged and save a new one.
    damaged = flip_inner_byte(index_file)

    rerun = run_cli(*command)

    assert rerun.returncode == 0, rerun.stderr
    assert index_file.read_bytes() == damaged  # neither read through nor written
    # The next search finds the damage (the checksum) and saves a rebuilt file.
    search = run_cli("search", "a photo", "--library", str(library), "-k", "3")
    assert search.returncode == 0, search.stderr
    assert index_file.read_bytes() != damaged
    assert VectorIndex.load(index_file) is not None


def test_the_keeper_answers_the_drift_check_from_the_header(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, 2_000)
    search_once(folder)  # a flat file, caught up
    catalog = Catalog.open(folder / "library.db")
    try:
        keeper = IndexKeeper(catalog, folder / "vectors.faiss", FileLock(folder / "k.lock"), HNSW)
        keeper.save_current(DIM)
        assert not keeper.loaded
        assert keeper.rebuild_due(DIM) is not None  # 2,000 vectors call for HNSW here
        assert not keeper.loaded
        keeper.refresh(DIM)  # a search loads it, and the same rules answer from memory
        assert keeper.loaded and keeper.rebuild_due(DIM) is not None
    finally:
        catalog.close()


def test_crossing_a_threshold_is_found_in_the_header(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, 2_000)
    search_once(folder)  # default thresholds: flat
    assert read_header(folder / "vectors.faiss")["plan"]["kind"] == "flat"  # type: ignore[index]

    index_run(folder, tmp_path, HNSW)

    header = read_header(folder / "vectors.faiss")
    assert header is not None and header["plan"]["kind"] == "hnsw" and header["count"] == 2_000


def test_growth_since_training_is_found_in_the_header(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    fill(folder, 2_000)
    search_once(folder, HNSW)  # HNSW trained for 2,000
    fill(folder, 2_100, seed=3)
    search_once(folder, HNSW)  # caught up and saved (added vectors), still trained for 2,000
    header = read_header(folder / "vectors.faiss")
    assert header is not None and (header["trained_count"], header["count"]) == (2_000, 4_100)

    index_run(folder, tmp_path, HNSW)

    header = read_header(folder / "vectors.faiss")
    assert header is not None and (header["trained_count"], header["count"]) == (4_100, 4_100)


def test_hnsw_tombstones_are_counted_from_the_header(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    ids = fill(folder, 2_400)
    search_once(folder, HNSW)
    catalog = Catalog.open(folder / "library.db")
    with catalog.write() as batch:
        batch.delete_images(ids[:1_100])  # more than the 1,000 changes a search leaves unsaved
    catalog.close()
    search_once(folder, HNSW)  # saved caught up: 1,100 of 2,400 graph positions are tombstones
    header = read_header(folder / "vectors.faiss")
    assert header is not None
    shape = saved_shape(header)
    assert shape is not None and (shape.kind, shape.count, shape.tombstones) == (IndexKind.hnsw, 1_300, 1_100)

    index_run(folder, tmp_path, HNSW)

    header = read_header(folder / "vectors.faiss")
    assert header is not None and (header["count"], header["label_bytes"]) == (1_300, 8 * 1_300)


def test_a_header_without_the_vector_count_is_loaded_to_decide(tmp_path: Path) -> None:
    """Files saved before the header recorded the count (format 2, no checksum) still load, and
    an index run still rebuilds them when the library has outgrown them."""
    folder = tmp_path / "library"
    fill(folder, 2_000)
    search_once(folder)  # flat
    path = folder / "vectors.faiss"
    header = read_header(path)
    assert header is not None
    body = path.read_bytes()
    body = body[len(MAGIC) + body[len(MAGIC) :].index(b"\n") + 1 :]
    old = {key: value for key, value in header.items() if key not in ("count", "crc32")} | {"format": 2}
    path.write_bytes(MAGIC + json.dumps(old).encode() + b"\n" + body)
    assert saved_shape(old) is None and VectorIndex.load(path) is not None

    index_run(folder, tmp_path, HNSW)

    header = read_header(path)
    assert header is not None and header["plan"]["kind"] == "hnsw" and header["count"] == 2_000
