"""Indexing throughput and cold query latency, per engine, measured side by side in one run.

    python benchmarks/index_throughput.py [--count 200] [--engines torch,onnx,auto] [--json FILE]
    python benchmarks/index_throughput.py --device cuda --engines torch --only index \
        --count 1000 --photo-jobs 14

For each engine (`torch`: fp32 open_clip; `onnx`: ONNX Runtime fp32; `auto`: the default, ONNX
Runtime in int8 for each tower that holds cosine 0.99 to fp32 open_clip, both for ViT-B-32):
  1. encoder-only: images/s of the image tower alone on preprocessed inputs at the indexer's
     batch size (the compute limit of that model and precision);
  2. end to end: a fresh `pixsift index` of phone photos (4032x3024 JPEG) and of web images
     (640x480), in a subprocess, as images/s of the whole process (start-up, imports, model
     load, scan, decode, embed, commits) and of its embedding phase;
  3. the ratios end to end / encoder-only, and the peak memory (RSS) of each `pixsift index`;
  4. cold query: the median wall time of a `pixsift search "..."` process on a 10,000-image
     library (import, model load, text encode, search, print).
`--only cold-query` measures the last alone, `--only index` all but the last; `--device cuda`
measures on a GPU (torch with fp16/bf16 autocast, the indexer's GPU path) with the same photos
and steps. `--baseline-src DIR` also times, interleaved run by run, the cold searches of
another pixsift source tree (say, `git archive main src` unpacked), so that a change is
measured against what it replaces on the same machine at the same time.
Photos are made by ../shared/photos.py (or --photos-script), in `--photo-jobs` processes at
once for the thousands of photos a GPU needs to be timed on. The model is ViT-B-32 with random
weights (speed does not depend on their values); its ONNX export is made once, before timing,
into a private cache, as a first index run would, and that one-time cost is reported too.
The 10,000 vectors of the query library are random, written through pixsift's storage layer
(as in benchmarks/serve_load.py): embedding 10,000 photos would take far longer than the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import build_library, random_checkpoint  # noqa: E402

DEFAULT_PHOTOS_SCRIPT = HERE.parent.parent / "shared" / "photos.py"
GNU_TIME = "/usr/bin/time"  # for the peak memory of a command (Linux: apt install time)
# GNU time's job where it is missing: run a command, write its peak RSS in KB to a file
PEAK_OF_CHILD = """import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""
QUERIES = ["a dog running on the beach", "red car", "snow on the mountains at dawn", "a bowl of soup"]
# rclip 4.0.8 on this machine type with the same photos (it cannot download its model here)
RCLIP = {"index_rate": 8.4, "web_rate": 9.6, "cold_query_s": 1.37}


