"""Re-indexing a large library: `pixsift index ROOT` over an unchanged folder, and after 1% of
its files changed, as whole processes (wall time, files/s, peak memory), with a profile of
where the unchanged re-run spends its time.

    python benchmarks/rescan.py [--images 100000] [--rounds 3] [--baseline-src DIR] [--json FILE]

1. Builds a library of `--images` real files on disk, `--per-folder` to a folder in nested
   folders: a few hundred distinct tiny JPEGs, written once each and copied under many names.
   The first folder is indexed by `pixsift index --model synthetic-tiny` (the bundled offline
   model); the rows of every other file are written through pixsift's storage layer with the
   file's own size, mtime and content hash and a random unit vector, as an index run would
   have left them (embedding 100,000 files would take far longer than the run). One untimed
   run then brings the search index file up to date.
2. Times, `--rounds` times each, a separate `pixsift index ROOT` process (its wall time and,
   from the kernel's accounting of that child, its peak RSS):
   - unchanged: nothing changed since the last run (one `stat` per file, no model);
   - changed: before each round, `--change` percent of the files are changed, in three equal
     parts: touched (new mtime, same bytes), deleted, and new files of new content added (so
     the model loads and embeds them).
   With `--baseline-src DIR` (another pixsift `src` folder, say `git archive main src`
   unpacked), the same runs of that code are interleaved with these, round by round, on the
   same library, so that a change is measured against what it replaces at the same time.
3. Profiles one more unchanged run (cProfile, in its own process) and prints how its time
   splits between the walk, the catalog reads, the plan, the commits and the search index.
Everything is offline; the library lives in a temporary folder unless `--workdir` is given
(kept and reused there: delete it to rebuild).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import pstats
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SRC = Path(__file__).resolve().parent.parent / "src"
READY = "READY"
# (label, file suffix, function name) of the profile's rows, as cumulative time
PROFILE_ROWS = [
    ("whole process", "", "<module>"),
    ("Library.index (lock held)", "pixsift/library.py", "index"),
    ("  unmounted-root check", "indexer/scan.py", "looks_unmounted"),
    ("  walk (scan_folder)", "indexer/scan.py", "scan_folder"),
    ("  known rows (Catalog.known_files)", "storage/catalog.py", "known_files"),
    ("  plan (plan_folder)", "indexer/plan.py", "plan_folder"),
    ("  moves and deletions (settle)", "indexer/run.py", "_settle_by_content"),
    ("  Indexer.run (walk, plan, settle, commits)", "indexer/run.py", "run"),
    # what an index run calls at its end (`refresh` is the search's; a run no longer calls it)
    ("  search index catch-up and save", "storage/index_keeper.py", "save_current"),
    ("    of which: loading the index file", "storage/vector_index.py", "load"),
    ("  search index drift check", "storage/index_keeper.py", "rebuild_due"),
]


@dataclass
class Run:
    code: str  # "this" or "baseline"
    scenario: str
    round: int
    files: int  # image files on disk when it ran
    seconds: float
    files_per_s: float
    peak_rss_mb: float
    summary: str  # the command's own summary line
    index_rewritten: bool  # whether the run rewrote the search index file or bumped the generation


def tiny_jpegs(count: int, seed: int) -> list[bytes]:
    """`count` distinct small JPEGs (24x16 noise, about 1 KB each)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=70)
        images.append(buffer.getvalue())
    return images


def file_path(photos: Path, number: int, per_folder: int) -> Path:
    """Nested folders: photos/a00/f000/img_0000000.jpg, `per_folder` files to a leaf folder."""
    folder = number // per_folder
    return photos / f"a{folder // 100:02d}" / f"f{folder % 100:03d}" / f"img_{number:07d}.jpg"


def pixsift(src: Path, *arguments: str) -> list[str]:
    """The command line of `python -m pixsift ...` run from the source tree `src`."""
    return [
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {str(src)!r}); "
        "from pixsift.cli import main; sys.argv[0] = 'pixsift'; main()",
        *arguments,
    ]


