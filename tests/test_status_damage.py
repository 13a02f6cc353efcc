"""`pixsift status` on a damaged search index file: it reads the file's header, size and first
FAISS bytes (never the rest: the file is GBs at a million vectors), and says the file is
damaged where they disagree, as search and doctor do, instead of calling it up to date.

Libraries of synthetic vectors (no images), on each kind of index, their files damaged on
disk as a truncated copy, a short write or a stray write would leave them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from pixsift import Library
from pixsift.storage.index_choice import IndexKind, IndexThresholds
from pixsift.storage.index_header import MAGIC
from pixsift.storage.vector_index import VectorIndex
from test_ann import fill, queries

COUNT = 600  # above the 256 an IVF-PQ index needs to train on
THRESHOLDS = {
    IndexKind.flat: IndexThresholds(),
    IndexKind.hnsw: IndexThresholds(flat_max=100, exact_filter_max=50),
    IndexKind.ivfpq: IndexThresholds(flat_max=100, hnsw_max=300, exact_filter_max=50),
}
REBUILT = "rebuilt from the stored vectors by the next search or index run, or now by: pixsift reindex"


def body_start(path: Path) -> int:
    """Where the FAISS bytes begin: after the magic line and the header's line."""
    with open(path, "rb") as f:
        f.read(len(MAGIC))
        f.readline()
        return f.tell()


def cut_by_a_few_bytes(path: Path) -> str:
    size = path.stat().st_size
    os.truncate(path, size - 5)
    return f"cut short: {size - 5:,} bytes of the {size:,} its header says"


def cut_in_half(path: Path) -> str:
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return f"cut short: {size // 2:,} bytes of the {size:,} its header says"


def lengthened(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    return f"{size + 4096:,} bytes, more than the {size:,} its header says"


def faiss_start_zeroed(path: Path) -> str:
    with open(path, "r+b") as f:
        f.seek(body_start(path))
        f.write(bytes(64))
    return "its FAISS data does not begin as a {kind} index does"


def header_overwritten(path: Path) -> str:
    with open(path, "r+b") as f:
        f.seek(len(MAGIC) + 3)
        f.write(b"garbage")
    return "its header cannot be read"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "cut-by-5-bytes": cut_by_a_few_bytes,
    "cut-in-half": cut_in_half,
    "lengthened": lengthened,
    "faiss-start-zeroed": faiss_start_zeroed,
    "header-overwritten": header_overwritten,
}


def library_of(folder: Path, kind: IndexKind) -> list[int]:
    """A library of `COUNT` vectors on an index of `kind`, saved by a first search: its top ids."""
    fill(folder, COUNT)
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        assert library.index_summary().kind == kind.value
        return [r.id for r in library.search_vector(queries(1)[0], k=10)]


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
@pytest.mark.parametrize("kind", list(IndexKind), ids=lambda kind: kind.value)
def test_status_calls_a_damaged_index_file_damaged_and_search_rebuilds_it(
    tmp_path: Path, kind: IndexKind, damage: str
) -> None:
    folder = tmp_path / "library"
    before = library_of(folder, kind)
    index_file = folder / "vectors.faiss"
    why = DAMAGE[damage](index_file).format(kind=kind.value)
    assert VectorIndex.load(index_file) is None  # what a search and doctor find too

    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        state = library.status().index_file
        assert (state.state, state.damage) == ("damaged", why)
        assert state.kind == (None if damage == "header-overwritten" else kind.value)
        # the search refuses the file, rebuilds the index from the stored vectors and saves it
        assert [r.id for r in library.search_vector(queries(1)[0], k=10)] == before
        after = library.status().index_file
    assert (after.state, after.damage, after.kind) == ("up to date", None, kind.value)