def make_photos(script: Path, folder: Path, count: int, size: str, seed: int, jobs: int = 1) -> Path:
    """Photos from the shared generator, made once per folder (kept with --work).

    With several `jobs`, each generator process writes its share into a sub-folder of its own,
    from a seed of its own (`pixsift index` walks sub-folders): the photos stay distinct.
    """
    if folder.is_dir() and sum(1 for f in folder.rglob("*") if f.is_file()) == count:
        return folder
    if jobs <= 1:
        command = [sys.executable, str(script), str(folder), "--count", str(count), "--size", size]
        subprocess.run([*command, "--seed", str(seed)], check=True, capture_output=True)
        return folder
    shares = [count // jobs + (1 if part < count % jobs else 0) for part in range(jobs)]
    running = []
    for part, share in enumerate(shares):
        command = [sys.executable, str(script), str(folder / f"part-{part}"), "--count", str(share)]
        command += ["--size", size, "--seed", str(seed * 1000 + part)]
        running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
    if any(process.wait() != 0 for process in running):
        raise RuntimeError(f"{script} failed to make the photos in {folder}")
    return folder


def encoder_only(embedder: Any, batch_size: int, seconds: float) -> float:
    """Images/s of `embedder.embed_images` on one batch made by its own preprocessing (what
    its decode workers hand it), repeated for `seconds`."""
    from PIL import Image

    size = embedder.image_size
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    batch = [embedder.preprocess(Image.fromarray(noise))] * batch_size
    embedder.embed_images(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embedder.embed_images(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def run_measured(command: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run `command`; return its stdout, wall seconds and peak RSS in MB.

    The peak comes from GNU time, which starts the command from its own small process: a
    child's high-water mark counts what it shared with its parent at fork, and this benchmark
    holds a model in memory. (The wall time includes GNU time's own ~1 ms.) Where GNU time is
    not installed, a small Python process does the same with `getrusage` (~20 ms more).
    """
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        if Path(GNU_TIME).is_file():
            measured = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *command]
        else:
            measured = [sys.executable, "-c", PEAK_OF_CHILD, str(peak_file), *command]
        started = time.perf_counter()
        done = subprocess.run(measured, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
        peak_kb = float(peak_file.read_text().split()[-1])
        return done.stdout, wall, peak_kb / 1024


def end_to_end(
    photos: Path, library: Path, checkpoint: Path, engine: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, float]:
    command = [sys.executable, "-m", "pixsift", "index", str(photos), "--library", str(library)]
    command += ["--model", "ViT-B-32", "--pretrained", str(checkpoint), "--engine", engine]
    command += ["--device", args.device]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    stdout, wall, peak_mb = run_measured(command, env)
    count = int(stdout.split()[0])
    found = re.search(r"([\d.]+) images/s", stdout)
    return {
        "count": count,
        "process_rate": count / wall,
        "embed_rate": float(found.group(1)) if found else float("nan"),
        "wall_s": wall,
        "peak_mb": peak_mb,
    }


def cold_queries(
    library: Path, engine: str, runs: int, envs: dict[str, dict[str, str]]
) -> dict[str, dict[str, float]]:
    """Cold search times per source tree (`envs`: name -> environment), run by run in turn."""
    times: dict[str, list[float]] = {name: [] for name in envs}
    for number in range(runs):
        command = [sys.executable, "-m", "pixsift", "search", QUERIES[number % len(QUERIES)]]
        command += ["--library", str(library), "--engine", engine, "--device", "cpu", "-k", "10"]
        for name, env in envs.items():
            _, wall, _ = run_measured(command, env)
            times[name].append(wall)
    return {
        name: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
        for name, values in times.items()
    }


def parse_options(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The options and the engines to measure; exits with a one-line error for options it
    cannot measure. The device and engines are taken in any case, as `pixsift --device CPU
    --engine ONNX` takes them, and kept in the lower case the measuring compares: as given,
    `--engines TORCH` was timed after a needless ONNX export and reported as another engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200, help="photos per set (default 200)")
    parser.add_argument("--size", default="4032x3024", help="phone photo size, WIDTHxHEIGHT")
    parser.add_argument("--web-size", default="640x480", help="web image size, WIDTHxHEIGHT")
    parser.add_argument("--engines", default="torch,onnx,auto", help="comma-separated --engine values")
    parser.add_argument("--batch-size", type=int, help="images per model call (default: pixsift's own)")
    parser.add_argument(
        "--device", type=str.lower, default="cpu", help="cpu, or cuda for the GPU path (engine torch)"
    )
    parser.add_argument("--workers", type=int, help="`pixsift index --workers` (default: its own)")
    parser.add_argument("--photo-jobs", type=int, default=1, help="photo generator processes at once")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to time encoder-only")
    parser.add_argument("--library-size", type=int, default=10_000, help="images in the query library")
    parser.add_argument("--query-runs", type=int, default=5, help="cold searches per engine")
    parser.add_argument("--photos-script", type=Path, default=DEFAULT_PHOTOS_SCRIPT)
    parser.add_argument("--work", type=Path, help="keep photos, weights and export here between runs")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--only", choices=["all", "index", "cold-query"], default="all", help="what to measure"
    )
    parser.add_argument(
        "--baseline-src", type=Path, help="also time the cold searches of the pixsift sources in this folder"
    )
    args = parser.parse_args(argv)
    engines = engine_list(args.engines)
    refusal = refused_options(args, engines)
    if refusal is not None:  # before minutes of photos and a model export, not a traceback after
        parser.error(refusal)
    return args, engines


def engine_list(option: str) -> list[str]:
    """The engines a comma-separated `--engines` names, in lower case, each once (a row each)."""
    return list(dict.fromkeys(engine.strip().lower() for engine in option.split(",") if engine.strip()))


def main() -> None:
    args, engines = parse_options()

    with tempfile.TemporaryDirectory(prefix="pixsift-bench-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.only == "cold-query":
            results = measure_cold_queries(args, engines, work)
        else:
            results = measure(args, engines, work, Path(scratch))
    if args.only == "cold-query":
        print_cold_table(args, engines, results)
    else:
        print_table(args, engines, results)
    if args.json:
        settings = {key: str(value) for key, value in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, **results}, indent=2))


def refused_options(args: argparse.Namespace, engines: list[str]) -> str | None:
    """Why these options cannot be measured, or None. A count of 0, or a batch size of 0 (which
    `pixsift index` refuses), would otherwise be run as the default or print an empty table, and
    an unknown engine or a GPU this machine lacks would end in a traceback."""
    from pixsift.config import MAX_BATCH_SIZE, MAX_WORKERS
    from pixsift.errors import ModelError
    from pixsift.models.loading import ENGINES, check_runs

    at_least_one = ("count", "photo_jobs", "library_size", "query_runs")
    for name in at_least_one:
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}"
    if not args.seconds > 0:  # NaN included
        return f"--seconds must be more than 0, not {args.seconds}"
    for name, most in (("batch_size", MAX_BATCH_SIZE), ("workers", MAX_WORKERS)):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= most:
            return f"--{name.replace('_', '-')} must be from 1 to {most}, not {value}"
    for name in ("size", "web_size"):
        value = getattr(args, name)
        if re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", value) is None:
            return f"--{name.replace('_', '-')} must be WIDTHxHEIGHT, such as 640x480, not {value!r}"
    if not engines:
        return f"--engines names no engine: give one or more of {', '.join(ENGINES)}, separated by commas"
    try:
        for engine in engines:
            check_runs(args.device, engine)
    except ModelError as exc:
        return exc.for_command_line()
    return None


def command_env(work: Path) -> dict[str, str]:
    """The environment of the timed commands: the benchmark's own model cache, and compiled
    bytecode kept as an installed package keeps it (with PYTHONDONTWRITEBYTECODE set, every
    cold command would compile pixsift's modules again, a few hundred milliseconds)."""
    os.environ["PIXSIFT_CACHE_DIR"] = str(work / "cache")
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure(args: argparse.Namespace, engines: list[str], work: Path, scratch: Path) -> dict[str, Any]:
    env = command_env(work)
    from pixsift.models.clip import ClipEmbedder
    from pixsift.models.loading import load_embedder
    from pixsift.models.naming import resolve_model_spec
    from pixsift.models.onnx_export import read_export

    jobs = args.photo_jobs
    phone = make_photos(args.photos_script, work / "phone", args.count, args.size, seed=1, jobs=jobs)
    web = make_photos(args.photos_script, work / "web", args.count, args.web_size, seed=2, jobs=jobs)
    checkpoint = work / "vit-b-32-random.pt"
    if not checkpoint.is_file():
        random_checkpoint("ViT-B-32", checkpoint)
    spec = resolve_model_spec("ViT-B-32", str(checkpoint))

    results: dict[str, Any] = {"machine": machine(args.device), "engines": {}}
    if any(engine != "torch" for engine in engines):  # the ONNX engines' one-time export
        started = time.perf_counter()
        fast = load_embedder(spec, "cpu", "auto")  # exports on first use, as a first index run does
        results["export_s"] = time.perf_counter() - started
        export = read_export(spec)
        results["export_cosine"] = export.cosine if export else None
        del fast
    for engine in engines:
        if engine == "torch":
            embedder: Any = ClipEmbedder.load(spec, args.device)
        else:
            embedder = load_embedder(spec, args.device, engine)
        describe = getattr(embedder, "describe", lambda: torch_precision(args.device))()
        batch_size = args.batch_size or embedder.batch_size  # what `pixsift index` runs at
        rate = encoder_only(embedder, batch_size, args.seconds)
        del embedder
        row: dict[str, Any] = {"runs_as": describe, "batch_size": batch_size, "encoder_rate": rate}
        for name, photos in (("phone", phone), ("web", web)):
            library = scratch / f"library-{engine}-{name}"
            row[name] = end_to_end(photos, library, checkpoint, engine, args, env)
        results["engines"][engine] = row

    if args.only == "index":
        return results
    for engine, timed in cold_query_times(args, engines, work, checkpoint, env).items():
        results["engines"][engine]["cold_query"] = timed["current"]
        if "baseline" in timed:
            results["engines"][engine]["cold_query_baseline"] = timed["baseline"]
    return results


def machine(device: str) -> str:
    """The CPU, and the GPU where one is measured."""
    described = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    if device.startswith("cuda"):
        import torch

        described += f"; GPU {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    return described


def torch_precision(device: str) -> str:
    """How the torch engine runs on `device` (the indexer's own choice, see ClipEmbedder)."""
    if not device.startswith("cuda"):
        return "torch eager fp32"
    import torch

    return "torch bf16 autocast" if torch.cuda.is_bf16_supported() else "torch fp16 autocast"


def measure_cold_queries(args: argparse.Namespace, engines: list[str], work: Path) -> dict[str, Any]:
    """Only the cold searches (the model's export is made by the warm-up search if missing)."""
    env = command_env(work)
    checkpoint = work / "vit-b-32-random.pt"
    query_library = work / f"query-library-{args.library_size}"
    if not (query_library / "library" / "library.db").is_file() and not checkpoint.is_file():
        random_checkpoint("ViT-B-32", checkpoint)
    return {
        "machine": machine("cpu"),
        "engines": cold_query_times(args, engines, work, checkpoint, env),
    }


def cold_query_times(
    args: argparse.Namespace, engines: list[str], work: Path, checkpoint: Path, env: dict[str, str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per engine, the cold search times of these sources ("current") and of the baseline's."""
    query_library = work / f"query-library-{args.library_size}"
    if not (query_library / "library" / "library.db").is_file():
        build_library(query_library, args.library_size, "ViT-B-32", checkpoint)
    envs = {"current": env}
    if args.baseline_src:
        # Its own model cache: sources with another export format would each remake the other's.
        baseline_cache = str(work / "cache-baseline")
        baseline_src = str(args.baseline_src.resolve())
        envs["baseline"] = {**env, "PYTHONPATH": baseline_src, "PIXSIFT_CACHE_DIR": baseline_cache}
    results = {}
    for engine in engines:
        # One warm-up search writes the FAISS file, as the first search after indexing would.
        cold_queries(query_library / "library", engine, 1, envs)
        results[engine] = cold_queries(query_library / "library", engine, args.query_runs, envs)
    return results


def print_cold_table(args: argparse.Namespace, engines: list[str], results: dict[str, Any]) -> None:
    per = results["engines"]
    sources = ["current", "baseline"] if args.baseline_src else ["current"]
    rows: list[tuple[str, ...]] = [("cold search, median s (min-max)", *engines)]
    for source in sources:
        cells = [per[e][source] for e in engines]
        name = f"{source} ({args.baseline_src})" if source == "baseline" else "current"
        rows.append((name, *(f"{c['median_s']:.2f} ({c['min_s']:.2f}-{c['max_s']:.2f})" for c in cells)))
    if args.baseline_src:
        ratios = [per[e]["current"]["median_s"] / per[e]["baseline"]["median_s"] for e in engines]
        rows.append(("current / baseline", *(f"{r:.2f}" for r in ratios)))
    rows.append(
        (
            "current / rclip's 1.37 s",
            *(f"{per[e]['current']['median_s'] / RCLIP['cold_query_s']:.2f}" for e in engines),
        )
    )
    print(
        f"ViT-B-32 (random weights), {args.library_size:,}-image library, {args.query_runs} cold "
        f"`pixsift search` processes per source and engine, interleaved; {results['machine']}"
    )
    print_rows(rows)


def print_table(args: argparse.Namespace, engines: list[str], results: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [("measure", *engines)]
    per = results["engines"]

    def add(name: str, values: list[float], fmt: str) -> None:
        rows.append((name, *(format(value, fmt) for value in values)))

    rows.append(("runs as", *(per[e]["runs_as"] for e in engines)))
    rows.append(("batch size", *(str(per[e]["batch_size"]) for e in engines)))
    add("encoder-only (images/s)", [per[e]["encoder_rate"] for e in engines], ".1f")
    for name, size in (("phone", args.size), ("web", args.web_size)):
        add(f"index {size}, whole process (images/s)", [per[e][name]["process_rate"] for e in engines], ".1f")
        add(f"index {size}, embedding phase (images/s)", [per[e][name]["embed_rate"] for e in engines], ".1f")
        add(
            f"index {size}, whole process / encoder-only",
            [per[e][name]["process_rate"] / per[e]["encoder_rate"] for e in engines],
            ".2f",
        )
        add(f"index {size}, peak memory (MB)", [per[e][name]["peak_mb"] for e in engines], ".0f")
    add(
        f"index {args.size}, whole process / rclip's 8.4",
        [per[e]["phone"]["process_rate"] / RCLIP["index_rate"] for e in engines],
        ".2f",
    )
    if args.only == "index":
        print_heading(args, results)
        print_rows(rows)
        return
    add(
        f"cold search, {args.library_size:,} images, median (s)",
        [per[e]["cold_query"]["median_s"] for e in engines],
        ".2f",
    )
    add(
        "cold search / rclip's 1.37 s",
        [per[e]["cold_query"]["median_s"] / RCLIP["cold_query_s"] for e in engines],
        ".2f",
    )
    print_heading(args, results)
    print_rows(rows)


def print_heading(args: argparse.Namespace, results: dict[str, Any]) -> None:
    workers = f", {args.workers} decode workers" if args.workers else ""
    print(
        f"ViT-B-32 (random weights), {args.count} photos per set, {args.device}{workers}; "
        f"{results['machine']}"
    )
    if "export_s" in results:
        export = f"{results['export_s']:.1f} s; cosine to fp32: {results['export_cosine']}"
        print(f"one-time ONNX export: {export}")


def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        values = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in values)]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
