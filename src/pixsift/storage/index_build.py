"""Building a search index from the catalog: choose, train, fill, then tune for recall.

The build streams the stored vectors once. While it does, it also computes the exact top 10
of a few hundred tuning queries (stored vectors of the collection, held out of the index until
tuning is done, and not counted as their own answers), so the search parameter (nprobe for
IVF-PQ, efSearch for HNSW) can then be set to the smallest value that reaches the recall
target, measured, not guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faiss
import numpy as np

from pixsift.errors import QueryError
from pixsift.storage.index_choice import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_RECALL_TARGET,
    HNSW_EF_CONSTRUCTION,
    RERANK_FACTOR,
    IndexKind,
    IndexPlan,
    IndexThresholds,
    choose_index,
)
from pixsift.storage.rerank import VectorFetcher, rerank
from pixsift.storage.vector_index import IndexMeta, VectorIndex

if TYPE_CHECKING:
    from pixsift.storage.catalog import Catalog

TUNING_QUERIES = 200
# Tuning measures recall on a few hundred queries: aim a little above the target so that the
# sampling error of that estimate does not leave real queries below it.
TUNING_MARGIN = 0.01
TUNE_K = 10
# Scores this close to the k-th exact one are ties (float32 sums in another order): copies.
TIE_TOLERANCE = 1e-5
IVFPQ_MIN_VECTORS = 256  # fewer cannot train a quantizer worth having
NPROBE_STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096)
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IndexPolicy:
    """How a library chooses its index: a forced kind or automatic, within a memory budget."""

    forced: IndexKind | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    thresholds: IndexThresholds = field(default_factory=IndexThresholds)
    recall_target: float = DEFAULT_RECALL_TARGET

    def plan(self, count: int, dim: int) -> IndexPlan:
        """The index for `count` vectors; IVF-PQ gives way to HNSW while too few to train it."""
        plan = choose_index(count, dim, self.memory_budget, self.thresholds, self.forced)
        if plan.kind is IndexKind.ivfpq and count < IVFPQ_MIN_VECTORS:
            return choose_index(count, dim, self.memory_budget, self.thresholds, IndexKind.hnsw)
        return plan

    def check(self, count: int) -> None:
        """Refuse a forced kind that cannot be built for `count` vectors."""
        if self.forced is IndexKind.ivfpq and count < IVFPQ_MIN_VECTORS:
            lead = (
                f"An IVF-PQ index needs at least {IVFPQ_MIN_VECTORS} images to train on; this "
                f"library has {count}. Use"
            )
            raise QueryError(
                f"{lead} index_type='auto', 'flat' or 'hnsw'.",
                command_line=f"{lead} --index-type auto, flat or hnsw.",
            )


def build_index(
    catalog: Catalog,
    dim: int,
    policy: IndexPolicy | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> VectorIndex:
    """A fresh index of every vector in the catalog, of the kind `policy` picks, tuned."""
    policy = policy or IndexPolicy()
    say = progress or (lambda _: None)
    # The generation is read before the vectors: changes that land in between are replayed
    # again on the next sync, which is harmless because replaying is idempotent.
    generation = catalog.generation()
    ids = catalog.embedded_ids()
    plan = policy.plan(len(ids), dim)
    index = _empty(plan, dim, generation)
    rng = np.random.default_rng(seed)
    if plan.kind is IndexKind.ivfpq:
        say(f"training IVF-PQ ({plan.nlist} cells, {plan.pq_m}x{plan.pq_bits}-bit codes)")
        _train(index, catalog, rng.choice(ids, size=min(plan.train_size, len(ids)), replace=False))
    tuning = _tuning_set(catalog, ids, rng) if plan.kind is not IndexKind.flat else None
    say(f"adding {len(ids):,} vectors")
    for chunk_ids, vectors in catalog.all_vectors():
        if tuning is None:
            index.add(chunk_ids, vectors)
            continue
        # The tuning queries are held out until tuning is done: a query that is itself in
        # the index is found through its own entry (its graph node, its cell), which makes
        # recall look better than new queries will see. So are their copies, for the same reason.
        held_out = tuning.take(chunk_ids, vectors)
        index.add(chunk_ids[~held_out], vectors[~held_out])
    meta = IndexMeta(plan=plan, trained_count=index.count)
    if tuning is not None and len(tuning.query_ids):
        say("tuning the search for recall")
        target = min(1.0, policy.recall_target + TUNING_MARGIN)
        param, recall = _tune(index, tuning, catalog.vectors, target, plan)
        index.add(*tuning.held_out())
        depth = RERANK_FACTOR if plan.kind is IndexKind.ivfpq else 0
        meta = IndexMeta(plan, index.count, param, recall, depth)
    index.meta = meta
    return index


def _empty(plan: IndexPlan, dim: int, generation: int) -> VectorIndex:
    if plan.kind is IndexKind.hnsw:
        graph = faiss.IndexHNSWFlat(dim, plan.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return VectorIndex(graph, generation, IndexMeta(plan=plan))
    if plan.kind is IndexKind.ivfpq:
        quantizer = faiss.IndexFlatIP(dim)
        metric = faiss.METRIC_INNER_PRODUCT
        ivf = faiss.IndexIVFPQ(quantizer, dim, plan.nlist, plan.pq_m, plan.pq_bits, metric)
        opq = faiss.OPQMatrix(dim, plan.pq_m)
        opq.verbose = False
        combined = faiss.IndexPreTransform(opq, ivf)
        return VectorIndex(combined, generation, IndexMeta(plan=plan))
    return VectorIndex.empty(dim, generation)


def _train(index: VectorIndex, catalog: Catalog, sample_ids: np.ndarray) -> None:
    """Train OPQ, the coarse quantizer and PQ on a sample of the stored vectors."""
    stored = catalog.vectors(sample_ids.tolist())
    sample = np.stack([stored[int(i)] for i in sample_ids if int(i) in stored]).astype(np.float32)
    index.train(sample)


@dataclass
class _TuningSet:
    """Queries (stored vectors) and their exact top-k, kept up to date chunk by chunk."""

    query_ids: np.ndarray
    queries: np.ndarray
    top_scores: np.ndarray
    top_ids: np.ndarray
    held: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def take(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Fold a chunk into the exact top-k; the mask of its vectors held out of the index
        while tuning: the queries and their copies (the same vector: the same photo twice)."""
        if not len(self.query_ids):  # too few vectors to hold any out
            return np.zeros(len(ids), dtype=bool)
        vectors = np.asarray(vectors, dtype=np.float32)
        scores = self.queries @ vectors.T
        own = np.einsum("ij,ij->i", self.queries, self.queries)[:, None]
        held = np.isin(ids, self.query_ids) | (scores >= own - TIE_TOLERANCE).any(axis=0)
        if held.any():
            self.held.append((ids[held], vectors[held]))
        scores[:, held] = -np.inf  # not in the index while tuning
        self._merge(ids, scores)
        return np.asarray(held, dtype=bool)

    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        """The (ids, vectors) held out, to add once tuning is done."""
        if not self.held:
            return np.empty(0, np.int64), np.empty((0, self.queries.shape[1]), np.float32)
        return np.concatenate([i for i, _ in self.held]), np.concatenate([v for _, v in self.held])

    def _merge(self, ids: np.ndarray, scores: np.ndarray) -> None:
        merged_scores = np.hstack([self.top_scores, scores])
        merged_ids = np.hstack([self.top_ids, np.broadcast_to(ids, scores.shape)])
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, : self.top_ids.shape[1]]
        self.top_scores = np.take_along_axis(merged_scores, keep, axis=1)
        self.top_ids = np.take_along_axis(merged_ids, keep, axis=1)


