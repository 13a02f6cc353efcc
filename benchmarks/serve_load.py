"""Load test of `pixsift serve`: throughput and latency of search and recommend under
concurrent clients, and of search while an index job runs.

    python benchmarks/serve_load.py [--images 10000] [--seconds 10] [--max-requests 3000]
                                    [--engines auto,torch]

1. Builds a library of `--images` real, small JPEG files (48x32, generated). Embedding 10,000
   files with the default model takes far too long on a small CPU machine, so their vectors
   are random unit vectors written through pixsift's storage layer (the same catalog writes
   the indexer makes). Searching a flat FAISS index costs the same whatever the vectors hold.
   The library's model is the default architecture (ViT-B-32) with random weights, so every
   text query pays the real text encoder's cost.
2. Starts `pixsift serve` in its own process on a free loopback port, with each of `--engines`
   in turn (auto, pixsift's default, unless told otherwise), on the same library.
3. For each scenario and each number of concurrent clients (async httpx, one connection per
   client), sends requests for `--seconds` or until `--max-requests`, after a warm-up, and
   reports requests/s and the 50th and 99th latency percentiles. Searches embed their text;
   recommendations name their examples by id (stored vectors, no model).
4. Runs the search load again while `POST /index` embeds `--index-images` new photos, to see
   what indexing costs searches on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from sample_photos import write_photos  # noqa: E402

API_KEY = "benchmark-key-0123456789"
QUERIES = [
    "a dog running on a beach",
    "sunset over the mountains",
    "a red car parked on a street",
    "a cat sleeping on a sofa",
    "people at a birthday party",
    "a bowl of fruit on a table",
    "snow covered trees",
    "a city skyline at night",
    "a child riding a bicycle",
    "flowers in a garden",
    "a plate of pasta",
    "an old wooden boat",
]

Request = tuple[str, str, dict[str, Any]]


@dataclass
class Measurement:
    engine: str
    scenario: str
    clients: int
    requests: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float


def random_checkpoint(model: str, path: Path) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)
    return path


def build_library(work: Path, images: int, model: str, checkpoint: Path) -> tuple[Path, Path]:
    """A library of `images` real small files whose vectors are random, written by the catalog."""
    from PIL import Image

    from pixsift.config import DB_NAME
    from pixsift.models.clip import ClipEmbedder
    from pixsift.models.naming import resolve_model_spec
    from pixsift.storage import Catalog

    photos, library = work / "photos", work / "library"
    library.mkdir(parents=True)
    record = ClipEmbedder.load(resolve_model_spec(model, str(checkpoint)), "cpu").record
    rng = np.random.default_rng(0)
    catalog = Catalog.open(library / DB_NAME)
    with catalog.write() as batch:
        batch.set_model(record)
        batch.upsert_root(str(photos), include_hidden=False, follow_symlinks=False)
    for start in range(0, images, 1000):
        with catalog.write() as batch:
            for number in range(start, min(start + 1000, images)):
                folder = photos / f"{number // 1000:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"img_{number:05d}.jpg"
                Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(path, quality=80)
                data, stat = path.read_bytes(), path.stat()
                vector = rng.standard_normal(record.embed_dim).astype(np.float32)
                image_id = batch.add_image(str(path), stat.st_size, stat.st_mtime_ns, None)
                batch.save_embedding(
                    image_id,
                    vector / np.linalg.norm(vector),
                    content_hash=hashlib.sha256(data).hexdigest(),
                    width=48,
                    height=32,
                    format="JPEG",
                    size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                )
    with catalog.write() as batch:
        batch.mark_root_indexed(str(photos))
    catalog.close()
    return photos, library


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(library: Path, port: int, engine: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pixsift", "serve", "--library", str(library), "--port", str(port)]
    command += ["--device", "cpu", "--engine", engine]
    env = {**os.environ, "PIXSIFT_API_KEY": API_KEY}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("pixsift serve exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("pixsift serve did not start")


def search_request(rng: random.Random, images: int) -> Request:
    return "GET", "/search", {"params": {"q": rng.choice(QUERIES), "k": 10}}


def recommend_request(rng: random.Random, images: int) -> Request:
    # "More like the items this user liked": examples by id, so no model runs (a text example
    # would add one text-encoder call, the cost of a search).
    # Distinct: an image both liked and disliked is a client's mistake, refused with a 400.
    *positive, negative = rng.sample(range(1, images + 1), 4)
    exclude = [rng.randint(1, images) for _ in range(20)]  # already seen
    body = {"positive": positive, "negative": [negative], "k": 10, "exclude": exclude}
    return "POST", "/recommend", {"json": body}


async def load(
    url: str,
    make: Callable[[random.Random, int], Request],
    images: int,
    clients: int,
    seconds: float,
    max_requests: int,
    until: Callable[[], bool] | None = None,
) -> tuple[list[float], int, float]:
    """Latencies (s) of successful requests, the error count, and the elapsed time."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for warm in range(clients):  # open the connections and warm the caches first
            method, path, options = make(random.Random(-1 - warm), images)
            await http.request(method, path, **options)
        started = time.perf_counter()
        deadline = started + seconds

        async def client(number: int) -> None:
            nonlocal errors, sent
            rng = random.Random(number)
            while time.perf_counter() < deadline and sent < max_requests and not (until and until()):
                sent += 1
                method, path, options = make(rng, images)
                begin = time.perf_counter()
                response = await http.request(method, path, **options)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - begin)
                else:
                    errors += 1

        await asyncio.gather(*(client(n) for n in range(clients)))
        return latencies, errors, time.perf_counter() - started


