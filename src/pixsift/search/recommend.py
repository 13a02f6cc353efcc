"""Recommendations from examples: Rocchio's relevance-feedback formula on CLIP vectors.

The query is the centroid of what the user liked minus a smaller share of the centroid of
what they did not, normalised: q = b * mean(positive) - c * mean(negative). With unit vectors
that is the direction "like these, unlike those", searched like any other query. The default
weights keep Rocchio's classic ratio (negatives count for about a quarter of positives), so
one disliked image steers the results without overwhelming what was liked.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pixsift.errors import QueryError
from pixsift.search.finite import is_finite, shown


@dataclass(frozen=True)
class RocchioWeights:
    """How much the mean of the positive examples counts (above 0), and how much the mean of
    the negative ones is taken away (0 or more)."""

    positive: float = 1.0
    negative: float = 0.25

    def __post_init__(self) -> None:
        # A NaN would make every score NaN, and so return nothing without a word; a positive
        # weight of 0 or less would rank what was liked last, or what was disliked first.
        _check_weight("positive", self.positive, lowest_allowed=False)
        _check_weight("negative", self.negative, lowest_allowed=True)


def _check_weight(name: str, value: object, *, lowest_allowed: bool) -> None:
    """Refuse a weight that is not a finite number above 0 (or, where allowed, 0 itself)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and is_finite(value):
        weight = float(value)
        if weight > 0 or (lowest_allowed and weight == 0):
            return
    lowest = "0 or more" if lowest_allowed else "above 0"
    raise QueryError(f"The Rocchio weight {name} must be a number {lowest}, not {shown(value)}.")


def checked_weights(weights: object) -> RocchioWeights:
    """`weights` if it is a RocchioWeights (None: the default); QueryError otherwise, rather
    than an AttributeError from inside the formula for a tuple of two numbers, say."""
    if weights is None:
        return RocchioWeights()
    if not isinstance(weights, RocchioWeights):
        raise QueryError(
            "weights must be a pixsift.RocchioWeights, such as RocchioWeights(positive=1.0, "
            f"negative=0.5), not {type(weights).__name__}."
        )
    return weights


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
