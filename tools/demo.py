"""The offline demo: make sample photos and a tiny model, then index and search with the CLI.

Runs on a fresh machine without network access (`make demo` sets up the environment first):

    python tools/demo.py [--out .demo] [--count 24]

The tiny model is randomly initialised, so its rankings are arbitrary: the demo shows the whole
pipeline working (scan, decode, embed, SQLite, FAISS, incremental re-index, search), not search
quality. With network access, real use is `pixsift index ~/Photos`, which downloads ViT-B-32.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from sample_photos import write_photos
from tiny_model import TINY_CONFIG, make_checkpoint


def pixsift(*args: str) -> None:
    """Run the real `pixsift` command and show it, as a user would type it."""
    print(f"\n$ pixsift {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "pixsift", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(".demo"), help="Demo folder (recreated).")
    parser.add_argument("--count", type=int, default=24, help="How many photos to make.")
    args = parser.parse_args()

    out: Path = args.out.absolute()
    shutil.rmtree(out, ignore_errors=True)
    photos, library = out / "photos", out / "library"
    print(f"Making {args.count} sample photos in {photos} and a tiny random CLIP model ...", flush=True)
    write_photos(photos, args.count, seed=1)
    checkpoint = make_checkpoint(out / "tiny-clip.pt")

    model = ["--model", str(TINY_CONFIG), "--pretrained", str(checkpoint)]
    pixsift("index", str(photos), "--library", str(library), *model)
    write_photos(photos / "new", 3, seed=1000)
    pixsift("index", "--library", str(library))  # incremental: only the 3 new photos
    pixsift("search", "a cat on a sofa", "-k", "5", "--library", str(library))
    pixsift("similar", str(photos / "photo_0001.jpg"), "-k", "3", "--library", str(library))
    pixsift("status", "--library", str(library))
    print(
        "\nThe tiny model is random, so these rankings are arbitrary; the pipeline is real.\n"
        f'try: pixsift search "a rocket" --library {shlex.quote(str(library))}'
    )


if __name__ == "__main__":
    main()
