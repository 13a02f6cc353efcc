"""What deleting one image costs a large library: the delete, the next search, the bytes written.

    python benchmarks/delete_cost.py [--images 100000] [--deletes 5] [--index-type flat]
                                     [--workdir DIR] [--json FILE]

A library of `--images` random 512-d unit vectors is written once through the storage layer
(the catalog's bulk write path, no image files: deleting and searching never open them), with
its search index kind set to `--index-type`, and kept in `--workdir` so later runs reuse it
(each run deletes from a fresh copy). Then:
  - warm: one process that has searched once (the index in memory, as in `pixsift serve`)
    deletes `--deletes` images one at a time, each followed by a search;
  - cold: for each of `--deletes` more images, a fresh process deletes it, and another fresh
    process then runs one search (as an application deleting through the Python API, then a
    cold `pixsift search`, would).
For each step it reports the median seconds of the call, whether it rewrote the index file,
and the bytes the process wrote (`wchar` of /proc/self/io: the index file, SQLite and its WAL).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 512
CHUNK = 10_000
READY = "ready"


def library_for(workdir: Path, images: int, kind: str) -> Path:
    """A filled library of `images` vectors whose index is of `kind`, filled once."""
    from pixsift.models.spec import ModelRecord, ModelSpec
    from pixsift.storage import Catalog
    from pixsift.storage.index_lifecycle import INDEX_TYPE_KEY

    folder = workdir / f"delete-cost-{images}-{kind}"
    if (folder / READY).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            batch.set_model(ModelRecord(ModelSpec("synthetic-512", "none"), DIM, "0" * 64))
            batch.set_setting(INDEX_TYPE_KEY, kind)
        for start in range(0, images, CHUNK):
            vectors = rng.standard_normal((min(CHUNK, images - start), DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            paths = [f"/synthetic/{start + i:07d}.jpg" for i in range(len(vectors))]
            with catalog.write() as batch:
                batch.add_embedded_images(paths, vectors, width=640, height=480, format="JPEG")
    finally:
        catalog.close()
    from pixsift.library import Library

    with Library.open(folder) as library:  # build and save the index once
        library.search_vector(_query(), 10)
    (folder / READY).write_text(f"{images}\n")
    return folder


def _query() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(DIM).astype(np.float32)


def _written() -> int:
    """Bytes this process has passed to write() so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def _file_state(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def step(library: Any, action: str, image_id: int) -> dict[str, Any]:
    """Run one delete or search on an open library and say what it cost."""
    index_file = library.index_path
    before, written = _file_state(index_file), _written()
    started = time.perf_counter()
    if action == "delete":
        library.delete(image_id)
    else:
        library.search_vector(_query(), 10)
    return {
        "action": action,
        "seconds": time.perf_counter() - started,
        "rewrote_index": _file_state(index_file) != before,
        "bytes_written": _written() - written,
    }


def child(folder: Path, action: str, image_id: int) -> None:
    from pixsift.library import Library

    with Library.open(folder, create=False) as library:
        print(json.dumps(step(library, action, image_id)))


def in_child(folder: Path, action: str, image_id: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", action, "--library", str(folder), "--id", str(image_id)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def summary(label: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "step": label,
        "median_s": statistics.median(s["seconds"] for s in steps),
        "rewrites": sum(s["rewrote_index"] for s in steps),
        "of": len(steps),
        "median_bytes_written": statistics.median(s["bytes_written"] for s in steps),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pixsift.library import Library

    source = library_for(args.workdir, args.images, args.index_type)
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        folder = Path(scratch) / "library"
        shutil.copytree(source, folder)
        warm_deletes, warm_searches = [], []
        with Library.open(folder, create=False) as library:
            library.search_vector(_query(), 10)  # the index in memory, as a server holds it
            for image_id in range(1, args.deletes + 1):
                warm_deletes.append(step(library, "delete", image_id))
                warm_searches.append(step(library, "search", 0))
        cold_deletes, cold_searches = [], []
        for image_id in range(args.deletes + 1, 2 * args.deletes + 1):
            cold_deletes.append(in_child(folder, "delete", image_id))
            cold_searches.append(in_child(folder, "search", 0))
        index_bytes = (folder / "vectors.faiss").stat().st_size
    rows = [
        summary("warm delete", warm_deletes),
        summary("warm search after it", warm_searches),
        summary("cold delete", cold_deletes),
        summary("cold search after it", cold_searches),
    ]
    for row in rows:
        row.update(images=args.images, index_type=args.index_type, index_file_bytes=index_bytes)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{rows[0]['images']:,} vectors, {rows[0]['index_type']} index file of "
        f"{rows[0]['index_file_bytes'] / 1e6:.0f} MB",
        f"{'step':<24}{'median':>10}{'rewrites':>10}{'bytes written (median)':>26}",
    ]
    for row in rows:
        rewrites = f"{row['rewrites']}/{row['of']}"
        lines.append(
            f"{row['step']:<24}{row['median_s'] * 1000:>8.0f}ms{rewrites:>10}"
            f"{row['median_bytes_written'] / 1e6:>24.3f}MB"
        )
    return "\n".join(lines)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--deletes", type=int, default=5)
    # Any case, as `pixsift --index-type HNSW` takes it.
    parser.add_argument("--index-type", type=str.lower, default="flat", choices=["flat", "hnsw", "ivfpq"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pixsift-bench")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["delete", "search"], help=argparse.SUPPRESS)
    parser.add_argument("--library", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.library, args.child, args.id)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
