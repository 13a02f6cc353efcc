"""The images people really have, end to end: made with Pillow, indexed by the bundled
`synthetic-tiny` model (which knows colours), searched, and shown as thumbnails."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.mark.parametrize("make", [rgba_png, alpha_webp, palette_png, palette_gif])
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
