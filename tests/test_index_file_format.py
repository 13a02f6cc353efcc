"""The search index file as `VectorIndex.save` streams it (format 4): FAISS writes its bytes
straight into the file, counted and checksummed as they pass, and the header line reserved
before them is written over at the end. A save no longer builds the whole index as one bytes
array first (twice the index in memory, at the peak of each save); files of format 3, which
checksummed the header's fields first, still load and are still verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import faiss
import numpy as np
import pytest

from pixsift import Library
from pixsift.storage.index_choice import IndexKind
from pixsift.storage.index_header import FILE_FORMAT, MAGIC, check_file, read_header
from pixsift.storage.vector_index import VectorIndex
from test_ann import queries
from test_status_damage import THRESHOLDS, body_start, library_of

KINDS = list(IndexKind)


def saved_library(tmp_path: Path, kind: IndexKind) -> tuple[Path, list[int]]:
    """A library's folder with an index of `kind` saved by a first search, and its top ids."""
    folder = tmp_path / "library"
    return folder, library_of(folder, kind)


def write_format_3(index: VectorIndex, path: Path) -> None:
    """Save `index` as pixsift wrote format 3: the FAISS bytes built in memory, and a CRC-32
    of the header's fields first, then of those bytes and the labels; no padding."""
    payload = faiss.serialize_index(index._index)
    labels = np.ascontiguousarray(index._labels, dtype="<i8").tobytes()
    header = {
        "format": 3,
        "generation": index.generation,
        "dim": index.dim,
        "faiss_bytes": int(payload.size),
        "label_bytes": len(labels),
        "count": index.count,
        **index.meta.as_dict(),
    }
    crc = zlib.crc32(json.dumps(header, sort_keys=True).encode())
    header["crc32"] = zlib.crc32(labels, zlib.crc32(payload.tobytes(), crc))
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload.tobytes() + labels)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.value)
def test_every_kind_saves_streamed_and_loads_back_the_same(tmp_path: Path, kind: IndexKind) -> None:
    folder, _ = saved_library(tmp_path, kind)
    index = VectorIndex.load(folder / "vectors.faiss")
    assert index is not None and index.kind is kind
    path = tmp_path / "again.faiss"
    index.save(path)

    header = read_header(path)
    assert header is not None and header["format"] == FILE_FORMAT == 4
    data = path.read_bytes()
    start = body_start(path)
    # What FAISS streamed is what it serializes, byte for byte, and the header's sizes say so.
    faiss_bytes = faiss.serialize_index(index._index).tobytes()
    assert data[start : start + header["faiss_bytes"]] == faiss_bytes
    assert len(data) == start + len(faiss_bytes) + header["label_bytes"]
    assert check_file(path).damage is None
    again = VectorIndex.load(path)
    assert again is not None
    assert (again.kind, again.count, again.generation) == (kind, index.count, index.generation)
    assert again.meta == index.meta
    assert np.array_equal(np.sort(again.ids()), np.sort(index.ids()))
    for held, loaded in zip(index.search(queries(3), 10), again.search(queries(3), 10), strict=True):
        assert np.array_equal(held, loaded)
    assert list(tmp_path.glob("again.faiss*")) == [path]  # no temporary file left


def test_the_header_line_keeps_the_width_it_reserved(tmp_path: Path) -> None:
    """Written first as a placeholder, rewritten at the end: padded with spaces before its
    newline, it never runs into the FAISS bytes, however many digits the sizes have."""
    for count, generation in [(0, 0), (3, 10**15)]:
        index = VectorIndex.empty(8, generation=generation)
        index.add(np.arange(count), np.eye(max(count, 1), 8, dtype=np.float32)[:count])
        path = tmp_path / f"{count}.faiss"
        index.save(path)
        line = path.read_bytes()[len(MAGIC) : body_start(path)]
        assert line.endswith(b" \n") and json.loads(line)["generation"] == generation
        assert path.read_bytes()[body_start(path) :].startswith(b"IxM2")
        loaded = VectorIndex.load(path)
        assert loaded is not None and (loaded.count, loaded.generation) == (count, generation)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.value)
def test_a_file_of_format_3_still_loads_and_is_still_verified(tmp_path: Path, kind: IndexKind) -> None:
    folder, before = saved_library(tmp_path, kind)
    path = folder / "vectors.faiss"
    index = VectorIndex.load(path)
    assert index is not None
    write_format_3(index, path)
    assert read_header(path)["format"] == 3  # type: ignore[index]
    assert check_file(path).damage is None
    loaded = VectorIndex.load(path)
    assert loaded is not None and np.array_equal(np.sort(loaded.ids()), np.sort(index.ids()))

    damaged = bytearray(path.read_bytes())
    damaged[(body_start(path) + len(damaged)) // 2] ^= 0x10  # inside the vectors or codes
    path.write_bytes(bytes(damaged))
    assert VectorIndex.load(path) is None
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        assert [r.id for r in library.search_vector(queries(1)[0], k=10)] == before
    assert read_header(path)["format"] == FILE_FORMAT  # type: ignore[index]  # rebuilt, saved anew


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.value)
def test_damage_to_a_streamed_file_is_refused_and_rebuilt(tmp_path: Path, kind: IndexKind) -> None:
    folder, before = saved_library(tmp_path, kind)
    path = folder / "vectors.faiss"
    data = path.read_bytes()
    start = body_start(path)
    header = read_header(path)
    assert header is not None and header["format"] == FILE_FORMAT
    # A flipped byte in the FAISS bytes, the last label (hnsw) or the last byte: the checksum.
    for position in {start + 40, (start + len(data)) // 2, len(data) - 1}:
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        path.write_bytes(bytes(damaged))
        assert check_file(path).damage is None  # size and start as the header says
        assert VectorIndex.load(path) is None, position
    # A field of the header changed (the generation), the rest intact: the checksum too.
    path.write_bytes(data.replace(b'"generation": ', b'"generation": 1', 1))
    assert VectorIndex.load(path) is None
    # Cut short: the header's size says so without reading the file.
    path.write_bytes(data[:-3])
    assert (check_file(path).damage or "").startswith("cut short")
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        assert library.status().index_file.state == "damaged"
        assert [r.id for r in library.search_vector(queries(1)[0], k=10)] == before
    assert VectorIndex.load(path) is not None  # rebuilt and saved by the search


PEAK_OF_SAVE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from pixsift.storage.vector_index import VectorIndex

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    index = VectorIndex.empty(256)
    rng = np.random.default_rng(0)
    for start in range(0, 100_000, 10_000):
        index.add(np.arange(start, start + 10_000), rng.random((10_000, 256), dtype=np.float32))
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) from here on
    before = status("VmRSS")
    index.save(Path(sys.argv[1]))
    print(status("VmHWM") - before)
    """
)


def test_a_save_does_not_hold_a_second_copy_of_the_index(tmp_path: Path) -> None:
    """Measured, not mocked: the most the saving process's memory grows during the save of a
    100 MB flat index. Building its bytes in memory first grew it by about twice the file."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("this kernel does not let a process reset its peak memory (Linux only)")
    path = tmp_path / "v.faiss"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_SAVE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # these sources' pixsift
        check=False,
    )
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    assert path.stat().st_size > 100_000 * 256 * 4
    assert grown < 0.25 * path.stat().st_size, f"the save grew memory by {grown:,} bytes"
