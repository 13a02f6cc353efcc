"""Recommendations from examples: Rocchio's relevance-feedback formula on CLIP vectors.

The query is the centroid of what the user liked minus a smaller share of the centroid of
what they did not, normalised: q = b * mean(positive) - c * mean(negative). With unit vectors
that is the direction "like these, unlike those", searched like any other query. The default
weights keep Rocchio's classic ratio (negatives count for about a quarter of positives), so
one disliked image steers the results without overwhelming what was liked.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _mean(vectors: np.ndarray, scale: Sequence[float] | None) -> np.ndarray:
    """The mean of the unit rows, each first multiplied by its `scale` (default 1)."""
    rows = _unit_rows(vectors)
    if scale is not None:
        rows = rows * np.asarray(scale, dtype=np.float32)[:, None]
    return np.asarray(rows.mean(axis=0))


def rocchio(
    positive: np.ndarray,
    negative: np.ndarray | None = None,
    weights: RocchioWeights | None = None,
    *,
    scales: tuple[Sequence[float], Sequence[float]] | None = None,
) -> np.ndarray:
    """The unit query vector for positive and negative example vectors (one per row).

    `scales` weighs each example within its side (one number per row of `positive` and of
    `negative`): an example of scale 2 counts as much as two of scale 1.
    """
    weights = weights or RocchioWeights()
    if not len(positive):
        raise QueryError("A recommendation needs at least one positive example.")
    positive_scale, negative_scale = scales or (None, None)
    query = weights.positive * _mean(positive, positive_scale)
    if negative is not None and len(negative):
        query = query - weights.negative * _mean(negative, negative_scale)
    length = float(np.linalg.norm(query))
    if length < 1e-6:
        raise QueryError("The positive and negative examples cancel each other out.")
    return np.asarray(query / length, dtype=np.float32)