def measure(
    engine: str,
    scenario: str,
    url: str,
    make: Callable[[random.Random, int], Request],
    images: int,
    clients: int,
    seconds: float,
    max_requests: int,
    until: Callable[[], bool] | None = None,
) -> Measurement:
    latencies, errors, elapsed = asyncio.run(load(url, make, images, clients, seconds, max_requests, until))
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return Measurement(
        engine,
        scenario,
        clients,
        len(latencies) + errors,
        errors,
        elapsed,
        len(latencies) / elapsed,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
    )


def during_indexing(
    engine: str, url: str, photos: Path, count: int, images: int, seconds: float, max_requests: int, seed: int
) -> Measurement:
    """Search load at 8 clients while an index job embeds `count` new photos: photos of its
    own for each engine (`seed`), as pixsift would reuse the vectors of copies."""
    new = photos / f"new-{engine}"
    write_photos(new, count, size=(640, 480), seed=seed)
    headers = {"X-API-Key": API_KEY}
    job = httpx.post(f"{url}/index", json={"paths": [str(new)]}, headers=headers).json()

    def job_done() -> bool:
        state = httpx.get(f"{url}/jobs/{job['id']}").json()["state"]
        return bool(state in ("succeeded", "failed"))

    checked = {"at": 0.0, "done": False}

    def finished() -> bool:  # poll the job at most twice a second
        if time.monotonic() - checked["at"] > 0.5:
            checked["at"], checked["done"] = time.monotonic(), job_done()
        return bool(checked["done"])

    result = measure(
        engine, "search while indexing", url, search_request, images, 8, seconds, max_requests, finished
    )
    deadline = time.monotonic() + 300
    while not job_done() and time.monotonic() < deadline:
        time.sleep(0.5)
    final = httpx.get(f"{url}/jobs/{job['id']}").json()
    if final["state"] != "succeeded" or final["report"]["added"] != count:
        raise RuntimeError(f"the index job did not add the photos: {final}")
    elapsed = final["report"]["elapsed_s"]
    print(
        f"index job ({engine}): {count} photos in {elapsed:.1f} s ({count / elapsed:.1f} photos/s)",
        flush=True,
    )
    return result


