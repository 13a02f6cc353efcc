"""Exact re-ranking: approximate candidates scored again with the stored, full vectors.

A compressed (PQ) index ranks by approximate scores, good enough to find the right
neighbourhood but not the right order. Scoring its top candidates with the exact vectors
gives back nearly all of the recall lost to compression, for the price of reading a few
dozen vectors per query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

VectorFetcher = Callable[[Iterable[int]], dict[int, np.ndarray]]


def rerank(
    queries: np.ndarray, candidate_ids: np.ndarray, fetch: VectorFetcher, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top `k` (scores, ids) per query among its candidates, by exact inner product.

    Candidates are -1 where the index found fewer; a candidate whose vector is gone (removed
    since the index was caught up) is dropped. Rows are padded with id -1 like FAISS's.
    """
    wanted = np.unique(candidate_ids[candidate_ids >= 0])
    vectors = fetch(wanted.tolist())
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, candidates) in enumerate(zip(queries, candidate_ids, strict=True)):
        found = [int(i) for i in dict.fromkeys(candidates.tolist()) if i >= 0 and int(i) in vectors]
        if not found:
            continue
        exact = np.stack([vectors[i] for i in found]) @ np.asarray(query, dtype=np.float32)
        order = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(order)] = exact[order]
        ids[row, : len(order)] = np.asarray(found, dtype=np.int64)[order]
    return scores, ids
