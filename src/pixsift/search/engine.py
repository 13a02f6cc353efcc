"""Ranking images for query vectors: FAISS finds the ids, the catalog names them.

The search is split in two so the caller can hold its index lock only around the FAISS part:
`nearest` asks the index, `to_results` turns ids into named, ranked results.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixsift.search.results import SearchResult
from pixsift.storage.index_choice import IndexKind
from pixsift.storage.rerank import VectorFetcher, rerank

# When at most this many times the results asked for may be returned (those a filter keeps,
# else all), they are ranked exactly if the approximate index came back short of them.
SHORT_FACTOR = 2

if TYPE_CHECKING:  # importing FAISS takes a while; only search time needs it
    from pixsift.storage.records import ImageInfo
    from pixsift.storage.vector_index import VectorIndex


def fetch_size(index: VectorIndex, k: int, excluded: int) -> int:
    """How many neighbours to ask FAISS for so that `k` remain after dropping `excluded` ids.

    A Python int whatever `k` was: FAISS refuses a numpy integer (a count read from an array).
    """
    return int(max(1, min(k + excluded, index.count)))


def nearest(
    index: VectorIndex,
    queries: np.ndarray,
    fetch: int,
    allowed: np.ndarray | None,
    stored: VectorFetcher,
    exact_filter_max: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-`fetch` (scores, ids) per query row, only among `allowed` ids when given.

    The restriction is applied inside FAISS, so it never leaves fewer results than exist.
    An approximate index's candidates are re-ranked with the `stored` vectors; and when a
    filter leaves at most `exact_filter_max` images, those are ranked exactly from their
    stored vectors, since a graph or a few IVF cells could miss them; so are the images that
    may be returned when they are about as few as are asked for and the index missed some.
    """
    from pixsift.storage.index_build import ann_search

    if allowed is not None and not len(allowed):
        empty = np.full((len(queries), 1), -1, dtype=np.int64)
        return np.zeros((len(queries), 1), dtype=np.float32), empty
    approximate = index.kind is not IndexKind.flat
    if allowed is not None and approximate and len(allowed) <= exact_filter_max:
        return _ranked_exactly(queries, allowed, stored, fetch)
    scores, ids = ann_search(index, queries, fetch, stored, allowed=allowed)
    # A graph searched through a filter, or past deleted images' tombstones, misses some of the
    # images it may return: harmless when they are many more than asked for, but asking for
    # about all of them came back short. Ranking them exactly then reads at most twice as many
    # vectors as were asked for.
    matching = index.count if allowed is None else len(allowed)
    if approximate and matching <= SHORT_FACTOR * fetch and _found_fewest(ids) < min(fetch, matching):
        return _ranked_exactly(queries, index.ids() if allowed is None else allowed, stored, fetch)
    return scores, ids


def _found_fewest(ids: np.ndarray) -> int:
    """The fewest results any query row got (FAISS pads a short row with id -1)."""
    return int((ids >= 0).sum(axis=1).min())


def _ranked_exactly(
    queries: np.ndarray, allowed: np.ndarray, stored: VectorFetcher, fetch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-`fetch` (scores, ids) per query among all `allowed` ids, from stored vectors."""
    candidates = np.broadcast_to(np.asarray(allowed, dtype=np.int64), (len(queries), len(allowed)))
    return rerank(queries, candidates, stored, fetch)


def ranked_hits(
    scores: np.ndarray, ids: np.ndarray, *, exclude_ids: Collection[int], min_score: float | None
) -> list[tuple[float, int]]:
    """One query's (score, id) pairs, best first, without misses, excluded ids or weak scores.
    Equal scores (copies of one photo) are ordered by id: FAISS leaves their order to its
    heap, so the same query could list them differently from one search path to another."""
    hits = [
        (float(score), int(image_id))
        for score, image_id in zip(scores, ids, strict=True)
        if image_id >= 0
        and int(image_id) not in exclude_ids
        and (min_score is None or float(score) >= min_score)
    ]
    return sorted(hits, key=lambda hit: (-hit[0], hit[1]))


def to_results(
    infos: Mapping[int, ImageInfo], hits_per_query: Sequence[Sequence[tuple[float, int]]]
) -> list[list[SearchResult]]:
    """Ranked results for each query's (score, id) pairs, named by `infos`: the catalog's
    records of the hits (`hit_ids`), read in one go after the search."""
    all_results: list[list[SearchResult]] = []
    for hits in hits_per_query:
        results: list[SearchResult] = []
        for score, image_id in hits:
            info = infos.get(image_id)
            if info is None:  # removed (or moved out of a filter) after this index snapshot was taken
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
        all_results.append(results)
    return all_results


def hit_ids(hits_per_query: Sequence[Sequence[tuple[float, int]]]) -> set[int]:
    """The ids of every hit of every query, to read their records at once."""
    return {image_id for hits in hits_per_query for _, image_id in hits}