def build_library(work: Path, images: int, per_folder: int, distinct: int) -> tuple[Path, Path]:
    """The photos folder and the library, built once in `work` (reused when READY)."""
    photos, library = work / "photos", work / "library"
    if (work / READY).is_file():
        return photos, library
    sys.path.insert(0, str(SRC))
    from pixsift.config import DB_NAME
    from pixsift.storage import Catalog
    from pixsift.storage.records import FreshEmbedding

    started = time.perf_counter()
    contents = tiny_jpegs(distinct, seed=0)
    hashes = [hashlib.sha256(data).hexdigest() for data in contents]
    first = min(images, per_folder)
    for number in range(first):  # the first folder is indexed for real: it records the model
        path = file_path(photos, number, per_folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[number % distinct])
    command = pixsift(SRC, "index", str(photos), "--library", str(library), "--model", "synthetic-tiny", "-q")
    subprocess.run(command, check=True)
    catalog = Catalog.open(library / DB_NAME)
    model = catalog.model()
    assert model is not None
    rng = np.random.default_rng(1)
    for start in range(first, images, per_folder):
        numbers = range(start, min(start + per_folder, images))
        files = []
        for number in numbers:
            path = file_path(photos, number, per_folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(contents[number % distinct])
            stat = path.stat()
            files.append((str(path), stat.st_size, stat.st_mtime_ns))
        vectors = rng.standard_normal((len(files), model.embed_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with catalog.write() as batch:
            ids = batch.add_images(files)
            batch.save_embeddings(
                [
                    FreshEmbedding(
                        image_id, vector, hashes[number % distinct], 24, 16, "JPEG", None, size, mtime
                    )
                    for image_id, vector, number, (_, size, mtime) in zip(
                        ids, vectors, numbers, files, strict=True
                    )
                ]
            )
    catalog.close()
    # one run brings the search index file up to the rows just written
    subprocess.run(pixsift(SRC, "index", str(photos), "--library", str(library), "-q"), check=True)
    (work / READY).write_text(f"{images}\n")
    print(f"library of {images:,} files built in {time.perf_counter() - started:.0f} s", flush=True)
    return photos, library


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output of one child process, from its own rusage."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{text}")
    return seconds, usage.ru_maxrss / 1024, text  # Linux: ru_maxrss in KB


def index_state(library: Path) -> tuple[int, str]:
    """The search index file's mtime and the catalog's vector generation."""
    with sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True) as connection:
        row = connection.execute("SELECT value FROM settings WHERE key = 'vector_generation'").fetchone()
    return (library / "vectors.faiss").stat().st_mtime_ns, row[0] if row else ""


def image_files(photos: Path) -> list[Path]:
    return sorted(Path(folder) / name for folder, _, names in os.walk(photos) for name in names)


def change_files(photos: Path, percent: float, round_number: int, per_folder: int) -> int:
    """Touch, delete and add `percent` of the files in all (a third each); returns the count."""
    files = image_files(photos)
    rng = random.Random(round_number)
    third = max(1, round(len(files) * percent / 100 / 3))
    chosen = rng.sample(files, 2 * third)
    now = time.time_ns()
    for path in chosen[:third]:
        os.utime(path, ns=(now, now))
    for path in chosen[third:]:
        path.unlink()
    for number, data in enumerate(tiny_jpegs(third, seed=now % 2**32)):
        path = (
            photos
            / "new"
            / f"{now}"  # a new folder each time, also when a --workdir library is run again
            / f"f{number // per_folder:03d}"
            / f"n{number:06d}.jpg"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return 3 * third


def measure(
    codes: dict[str, Path], photos: Path, library: Path, rounds: int, percent: float, per_folder: int
) -> list[Run]:
    runs: list[Run] = []
    command = ["index", str(photos), "--library", str(library)]
    for round_number in range(rounds):
        for scenario in ("unchanged", "changed"):
            for code, src in codes.items():  # interleaved: each round runs every code in turn
                if scenario == "changed":
                    change_files(photos, percent, len(runs), per_folder)
                files = len(image_files(photos))
                before = index_state(library)
                seconds, rss, output = timed(pixsift(src, *command))
                rewritten = index_state(library) != before
                summary = next((line for line in output.splitlines() if "unchanged" in line), output[-300:])
                run = Run(
                    code,
                    scenario,
                    round_number,
                    files,
                    seconds,
                    files / seconds,
                    rss,
                    summary.strip(),
                    rewritten,
                )
                runs.append(run)
                print(
                    f"{code:8s} {scenario:9s} round {round_number}: {seconds:6.2f} s  "
                    f"{rss:6.0f} MB  {run.summary}{'  (index rewritten)' if rewritten else ''}",
                    flush=True,
                )
    return runs


def profile(src: Path, photos: Path, library: Path, work: Path) -> list[tuple[str, float]]:
    """Cumulative seconds of the PROFILE_ROWS functions in one profiled unchanged run."""
    out = work / "rescan.prof"
    code = (
        f"import sys, cProfile; sys.path.insert(0, {str(src)!r}); sys.argv = ['pixsift', *sys.argv[1:]]\n"
        "from pixsift.cli import main\n"
        f"cProfile.run('main()', {str(out)!r})"
    )
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", code, "index", str(photos), "--library", str(library), "-q"], check=False
    )
    total = time.perf_counter() - started
    if process.returncode not in (0, None):
        raise RuntimeError(f"the profiled run exited {process.returncode}")
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    rows = [("whole process (wall, profiled)", total)]
    for label, suffix, name in PROFILE_ROWS[1:]:
        seconds = sum(
            entry[3]
            for (filename, _, function), entry in stats.items()
            if function == name and filename.endswith(suffix)
        )
        rows.append((label, seconds))
    return rows


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    for code in dict.fromkeys(r.code for r in runs):
        for scenario in ("unchanged", "changed"):
            chosen = [r for r in runs if r.code == code and r.scenario == scenario]
            if not chosen:
                continue
            seconds = statistics.median(r.seconds for r in chosen)
            table.append(
                {
                    "code": code,
                    "scenario": scenario,
                    "runs": len(chosen),
                    "files": chosen[-1].files,
                    "median_s": seconds,
                    "min_s": min(r.seconds for r in chosen),
                    "max_s": max(r.seconds for r in chosen),
                    "files_per_s": chosen[-1].files / seconds,
                    "peak_rss_mb": statistics.median(r.peak_rss_mb for r in chosen),
                    "index_rewritten": sum(r.index_rewritten for r in chosen),
                }
            )
    return table


def main() -> None:
    summary = " ".join(__doc__.split("\n\n")[0].split()) if __doc__ else None
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument("--images", type=int, default=100_000, help="image files in the library")
    parser.add_argument("--per-folder", type=int, default=1000, help="files to a folder")
    parser.add_argument("--distinct", type=int, default=300, help="distinct file contents")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each scenario")
    parser.add_argument("--change", type=float, default=1.0, help="percent of files changed")
    parser.add_argument("--baseline-src", type=Path, help="another pixsift src folder, run interleaved")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    parser.add_argument("--workdir", type=Path, help="build (or reuse) the library here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    codes = {"this": SRC}
    if args.baseline_src:
        codes["baseline"] = args.baseline_src.resolve()

    with tempfile.TemporaryDirectory(prefix="pixsift-rescan-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        photos, library = build_library(work, args.images, args.per_folder, args.distinct)
        runs = measure(codes, photos, library, args.rounds, args.change, args.per_folder)
        breakdown = [] if args.no_profile else profile(SRC, photos, library, work)

    table = summarize(runs)
    print(
        f"\n`pixsift index ROOT` on {args.images:,} files, {args.per_folder} to a folder, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; median of {args.rounds}"
    )
    print("| code | scenario | files | median s (min-max) | files/s | peak RSS MB | index rewritten |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in table:
        print(
            f"| {row['code']} | {row['scenario']} | {row['files']:,} "
            f"| {row['median_s']:.2f} ({row['min_s']:.2f}-{row['max_s']:.2f}) "
            f"| {row['files_per_s']:,.0f} | {row['peak_rss_mb']:.0f} "
            f"| {row['index_rewritten']} of {row['runs']} |"
        )
    if breakdown:
        print("\nOne unchanged run under cProfile (cumulative seconds, inflated by the profiler):")
        print("| part | s |")
        print("| --- | ---: |")
        for label, seconds in breakdown:
            print(f"| {label} | {seconds:.2f} |")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {
                    "settings": settings,
                    "runs": [asdict(r) for r in runs],
                    "table": table,
                    "profile": dict(breakdown),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
