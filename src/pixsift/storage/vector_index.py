"""The FAISS index: inner-product search over the catalog's vectors, kept on disk.

The catalog is the source of truth; this index is a cache of it, stamped with the catalog
generation it reflects. On open, a stale index replays the catalog's change log (only the
images that changed), and a missing, corrupt or too-old one is rebuilt from the stored
vectors. Writes go to a temporary file that is renamed over the old one, so a reader never
sees half an index, and a crash leaves the previous one in place.

Three kinds of index (see `index_choice.py` for which is chosen when):
- flat: `IndexIDMap2(IndexFlatIP)`, exact.
- hnsw: `IndexHNSWFlat` at positions 0..n-1, with our own position -> id table. HNSW cannot
  remove vectors, so a removed or replaced image's position becomes a tombstone (id -1),
  skipped at query time by an ID selector and dropped when the index is next rebuilt.
- ivfpq: `IndexPreTransform(OPQ, IndexIVFPQ)` keyed by image id (IVF supports `remove_ids`).
  Its scores are approximate: the search engine re-ranks its candidates exactly.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import faiss  # its bundled stubs are SWIG-generated; the few ignores below are theirs
import numpy as np

from pixsift.regular_file import open_regular
from pixsift.storage.index_choice import IndexKind
from pixsift.storage.index_header import (
    CHECKSUMMED_FORMAT,
    FIELDS_LAST_FORMAT,
    FILE_FORMAT,
    MAGIC,
    IndexShape,
    header_from,
)
from pixsift.storage.index_header import IndexMeta as IndexMeta
from pixsift.storage.index_header import read_generation as read_generation
from pixsift.storage.index_header import read_header as read_header

if TYPE_CHECKING:
    from pixsift.storage.records import VectorDelta

TMP_INFIX = ".tmp-"  # vectors.faiss.tmp-PID: a save in progress, or one a crash cut short
MAX_WIDENING = 64  # searching 1/x of what the index holds widens nprobe/efSearch by x, up to this
OPQ_ROUNDS = 4
OPQ_TRAIN_POINTS = 16_384
KMEANS_ROUNDS = 10  # for the coarse quantizer and the PQ codebooks (FAISS's default is 25)
CHECKSUM_KEY = "crc32"  # in the header: of the FAISS bytes, the labels, then its other fields
CHECKSUM_CHUNK = 1 << 20
MAX_FILE_BYTES = 2**63 - 1  # the widest `faiss_bytes` and checksum, for the header's reserved width
MAX_CHECKSUM = 2**32 - 1


@dataclass
class _Selection:
    """An ID selector with the buffers it points into, kept alive while FAISS reads them."""

    selector: Any
    keep: list[Any] = field(default_factory=list)


class VectorIndex:
    """Vectors keyed by image id, of one of the three kinds, at a catalog generation."""

    def __init__(
        self,
        index: faiss.Index,
        generation: int,
        meta: IndexMeta | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self._index = index
        self.generation = generation
        self.meta = meta or IndexMeta()
        # hnsw only: the image id at each position of the graph, -1 for a tombstone
        self._labels = labels if labels is not None else np.empty(0, dtype=np.int64)

    @classmethod
    def empty(cls, dim: int, generation: int = 0) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), generation)

    @property
    def kind(self) -> IndexKind:
        return self.meta.plan.kind

    @property
    def exact(self) -> bool:
        """Whether scores are exact and `vector()` returns the stored floats (not ivfpq)."""
        return self.kind is not IndexKind.ivfpq

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        if self.kind is IndexKind.hnsw:
            return int(np.count_nonzero(self._labels >= 0))
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> int:
        """Positions of removed vectors still in an HNSW graph (0 for the other kinds)."""
        return int(np.count_nonzero(self._labels < 0)) if self.kind is IndexKind.hnsw else 0

    @property
    def shape(self) -> IndexShape:
        """Its kind, size and training: what the decision to rebuild it asks."""
        return IndexShape(self.kind, self.dim, self.count, self.tombstones, self.meta.trained_count)

    def memory_bytes(self) -> int:
        """What the index holds in memory, counted from its parts (without copying them)."""
        held: Any = self._index
        if self.kind is IndexKind.hnsw:
            graph = held.hnsw
            links = 4 * graph.neighbors.size() + 4 * graph.levels.size() + 8 * graph.offsets.size()
            return int(held.ntotal * 4 * self.dim + links + self._labels.nbytes)
        if self.kind is IndexKind.ivfpq:
            ivf = self._ivf()
            lists = ivf.invlists
            stored = sum(lists.list_size(i) for i in range(ivf.nlist))
            return int(stored * (ivf.code_size + 8) + 4 * self.dim * (ivf.nlist + self.dim))
        return int(held.ntotal * (4 * self.dim + 8))

    def ids(self) -> np.ndarray:
        """The ids held, in storage order (duplicates would show here)."""
        if self.kind is IndexKind.hnsw:
            return self._labels[self._labels >= 0].copy()
        if self.kind is IndexKind.ivfpq:
            ivf = self._ivf()
            lists = ivf.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(ivf.nlist)
                if lists.list_size(i)
            ]
            return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)  # type: ignore[attr-defined]

    def vector(self, image_id: int) -> np.ndarray:
        """The vector held for `image_id` (exact kinds only: an ivfpq index keeps codes)."""
        if self.kind is IndexKind.ivfpq:
            raise ValueError("an IVF-PQ index holds compressed codes, not vectors")
        if self.kind is IndexKind.hnsw:
            positions = np.flatnonzero(self._labels == image_id)
            if not len(positions):
                raise KeyError(image_id)
            return np.asarray(self._index.reconstruct(int(positions[-1])), dtype=np.float32)
        return np.asarray(self._index.reconstruct(int(image_id)), dtype=np.float32)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.kind is IndexKind.hnsw:
            self._index.add(vectors)
            self._labels = np.concatenate([self._labels, np.asarray(ids, dtype=np.int64)])
        else:
            self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def train(self, sample: np.ndarray) -> None:
        """Train an ivfpq index (OPQ rotation, coarse quantizer, PQ) on sample vectors."""
        plan = self.meta.plan
        combined: Any = self._index  # the pre-transform: OPQ, then IVF-PQ
        opq: Any = faiss.downcast_VectorTransform(combined.chain.at(0))
        # OPQ trains its own product quantizer, by default with 256 centroids per part: give
        # it ours, so a small sample does not ask k-means for more centroids than it has points.
        quantizer = faiss.ProductQuantizer(self.dim, plan.pq_m, plan.pq_bits)
        opq.pq = quantizer
        # FAISS's defaults (50 rounds, up to 65k points) cost many minutes on two cores; a few
        # rounds on a smaller sample get most of the rotation's benefit, and re-ranking the rest.
        opq.niter = OPQ_ROUNDS
        opq.niter_pq_0 = OPQ_ROUNDS
        opq.max_train_points = OPQ_TRAIN_POINTS
        ivf: Any = faiss.downcast_index(combined.index)
        ivf.cp.niter = KMEANS_ROUNDS
        ivf.pq.cp.niter = KMEANS_ROUNDS
        combined.train(np.ascontiguousarray(sample, dtype=np.float32))
        opq.pq = None

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind is IndexKind.hnsw:
            self._labels = np.where(np.isin(self._labels, ids), -1, self._labels)
        elif self.kind is IndexKind.ivfpq:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        else:
            self._index.remove_ids(ids)  # type: ignore[arg-type]

    def apply(self, delta: VectorDelta) -> None:
        """Replay catalog changes: drop every changed id, then add back those that still exist."""
        self.remove(np.concatenate([delta.removed_ids, delta.upserted_ids]))
        self.add(delta.upserted_ids, delta.upserted_vectors)
        self.generation = delta.generation

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: np.ndarray | None = None,
        *,
        search_param: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` (scores, ids) per query row; ids are -1 where fewer than `k` match.

        `allowed_ids` restricts the search inside FAISS, so a filter never truncates results;
        an ANN index widens its search (nprobe, efSearch) as the filter narrows, so the few
        allowed vectors are still reached. `search_param` overrides the tuned nprobe/efSearch.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.count:
            return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
        if self.kind is IndexKind.hnsw:
            return self._search_hnsw(queries, k, allowed_ids, search_param)
        if self.kind is IndexKind.ivfpq:
            return self._search_ivfpq(queries, k, allowed_ids, search_param)
        if allowed_ids is None:
            return self._index.search(queries, k)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        return self._index.search(queries, k, params=params)

    def _widening(self, allowed_ids: np.ndarray | None) -> int:
        """How many times the tuned nprobe/efSearch to search: 1 / the share of what the index
        holds that a search may return. An HNSW graph's tombstones count as held: a walk
        through a graph that is mostly removed images reaches few live ones, and its recall
        fell well below the tuned value (0.89 with 80% removed) until the next index run.
        An IVF-PQ index widens as many times again as it has shrunk since it was tuned (whole
        times, so a shrink within the drift factor costs nothing): its cells emptied by
        removals (a forget of most of the library), the nprobe tuned for them reached too few
        of the rest, and recall@10 fell to 0.80 with 95% removed until the next index run."""
        reachable = self.count if allowed_ids is None else len(allowed_ids)
        share = reachable / max(self.count + self.tombstones, 1)
        widening = math.ceil(1 / max(share, 1e-9))
        if self.kind is IndexKind.ivfpq:
            widening *= max(1, self.meta.trained_count // max(self.count, 1))
        return int(min(MAX_WIDENING, widening))

    def _search_hnsw(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None, search_param: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        base = search_param or self.meta.search_param or 64
        params.efSearch = max(k, base * self._widening(allowed_ids))
        selection = self._hnsw_selection(allowed_ids)
        if selection is not None:
            params.sel = selection.selector
        scores, positions = self._index.search(queries, k, params=params)
        labels = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
        return scores, labels

    def _hnsw_selection(self, allowed_ids: np.ndarray | None) -> _Selection | None:
        """A bitmap of the positions a search may return: live ones, among `allowed_ids`."""
        if allowed_ids is None and not self.tombstones:
            return None
        mask = self._labels >= 0
        if allowed_ids is not None:
            mask &= np.isin(self._labels, allowed_ids)
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        return _Selection(selector, [bits])

    def _search_ivfpq(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None, search_param: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        ivf = self._ivf()
        params = faiss.SearchParametersIVF()
        base = search_param or self.meta.search_param or 16
        # Probe enough cells to hold about twice `k` vectors, or a large k comes back short.
        enough = math.ceil(2 * k * ivf.nlist / max(self.count, 1))
        params.nprobe = int(min(ivf.nlist, max(enough, base * self._widening(allowed_ids))))
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
            params.sel = selector
        scores, ids = ivf.search(self._rotate(queries), k, params=params)
        return scores, ids

    def _ivf(self) -> Any:
        return faiss.downcast_index(self._index.index)  # type: ignore[attr-defined]

    def _rotate(self, vectors: np.ndarray) -> np.ndarray:
        """Apply the OPQ rotation, as adding through the pre-transform does."""
        chain = self._index.chain  # type: ignore[attr-defined]
        for position in range(chain.size()):
            vectors = faiss.downcast_VectorTransform(chain.at(position)).apply(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsynced, renamed over `path`.

        FAISS streams its bytes into the file, counted and checksummed as they pass: building
        them as one array first (`faiss.serialize_index`) held twice the index again, 6 GB at
        the peak of a save of a million 512-d vectors (a 2 GB index). Their size and checksum belong in the
        header, which comes first in the file (a quick read of the header alone answers
        `status` and an unchanged re-run), yet are known only once they are written: so the
        header line is reserved first, as wide as it can be with the largest size and checksum,
        and written over in place, padded with spaces (JSON allows them before the newline),
        before the fsync and the rename. The checksum takes the bytes first and the header's
        fields last (format 4), so one pass computes it, and one pass verifies it on load.
        """
        labels = np.ascontiguousarray(self._labels, dtype="<i8")
        header = {
            "format": FILE_FORMAT,
            "generation": self.generation,
            "dim": self.dim,
            "faiss_bytes": MAX_FILE_BYTES,  # the widest it can be, until the FAISS bytes are out
            "label_bytes": labels.nbytes,
            "count": self.count,  # what the file holds, for `replay_limit` without loading it
            **self.meta.as_dict(),
            CHECKSUM_KEY: MAX_CHECKSUM,
        }
        width = len(json.dumps(header)) + 1
        tmp = path.with_name(f"{path.name}{TMP_INFIX}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC)
                f.write(_header_line({}, width))  # a placeholder, written over at the end
                body = _StreamedBody(f)
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(body.write))  # type: ignore[attr-defined]
                header["faiss_bytes"] = body.size
                body.write(labels.data.cast("B"))
                header[CHECKSUM_KEY] = _with_fields(header, body.crc)
                f.seek(len(MAGIC))
                f.write(_header_line(header, width))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """The index saved at `path`, or None if there is none or it cannot be read."""
        try:
            with open_regular(path) as file:  # a named pipe there is not waited on
                return cls._read(file)
        except OSError:  # none, no permission, an I/O error: a cache, rebuilt from the catalog
            return None
        except (ValueError, RuntimeError, KeyError, AttributeError, TypeError, MemoryError):
            return None  # bad header or bytes (a file saved without a checksum: FAISS's own errors)

    @classmethod
    def _read(cls, file: BinaryIO) -> VectorIndex | None:
        header = header_from(file)
        if header is None:
            return None
        meta = IndexMeta.from_dict(header)
        start = file.tell()
        if not _checksum_holds(header, file):
            return None
        file.seek(start)
        # FAISS reads its part straight from the file: no copy of the whole file in memory
        # first (at 10,000 vectors a cold search saves 40 ms; at millions, gigabytes).
        index = faiss.read_index(faiss.PyCallbackIOReader(file.read))  # type: ignore[attr-defined]
        faiss_bytes = file.tell() - start
        label_bytes = int(header.get("label_bytes", 0))
        labels = np.frombuffer(file.read(label_bytes), dtype="<i8")
        if (
            faiss_bytes != int(header.get("faiss_bytes", faiss_bytes))  # format 1 does not say
            or len(labels) * 8 != label_bytes
            or file.read(1)  # the file is longer than its header says
        ):
            return None
        if meta.plan.kind is IndexKind.hnsw and len(labels) != index.ntotal:
            return None
        return cls(index, int(header["generation"]), meta, labels.astype(np.int64))


