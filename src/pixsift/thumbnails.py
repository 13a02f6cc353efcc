"""JPEG thumbnails of indexed images, made once and kept in the library's `thumbnails/` folder.

Each image has a folder of its own, `thumbnails/{id}/`, holding
`{size}-{file size}-{mtime}-r{RENDERING}.jpg` files, so a changed file gets a new thumbnail
instead of a stale one, and so does every file when pixsift changes how thumbnails look. The
cache stays bounded whatever sizes clients ask for: a size is capped at the image's own long
side (thumbnails are never enlarged, so every larger size is the same file), writing a thumbnail
removes those of earlier versions of the file, and at most MAX_VARIANTS sizes are kept per image
(the oldest made go first). Files are written to a temporary name and renamed, so concurrent
requests never see half a JPEG.

Memory: a JPEG is decoded at reduced scale (libjpeg's DCT scaling), but PNG, TIFF and WebP can
only be decoded whole, 4 bytes a pixel for most modes (a 12,000 x 12,000 PNG: 550 MiB). That
decoded copy is the only full-size one: it is converted to RGB and reduced a band of rows at a
time, and turned upright once small (it was turned and converted whole, three copies in all).
The decodes under way at once share DECODE_BUDGET_BYTES, so many requests for large images
cannot add up to more than that (one larger than the budget runs alone).

Colour: a photo from a phone or a camera often holds its colours in a wider space than sRGB
(Display P3, Adobe RGB), a print file in CMYK, each named by its embedded ICC profile. A
thumbnail, which carries no profile, is converted to sRGB (`pixsift.colour`, as indexing does),
what every viewer takes an untagged JPEG to be: kept as stored, its colours looked duller than
the photo's. A CMYK image is reduced in CMYK, so that its profile converts the small copy. The
small copy is converted, not the full-size image:
0.7 ms for 256 x 192 pixels, 12 ms for 1024 x 768 (a 12-megapixel JPEG's thumbnail takes 13 and
48 ms to make), where the full-size photo would take 200 ms; reading a profile first seen, 2.4 ms.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import os
import shutil
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from stat import S_ISREG

from PIL import ExifTags, Image

from pixsift.colour import srgb_transform, to_srgb
from pixsift.errors import BusyError, ImageError, ImageFileMissingError, ImageTooLargeError, LibraryWriteError
from pixsift.indexer.decode import allowed_formats, check_not_empty, describe_error, to_rgb
from pixsift.regular_file import open_regular
from pixsift.storage.database import write_error

MIN_SIZE = 16
MAX_SIZE = 1024
JPEG_QUALITY = 85
# How thumbnails are made, part of their names (and so of the HTTP ETag): raised whenever a
# change makes them look different, so those cached by an earlier pixsift are made anew and a
# client's copy is replaced. 2: transparent areas over white, wide-gamut colours to sRGB.
# 3: CMYK and grey images converted by their profiles too.
RENDERING = 3
MAX_VARIANTS = 8  # sizes kept per image: room for a UI's few, a bound for any client
DECODE_BUDGET_BYTES = 1024 * 1024 * 1024  # pixels being decoded for thumbnails at once, all told
BAND_BYTES = 16 * 1024 * 1024  # a large image is converted and reduced this much at a time
DECODE_WAIT_S = 30.0  # how long a thumbnail waits for room in that budget before giving up
# Thumbnails waiting for room at once: each waiting one holds a thread (in the HTTP service,
# one of the worker threads that searches also run on), so one more is refused at once.
MAX_WAITING = 4

# Orientation (EXIF tag 274) -> what turns the image upright, as ImageOps.exif_transpose does;
# read from the decoded image, applied to its shrunk copy (which carries no EXIF).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def thumbnail(
    source: str, cache_dir: Path, image_id: int, size: int, max_pixels: int, long_side: int | None = None
) -> Path:
    """The cached JPEG, at most `size` pixels on its long side, of the file `source`.

    The file may be removed later, when the image changes or other sizes push it out: read it
    soon after, or ask again. `long_side`, the image's longest side as indexed, lets a cached
    thumbnail be served without reading the image's header.
    """
    # A float or a text would otherwise fail later, as a message blaming the image file.
    whole = isinstance(size, numbers.Integral) and not isinstance(size, bool)  # numpy's too
    if not whole or not MIN_SIZE <= size <= MAX_SIZE:
        raise ImageError(f"A thumbnail size must be from {MIN_SIZE} to {MAX_SIZE} pixels, not {size!r}.")
    size = int(size)
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
    version = f"{stat.st_size}-{stat.st_mtime_ns}-r{RENDERING}"
    folder = cache_dir / str(image_id)
    if long_side:  # the image's size as indexed: a cached thumbnail is found without opening it
        cached = folder / f"{min(size, long_side)}-{version}.jpg"
        if cached.is_file():
            return cached
    with _open_file(source) as file, _open(file, source, max_pixels) as image:
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


def prune_thumbnails(cache_dir: Path, present: Callable[[list[int]], Collection[int]]) -> int:
    """Remove the thumbnails of images no longer in the library (an index run or a repair
    dropped them, a delete stopped between its commit and its own cleaning); `present` tells
    which of some ids still are. Returns how many images' thumbnails went."""
    try:
        ids = [int(name) for name in os.listdir(cache_dir) if name.isdigit()]
    except OSError:  # no thumbnail made yet
        return 0
    kept = set(present(ids)) if ids else set()
    gone = [image_id for image_id in ids if image_id not in kept]
    for image_id in gone:
        forget_thumbnails(cache_dir, image_id)
    return len(gone)


