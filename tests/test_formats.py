"""The images people really have, end to end: made with Pillow, indexed by the bundled
`synthetic-tiny` model (which knows colours), searched, and shown as thumbnails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

import pixsift
from pixsift import Library
from pixsift.synthetic.render import render_scene
from pixsift.synthetic.scene import Scene


def red_square(size: int = 256) -> Image.Image:
    return render_scene(Scene("red", "square", 1, "large", "middle", "plain", 7), size)


def cut_out(image: Image.Image) -> np.ndarray:
    """RGBA pixels of `image` with its plain background made transparent, and black under
    that transparency (as most editors write a transparent pixel)."""
    rgb = np.asarray(image).astype(np.int16)
    shape = np.abs(rgb - rgb[0, 0]).sum(axis=2) > 60
    rgba = np.zeros((*shape.shape, 4), np.uint8)
    rgba[..., :3] = rgb * shape[..., None]
    rgba[..., 3] = shape * 255
    return rgba


def rgba_png(folder: Path) -> Path:
    Image.fromarray(cut_out(red_square()), "RGBA").save(folder / "rgba.png")
    return folder / "rgba.png"


def alpha_webp(folder: Path) -> Path:
    Image.fromarray(cut_out(red_square()), "RGBA").save(folder / "alpha.webp", lossless=True)
    return folder / "alpha.webp"


def alpha_avif(folder: Path) -> Path:
    Image.fromarray(cut_out(red_square()), "RGBA").save(folder / "alpha.avif", quality=90)
    return folder / "alpha.avif"


def palette_png(folder: Path, suffix: str = ".png") -> Path:
    """A palette image whose last entry (black) is marked transparent: a PNG's tRNS, a GIF's."""
    rgba = cut_out(red_square())
    quantized = Image.fromarray(rgba[..., :3]).quantize(8)
    indices = np.asarray(quantized).copy()
    indices[rgba[..., 3] == 0] = 8
    image = Image.fromarray(indices.astype(np.uint8), "P")
    palette = [*(quantized.getpalette() or [])[:24], 0, 0, 0]
    image.putpalette(palette + [0] * (768 - len(palette)))
    path = folder / f"palette{suffix}"
    image.save(path, transparency=8)
    return path


def palette_gif(folder: Path) -> Path:
    return palette_png(folder, ".gif")


@pytest.mark.parametrize(
    "make",
    [
        rgba_png,
        alpha_webp,
        pytest.param(
            alpha_avif, marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF codec")
        ),
        palette_png,
        palette_gif,
    ],
)
def test_a_transparent_image_is_seen_over_white(
    tmp_path: Path, library_dir: Path, make: Callable[[Path], Path]
) -> None:
    """A red logo on a transparent background: its transparent pixels were taken as the black
    stored under them, so the model saw (and the thumbnail showed) a red square on black, and
    the image was nearer "black" than "red"."""
    photos = tmp_path / "photos"
    photos.mkdir()
    source = make(photos)
    red_square().save(photos / "opaque.jpg", quality=95)
    with Library.open(library_dir) as library:
        report = library.index(photos, model="synthetic-tiny")
        assert report.failed == 0
        red = {str(result.path): result.score for result in library.search("a red square", k=10)}
        black = {str(result.path): result.score for result in library.search("a black square", k=10)}
        assert red[str(source)] > black[str(source)] + 0.1
        # The same picture as the red square on its pale background, not as one on black.
        (found,) = library.similar(photos / "opaque.jpg", k=1)
        assert str(found.path) == str(source) and found.score > 0.9
        # A copy that is not indexed is embedded from its file: the same pixels as indexing's.
        copy = tmp_path / f"copy{source.suffix}"
        shutil.copy(source, copy)
        (itself,) = library.similar(copy, k=1)
        assert str(itself.path) == str(source) and itself.score > 0.999
        thumbnail = Image.open(library.thumbnail(found.id, 64))
        assert min(thumbnail.getpixel((0, 0))) > 240  # type: ignore[arg-type] # RGB: a tuple


LONG_THIN_SCRIPT = """
import resource, sys
import numpy as np
from PIL import Image
from pixsift.models.pixels import PixelConfig, preprocess
limit = 1024 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
image = Image.new("RGB", (300_000, 1), (255, 0, 0))
pixels = preprocess(image, PixelConfig(224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
assert pixels.shape == (3, 224, 224), pixels.shape
assert np.allclose(pixels[:, 100, 100], (1.0, 0.0, 0.0), atol=0.01), pixels[:, 100, 100]
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS bounds the address space on Linux")
def test_a_long_thin_image_is_preprocessed_in_little_memory() -> None:
    """A 300,000 x 1 PNG (a few hundred bytes) was resized whole before its centre was cut
    out: its short side to 224 made it 67 million pixels wide, tens of gigabytes, and the
    index run failed it with "not enough memory to decode" or took the machine's memory."""
    env = {**os.environ, "PYTHONPATH": str(Path(pixsift.__file__).parents[1])}
    # numpy's BLAS reserves address space per thread: on a many-core machine, more than the limit.
    env |= {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LONG_THIN_SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
