"""Cold commands on big libraries: one search (and status) in a fresh process, at 100k and 1M images.

    python benchmarks/cold_search_scale.py [--sizes 100000 1000000] [--runs 5] [--json FILE]
        [--model-work DIR] [--baseline-src OTHER/src]

A user with a big catalogue runs `pixsift search "..."` (or a program's first search) in a new
process: imports, the text tower, the saved search index read from disk, the search, the
results named from the catalog. This times that, end to end, on libraries of synthetic 512-d
vectors filled as `ann.py` fills them (kept in `--workdir` for later runs), in the state a
user has after `pixsift index`: the index kind the library chooses for its size (HNSW at
100k, IVF-PQ at 1M) built, tuned and saved in `vectors.faiss` at the catalog's generation.

The catalog's model is ViT-B-32 with seeded random weights (512-d, as the vectors are): its
checkpoint and ONNX export are made once in `--model-work` (`index_throughput.py` makes the
same; give its `--work` folder to reuse them). Each timed command is a fresh process, median
of `--runs`, after one untimed run that warms the page cache (a search right after an index
run finds the file cached too):
  - `pixsift search TEXT` (the CLI's quick path);
  - `pixsift status`;
  - a Python program's first `Library.open(...).search(TEXT)` and `.similar(image_id)`.
With `--baseline-src`, the same commands of the code in that folder run interleaved with these,
each on its own copy of the library (made once; a newer schema would be refused by the older
code), or on the same one with `--same-library`, so the two can be compared side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss

from pixsift.models.spec import ModelRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann import DIM, READY, filled_library

QUERY = "a red bicycle leaning on a wall"
API_SEARCH = (
    "import sys; from pixsift import Library\n"
    "with Library.open(sys.argv[1], create=False, device='cpu') as lib:\n"
    "    print(len(lib.search(sys.argv[2], 10)))\n"
)
API_SIMILAR = (
    "import sys; from pixsift import Library\n"
    "with Library.open(sys.argv[1], create=False, device='cpu') as lib:\n"
    "    print(len(lib.similar(int(sys.argv[2]), 10)))\n"
)


def model_record(model_work: Path) -> ModelRecord:
    """ViT-B-32's record for the seeded random checkpoint in `model_work`, exported to ONNX in
    its `cache` (both made on first use, as a first `pixsift index` would export)."""
    from pixsift.models.loading import load_embedder
    from pixsift.models.naming import resolve_model_spec
    from pixsift.models.onnx_export import read_export

    os.environ["PIXSIFT_CACHE_DIR"] = str(model_work / "cache")
    checkpoint = model_work / "vit-b-32-random.pt"
    if not checkpoint.is_file():
        from serve_load import random_checkpoint

        model_work.mkdir(parents=True, exist_ok=True)
        random_checkpoint("ViT-B-32", checkpoint)
    spec = resolve_model_spec("ViT-B-32", str(checkpoint))
    export = read_export(spec)
    if export is None:
        load_embedder(spec, "cpu", "auto")  # exports both towers, checking them
        export = read_export(spec)
    assert export is not None and export.record.embed_dim == DIM
    return export.record


def user_library(workdir: Path, size: int, model_work: Path) -> Path:
    """A library of `size` vectors with its search index chosen, built and saved."""
    from pixsift import Library

    folder = filled_library(workdir / f"cold-library-{size}", size, model_record(model_work))
    if not (folder / "vectors.faiss").is_file():
        started = time.perf_counter()
        with Library.open(folder, create=False) as library:
            summary = library.rebuild_index()  # the kind the library chooses, as an index run does
        print(f"built {summary} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder


def baseline_copy(library: Path) -> Path:
    """A copy of `library` for the baseline code to use, made once: code of another schema
    version migrates a library as it opens it, and the older code then refuses it."""
    copy = library.with_name(f"{library.name}-baseline")
    if not (copy / READY).is_file():
        copy.mkdir(exist_ok=True)
        for name in ("library.db", "vectors.faiss"):
            shutil.copy2(library / name, copy / name)
        (copy / READY).write_text((library / READY).read_text())
    return copy


def commands(library: Path, size: int) -> dict[str, list[str]]:
    py = [sys.executable]
    middle = str(size // 2)
    return {
        "pixsift search": [*py, "-m", "pixsift", "search", QUERY, "--library", str(library), "--device=cpu"],
        "pixsift status": [*py, "-m", "pixsift", "status", "--library", str(library)],
        "API first search": [*py, "-c", API_SEARCH, str(library), QUERY],
        "API first similar(id)": [*py, "-c", API_SIMILAR, str(library), middle],
    }


def evict(library: Path) -> None:
    """Drop the library's files from the page cache (theirs alone), as after a reboot."""
    for path in library.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr}")
    return wall


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    base = {**os.environ, "PIXSIFT_CACHE_DIR": str(args.model_work / "cache")}
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled bytecode kept, as an installed package does
    here = str(Path(__file__).resolve().parents[1] / "src")
    codes = {"current": {**base, "PYTHONPATH": here}}
    if args.baseline_src:
        codes["baseline"] = {**base, "PYTHONPATH": str(args.baseline_src.resolve())}
    rows: list[dict[str, object]] = []
    for size in args.sizes:
        library = user_library(args.workdir, size, args.model_work)
        libraries = {"current": library}
        if args.baseline_src:
            libraries["baseline"] = library if args.same_library else baseline_copy(library)
        per_code = {code: commands(libraries[code], size) for code in codes}
        names = [name for name in per_code["current"] if not args.only or name in args.only]
        for name in names:
            for cache in ("hot", "evicted") if args.evicted else ("hot",):
                rows += time_command(args, codes, libraries, per_code, name, size, cache)
    return rows


