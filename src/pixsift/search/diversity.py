"""Diversifying results with maximal marginal relevance (Carbonell and Goldstein, 1998).

Each next result is the candidate that best balances relevance to the query against
similarity to the results already picked: argmax (1 - d) * sim(query, c) - d * max sim(c, s).
With d = 0 this is the plain ranking; as d grows, near-duplicates give way to variety.
"""

from __future__ import annotations

import numpy as np


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Positions of the `k` candidates to show, in order.

    `relevance[i]` is candidate i's similarity to the query, `vectors[i]` its unit vector.
    """
    count = len(relevance)
    if count == 0 or k < 1:
        return []
    vectors = np.asarray(vectors, dtype=np.float32)
    weight = 1.0 - diversity
    chosen: list[int] = []
    # The highest similarity of each candidate to anything chosen so far.
    redundancy = np.full(count, -np.inf, dtype=np.float32)
    available = np.ones(count, dtype=bool)
    for _ in range(min(k, count)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        marginal = weight * relevance - diversity * penalty
        marginal = np.where(available, marginal, -np.inf)
        best = int(np.argmax(marginal))
        chosen.append(best)
        available[best] = False
        # One row of similarities per pick, not the whole candidate-by-candidate table: that
        # table grows with the square of the pool (10 GB for a pool of 50,000).
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen
