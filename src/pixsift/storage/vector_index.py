"""The FAISS index: exact inner-product search over the catalog's vectors, kept on disk.

The catalog is the source of truth; this index is a cache of it, stamped with the catalog
generation it reflects. On open, a stale index replays the catalog's change log (only the
images that changed), and a missing, corrupt or too-old one is rebuilt from the stored
vectors. Writes go to a temporary file that is renamed over the old one, so a reader never
sees half an index, and a crash leaves the previous one in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss  # its bundled stubs are SWIG-generated; the few ignores below are theirs
import numpy as np

from pixsift.storage.catalog import Catalog, VectorDelta

MAGIC = b"PIXSIFT-VECTORS\n"
TMP_INFIX = ".tmp-"  # vectors.faiss.tmp-PID: a save in progress, or one a crash cut short
FILE_FORMAT = 1


class VectorIndex:
    """Vectors keyed by image id (FAISS `IndexIDMap2` over `IndexFlatIP`), at a generation."""

    def __init__(self, index: faiss.Index, generation: int) -> None:
        self._index = index
        self.generation = generation

    @classmethod
    def empty(cls, dim: int, generation: int = 0) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), generation)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """The ids held, in insertion order (duplicates would show here)."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)  # type: ignore[attr-defined]

    def vector(self, image_id: int) -> np.ndarray:
        return np.asarray(self._index.reconstruct(int(image_id)), dtype=np.float32)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))  # type: ignore[arg-type]

    def apply(self, delta: VectorDelta) -> None:
        """Replay catalog changes: drop every changed id, then add back those that still exist."""
        self.remove(np.concatenate([delta.removed_ids, delta.upserted_ids]))
        self.add(delta.upserted_ids, delta.upserted_vectors)
        self.generation = delta.generation

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` (scores, ids) per query row; ids are -1 where fewer than `k` match.

        `allowed_ids` restricts the search inside FAISS, so a filter never truncates results.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed_ids is None:
            return self._index.search(queries, k)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        return self._index.search(queries, k, params=params)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsynced, renamed over `path`."""
        header = {"format": FILE_FORMAT, "generation": self.generation, "dim": self.dim}
        payload = faiss.serialize_index(self._index)
        tmp = path.with_name(f"{path.name}{TMP_INFIX}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC)
                f.write(json.dumps(header).encode() + b"\n")
                f.write(payload.data)
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
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(MAGIC):
            return None
        end = data.find(b"\n", len(MAGIC))
        try:
            header = json.loads(data[len(MAGIC) : end])
            if header.get("format") != FILE_FORMAT:
                return None
            payload = np.frombuffer(data, dtype=np.uint8, offset=end + 1)
            index = faiss.deserialize_index(payload)
        except (ValueError, RuntimeError, KeyError, AttributeError):  # bad header or FAISS bytes
            return None
        return cls(index, int(header["generation"]))


def rebuild(catalog: Catalog, dim: int) -> VectorIndex:
    """A fresh index of every vector in the catalog."""
    # The generation is read before the vectors: changes that land in between are replayed
    # again on the next sync, which is harmless because replaying is idempotent.
    index = VectorIndex.empty(dim, catalog.generation())
    for ids, vectors in catalog.all_vectors():
        index.add(ids, vectors)
    return index


def open_vector_index(catalog: Catalog, path: Path, dim: int) -> VectorIndex:
    """The index saved at `path`, caught up with the catalog, or rebuilt if it cannot be."""
    index = VectorIndex.load(path)
    if index is None or index.dim != dim:
        return rebuild(catalog, dim)
    return catch_up(catalog, index)


def catch_up(catalog: Catalog, index: VectorIndex) -> VectorIndex:
    """`index` at the catalog's generation: the change log replayed, or a rebuild if the log
    no longer reaches back to the index's generation."""
    if index.generation == catalog.generation():
        return index
    delta = catalog.vector_delta(index.generation)
    if delta is None:
        return rebuild(catalog, index.dim)
    index.apply(delta)
    return index


def leftover_files(path: Path) -> list[Path]:
    """Temporary files of saves that a crash cut short (harmless; safe to delete under the lock)."""
    return sorted(path.parent.glob(f"{path.name}{TMP_INFIX}*"))


def read_generation(path: Path) -> int | None:
    """The generation stamped in a saved index, reading only its header; None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4096)
    except OSError:
        return None
    if not head.startswith(MAGIC):
        return None
    try:
        header = json.loads(head[len(MAGIC) : head.index(b"\n", len(MAGIC))])
        return int(header["generation"]) if header.get("format") == FILE_FORMAT else None
    except (ValueError, KeyError, TypeError):
        return None


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
