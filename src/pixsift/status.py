"""What a library reports about itself: `LibraryStatus` (what is indexed, with which model,
where, and how fresh the search index file is) and `IndexSummary` (the search index in use).

The status is read from the catalog and the index file's header, size and first FAISS bytes
alone, so `pixsift status` loads neither FAISS nor the model, however large the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixsift.models import ModelRecord
    from pixsift.storage import Catalog, CatalogCounts, RootInfo
    from pixsift.storage.vector_index import VectorIndex


UP_TO_DATE = "up to date"
# Behind the database by changes its log holds (deletes since the last save): every process
# replays them as it loads the file, which is saved again once they are many. Normal.
CAUGHT_UP_ON_LOAD = "caught up on load"
STALE = "stale"  # the change log no longer reaches back to it: rebuilt as it is next loaded
MISSING = "missing"
# Its size or first bytes are not what its header says, or its header cannot be read: a
# search refuses it and rebuilds it from the stored vectors, as it would a missing one.
DAMAGED = "damaged"
# It cannot be opened or read (no permission, a folder in its place): every search rebuilds
# the index in memory, and nothing can save one there until it is fixed or removed.
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class IndexFileState:
    """Whether `vectors.faiss` reflects the database: "up to date", "caught up on load",
    "stale", "missing", "damaged" or "unreadable" (then `damage` says why); how many logged
    changes loading it replays (None unless caught up on load); its kind ("flat", "hnsw",
    "ivfpq"), its tuned nprobe/efSearch and the recall@10 measured when it was tuned, as its
    header records them.
    Damage is found from the file's size and first bytes only: bytes changed inside it are
    found by its checksum, which a search verifies as it loads it (and rebuilds it)."""

    state: str
    generation: int | None
    kind: str | None = None
    search_param: int | None = None
    recall: float | None = None
    changes: int | None = None
    damage: str | None = None

    def as_json(self) -> dict[str, object]:
        """The `index` object of `pixsift status --format json` and of the service's GET /stats:
        one set of names, so that a script reads both alike."""
        return {
            "state": self.state,
            "generation": self.generation,
            "changes": self.changes,
            "kind": self.kind,
            "search_param": self.search_param,
            "tuned_recall_at_10": self.recall,
            "damage": self.damage,
        }


@dataclass(frozen=True)
class IndexSummary:
    """The search index in use: its kind ("flat", "hnsw", "ivfpq"), size and tuning."""

    kind: str
    vectors: int
    memory_bytes: int
    search_param: int | None  # nprobe (ivfpq) or efSearch (hnsw)
    recall: float | None  # recall@10 against exact search, measured when it was tuned
    trained_count: int
    tombstones: int

    def as_json(self) -> dict[str, object]:
        """Its JSON form (the service's GET /stats `index_in_memory`), with the names of
        `IndexFileState.as_json` where the fact is the same."""
        return {
            "kind": self.kind,
            "vectors": self.vectors,
            "memory_bytes": self.memory_bytes,
            "search_param": self.search_param,
            "tuned_recall_at_10": self.recall,
            "trained_count": self.trained_count,
            "tombstones": self.tombstones,
        }


@dataclass(frozen=True)
class LibraryStatus:
    """What `Library.status()` reports: the library folder, its model (None before the first
    index run), image counts, indexed folders, the catalog's generation (it grows with every
    change of vectors), the search index file's state, and the bytes its files take.
    `missing_roots` are the indexed folders not on disk now (unmounted, moved or deleted):
    index runs keep their images until `relocate` or `forget` says what became of them."""

    path: Path
    model: ModelRecord | None
    counts: CatalogCounts
    roots: list[RootInfo]
    generation: int
    index_file: IndexFileState
    disk_bytes: int
    missing_roots: tuple[str, ...] = ()


def library_status(folder: Path, catalog: Catalog, index_path: Path) -> LibraryStatus:
    """The status of the library in `folder`, whose catalog is `catalog`."""
    generation = catalog.generation()
    state = _index_file_state(catalog, index_path, generation)
    disk = sum(_file_size(entry) for entry in os.scandir(folder))
    roots = catalog.roots()
    return LibraryStatus(
        path=folder,
        model=catalog.model(),
        counts=catalog.counts(),
        roots=roots,
        generation=generation,
        index_file=state,
        disk_bytes=disk,
        # One stat a root (a library has few): an empty mount point is told by the next index run.
        missing_roots=tuple(root.path for root in roots if not os.path.isdir(root.path)),
    )


def _index_file_state(catalog: Catalog, index_path: Path, generation: int) -> IndexFileState:
    """How `index_path` stands against the catalog at `generation`, from its header and size."""
    from pixsift.storage.index_header import IndexMeta, check_file

    found = check_file(index_path)
    header = found.header
    if header is None:
        state = MISSING if found.damage is None else DAMAGED if found.readable else UNREADABLE
        return IndexFileState(state, None, damage=found.damage)
    saved = int(header["generation"])
    if found.damage is not None:  # its header was read (a damaged one is told apart above)
        kind = IndexMeta.from_dict(header).plan.kind.value
        return IndexFileState(DAMAGED, saved, kind, damage=found.damage)
    meta = IndexMeta.from_dict(header)
    changes = None if saved == generation else catalog.changes_since(saved)
    return IndexFileState(
        UP_TO_DATE if saved == generation else STALE if changes is None else CAUGHT_UP_ON_LOAD,
        saved,
        meta.plan.kind.value,
        meta.search_param or None,
        meta.recall,
        changes,
    )


def summarize_index(vectors: VectorIndex) -> IndexSummary:
    """The kind of the search index `vectors`, its size and how it was tuned."""
    meta = vectors.meta
    return IndexSummary(
        kind=vectors.kind.value,
        vectors=vectors.count,
        memory_bytes=vectors.memory_bytes(),
        search_param=meta.search_param or None,
        recall=meta.recall,
        trained_count=meta.trained_count,
        tombstones=vectors.tombstones,
    )


def _file_size(entry: os.DirEntry[str]) -> int:
    """The size of a file of the library folder; 0 for a folder, or for a file gone since the
    folder was listed (an index run renames its new index file over the old one meanwhile)."""
    try:
        return entry.stat().st_size if entry.is_file() else 0
    except FileNotFoundError:
        return 0
