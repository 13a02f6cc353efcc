"""Realistic sample photos made from the images scikit-image ships (nothing downloads).

Each photo is a random crop of a natural image, flipped, colour-jittered, resized and given a
little sensor noise, so photos are distinct from each other but look like real pictures, and
JPEG encoding behaves as it does on camera files. Used by the tests and the demo:

    python tools/sample_photos.py OUT_DIR --count 24 --size 1600x1200 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

SAMPLES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "horse",
    "camera",
    "coins",
    "moon",
    "clock",
)


@functools.cache
def sample_images() -> tuple[Image.Image, ...]:
    from skimage import data

    images = []
    for name in SAMPLES:
        array = getattr(data, name)()
        if array.dtype != np.uint8:
            array = (255 * (array.astype(np.float64) / max(float(array.max()), 1e-9))).astype(np.uint8)
        images.append(Image.fromarray(array).convert("RGB"))
    return tuple(images)


def make_photo(seed: int, size: tuple[int, int] = (1600, 1200)) -> Image.Image:
    """A distinct photo-like RGB image, the same for the same seed."""
    rng = random.Random(seed)
    source = sample_images()[seed % len(SAMPLES)]
    width, height = source.size
    crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
    x, y = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = source.crop((x, y, x + crop_w, y + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-5, 6, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def write_photos(
    folder: Path, count: int, *, size: tuple[int, int] = (1600, 1200), seed: int = 0, suffix: str = ".jpg"
) -> list[Path]:
    """`count` distinct photos in `folder`, named photo_SEED.jpg (or another format by suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset in range(count):
        path = folder / f"photo_{seed + offset:04d}{suffix}"
        save(make_photo(seed + offset, size), path)
        paths.append(path)
    return paths


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        options.setdefault("quality", 90)
    image.save(path, **options)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    paths = write_photos(args.out, args.count, size=(width, height), seed=args.seed)
    print(f"wrote {len(paths)} photos to {args.out}")


if __name__ == "__main__":
    main()