def _tuning_set(catalog: Catalog, ids: np.ndarray, rng: np.random.Generator) -> _TuningSet:
    # At most a tenth of the collection is held out, so what remains is still representative.
    chosen = rng.choice(ids, size=min(TUNING_QUERIES, len(ids) // 10), replace=False)
    stored = catalog.vectors(chosen.tolist())
    kept = np.array([i for i in chosen.tolist() if i in stored], dtype=np.int64)
    queries = np.stack([stored[i] for i in kept.tolist()]) if len(kept) else np.empty((0, 0), np.float32)
    k = min(TUNE_K, max(1, len(ids) - 1))
    return _TuningSet(
        kept,
        np.asarray(queries, dtype=np.float32),
        np.full((len(kept), k), -np.inf, dtype=np.float32),
        np.full((len(kept), k), -1, dtype=np.int64),
    )


def _tune(
    index: VectorIndex, tuning: _TuningSet, fetch: VectorFetcher, target: float, plan: IndexPlan
) -> tuple[int, float]:
    """The smallest search parameter whose recall@k reaches `target` (else the best tried)."""
    if plan.kind is IndexKind.ivfpq:
        steps = [s for s in NPROBE_STEPS if s < plan.nlist] + [plan.nlist]
    else:
        steps = list(EF_STEPS)
    best = (steps[-1], 0.0)
    for step in steps:
        recall = measure_recall(index, tuning, fetch, step)
        if recall > best[1]:
            best = (step, recall)
        if recall >= target:
            return step, recall
    return best


def ann_search(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    fetch: VectorFetcher,
    *,
    allowed: np.ndarray | None = None,
    search_param: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` (scores, ids): the index's own for an exact kind; for a compressed one,
    `RERANK_FACTOR` times as many candidates re-ranked with the stored vectors."""
    if index.exact:
        return index.search(queries, k, allowed, search_param=search_param)
    depth = min(max(k, k * (index.meta.rerank or RERANK_FACTOR)), max(index.count, 1))
    _, candidates = index.search(queries, depth, allowed, search_param=search_param)
    return rerank(queries, candidates, fetch, k)


def measure_recall(index: VectorIndex, tuning: _TuningSet, fetch: VectorFetcher, search_param: int) -> float:
    """Mean recall@k of `index` against the tuning queries' exact top k (each query's own id
    left out).

    A result scoring as high as the k-th exact one counts as found even when its id is not
    among them: copies of one photo (a folder indexed twice, a backup beside the originals)
    have the same vector, and which of them make the cut is arbitrary. Counting them as
    misses held recall near 0.9 on a library of copies, so tuning ran to its largest
    efSearch or nprobe, making every search many times slower than it needed to be.
    """
    k = tuning.top_ids.shape[1]
    scores, found = ann_search(index, tuning.queries, k + 1, fetch, search_param=search_param)
    hits = 0
    wanted = 0
    for row, own in enumerate(tuning.query_ids.tolist()):
        known = tuning.top_ids[row] >= 0
        expected = {int(i) for i in tuning.top_ids[row][known]}
        if not expected:
            continue
        bar = float(tuning.top_scores[row][known].min()) - TIE_TOLERANCE
        got = [
            (float(score), int(i))
            for score, i in zip(scores[row], found[row], strict=True)
            if i >= 0 and int(i) != own
        ][:k]
        hits += min(len(expected), sum(1 for score, i in got if i in expected or score >= bar))
        wanted += len(expected)
    return hits / wanted if wanted else 1.0
