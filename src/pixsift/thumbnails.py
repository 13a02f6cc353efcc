"""JPEG thumbnails of indexed images, made once and kept in the library's `thumbnails/` folder.

A thumbnail's file name carries the image id, the size asked for and the source file's size
and modification time, so a changed file gets a new thumbnail instead of a stale one. Files are
written to a temporary name and renamed, so concurrent requests never see half a JPEG.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from PIL import Image, ImageOps

from pixsift.errors import ImageError, ImageTooLargeError
from pixsift.indexer.decode import allowed_formats, describe_error
from pixsift.storage.database import write_error

MIN_SIZE = 16
MAX_SIZE = 1024
JPEG_QUALITY = 85


def thumbnail(source: str, cache_dir: Path, image_id: int, size: int, max_pixels: int) -> Path:
    """The cached JPEG, at most `size` pixels on its long side, of the file `source`."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ImageError(f"A thumbnail size must be from {MIN_SIZE} to {MAX_SIZE} pixels, not {size}.")
    try:
        stat = os.stat(source)
    except OSError as exc:
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from None
    target = cache_dir / f"{image_id}-{size}-{stat.st_size}-{stat.st_mtime_ns}.jpg"
    if target.is_file():
        return target
    data = _render(source, size, max_pixels)
    _write(target, data, cache_dir)
    return target


def _write(target: Path, data: bytes, cache_dir: Path) -> None:
    """Write `target` whole or not at all; a failure is the library folder's (a full disk, a
    read-only folder), told as such rather than as the image's."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{id(data)}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        raise write_error(cache_dir.parent, exc) from exc
    finally:
        with contextlib.suppress(OSError):  # gone already, or its folder never made
            tmp.unlink()


def _render(source: str, size: int, max_pixels: int) -> bytes:
    try:
        with Image.open(source, formats=allowed_formats()) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"Image {source} has {width}x{height} pixels, more than the limit of {max_pixels:,}."
                )
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except ImageTooLargeError:
        raise
    except Exception as exc:  # any decode failure is the file's fault, told as such
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from exc
    upright.thumbnail((size, size))
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
