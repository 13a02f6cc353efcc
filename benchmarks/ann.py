"""The search index at scale: each index kind on 100k and 1M synthetic 512-d vectors.

    python benchmarks/ann.py [--sizes 100000 1000000] [--workdir DIR] [--json FILE]

For each size, a library is filled once through pixsift's storage layer (the catalog's bulk
write path, no images) with seeded vectors clustered on the sphere like real embeddings (a
mixture of gaussian clusters), and kept in `--workdir` so later runs reuse it. Then for each
index kind, side by side in one run:
  - build time: a full build as the library does it (for IVF-PQ: OPQ, coarse quantizer and PQ
    trained on a sample, every vector added, nprobe tuned for recall@10 >= 0.95 on held-out
    sample queries; for HNSW: the graph built, efSearch tuned the same way);
  - memory: the index's bytes per vector (its serialised size, which is what it holds);
  - latency p50/p99 of single queries (batch 1) through the library's search path: the index,
    plus exact re-ranking of IVF-PQ candidates from the stored vectors in SQLite;
  - recall@10 against the flat index's exact answers, on queries drawn from the same mixture
    (near the data, not part of it).
HNSW over a million 512-d vectors needs more memory than the default budget and a build far
longer than this benchmark's bound on two cores: it runs only on sizes up to `--hnsw-max`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.search.engine import nearest
from pixsift.storage import Catalog
from pixsift.storage.index_build import IndexPolicy, build_index
from pixsift.storage.index_choice import IndexKind, IndexThresholds, flat_bytes
from pixsift.storage.vector_index import VectorIndex
from pixsift.synthetic.vectors import clustered_vectors

DIM = 512
CLUSTERS = 4_000
DATA_SEED = 1
QUERY_SEED = 2
K = 10
READY = "ready"  # marker written once a library is completely filled
DATA_VERSION = 2  # in the folder name: a change to the generator must not reuse old data


def library_for(workdir: Path, size: int) -> Path:
    """The folder of a filled library of `size` vectors, filling it if not done before."""
    record = ModelRecord(ModelSpec("synthetic-512", "none"), DIM, "0" * 64)
    return filled_library(workdir / f"library-{size}-v{DATA_VERSION}", size, record)


def filled_library(folder: Path, size: int, record: ModelRecord) -> Path:
    """`folder`, holding a `library.db` of `size` seeded vectors made (as its catalog says) by
    `record`'s model, which must make `DIM`-d vectors; filled unless done before."""
    if (folder / READY).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "library.db").unlink(missing_ok=True)
    catalog = Catalog.open(folder / "library.db")
    started = time.perf_counter()
    try:
        with catalog.write() as batch:
            batch.set_model(record)
        for n, chunk in enumerate(clustered_vectors(size, DIM, clusters=CLUSTERS, seed=DATA_SEED)):
            paths = [f"/synthetic/{n:04d}/{i:05d}.jpg" for i in range(len(chunk))]
            with catalog.write() as batch:
                batch.add_embedded_images(paths, chunk, width=640, height=480, format="JPEG")
        with catalog.write() as batch:
            batch.truncate_vector_log(catalog.generation())
    finally:
        catalog.close()
    (folder / READY).write_text(f"{size}\n")
    print(f"filled {folder} with {size:,} vectors in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder


def measure(
    catalog: Catalog, index: VectorIndex, queries: np.ndarray, truth: np.ndarray, warmup: int
) -> tuple[float, float, float]:
    """p50 and p99 milliseconds of one query at a time, and recall@10 against `truth`."""
    thresholds = IndexThresholds()
    for query in queries[:warmup]:
        nearest(index, query[None, :], K, None, catalog.vectors, thresholds.exact_filter_max)
    times = []
    hits = 0
    for row, query in enumerate(queries):
        started = time.perf_counter()
        _, ids = nearest(index, query[None, :], K, None, catalog.vectors, thresholds.exact_filter_max)
        times.append(time.perf_counter() - started)
        hits += len(set(ids[0].tolist()) & set(truth[row].tolist()))
    p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
    return float(p50), float(p99), hits / truth.size


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    queries = next(clustered_vectors(args.queries, DIM, clusters=CLUSTERS, seed=QUERY_SEED))
    for size in args.sizes:
        catalog = Catalog.open(library_for(args.workdir, size) / "library.db")
        try:
            truth: np.ndarray | None = None
            for kind in (IndexKind.flat, IndexKind.hnsw, IndexKind.ivfpq):
                if kind is IndexKind.hnsw and size > args.hnsw_max:
                    print(f"{size:,} hnsw: skipped (above --hnsw-max {args.hnsw_max:,})", file=sys.stderr)
                    continue
                started = time.perf_counter()
                label = f"{size:,} {kind.value}"

                def say(step: str, label: str = label, started: float = started) -> None:
                    print(f"{label}: {time.perf_counter() - started:6.1f} s  {step}", file=sys.stderr)

                index = build_index(catalog, DIM, IndexPolicy(forced=kind), progress=say)
                build_s = time.perf_counter() - started
                if truth is None:  # flat comes first: its answers are exact
                    truth = index.search(queries, K)[1]
                p50, p99, recall = measure(catalog, index, queries, truth, args.warmup)
                row = {
                    "vectors": size,
                    "index": kind.value,
                    "build_s": round(build_s, 1),
                    "bytes_per_vector": round(index.memory_bytes() / index.count, 1),
                    "memory_vs_flat": round(index.memory_bytes() / flat_bytes(index.count, DIM), 3),
                    "search_param": index.meta.search_param or None,
                    "p50_ms": round(p50, 2),
                    "p99_ms": round(p99, 2),
                    "recall_at_10": round(recall, 3),
                    "tuned_recall": None if index.meta.recall is None else round(index.meta.recall, 3),
                }
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
                del index
        finally:
            catalog.close()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| vectors | index | build s | bytes/vector | memory / flat | nprobe or efSearch "
        "| p50 ms | p99 ms | recall@10 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['vectors']:,} | {r['index']} | {r['build_s']} | {r['bytes_per_vector']} | "
            f"{r['memory_vs_flat']} | {r['search_param'] or '-'} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['recall_at_10']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixsift-ann-bench"))
    parser.add_argument("--queries", type=int, default=500, help="queries timed per index")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="largest size to build HNSW for")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {faiss.omp_get_max_threads()} FAISS threads, faiss {faiss.__version__}, "
        f"{DIM}-d, {CLUSTERS} clusters, k={K}",
        file=sys.stderr,
    )
    rows = run(args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