def _open_file(source: str) -> io.BufferedReader:
    """`source` opened for reading; a named pipe put there since the stat is refused, not
    waited on (opening one for reading waits for a writer)."""
    try:
        return open_regular(source)
    except OSError as exc:
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from exc


def _open(file: io.BufferedReader, source: str, max_pixels: int) -> Image.Image:
    """The image in `file`, its header read (not yet decoded), once known to be within
    `max_pixels`. Pillow leaves a file it was given open: its opener closes it."""
    try:
        check_not_empty(file)  # as indexing says it, not "not an image format pixsift reads"
        image = Image.open(file, formats=allowed_formats())
    except Image.DecompressionBombError as exc:  # Pillow's own check, the same as ours
        raise ImageTooLargeError(f"Cannot read image {source}: {describe_error(exc)}") from None
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
    """The JPEG thumbnail of `image` (opened, not decoded); `image` is closed on return."""
    try:
        image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
        with _DECODES.room_for(_decode_bytes(image)):
            image.load()
            upright = _UPRIGHT.get(_orientation(image))  # read after the pixels: a PNG's may follow them
            colours = srgb_transform(image)  # after the pixels too, for the same reason
            # A CMYK image is reduced in CMYK, so that its profile converts the small copy.
            cmyk = colours is not None and colours.input_mode == "CMYK"
            small = _shrunk(image, size, "CMYK" if cmyk else "RGB")
        if upright is not None:
            small = small.transpose(upright)
        # A copy, in RGB (from RGB, or CMYK for its profile): `image` can be closed.
        small = small.convert("RGB") if colours is None else to_srgb(small, colours)
    except BusyError:
        raise
    except Exception as exc:  # any decode failure is the file's fault, told as such
        raise ImageError(f"Cannot read image {source}: {describe_error(exc)}") from exc
    finally:
        image.close()
    out = io.BytesIO()
    small.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _shrunk(image: Image.Image, size: int, mode: str = "RGB") -> Image.Image:
    """`image` (decoded), in `mode` (RGB, or CMYK for a CMYK image) within `size` x `size`,
    resampled as Image.thumbnail does. A large one is first reduced by a whole factor, to at
    least twice the size, a band of rows at a time, so that converting it to RGB never takes a
    second full-size copy."""
    if image.mode == "F":  # scaled by the whole image's range (as indexing does): converted whole
        image = _rgb(image)
    width, height = image.size
    final = _fit(width, height, size)
    factor = max(width, height) // (2 * size)
    if factor < 2:
        return _in(image, mode).resize(final, Image.Resampling.BICUBIC)
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, BAND_BYTES // (4 * width * factor))  # whole blocks of factor rows
    for top in range(0, height, rows):
        band = _in(image.crop((0, top, width, min(top + rows, height))), mode)
        reduced.paste(band.reduce(factor), (0, top // factor))
    # The box: the image's own extent, as the last block of a side may be partly outside it.
    return reduced.resize(final, Image.Resampling.BICUBIC, box=(0, 0, width / factor, height / factor))


def _in(image: Image.Image, mode: str) -> Image.Image:
    """`image` in `mode`: RGB as `_rgb` makes it, or CMYK as it is (only a CMYK image is asked for that)."""
    return image if mode == "CMYK" else _rgb(image)


def _rgb(image: Image.Image) -> Image.Image:
    """As indexing converts: 16-bit and float images scaled to 8 bits, not clipped to white."""
    return image if image.mode == "RGB" else to_rgb(image)


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    """Within `size` x `size`, the aspect ratio kept as Image.thumbnail keeps it."""
    if max(width, height) <= size:
        return width, height
    aspect = width / height

    def nearest(number: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if aspect <= 1:
        return nearest(size * aspect, lambda n: abs(aspect - n / size)), size
    return size, nearest(size / aspect, lambda n: abs(aspect - size / n) if n else math.inf)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # broken EXIF must not cost the thumbnail: show the image as stored
        return 1


def _decode_bytes(image: Image.Image) -> int:
    """About what decoding `image` (at its draft size) takes: Pillow keeps most modes in 4 bytes
    a pixel, 16-bit ones in 2, palette, grey and black-and-white in 1; plus a band in RGB. Float
    images are converted whole (to grey, then RGB): 5 bytes a pixel more."""
    per_pixel = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    if image.mode == "F":
        per_pixel += 5
    return image.width * image.height * per_pixel + 2 * BAND_BYTES


class _DecodeBudget:
    """Room for the full-size decodes under way at once, shared by every thread."""

    def __init__(self) -> None:
        self._used = 0
        self._waiting = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def room_for(self, nbytes: int) -> Iterator[None]:
        def fits() -> bool:  # one decode larger than the whole budget still runs, alone
            return self._used == 0 or self._used + nbytes <= DECODE_BUDGET_BYTES

        with self._changed:
            if not fits() and self._waiting >= MAX_WAITING:
                raise _busy()
            self._waiting += 1
            try:
                if not self._changed.wait_for(fits, DECODE_WAIT_S):
                    raise _busy()
            finally:
                self._waiting -= 1
            self._used += nbytes
        try:
            yield
        finally:
            with self._changed:
                self._used -= nbytes
                self._changed.notify_all()


def _busy() -> BusyError:
    return BusyError("Too many large images are being decoded for thumbnails right now; try again shortly.")


_DECODES = _DecodeBudget()


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
        raise _write_failure(cache_dir, target.parent, exc) from exc
    finally:
        with contextlib.suppress(OSError):  # gone already, or its folder never made
            tmp.unlink()


def _write_failure(cache_dir: Path, folder: Path, exc: OSError) -> LibraryWriteError:
    """Why a thumbnail could not be written. A file in place of the cache folder or of an
    image's folder in it ("file exists") is named: asking whether the disk is full would send
    the operator the wrong way. That file may be someone's, so it is left alone."""
    for path in (cache_dir, folder):
        if os.path.lexists(path) and not path.is_dir():  # a file, a pipe, a link to nothing
            return LibraryWriteError(
                f"Cannot make thumbnails in the library at {cache_dir.parent}: {path} is not a "
                "folder, where pixsift keeps thumbnails. Move it away, and pixsift makes the "
                "folder anew; nothing else in the library is affected."
            )
    return write_error(cache_dir.parent, exc)


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