def _header_line(header: dict[str, Any], width: int) -> bytes:
    """The JSON line of `header`, padded with spaces to `width` bytes, its newline included."""
    line = json.dumps(header).encode()
    if len(line) >= width:  # never: the width was reserved with the widest values
        raise ValueError(f"an index header of {len(line) + 1} bytes outgrew the {width} reserved")
    return line.ljust(width - 1) + b"\n"


class _StreamedBody:
    """Writes what FAISS hands over (1 MB at most at a time) to a file, counting its bytes and
    updating a CRC-32 of them as they pass: no copy of the whole index is ever held."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = 0
        self.crc = 0

    def write(self, chunk: bytes | memoryview) -> int:
        self._file.write(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        self.size += len(chunk)
        return len(chunk)


def _fields(header: dict[str, Any]) -> bytes:
    """The header's fields but the checksum, as the checksum covers them (a canonical form)."""
    fields = {key: value for key, value in header.items() if key != CHECKSUM_KEY}
    return json.dumps(fields, sort_keys=True).encode()


def _with_fields(header: dict[str, Any], body_crc: int) -> int:
    """The checksum of a file of format 4 and later: CRC-32 of the bytes after the header (the
    FAISS bytes and the labels), `body_crc`, continued over the header's other fields. A
    flipped bit in the FAISS bytes or the labels loads without complaint, as other vectors or
    ids: wrong results until the file is rewritten; with the checksum it is refused, and
    rebuilt. Format 3 took the fields first, so a save had to know the size of the FAISS
    bytes before it wrote them, and built them all in memory first."""
    return zlib.crc32(_fields(header), body_crc)


def _checksum_holds(header: dict[str, Any], file: BinaryIO) -> bool:
    """Whether the rest of `file` matches the header's checksum (files saved before format 3
    have none). Checked before FAISS parses anything: a damaged count in the FAISS bytes
    made it allocate and fill gigabytes, for half a minute, before it failed."""
    if CHECKSUM_KEY not in header:
        return int(header["format"]) < CHECKSUMMED_FORMAT
    fields_first = int(header["format"]) < FIELDS_LAST_FORMAT
    crc = zlib.crc32(_fields(header)) if fields_first else 0
    while chunk := file.read(CHECKSUM_CHUNK):
        crc = zlib.crc32(chunk, crc)
    if not fields_first:
        crc = _with_fields(header, crc)
    return bool(header[CHECKSUM_KEY] == crc)


def leftover_files(path: Path) -> list[Path]:
    """Temporary files of saves that a crash cut short (harmless; safe to delete under the lock)."""
    return sorted(path.parent.glob(f"{path.name}{TMP_INFIX}*"))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some filesystems and platforms cannot open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
