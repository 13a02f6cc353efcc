"""How long searches wait while the search index catches up with a long change log.

    python benchmarks/catch_up_stall.py [--base 50000] [--delta 50000] [--searchers 2]
                                        [--workdir DIR] [--baseline-src OTHER/src]

1. A library of `--base` seeded 512-d vectors clustered like real embeddings (filled through
   the storage layer as benchmarks/ann.py fills its libraries), its search index built (HNSW
   at this size) and saved; made once in `--workdir`, and copied afresh for each code measured.
2. In a process of its own, each code opens the copy and searches once (the index is in
   memory, as in a server), then `--delta` more vectors are committed to the catalog through
   another connection in commits of 256, as a `pixsift index` run in another process commits
   a batch at a time while the server gets no searches.
3. One search is sent: it has the whole delta to catch up. From 0.2 s later (it holds the
   index by then), `--searchers` threads search, one query after another, until it has answered.
Printed per code: the seconds the catching-up search took, and the searches answered
meanwhile by the other threads: how many, and the median, 99th percentile and worst
milliseconds. With `--baseline-src`, the code in that folder (another checkout's src) is
measured first, the same way, on its own copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
SRC = BENCHMARKS.parent / "src"
DIM = 512
CLUSTERS = 4_000
COMMIT = 256  # images per commit, about what an index run commits at a time
DELTA_SEED, QUERY_SEED = 11, 12
K = 10
LEAD_S = 0.2


def prepared(workdir: Path, base: int) -> Path:
    """A library of `base` vectors with its index saved at the catalog's generation; made once."""
    from ann import filled_library
    from pixsift import Library
    from pixsift.models.spec import ModelRecord, ModelSpec

    folder = workdir / f"catch-up-{base}"
    if (folder / "vectors.faiss").is_file():
        return folder
    filled_library(folder, base, ModelRecord(ModelSpec("synthetic", "none"), DIM, "0" * 64))
    started = time.perf_counter()
    with Library.open(folder, create=False) as library:
        library.search_vector(_queries(1)[0], k=K)  # builds the index and saves it
        kind = library.index_summary().kind
    took = time.perf_counter() - started
    print(f"built a {kind} index of {base:,} vectors in {took:.0f} s", file=sys.stderr)
    return folder


def _queries(count: int) -> np.ndarray:
    from pixsift.synthetic.vectors import clustered_vectors

    return next(clustered_vectors(count, DIM, clusters=CLUSTERS, seed=QUERY_SEED))


def measure(folder: Path, delta: int, searchers: int) -> dict[str, float]:
    """Step 2 and 3 on `folder`, in this process, with the pixsift on its path."""
    from pixsift import Library
    from pixsift.storage import Catalog
    from pixsift.synthetic.vectors import clustered_vectors

    queries = _queries(200)
    library = Library.open(folder, create=False)
    library.search_vector(queries[0], k=K)  # the index is in memory
    writer = Catalog.open(folder / "library.db")
    for n, chunk in enumerate(clustered_vectors(delta, DIM, clusters=CLUSTERS, seed=DELTA_SEED)):
        for start in range(0, len(chunk), COMMIT):
            part = chunk[start : start + COMMIT]
            paths = [f"/synthetic/delta/{n}-{start + i:06d}.jpg" for i in range(len(part))]
            with writer.write() as batch:
                batch.add_embedded_images(paths, part, width=640, height=480, format="JPEG")
    writer.close()

    done = threading.Event()
    waits: list[float] = []

    def search_meanwhile(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not done.is_set():
            started = time.perf_counter()
            library.search_vector(queries[int(rng.integers(len(queries)))], k=K)
            waits.append(time.perf_counter() - started)

    threads = [threading.Thread(target=search_meanwhile, args=(n,)) for n in range(searchers)]
    started = time.perf_counter()
    catching = threading.Thread(target=lambda: library.search_vector(queries[1], k=K))
    catching.start()
    # Time for it to take the index's lock first (milliseconds; its catch-up takes seconds), so
    # that the search catching up is this one, and the threads' searches come meanwhile.
    time.sleep(LEAD_S)
    for thread in threads:
        thread.start()
    catching.join()
    caught_up = time.perf_counter() - started
    done.set()
    for thread in threads:
        thread.join()
    library.close()
    if not waits:  # the catch-up was over before another search was answered
        return {"catch_up_s": caught_up, "searches": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p99, worst = np.percentile(np.array(waits) * 1000, [50, 99, 100])
    return {"catch_up_s": caught_up, "searches": len(waits), "p50_ms": p50, "p99_ms": p99, "max_ms": worst}


def run_code(src: Path, library: Path, args: argparse.Namespace) -> dict[str, float]:
    """`measure` in a process running the pixsift in `src`, on a fresh copy of `library`."""
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        copy = Path(scratch) / "library"
        shutil.copytree(library, copy)
        command = [sys.executable, __file__, "--measure", str(copy), "--delta", str(args.delta)]
        command += ["--searchers", str(args.searchers)]
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=int, default=50_000, help="vectors in the saved index")
    parser.add_argument("--delta", type=int, default=50_000, help="vectors added before the catch-up")
    parser.add_argument("--searchers", type=int, default=2, help="threads searching meanwhile")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pixsift-bench")
    parser.add_argument("--baseline-src", type=Path, help="also measure the code in this src folder, first")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if min(args.base, args.delta, args.searchers) < 1:
        parser.error("--base, --delta and --searchers must be at least 1")
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.delta, args.searchers)))
        return
    if args.baseline_src and not (args.baseline_src / "pixsift").is_dir():
        parser.error(f"--baseline-src {args.baseline_src} holds no pixsift package")
    args.workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(BENCHMARKS))
    library = prepared(args.workdir, args.base)
    codes = {"baseline": args.baseline_src, "this": SRC} if args.baseline_src else {"this": SRC}
    print(f"{args.base:,} vectors indexed, {args.delta:,} added, {args.searchers} threads searching")
    print(f"{'code':<10}{'catch-up s':>12}{'searches':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, src in codes.items():
        row = run_code(src, library, args)
        print(
            f"{name:<10}{row['catch_up_s']:>12.1f}{row['searches']:>10.0f}{row['p50_ms']:>10.1f}"
            f"{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