def test_the_status_command_says_what_is_damaged_and_what_fixes_it(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    library_of(folder, IndexKind.flat)
    why = cut_in_half(folder / "vectors.faiss")
    table = run_cli("status", "--library", str(folder))
    assert table.returncode == 0
    assert f"Index    damaged (generation 1), flat\n         {why}\n         {REBUILT}\n" in table.stdout
    data = json.loads(run_cli("status", "-f", "json", "--library", str(folder)).stdout)
    assert (data["index"]["state"], data["index"]["damage"]) == ("damaged", why)
    # status reports (exit 0, its JSON read by scripts even then); doctor is the check that fails
    doctor = run_cli("doctor", "--library", str(folder))
    assert doctor.returncode == 3, doctor.stdout
    assert f"problem: The search index file cannot be used: {why}." in doctor.stdout  # status's words
    assert run_cli("reindex", "--library", str(folder)).returncode == 0
    data = json.loads(run_cli("status", "-f", "json", "--library", str(folder)).stdout)
    assert (data["index"]["state"], data["index"]["damage"]) == ("up to date", None)


def test_a_folder_in_place_of_the_index_file_is_unreadable_not_missing(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    library_of(folder, IndexKind.flat)
    (folder / "vectors.faiss").unlink()
    (folder / "vectors.faiss").mkdir()
    why = "it cannot be read (Is a directory)"
    table = run_cli("status", "--library", str(folder)).stdout
    assert f"Index    unreadable\n         {why}\n" in table
    data = json.loads(run_cli("status", "-f", "json", "--library", str(folder)).stdout)
    assert (data["index"]["state"], data["index"]["damage"]) == ("unreadable", why)


def test_a_named_pipe_in_place_of_the_index_file_is_unreadable_not_waited_on(tmp_path: Path) -> None:
    """Opened for reading, a named pipe waits for a writer: status, search and the index run
    hung for good on one where the search index file belongs."""
    folder = tmp_path / "library"
    before = library_of(folder, IndexKind.flat)
    index_file = folder / "vectors.faiss"
    index_file.unlink()
    os.mkfifo(index_file)
    why = "it cannot be read (not a regular file (a named pipe is in its place))"
    status = run_cli("status", "--library", str(folder), timeout=60)
    assert f"Index    unreadable\n         {why}\n" in status.stdout
    # Should a search wait on the pipe (a regression), a writer opened after 30 s releases it.
    release = threading.Timer(30, lambda: os.close(os.open(index_file, os.O_WRONLY | os.O_NONBLOCK)))
    release.start()
    try:
        with Library.open(folder) as library:
            assert [r.id for r in library.search_vector(queries(1)[0], k=10)] == before
    finally:
        release.cancel()
    assert VectorIndex.load(index_file) is not None  # the search saved a file in its place


@pytest.mark.parametrize("kind", list(IndexKind), ids=lambda kind: kind.value)
def test_an_intact_file_with_removed_vectors_is_not_called_damaged(tmp_path: Path, kind: IndexKind) -> None:
    """Removed vectors change what the file holds (HNSW keeps them as tombstones, counted in
    its graph but not in `count`): a file saved so is whole."""
    folder = tmp_path / "library"
    library_of(folder, kind)
    index_file = folder / "vectors.faiss"
    vectors = VectorIndex.load(index_file)
    assert vectors is not None
    vectors.remove(np.array(vectors.ids()[:50]))
    vectors.save(index_file)
    assert vectors.count == COUNT - 50 and VectorIndex.load(index_file) is not None
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        state = library.status().index_file
    assert (state.state, state.damage, state.kind) == ("up to date", None, kind.value)


def test_bytes_changed_inside_the_file_are_left_to_its_checksum(tmp_path: Path) -> None:
    """A stretch zeroed in the middle keeps the size and the start: status cannot tell without
    reading the whole file, which it does not; the search that loads it does, and rebuilds it."""
    folder = tmp_path / "library"
    before = library_of(folder, IndexKind.flat)
    index_file = folder / "vectors.faiss"
    with open(index_file, "r+b") as f:
        f.seek(index_file.stat().st_size // 2)
        f.write(bytes(2048))
    with Library.open(folder) as library:
        assert library.status().index_file.state == "up to date"
        assert [r.id for r in library.search_vector(queries(1)[0], k=10)] == before
    assert VectorIndex.load(index_file) is not None  # rewritten by the search
