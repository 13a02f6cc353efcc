"""Synthetic embeddings for tests and benchmarks: clustered on the unit sphere like real ones.

Real image embeddings are not uniform noise: pictures of the same kind of thing sit together,
kinds of things form broader topics, and every embedding shares a common direction. So each
vector here is a cluster centre plus gaussian noise, normalised, where the centres (a few
thousand) lean towards one of a few dozen topic directions and towards a direction all share.
Clusters then overlap, as real ones do: an index has to search several cells or graph regions
to find the true neighbours, not just the one nearest cluster. Queries drawn from the same
mixture with another seed lie near the data without being part of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK = 50_000
TOPICS = 64
COMMON_WEIGHT = 0.6  # how far every centre leans towards the direction all share
TOPIC_WEIGHT = 0.8  # how far a centre leans towards its topic


def _unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


def cluster_centres(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` unit centres, each between a shared direction, a topic and its own direction."""
    rng = np.random.default_rng(seed)
    common = _unit(rng.standard_normal(dim))
    topics = _unit(rng.standard_normal((TOPICS, dim)))
    own = _unit(rng.standard_normal((count, dim)))
    topic_of = rng.integers(0, TOPICS, size=count)
    return _unit(COMMON_WEIGHT * common + TOPIC_WEIGHT * topics[topic_of] + own)


def clustered_vectors(
    n: int, dim: int, *, clusters: int, seed: int, spread: float = 1.5, centre_seed: int = 0
) -> Iterator[np.ndarray]:
    """`n` unit vectors in chunks: each a random centre plus gaussian noise of norm ~`spread`.

    `centre_seed` fixes the clusters, `seed` the points: the same centres with another seed
    give queries from the same distribution.
    """
    centres = cluster_centres(clusters, dim, centre_seed)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        members = rng.integers(0, clusters, size=size)
        noise = rng.standard_normal((size, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        yield _unit(centres[members] + noise)
        done += size
