"""How `pixsift serve` answers while its search index is loaded, caught up or rebuilt.

    python benchmarks/busy_server.py [--trained 25000] [--vectors 100000] [--photos 8]
                                     [--workdir DIR] [--deadline 600]

1. A library with the bundled `synthetic-tiny` model: `--photos` real photos (generated) in an
   indexed folder, plus synthetic vectors written through the storage layer (the catalog's bulk
   path, as benchmarks/ann.py fills its libraries), `--trained` of them before an index run
   builds and saves its search index (HNSW above 20,000 vectors), the rest after: the saved
   index is far behind the catalog and was trained for a library a quarter the size (drifted).
2. Starts `pixsift serve` on a free loopback port. Loading the index replays every vector
   added since it was saved, then saves it: phase `start`, until the first search answers.
3. POST /index on the folder, to which as many new photos were added: the job embeds them
   (`Embedding`), saves the index (`Saving search index`) and, the index having drifted,
   rebuilds it for the library's size and swaps it in (`Building search index`).
Meanwhile one client thread per endpoint polls GET /healthz, GET /stats and GET /search
(a text query) every 50 ms, each request timed on its own connection. The table gives, per
phase and endpoint, the requests sent, those that got no answer (connection refused while the
service is not listening yet) and the median and worst latency of the answers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent / "tools"))
sys.path.insert(0, str(BENCHMARKS))

from pixsift.library import Library  # noqa: E402
from pixsift.storage import Catalog  # noqa: E402
from pixsift.synthetic.vectors import clustered_vectors  # noqa: E402
from sample_photos import write_photos  # noqa: E402

API_KEY = "benchmark-key-0123456789"
POLL_S = 0.05
ENDPOINTS = {"healthz": "/healthz", "stats": "/stats", "search": "/search?q=a+red+circle&k=10"}


@dataclass
class Sample:
    endpoint: str
    phase: str
    seconds: float
    answered: bool


class Phase:
    """The phase the service is in, as the driver and the job poller see it."""

    def __init__(self) -> None:
        self.name = "start"
        self.lock = threading.Lock()
        self.since = time.monotonic()
        self.seconds: dict[str, float] = {}  # how long each phase lasted

    def set(self, name: str) -> None:
        with self.lock:
            if name != self.name:
                now = time.monotonic()
                self.seconds[self.name] = self.seconds.get(self.name, 0.0) + now - self.since
                self.name, self.since = name, now

    def get(self) -> str:
        with self.lock:
            return self.name


def add_vectors(folder: Path, count: int, seed: int, prefix: str) -> None:
    """`count` clustered 128-d vectors as images under /synthetic, written in bulk."""
    catalog = Catalog.open(folder / "library.db")
    try:
        for n, chunk in enumerate(clustered_vectors(count, 128, clusters=500, seed=seed)):
            paths = [f"/synthetic/{prefix}/{n:04d}/{i:05d}.jpg" for i in range(len(chunk))]
            with catalog.write() as batch:
                batch.add_embedded_images(paths, chunk, width=640, height=480, format="JPEG")
    finally:
        catalog.close()


def build_library(work: Path, trained: int, vectors: int, photos: int) -> tuple[Path, Path]:
    folder, photo_dir = work / "library", work / "photos"
    write_photos(photo_dir, photos, size=(640, 480), seed=1)
    with Library.open(folder, create=True) as library:
        library.index(photo_dir, model="synthetic-tiny")
    add_vectors(folder, trained - photos, seed=1, prefix="a")
    with Library.open(folder) as library:
        library.index(photo_dir)  # an index run saves the index, rebuilt for `trained` vectors
        summary = library.index_summary()
    print(f"index saved: {summary.kind}, {summary.vectors:,} vectors", file=sys.stderr)
    add_vectors(folder, vectors - trained, seed=2, prefix="b")  # the file is left far behind
    write_photos(photo_dir / "new", photos, size=(640, 480), seed=2)  # work for POST /index
    return folder, photo_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(base: str, endpoint: str, phase: Phase, stop: threading.Event, samples: list[Sample]) -> None:
    """One client, polling `endpoint` every POLL_S until `stop` (any HTTP status is an answer)."""
    with httpx.Client(base_url=base, timeout=300) as client:
        while not stop.is_set():
            now = phase.get()
            started = time.perf_counter()
            try:
                client.get(ENDPOINTS[endpoint])
                answered = True
            except httpx.TransportError:
                answered = False
            samples.append(Sample(endpoint, now, time.perf_counter() - started, answered))
            stop.wait(POLL_S)


def follow_job(base: str, job_id: str, phase: Phase, deadline: float) -> str:
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < deadline:
            job = client.get(f"{base}/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                return str(job["state"])
            phase.set(f"job: {job['phase'] or 'queued'}")
            time.sleep(POLL_S)
    return "timed out"


def wait_until_searching(base: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("pixsift serve exited")
        try:
            if httpx.get(base + ENDPOINTS["search"], timeout=120).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError("pixsift serve did not start in time")


def measure(folder: Path, photo_dir: Path, deadline: float) -> tuple[list[Sample], dict[str, float]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pixsift", "serve", "--library", str(folder), "--port", str(port)]
    env = {**os.environ, "PIXSIFT_API_KEY": API_KEY}
    phase, stop, samples = Phase(), threading.Event(), list[Sample]()
    pollers = [threading.Thread(target=poll, args=(base, e, phase, stop, samples)) for e in ENDPOINTS]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for poller in pollers:
            poller.start()
        wait_until_searching(base, process, deadline)
        phase.set("idle")
        time.sleep(2)
        answer = httpx.post(
            f"{base}/index", json={"paths": [str(photo_dir)]}, headers={"X-API-Key": API_KEY}, timeout=60
        )
        answer.raise_for_status()
        print("job:", follow_job(base, answer.json()["id"], phase, deadline), file=sys.stderr)
        phase.set("after")
        time.sleep(2)
        phase.set("end")
    finally:
        stop.set()
        for poller in pollers:
            poller.join()
        process.terminate()
        process.wait(30)
    return samples, phase.seconds


def table(samples: list[Sample], seconds: dict[str, float]) -> str:
    phases = list(dict.fromkeys(s.phase for s in samples))
    lines = [
        "| phase (its seconds) | endpoint | requests | no answer | median ms | worst ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in phases:
        for endpoint in ENDPOINTS:
            mine = [s for s in samples if s.phase == name and s.endpoint == endpoint]
            answered = [s.seconds * 1000 for s in mine if s.answered]
            median = f"{statistics.median(answered):.0f}" if answered else "-"
            worst = f"{max(answered):.0f}" if answered else "-"
            refused = len(mine) - len(answered)
            row = f"{name} ({seconds.get(name, 0):.1f} s) | {endpoint} | {len(mine)} | {refused}"
            lines.append(f"| {row} | {median} | {worst} |")
    return "\n".join(lines)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--trained", type=int, default=25_000, help="vectors when the index is saved")
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in all")
    parser.add_argument("--photos", type=int, default=8, help="real photos, and as many new ones to index")
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run when given")
    parser.add_argument("--deadline", type=float, default=600, help="seconds the service runs at most")
    args = parser.parse_args()
    if not 1 <= args.photos <= args.trained <= args.vectors:
        parser.error("the counts must be 1 <= --photos <= --trained <= --vectors")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pixsift-busy-"))
    shutil.rmtree(work / "library", ignore_errors=True)
    shutil.rmtree(work / "photos", ignore_errors=True)
    try:
        started = time.monotonic()
        folder, photo_dir = build_library(work, args.trained, args.vectors, args.photos)
        print(f"library filled in {time.monotonic() - started:.0f} s", file=sys.stderr)
        samples, seconds = measure(folder, photo_dir, time.monotonic() + args.deadline)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(samples, seconds))


if __name__ == "__main__":
    main()
