"""Synthetic embeddings for tests and benchmarks: clustered on the unit sphere like real ones.

Real image embeddings are not uniform noise: pictures of the same kind of thing sit together.
A mixture of gaussian clusters around random unit centres, normalised, has that shape, and an
index that does well on it has to find the right cluster, then the right points in it. Queries
drawn from the same mixture with another seed lie near the data without being part of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK = 50_000


def cluster_centres(count: int, dim: int, seed: int) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return np.asarray(centres / np.linalg.norm(centres, axis=1, keepdims=True), dtype=np.float32)


def clustered_vectors(
    n: int, dim: int, *, clusters: int, seed: int, spread: float = 1.0, centre_seed: int = 0
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
        points = centres[members] + noise
        yield np.asarray(points / np.linalg.norm(points, axis=1, keepdims=True), dtype=np.float32)
        done += size
