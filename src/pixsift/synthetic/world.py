"""Sampling scenes from a seed and writing a folder of images with a `captions.jsonl` manifest."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from pixsift.synthetic.captions import caption_variants
from pixsift.synthetic.render import render_scene
from pixsift.synthetic.scene import BACKGROUNDS, COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, Scene

MANIFEST = "captions.jsonl"


def sample_scene(rng: random.Random) -> Scene:
    """A scene with every attribute drawn uniformly."""
    return Scene(
        colour=rng.choice(list(COLOURS)),
        shape=rng.choice(SHAPES),
        count=rng.choice(COUNTS),
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        background=rng.choice(BACKGROUNDS),
        seed=rng.getrandbits(32),
    )


def sample_scenes(count: int, seed: int) -> Iterator[Scene]:
    """`count` scenes, the same ones for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield sample_scene(rng)


def _save_jpeg(image: Image.Image, path: Path) -> None:
    """Encode in memory, then write: Pillow saving into a file takes a short write (a full
    disk) for success and leaves a truncated JPEG without a word."""
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=90)
    path.write_bytes(encoded.getvalue())


def write_world(
    out_dir: Path,
    count: int,
    seed: int,
    size: int = 512,
    on_image: Callable[[int], None] | None = None,
) -> Path:
    """Write `count` JPEG images and their manifest into `out_dir`; returns the manifest path.

    Each manifest line is `{"path": ..., "caption": ..., "attributes": {...}}`, the path
    relative to `out_dir` so the folder can be moved.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    caption_rng = random.Random(seed ^ 0x5EED)
    manifest = out_dir / MANIFEST
    with manifest.open("w", encoding="utf-8") as lines:
        for number, scene in enumerate(sample_scenes(count, seed)):
            name = f"{number:05d}_{scene.colour}_{scene.shape}.jpg"
            _save_jpeg(render_scene(scene, size), out_dir / name)
            caption = caption_rng.choice(caption_variants(scene))
            record = {"path": name, "caption": caption, "attributes": scene.attributes()}
            lines.write(json.dumps(record) + "\n")
            if on_image is not None:
                on_image(number + 1)
    return manifest
