"""Recommendations from examples: Rocchio's relevance-feedback formula on CLIP vectors.

The query is the centroid of what the user liked minus a smaller share of the centroid of
what they did not, normalised: q = b * mean(positive) - c * mean(negative). With unit vectors
that is the direction "like these, unlike those", searched like any other query. The default
weights keep Rocchio's classic ratio (negatives count for about a quarter of positives), so
one disliked image steers the results without overwhelming what was liked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixsift.errors import QueryError


@dataclass(frozen=True)
class RocchioWeights:
    positive: float = 1.0
    negative: float = 0.25


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def rocchio(
    positive: np.ndarray, negative: np.ndarray | None = None, weights: RocchioWeights | None = None
) -> np.ndarray:
    """The unit query vector for positive and negative example vectors (one per row)."""
    weights = weights or RocchioWeights()
    if not len(positive):
        raise QueryError("A recommendation needs at least one positive example.")
    query = weights.positive * _unit_rows(positive).mean(axis=0)
    if negative is not None and len(negative):
        query = query - weights.negative * _unit_rows(negative).mean(axis=0)
    length = float(np.linalg.norm(query))
    if length < 1e-6:
        raise QueryError("The positive and negative examples cancel each other out.")
    return np.asarray(query / length, dtype=np.float32)