def time_command(
    args: argparse.Namespace,
    codes: dict[str, dict[str, str]],
    libraries: dict[str, Path],
    per_code: dict[str, dict[str, list[str]]],
    name: str,
    size: int,
    cache: str,
) -> list[dict[str, object]]:
    """The rows of one command at one size: each code's first run (which migrates a library
    of an older schema, and warms the page cache) and the median of `--runs`, interleaved."""
    first = {code: timed(per_code[code][name], env) for code, env in codes.items()}
    times: dict[str, list[float]] = {code: [] for code in codes}
    for _ in range(args.runs):
        for code, env in codes.items():
            if cache == "evicted":
                evict(libraries[code])
            times[code].append(timed(per_code[code][name], env))
    rows: list[dict[str, object]] = []
    for code, values in times.items():
        row = {
            "vectors": size,
            "command": name,
            "page_cache": cache,
            "code": code,
            "first_s": round(first[code], 3),
            "median_s": round(statistics.median(values), 3),
            "min_s": round(min(values), 3),
            "max_s": round(max(values), 3),
        }
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| vectors | command | page cache | code | median s | min s | max s | first run s |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['vectors']:,} | {r['command']} | {r['page_cache']} | {r['code']} | {r['median_s']} "
            f"| {r['min_s']} | {r['max_s']} | {r['first_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixsift-ann-bench"))
    parser.add_argument("--model-work", type=Path, default=Path("/tmp/pixsift-ann-bench/model"))
    parser.add_argument("--runs", type=int, default=5, help="timed processes per command and code")
    parser.add_argument("--baseline-src", type=Path, help="also time the code in this src folder")
    parser.add_argument(
        "--same-library", action="store_true", help="the baseline code uses the same libraries (same schema)"
    )
    parser.add_argument("--only", nargs="+", help="time only these commands (names as in the table)")
    parser.add_argument(
        "--evicted", action="store_true", help="also time each command with the library out of the page cache"
    )
    parser.add_argument("--prepare-only", action="store_true", help="fill and index the libraries only")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, {DIM}-d", file=sys.stderr)
    if args.prepare_only:
        for size in args.sizes:
            library = user_library(args.workdir, size, args.model_work)
            if args.baseline_src:
                baseline_copy(library)
        return
    rows = run(args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
