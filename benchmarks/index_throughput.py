"""Indexing throughput: the model's own rate next to the whole `pixsift index` command's.

    python benchmarks/index_throughput.py [--count 64] [--size 4032x3024] [--json FILE]

Measured side by side in one run on the same machine:
  1. encoder-only: images/s of the image tower alone on preprocessed tensors, at the indexer's
     batch size (the compute limit);
  2. end to end: a fresh `pixsift index` of generated photos in a subprocess, as images/s of the
     embedding phase (decode + model + commits) and of the whole process (imports, model load);
  3. the ratio of the embedding phase to encoder-only, and the command's peak memory;
  4. decoding one photo, reduced scale (pixsift's path) against full size.
The model is the default architecture with random weights: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from sample_photos import write_photos  # noqa: E402


def random_checkpoint(model: str, path: Path) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)
    return path


def encoder_only(model: str, checkpoint: Path, batch_size: int, seconds: float) -> float:
    import torch

    from pixsift.models.clip import ClipEmbedder
    from pixsift.models.naming import resolve_model_spec

    embedder = ClipEmbedder.load(resolve_model_spec(model, str(checkpoint)), "cpu")
    batch = [torch.randn(3, embedder.image_size, embedder.image_size) for _ in range(batch_size)]
    embedder.embed_images(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embedder.embed_images(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def decode_ms(photos: Path, model: str, checkpoint: Path) -> tuple[float, float]:
    """Milliseconds per photo, one thread: pixsift's reduced-scale path, and a full decode,
    each followed by the model's own preprocessing."""
    from PIL import Image

    from pixsift.indexer.decode import default_max_pixels, load_image
    from pixsift.models.clip import ClipEmbedder
    from pixsift.models.naming import resolve_model_spec

    embedder = ClipEmbedder.load(resolve_model_spec(model, str(checkpoint)), "cpu")
    paths = sorted(photos.iterdir())
    started = time.perf_counter()
    for path in paths:
        load_image(
            str(path),
            preprocess=embedder.preprocess,
            target_size=embedder.image_size,
            max_pixels=default_max_pixels(),
        )
    reduced = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            embedder.preprocess(image)
    full = time.perf_counter() - started
    return 1000 * reduced / len(paths), 1000 * full / len(paths)


def end_to_end(
    photos: Path, library: Path, model: str, checkpoint: Path, batch_size: int
) -> dict[str, float]:
    command = [sys.executable, "-m", "pixsift", "index", str(photos), "--library", str(library)]
    command += ["--model", model, "--pretrained", str(checkpoint), "--batch-size", str(batch_size)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    embed_rate = float(re.search(r"([\d.]+) images/s", result.stdout).group(1))  # type: ignore[union-attr]
    count = int(result.stdout.split()[0])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"embed_rate": embed_rate, "process_rate": count / wall, "wall_s": wall, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=64, help="photos to index")
    parser.add_argument("--size", default="4032x3024", help="photo size, WIDTHxHEIGHT (phone: 4032x3024)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to time encoder-only")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="pixsift-bench-") as folder:
        work = Path(folder)
        write_photos(work / "photos", args.count, size=(width, height), seed=1)
        checkpoint = random_checkpoint(args.model, work / "weights.pt")
        encoder = encoder_only(args.model, checkpoint, args.batch_size, args.seconds)
        reduced_ms, full_ms = decode_ms(work / "photos", args.model, checkpoint)
        run = end_to_end(work / "photos", work / "library", args.model, checkpoint, args.batch_size)

    rows = [
        ("encoder-only (images/s)", f"{encoder:.1f}"),
        ("pixsift index, embedding phase (images/s)", f"{run['embed_rate']:.1f}"),
        ("pixsift index, whole process (images/s)", f"{run['process_rate']:.1f}"),
        ("embedding phase / encoder-only", f"{run['embed_rate'] / encoder:.2f}"),
        ("decode + preprocess, reduced scale (ms/photo)", f"{reduced_ms:.0f}"),
        ("decode + preprocess, full size (ms/photo)", f"{full_ms:.0f}"),
        ("pixsift index peak memory (MB)", f"{run['peak_mb']:.0f}"),
    ]
    print(f"{args.model}, {args.count} JPEGs of {args.size}, batch {args.batch_size}, CPU")
    width_col = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width_col}}  {value:>8}")
    if args.json:
        results = {"encoder_only_rate": encoder, **run, "ratio": run["embed_rate"] / encoder}
        results |= {"decode_reduced_ms": reduced_ms, "decode_full_ms": full_ms}
        args.json.write_text(
            json.dumps({"settings": vars(args) | {"json": str(args.json)}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
