"""Ranking images for a query vector: FAISS finds the ids, the catalog names them."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixsift.search.results import SearchResult
from pixsift.storage.catalog import Catalog

if TYPE_CHECKING:  # importing FAISS takes a while; only search time needs it
    from pixsift.storage.vector_index import VectorIndex


def search_vector(
    catalog: Catalog,
    index: VectorIndex,
    query: np.ndarray,
    *,
    k: int,
    min_score: float | None = None,
    under: str | None = None,
    exclude_ids: Collection[int] = (),
) -> list[SearchResult]:
    """The `k` images nearest to `query`, best first.

    `under` keeps only images inside that folder; the restriction is applied inside FAISS, so
    it never leaves fewer than `k` results while more matching images exist.
    """
    allowed = catalog.ids_under(under) if under is not None else None
    if allowed is not None and not len(allowed):
        return []
    fetch = min(k + len(exclude_ids), max(index.count, 1))
    scores, ids = index.search(query.reshape(1, -1), fetch, allowed)
    hits = [
        (float(score), int(image_id))
        for score, image_id in zip(scores[0], ids[0], strict=True)
        if image_id >= 0 and int(image_id) not in exclude_ids
    ]
    if min_score is not None:
        hits = [(score, image_id) for score, image_id in hits if score >= min_score]
    hits = hits[:k]
    infos = catalog.images(image_id for _, image_id in hits)
    results: list[SearchResult] = []
    for score, image_id in hits:
        info = infos.get(image_id)
        if info is None:  # removed from the catalog after this index snapshot was taken
            continue
        results.append(
            SearchResult(
                rank=len(results) + 1,
                score=score,
                id=image_id,
                path=Path(info.path),
                width=info.width,
                height=info.height,
                format=info.format,
            )
        )
    return results
