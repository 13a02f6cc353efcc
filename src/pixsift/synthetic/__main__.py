"""`python -m pixsift.synthetic OUT_DIR --count N --seed S`: write a synthetic captioned world."""

from __future__ import annotations

import argparse
from pathlib import Path

from pixsift.synthetic.world import write_world


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pixsift.synthetic",
        description="Write N captioned synthetic images (coloured shapes) and captions.jsonl.",
    )
    parser.add_argument("out_dir", type=Path, help="Folder to write into (created if missing).")
    parser.add_argument("--count", type=int, default=200, help="How many images (default 200).")
    parser.add_argument("--seed", type=int, default=0, help="Same seed, same images (default 0).")
    parser.add_argument("--size", type=int, default=512, help="Image side in pixels (default 512).")
    args = parser.parse_args()
    if args.count < 1 or args.size < 32:
        parser.error("--count must be at least 1 and --size at least 32")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"{args.out_dir} exists and is not a folder")
    try:
        manifest = write_world(args.out_dir, args.count, args.seed, args.size)
    except OSError as exc:  # a path through a file, no permission, a full disk
        parser.exit(1, f"error: cannot write into {args.out_dir}: {exc.strerror or exc}\n")
    print(f"wrote {args.count} images and {manifest}")


if __name__ == "__main__":
    main()