def serve_and_measure(
    engine: str, photos: Path, library: Path, args: argparse.Namespace, seed: int
) -> list[Measurement]:
    """Every scenario against one `pixsift serve --engine ENGINE` process (`seed`: its index
    job's photos)."""
    results: list[Measurement] = []
    port = free_port()
    server = start_server(library, port, engine)
    url = f"http://127.0.0.1:{port}"
    try:
        stats = httpx.get(f"{url}/stats").json()
        assert stats["indexed"] >= args.images, stats
        for scenario, make in (("search", search_request), ("recommend", recommend_request)):
            for clients in args.clients:
                results.append(
                    measure(
                        engine, scenario, url, make, args.images, clients, args.seconds, args.max_requests
                    )
                )
                print(results[-1], flush=True)
        if args.index_images:
            results.append(
                during_indexing(
                    engine, url, photos, args.index_images, args.images, 60.0, args.max_requests, seed
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    return results


def refused_counts(args: argparse.Namespace) -> str | None:
    """Why these counts cannot be measured, or None: no images to search, no clients or no
    time would print a table of nothing (requests/s of nan) after building the library."""
    least = [
        ("--images", args.images, 1),
        ("--max-requests", args.max_requests, 1),
        ("--index-images", args.index_images, 0),
    ]
    least += [("--clients", clients, 1) for clients in args.clients]
    for option, value, minimum in least:
        if value < minimum:
            return f"{option} must be at least {minimum}, not {value}"
    if not args.seconds > 0:  # NaN too
        return f"--seconds must be more than 0, not {args.seconds}"
    return None


def refused_engines(engines: list[str]) -> str | None:
    """Why the server cannot run these engines, or None. A misspelt one was found only when its
    server exited at start, after the library was built and every engine before it measured:
    a traceback, and their figures lost with it."""
    from pixsift.errors import ModelError
    from pixsift.models.loading import ENGINES, check_runs

    if not engines:
        return f"--engines names no engine: give one or more of {', '.join(ENGINES)}, separated by commas"
    try:
        for engine in engines:
            check_runs("cpu", engine)  # the server runs on the CPU (start_server)
    except ModelError as exc:
        return exc.for_command_line()
    return None


def main() -> None:
    # the docstring's first paragraph: its first line alone stops mid-sentence
    summary = " ".join(__doc__.split("\n\n")[0].split()) if __doc__ else None
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement, at most")
    parser.add_argument("--max-requests", type=int, default=3000, help="per measurement, at most")
    parser.add_argument("--index-images", type=int, default=48, help="photos the index job embeds")
    parser.add_argument(
        "--engines",
        default="auto",
        help="comma-separated engines the server runs, each in turn on the same library "
        "(auto, torch, onnx, onnx-int8)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    # Any case, as `pixsift serve --engine ONNX` takes it; a row each, in the lower case it runs as.
    named = (engine.strip().lower() for engine in args.engines.split(","))
    engines = list(dict.fromkeys(engine for engine in named if engine))
    refusal = refused_counts(args) or refused_engines(engines)
    if refusal is not None:  # before the library is built and the other engines are measured
        parser.error(refusal)

    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="pixsift-serve-bench-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        checkpoint = random_checkpoint(args.model, work / "weights.pt")
        photos, library = build_library(work, args.images, args.model, checkpoint)
        print(f"library of {args.images} images built in {time.perf_counter() - started:.0f} s", flush=True)
        for number, engine in enumerate(engines):
            results += serve_and_measure(engine, photos, library, args, seed=3 + number * args.index_images)

    print(f"\n{args.model} (random weights), {args.images} images, CPU, one server process")
    print("| engine | scenario | clients | requests | errors | requests/s | p50 ms | p99 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in results:
        print(
            f"| {m.engine} | {m.scenario} | {m.clients} | {m.requests} | {m.errors} | {m.per_second:.1f} "
            f"| {m.p50_ms:.0f} | {m.p99_ms:.0f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": vars(args) | {"json": str(args.json)}, "results": [asdict(m) for m in results]},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
