"""Ranking a library's images for query vectors, as every `Library` search does: the ids a
filter allows, one FAISS call for all the query rows (the search index held meanwhile), then
the hits named from the catalog; and, for a recommendation asked to vary, MMR over a larger
pool of candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pixsift.arguments import check_k, check_min_score
from pixsift.errors import QueryError
from pixsift.search.allowed import allowed_ids, filter_criteria
from pixsift.search.diversity import mmr_order
from pixsift.search.engine import fetch_size, hit_ids, nearest, ranked_hits, to_results
from pixsift.search.filters import SearchFilters
from pixsift.search.results import SearchResult

if TYPE_CHECKING:
    from pixsift.models import ModelRecord
    from pixsift.storage import Catalog
    from pixsift.storage.index_keeper import IndexKeeper
    from pixsift.storage.records import ImageCriteria

MMR_POOL_MIN = 50  # candidates MMR chooses from: enough variety beyond the top k
MMR_POOL_MAX = 1000


class Ranker:
    """Ranks the images of `catalog` through its search `index`; `model()` is the library's
    model record (it raises EmptyLibraryError for a library without a model yet)."""

    def __init__(self, catalog: Catalog, index: IndexKeeper, model: Callable[[], ModelRecord]) -> None:
        self._catalog = catalog
        self._index = index
        self._model = model

    def rank(
        self,
        queries: np.ndarray,
        k: int,
        filters: SearchFilters | None,
        excludes: Sequence[set[int]],
        min_score: float | None,
    ) -> list[list[SearchResult]]:
        """The top `k` results of each query row (one FAISS call), named from the catalog."""
        criteria = filter_criteria(filters)
        return self._named(self._hits(queries, k, criteria, excludes, min_score), criteria)

    def rank_diverse(
        self,
        query: np.ndarray,
        k: int,
        filters: SearchFilters | None,
        excluded: set[int],
        min_score: float | None,
        diversity: float,
    ) -> list[SearchResult]:
        """The `k` results for one query vector that MMR picks, with `diversity` from 0 (plain
        ranking) to 1, among the best candidates.

        MMR costs a pass over the pool for each pick, so it orders at most the first
        `MMR_POOL_MAX` results; with a larger k, the results after those follow by score.
        """
        # The pool is capped for speed, but never below k: that would return fewer than asked.
        pool = max(k, min(max(4 * k, MMR_POOL_MIN), MMR_POOL_MAX))
        criteria = filter_criteria(filters)
        hits = self._hits(query[None, :], pool, criteria, [excluded], min_score)[0]
        # With k <= MMR_POOL_MAX the pool holds at most MMR_POOL_MAX hits and nothing is left
        # over; beyond, reordering all k would cost k * k * dim (minutes for k = 100,000).
        candidates, rest = hits[:MMR_POOL_MAX], hits[MMR_POOL_MAX:]
        stored = self._catalog.vectors(image_id for _, image_id in candidates)
        candidates = [hit for hit in candidates if hit[1] in stored]
        if not candidates:
            return []
        relevance = np.array([score for score, _ in candidates], dtype=np.float32)
        vectors = np.stack([stored[i] for _, i in candidates])
        picked = [candidates[position] for position in mmr_order(relevance, vectors, k, diversity)]
        return self._named([picked + rest[: k - len(picked)]], criteria)[0]

    def _hits(
        self,
        queries: np.ndarray,
        k: int,
        criteria: Sequence[ImageCriteria],
        excludes: Sequence[set[int]],
        min_score: float | None,
    ) -> list[list[tuple[float, int]]]:
        check_k(k)
        check_min_score(min_score)
        allowed = allowed_ids(self._catalog, criteria)
        with self._index.current(self._model().embed_dim) as vectors:
            if queries.shape[1:] != (vectors.dim,):
                raise QueryError(
                    f"A query vector of shape {queries.shape[1:]} does not fit this library, whose "
                    f"model makes {vectors.dim}-dimensional vectors."
                )
            fetch = fetch_size(vectors, k, max(len(excluded) for excluded in excludes))
            exact_max = self._index.thresholds.exact_filter_max
            scores, ids = nearest(vectors, queries, fetch, allowed, self._catalog.vectors, exact_max)
        return [
            ranked_hits(row_scores, row_ids, exclude_ids=excluded, min_score=min_score)[:k]
            for row_scores, row_ids, excluded in zip(scores, ids, excludes, strict=True)
        ]

    def _named(
        self, hits_per_query: Sequence[Sequence[tuple[float, int]]], criteria: Sequence[ImageCriteria]
    ) -> list[list[SearchResult]]:
        """The hits as results, named from the catalog as it is now. With a filter, the same
        read checks it again: an index run may have moved an image out of the folder searched
        while FAISS ran, and the search must not return it under that filter."""
        return to_results(self._catalog.images(hit_ids(hits_per_query), criteria), hits_per_query)
