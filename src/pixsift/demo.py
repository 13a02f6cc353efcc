"""The offline demo: a folder of synthetic images, indexed and searched with the bundled model.

Runs on a fresh machine without network access, from an installed pixsift (`make demo` in a
clone sets up the environment first):

    python -m pixsift.demo [--out .demo] [--count 300]

`synthetic-tiny` ships with pixsift and was trained on the same synthetic world (other seeds),
so the searches below are real semantic retrieval, not a random ranking. With network access,
real use is `pixsift index ~/Photos`, which downloads ViT-B-32 on first use.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from pixsift.synthetic import write_world
from pixsift.synthetic.world import MANIFEST

DEMO_SEED = 4242  # not a training seed: the demo images are new to the model


def pixsift(*args: str) -> None:
    """Run the real `pixsift` command and show it, as a user would type it."""
    print(f"\n$ pixsift {shlex.join(args)}", flush=True)
    code = subprocess.run([sys.executable, "-m", "pixsift", *args], check=False).returncode
    if code:  # the command said why on stderr
        sys.exit(code)


DEMO_ENTRIES = ("shapes", "library")


def _is_demo_folder(out: Path) -> bool:
    """Whether `out` may be emptied and filled anew: missing, empty, or an earlier demo's folder.

    The names alone do not tell: a user's own `library` (a real pixsift library) or `shapes`
    folder would be deleted. An earlier demo wrote its images' manifest before anything else.
    """
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    names = {entry.name for entry in out.iterdir()}
    return not names or (names <= set(DEMO_ENTRIES) and (out / "shapes" / MANIFEST).is_file())


def _clear(out: Path) -> None:
    """Remove an earlier demo's images and library but keep `out` itself: it may be the
    working directory (`--out .`), which removing would leave the user's shell in a deleted folder."""
    for name in DEMO_ENTRIES:
        entry = out / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.exists():
            shutil.rmtree(entry)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _write_images(folder: Path, count: int, seed: int) -> None:
    try:
        write_world(folder, count, seed=seed)
    except OSError as exc:  # a read-only or full output folder, a path through a file
        _fail(f"cannot write the demo's images into {folder}: {exc.strerror or exc}")


def _example(images: Path, kind: str) -> Path:
    """The first image of `kind` (e.g. green_triangle), or the first image at all."""
    return min(images.glob(f"*_{kind}.jpg"), default=min(images.glob("*.jpg")))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pixsift.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--out", type=Path, default=Path(".demo"), help="Demo folder (made anew; default .demo)."
    )
    parser.add_argument("--count", type=int, default=300, help="How many images to make (default 300).")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")

    try:
        _demo(parser, args.out.absolute(), args.count)
    except KeyboardInterrupt:  # Ctrl-C, here or in a pixsift command (which said so itself)
        print("\nThe demo was interrupted; run it again to start over.", file=sys.stderr)
        sys.exit(130)


def _demo(parser: argparse.ArgumentParser, out: Path, count: int) -> None:
    try:
        replaceable = _is_demo_folder(out)
    except OSError as exc:  # a folder that cannot be listed
        _fail(f"cannot look into {out}: {exc.strerror or exc}")
    if not replaceable:
        parser.error(f"{out} is not an earlier demo's folder, which the demo replaces: choose another --out")
    try:
        _clear(out)
    except OSError as exc:  # a read-only folder, or one a file of it cannot leave
        _fail(f"cannot replace the earlier demo in {out}: {exc.strerror or exc}")
    images, library = out / "shapes", out / "library"
    print(f"Making {count} synthetic images (coloured shapes) in {images} ...", flush=True)
    _write_images(images, count, DEMO_SEED)
    lib = ["--library", str(library)]

    pixsift("index", str(images), *lib, "--model", "synthetic-tiny")
    _write_images(images / "more", 12, DEMO_SEED + 1)
    pixsift("index", *lib)  # incremental: only the 12 new images are embedded
    pixsift("search", "a red circle", "-k", "5", *lib)
    pixsift("search", "three yellow stars", "-k", "5", *lib)
    pixsift("search", "red circle", "--minus", "red", "--plus", "blue", "-k", "5", *lib)
    pixsift("similar", str(_example(images, "green_triangle")), "-k", "5", *lib)
    pixsift("status", *lib)
    print(
        "\nThe file names tell each image's colour and shape, so you can check the rankings.\n"
        f'try: pixsift search "two green triangles" --library {shlex.quote(str(library))}'
    )


if __name__ == "__main__":
    main()
