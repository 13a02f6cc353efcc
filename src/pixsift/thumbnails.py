"""JPEG thumbnails of indexed images, made once and kept in the library's `thumbnails/` folder.

Each image has a folder of its own, `thumbnails/{id}/`, holding `{size}-{file size}-{mtime}.jpg`
files, so a changed file gets a new thumbnail instead of a stale one. The cache stays bounded
whatever sizes clients ask for: a size is capped at the image's own long side (thumbnails are
never enlarged, so every larger size is the same file), writing a thumbnail removes those of
earlier versions of the file, and at most MAX_VARIANTS sizes are kept per image (the oldest made
go first). Files are written to a temporary name and renamed, so concurrent requests never see
half a JPEG.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from stat import S_ISREG

from PIL import Image, ImageOps

from pixsift.errors import ImageError, ImageFileMissingError, ImageTooLargeError
from pixsift.indexer.decode import allowed_formats, describe_error
from pixsift.storage.database import write_error

THUMBNAILS_DIR = "thumbnails"  # the cache's folder inside the library folder
MIN_SIZE = 16
MAX_SIZE = 1024
JPEG_QUALITY = 85
MAX_VARIANTS = 8  # sizes kept per image: room for a UI's few, a bound for any client


def thumbnail(
    source: str, cache_dir: Path, image_id: int, size: int, max_pixels: int, long_side: int | None = None
) -> Path:
    """The cached JPEG, at most `size` pixels on its long side, of the file `source`.

    The file may be removed later, when the image changes or other sizes push it out: read it
    soon after, or ask again. `long_side`, the image's longest side as indexed, lets a cached
    thumbnail be served without reading the image's header.
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ImageError(f"A thumbnail size must be from {MIN_SIZE} to {MAX_SIZE} pixels, not {size}.")
    try:
        stat = os.stat(source)
    except FileNotFoundError:
        raise ImageFileMissingError(
            f"The file of image {image_id}, {source}, is no longer there; the next index run of "
            "its folder drops it from the library."
        ) from None
    except OSError as exc:
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from None
    if not S_ISREG(stat.st_mode):  # replaced by a folder or a named pipe (opening it would wait)
        raise ImageError(f"Cannot read image {source}: it is no longer a file.")
    version = f"{stat.st_size}-{stat.st_mtime_ns}"
    folder = cache_dir / str(image_id)
    if long_side:  # the image's size as indexed: a cached thumbnail is found without opening it
        cached = folder / f"{min(size, long_side)}-{version}.jpg"
        if cached.is_file():
            return cached
    with _open(source, max_pixels) as image:
        size = min(size, max(image.size))  # never enlarged: every larger size is this one
        target = folder / f"{size}-{version}.jpg"
        if target.is_file():
            return target
        data = _render(image, source, size)
    _write(target, data, cache_dir)
    _prune(folder, target, version)
    return target


def forget_thumbnails(cache_dir: Path, image_id: int) -> None:
    """Remove every cached thumbnail of an image (it left the library)."""
    shutil.rmtree(cache_dir / str(image_id), ignore_errors=True)


def prune_thumbnails(cache_dir: Path, present: Callable[[list[int]], Collection[int]]) -> None:
    """Remove the thumbnails of images no longer in the library (an index run dropped them);
    `present` tells which of some ids still are."""
    try:
        ids = [int(name) for name in os.listdir(cache_dir) if name.isdigit()]
    except OSError:  # no thumbnail made yet
        return
    kept = set(present(ids)) if ids else set()
    for image_id in ids:
        if image_id not in kept:
            forget_thumbnails(cache_dir, image_id)


def _open(source: str, max_pixels: int) -> Image.Image:
    """The image, its header read (not yet decoded), once known to be within `max_pixels`."""
    try:
        image = Image.open(source, formats=allowed_formats())
    except Exception as exc:  # any failure to read is the file's fault, told as such
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"Image {source} has {width}x{height} pixels, more than the limit of {max_pixels:,}."
        )
    return image


def _render(image: Image.Image, source: str, size: int) -> bytes:
    try:
        image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
        upright = ImageOps.exif_transpose(image).convert("RGB")
    except Exception as exc:  # any decode failure is the file's fault, told as such
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from exc
    upright.thumbnail((size, size))
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _write(target: Path, data: bytes, cache_dir: Path) -> None:
    """Write `target` whole or not at all; a failure is the library folder's (a full disk, a
    read-only folder), told as such rather than as the image's."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{id(data)}")
    try:
        cache_dir.mkdir(exist_ok=True)  # in the library folder, never making that folder anew
        target.parent.mkdir(exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        raise write_error(cache_dir.parent, exc) from exc
    finally:
        with contextlib.suppress(OSError):  # gone already, or its folder never made
            tmp.unlink()


def _prune(folder: Path, keep: Path, version: str) -> None:
    """Remove the thumbnails of earlier versions of the file, and of this version all but the
    MAX_VARIANTS made last (`keep`, just written, among them)."""
    current: list[tuple[int, str]] = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.endswith(".jpg") or entry.name == keep.name:
                continue  # temporary files of writes under way are their writers' to remove
            if entry.name.split("-", 1)[-1] != f"{version}.jpg":
                _remove(entry.path)
            else:
                current.append((entry.stat().st_mtime_ns, entry.path))
    current.sort(reverse=True)
    for _, path in current[MAX_VARIANTS - 1 :]:
        _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):  # another request removed it first
        os.unlink(path)
