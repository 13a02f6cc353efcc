"""The search index over time: open, catch up, and decide when to rebuild.

Small changes are applied in place from the catalog's change log: new vectors are added,
removed ones deleted (IVF-PQ) or tombstoned (HNSW, which cannot delete). The index is rebuilt,
and an ANN index retrained, only when it has drifted from what the library needs: it is of
another kind than the policy now picks (a smaller kind only once the library is well below
the threshold), the collection has grown or shrunk by the drift factor since training, or
tombstones have piled up. The caller builds the replacement without
blocking searches and swaps it in whole (see `Library`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pixsift.errors import LibraryFormatError
from pixsift.storage import index_build
from pixsift.storage.index_build import IndexPolicy, Progress
from pixsift.storage.index_choice import (
    DEFAULT_MEMORY_BUDGET,
    IndexKind,
    IndexThresholds,
    drifted,
)
from pixsift.storage.index_header import IndexShape
from pixsift.storage.vector_index import VectorIndex

if TYPE_CHECKING:
    from pixsift.storage.catalog import Catalog

INDEX_TYPE_KEY = "index_type"  # catalog setting: "auto" (absent) or a forced kind
MEMORY_BUDGET_KEY = "index_memory_budget"  # catalog setting: bytes
TOMBSTONE_SHARE = 0.2  # HNSW is compacted when this share of its positions are removed ones
# A library gives its index up for a smaller kind only once it has shrunk this far below the
# threshold: one hovering around 20,000 images is not rebuilt flat, HNSW, flat at every run.
SHRINK_MARGIN = 0.1
KINDS_BY_SIZE = (IndexKind.flat, IndexKind.hnsw, IndexKind.ivfpq)


class Settings(Protocol):
    """Where the library's settings are read: the catalog, or the read-only `CatalogReader`."""

    def setting(self, key: str) -> str | None: ...


def load_policy(catalog: Settings, thresholds: IndexThresholds | None = None) -> IndexPolicy:
    """The library's index policy: what `pixsift reindex` stored, else automatic defaults."""
    kind = catalog.setting(INDEX_TYPE_KEY)
    budget = catalog.setting(MEMORY_BUDGET_KEY)
    try:
        forced = None if kind in (None, "auto") else IndexKind(kind)
        memory = DEFAULT_MEMORY_BUDGET if budget is None else int(budget)
    except ValueError:
        lead = f"The library's index settings ({kind!r}, {budget!r}) are not ones this pixsift knows; set"
        raise LibraryFormatError(
            f"{lead} them again with rebuild_index(index_type='auto').",
            command_line=f"{lead} them again with pixsift reindex --index-type auto.",
        ) from None
    return IndexPolicy(forced=forced, memory_budget=memory, thresholds=thresholds or IndexThresholds())


def rebuild(
    catalog: Catalog, dim: int, policy: IndexPolicy | None = None, progress: Progress | None = None
) -> VectorIndex:
    """A fresh index of every vector in the catalog, of the kind the policy picks."""
    return index_build.build_index(catalog, dim, policy or load_policy(catalog), progress=progress)


def open_vector_index(
    catalog: Catalog, path: Path, dim: int, policy: IndexPolicy | None = None
) -> VectorIndex:
    """The index saved at `path`, caught up with the catalog, or rebuilt if it cannot be."""
    return load_or_rebuild(catalog, path, dim, policy)[0]


def load_or_rebuild(
    catalog: Catalog, path: Path, dim: int, policy: IndexPolicy | None = None, *, replay: bool = True
) -> tuple[VectorIndex, bool]:
    """`open_vector_index`, and whether the index came from the file (False: rebuilt, as the
    file is missing, damaged or of another dimension, and should be saved anew). `replay`:
    False leaves an index read from the file at its own generation, for the caller to catch
    up in slices (`catch_up_slice`)."""
    index = VectorIndex.load(path)
    if index is None or index.dim != dim:
        return rebuild(catalog, dim, policy), False
    return (catch_up(catalog, index, policy) if replay else index), True


def catch_up(catalog: Catalog, index: VectorIndex, policy: IndexPolicy | None = None) -> VectorIndex:
    """`index` at the catalog's generation: the change log replayed, or a rebuild if the log
    no longer reaches back to the index's generation."""
    return catch_up_slice(catalog, index, policy, max_changes=None)


def catch_up_slice(
    catalog: Catalog, index: VectorIndex, policy: IndexPolicy | None = None, *, max_changes: int | None
) -> VectorIndex:
    """`index` one slice nearer the catalog's generation: the next whole generations of the
    change log, `max_changes` changes at most (at least one generation; None: all of it), or
    a rebuild if the log no longer reaches back. Caught up when its generation is the
    catalog's; a slice never leaves part of a generation applied."""
    if index.generation == catalog.generation():
        return index
    delta = catalog.vector_delta(index.generation, max_changes)
    if delta is None:
        return rebuild(catalog, index.dim, policy)
    index.apply(delta)
    return index


def rebuild_reason(index: IndexShape, policy: IndexPolicy) -> str | None:
    """Why an index of this shape (one in memory, or a saved file's header) should be rebuilt
    for `policy`, or None while it still fits."""
    wanted = wanted_kind(index, policy)
    if wanted is not index.kind:
        return f"{index.count:,} vectors now call for a {wanted.value} index, not {index.kind.value}"
    if index.kind is not IndexKind.flat and drifted(index.trained_count, index.count, policy.thresholds):
        return f"the index was built for {index.trained_count:,} vectors and now holds {index.count:,}"
    positions = index.count + index.tombstones
    if index.tombstones and index.tombstones > TOMBSTONE_SHARE * positions:
        return f"{index.tombstones:,} of {positions:,} graph positions are removed images"
    return None


def wanted_kind(index: IndexShape, policy: IndexPolicy) -> IndexKind:
    """The kind `policy` picks for `index`'s count: a larger one as soon as the library
    outgrows this one, a smaller one only once it is `SHRINK_MARGIN` below the threshold."""
    wanted = policy.plan(index.count, index.dim).kind
    if KINDS_BY_SIZE.index(wanted) < KINDS_BY_SIZE.index(index.kind):
        return policy.plan(math.ceil(index.count * (1 + SHRINK_MARGIN)), index.dim).kind
    return wanted
