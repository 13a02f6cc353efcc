"""Memory of saving and loading a large search index file: the peak RSS of
`VectorIndex.save` and `VectorIndex.load` on a flat index of random vectors, each in a child
process of its own.

    python benchmarks/index_save_memory.py [--vectors 1000000] [--dim 512] [--baseline-src DIR]

A child builds a flat index of `--vectors` random unit vectors of `--dim` (added 50,000 at a
time, so that building it holds little more than the index), resets the kernel's high-water
mark of its RSS (`/proc/self/clear_refs`), saves the index to a temporary folder, and reports
its RSS before the save and its peak during it. Another child imports pixsift and FAISS,
resets the mark, loads that file, and reports the same. With `--baseline-src DIR` (another
pixsift `src` folder, say `git archive main src` unpacked), the same two children run that
code first, on its own file, so that the table sets the change beside what it replaces.
Each child is stopped after `--timeout` seconds. The table's `index MB` is the RSS the saving
child held before the save (the index and the interpreter); `peak MB` is the most it held
while saving or loading.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
CHUNK = 50_000


def rss_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Make VmHWM the current RSS (Linux 4.0 and later), so it measures what comes next."""
    Path("/proc/self/clear_refs").write_text("5")


def child_save(path: Path, vectors: int, dim: int) -> dict[str, Any]:
    import numpy as np

    from pixsift.storage.vector_index import VectorIndex

    index = VectorIndex.empty(dim, generation=1)
    rng = np.random.default_rng(0)
    for start in range(0, vectors, CHUNK):
        chunk = rng.standard_normal((min(CHUNK, vectors - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        index.add(np.arange(start, start + len(chunk), dtype=np.int64), chunk)
    del chunk
    before = rss_mb("VmRSS")
    reset_peak()
    started = time.perf_counter()
    index.save(path)
    seconds = time.perf_counter() - started
    return {"before_mb": before, "peak_mb": rss_mb("VmHWM"), "seconds": seconds}


def child_load(path: Path, vectors: int) -> dict[str, Any]:
    from pixsift.storage.vector_index import VectorIndex

    before = rss_mb("VmRSS")
    reset_peak()
    started = time.perf_counter()
    index = VectorIndex.load(path)
    seconds = time.perf_counter() - started
    if index is None or index.count != vectors:
        raise RuntimeError(f"{path} did not load back with {vectors} vectors")
    return {"before_mb": before, "peak_mb": rss_mb("VmHWM"), "seconds": seconds}


def run_child(src: Path, phase: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One phase in a fresh process running the pixsift of `src`."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        phase,
        "--child-src",
        str(src),
        "--child-path",
        str(path),
        "--vectors",
        str(args.vectors),
        "--dim",
        str(args.dim),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} with {src} exited {done.returncode}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(code: str, src: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    path = folder / f"{code}.faiss"
    saved = run_child(src, "save", path, args)
    loaded = run_child(src, "load", path, args)
    row = {
        "code": code,
        "vectors": args.vectors,
        "dim": args.dim,
        "file_mb": path.stat().st_size / 2**20,
        "index_mb": saved["before_mb"],
        "save_peak_mb": saved["peak_mb"],
        "save_s": saved["seconds"],
        "load_peak_mb": loaded["peak_mb"],
        "load_s": loaded["seconds"],
    }
    path.unlink()  # GBs: one file on disk at a time
    return row


def main() -> None:
    summary = " ".join(__doc__.split("\n\n")[0].split()) if __doc__ else None
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument("--vectors", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=512, help="their dimension")
    parser.add_argument("--baseline-src", type=Path, help="another pixsift src folder, measured first")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each child may run")
    parser.add_argument("--workdir", type=Path, help="folder for the index files")
    parser.add_argument("--child", choices=["save", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--child-src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vectors < 1 or args.dim < 1:
        parser.error(f"--vectors and --dim must be at least 1, not {args.vectors} and {args.dim}")
    if args.baseline_src and not (args.baseline_src / "pixsift").is_dir():
        parser.error(f"--baseline-src {args.baseline_src} holds no pixsift package")
    if args.child:
        sys.path.insert(0, str(args.child_src))
        if args.child == "save":
            result = child_save(args.child_path, args.vectors, args.dim)
        else:
            result = child_load(args.child_path, args.vectors)
        print(json.dumps(result))
        return

    codes = {"this": SRC}
    if args.baseline_src:
        codes = {"baseline": args.baseline_src.resolve(), **codes}
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)  # as the other benchmarks make theirs
    with tempfile.TemporaryDirectory(prefix="pixsift-savemem-", dir=args.workdir) as folder:
        rows = [measure(code, src, Path(folder), args) for code, src in codes.items()]

    print(
        f"\nA flat index of {args.vectors:,} random {args.dim}-d vectors saved and loaded, "
        f"each in its own process; {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(
        "| code | vectors | dim | file MB | index MB "
        "| save: peak RSS MB | save s | load: peak RSS MB | load s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['code']} | {row['vectors']:,} | {row['dim']} | {row['file_mb']:,.0f} "
            f"| {row['index_mb']:,.0f} | {row['save_peak_mb']:,.0f} | {row['save_s']:.2f} "
            f"| {row['load_peak_mb']:,.0f} | {row['load_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
