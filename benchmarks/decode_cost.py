"""Where the CPU time of decoding one photo goes, step by step, on one thread.

    python benchmarks/decode_cost.py [--photos DIR] [--count 60] [--size 4032x3024] [--rounds 2]
                                     [--profile {srgb,display-p3,adobe-rgb}] [--json FILE]

Indexing phone photos on a CPU is bounded by decoding as much as by the model (see
docs/benchmarks.md): this prints, in core-milliseconds a photo (`time.process_time` on this
one thread, after a few warm-up photos), what each step of pixsift's decode path costs:
reading the file, its SHA-256, the JPEG decode at reduced scale (Pillow's `draft`, which lets
libjpeg-turbo compute only the DC term of each 8x8 block), orientation and RGB
(`open_oriented`), resizing, cropping and normalising for ViT-B-32 (`pixels.preprocess`), and
the whole of `load_image` as the indexer calls it. Where simplejpeg is installed, its decode at
the same scale is timed beside Pillow's. Photos come from ../shared/photos.py into a temporary
folder unless `--photos` names a folder of JPEGs (its first `--count` are used). `--profile`
embeds an ICC profile in each (the pixels untouched), to time the conversion to sRGB that
photos from a phone (Display P3) or a camera (Adobe RGB) cost: as the indexer does it, after
the resize (so in the `pixels.preprocess` row), not in `open_oriented`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, features

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))

from icc_profiles import ADOBE_RGB, DISPLAY_P3, tag_jpeg  # noqa: E402
from index_throughput import DEFAULT_PHOTOS_SCRIPT, make_photos  # noqa: E402
from pixsift.indexer.decode import OrientedImage, load_image, open_oriented  # noqa: E402
from pixsift.models.pixels import PixelConfig, preprocess  # noqa: E402

TARGET_SIZE = 224  # ViT-B-32's input
# open_clip's OPENAI_DATASET_MEAN and _STD, which ViT-B-32 uses (importing open_clip costs seconds)
VIT_B_32 = PixelConfig(TARGET_SIZE, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
MAX_PIXELS = 200_000_000
WARM_UP = 5


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


PROFILES: dict[str, Callable[[], bytes]] = {
    "srgb": _srgb_profile,
    "display-p3": lambda: DISPLAY_P3,
    "adobe-rgb": lambda: ADOBE_RGB,
}


def core_ms(step: Callable[[Any], object], inputs: list[Any], rounds: int) -> float:
    """Mean CPU milliseconds of `step` per input, on this thread."""
    for item in inputs[:WARM_UP]:
        step(item)
    start = time.process_time()
    for _ in range(rounds):
        for item in inputs:
            step(item)
    return (time.process_time() - start) * 1000 / (rounds * len(inputs))


def read(path: Path) -> bytes:
    return path.read_bytes()


def pillow_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (TARGET_SIZE, TARGET_SIZE))
    image.load()
    return image


def measure(files: list[Path], rounds: int) -> list[tuple[str, float]]:
    datas = [read(path) for path in files]
    oriented = [orient(data) for data in datas]
    rows = [
        ("read the file", core_ms(read, files, rounds)),
        ("SHA-256 of its bytes", core_ms(lambda data: hashlib.sha256(data).hexdigest(), datas, rounds)),
        ("JPEG decode at reduced scale (Pillow draft)", core_ms(pillow_decode, datas, rounds)),
    ]
    try:
        import simplejpeg  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        rows.append(
            (
                f"  the same with simplejpeg {simplejpeg.__version__}, fast DCT and upsampling",
                core_ms(
                    lambda data: simplejpeg.decode_jpeg(
                        data, min_height=TARGET_SIZE, min_width=TARGET_SIZE, fastdct=True, fastupsample=True
                    ),
                    datas,
                    rounds,
                ),
            )
        )
    rows += [
        (
            "decode + orientation + RGB (open_oriented)",
            core_ms(orient, datas, rounds),
        ),
        (
            "resize, crop, normalise (pixels.preprocess)",
            core_ms(lambda opened: preprocess(opened.image, VIT_B_32, opened.colours), oriented, rounds),
        ),
        ("whole load_image, as the indexer calls it", core_ms(load, files, rounds)),
    ]
    return rows


def orient(data: bytes) -> OrientedImage:
    """Decoded as the indexer does: colours still to convert, once resized."""
    return open_oriented(data, TARGET_SIZE, MAX_PIXELS, defer_colours=True)


def load(path: Path) -> object:
    return load_image(
        str(path),
        preprocess=lambda image, colours=None: preprocess(image, VIT_B_32, colours),
        target_size=TARGET_SIZE,
        max_pixels=MAX_PIXELS,
    )


def photos_to_time(args: argparse.Namespace, scratch: Path) -> list[Path]:
    folder = args.photos or make_photos(
        DEFAULT_PHOTOS_SCRIPT, scratch / "photos", args.count, args.size, seed=1
    )
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg"))[
        : args.count
    ]
    if not files:
        sys.exit(f"decode_cost.py: error: no JPEG in {folder}")
    if args.profile:
        profile = PROFILES[args.profile]()
        tagged = scratch / "tagged"
        tagged.mkdir()
        for path in files:
            (tagged / path.name).write_bytes(tag_jpeg(path.read_bytes(), profile))
        files = [tagged / path.name for path in files]
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=Path, help="a folder of JPEGs to time (default: make them)")
    parser.add_argument("--count", type=int, default=60, help="photos to time (default 60)")
    parser.add_argument("--size", default="4032x3024", help="size of the photos made (default 4032x3024)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos per step (default 2)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="embed this ICC profile in each photo")
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    args = parser.parse_args()
    if args.count < WARM_UP or args.rounds < 1:
        parser.error(f"--count must be at least {WARM_UP} and --rounds at least 1")
    with tempfile.TemporaryDirectory(prefix="pixsift-decode-") as scratch:
        files = photos_to_time(args, Path(scratch))
        mean_mb = sum(path.stat().st_size for path in files) / len(files) / 1e6
        rows = measure(files, args.rounds)
    print(
        f"{len(files)} photos{f' tagged {args.profile}' if args.profile else ''}, "
        f"{mean_mb:.2f} MB each on average; {platform.machine()}, "
        f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"
    )
    print("| step | core-ms a photo |\n| --- | ---: |")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"photos": len(files), "profile": args.profile, "mean_mb": mean_mb, "core_ms": dict(rows)},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
