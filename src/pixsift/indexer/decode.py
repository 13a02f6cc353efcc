"""Reading one image file into what the model needs, fast and safely.

Each file is read once: the same bytes are hashed (to recognise moved and duplicate files)
and decoded (one over `READ_WHOLE_MAX_BYTES` is decoded from disk and hashed as a stream, so
memory stays bounded). Its header is checked first, so a huge file that is not an image (or
claims too many pixels) is refused without being read into memory. A CLIP model looks at
about 224 pixels, so a 12-megapixel JPEG is decoded at reduced scale by libjpeg's DCT scaling
(Pillow's `draft`), several times faster than a full decode, while staying at least the
model's size so the final resize is the model's own.
EXIF orientation is applied before the model's preprocessing, as a viewer shows the photo,
and colours in another space than sRGB (an embedded ICC profile: a phone's Display P3, a
camera's Adobe RGB, a print file's CMYK) are converted to sRGB. For the model, an RGB or grey
image is converted after the resize and crop to its input (224 x 224), a quarter of the pixels
of even the small decoded copy; a CMYK one before (the resize needs RGB).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol

from PIL import Image, ImageOps, UnidentifiedImageError

from pixsift.colour import srgb_transform, to_srgb
from pixsift.image_formats import WANTED_FORMATS
from pixsift.regular_file import NotRegularFileError, open_regular

if TYPE_CHECKING:
    from PIL.ImageCms import ImageCmsTransform

# Files larger than this are decoded from disk and hashed as a stream rather than read whole:
# a valid image header followed by gigabytes (a damaged copy, a mislabelled archive) must not
# cost that much memory in each decode worker. Photos, even with a video appended, are smaller.
READ_WHOLE_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DecodedImage:
    pixels: Any  # the model's input, as made by the embedder's preprocess
    content_hash: str
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str
    taken_at: str | None = None  # EXIF date taken, "YYYY-MM-DD HH:MM:SS"; None if absent


EXIF_IFD = 0x8769
EXIF_DATE_TIME_ORIGINAL = 0x9003
EXIF_DATE_TIME = 0x0132  # when the file was last changed by the camera or an editor


@functools.cache
def heif_support() -> bool:
    """Register pillow-heif's HEIC/HEIF opener if that optional extra is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def allowed_formats() -> list[str]:
    """The wanted formats this Pillow can open (HEIF only once pillow-heif registered it)."""
    Image.init()
    return [name for name in WANTED_FORMATS if name in Image.OPEN]


def default_max_pixels() -> int:
    """Pillow's own decompression-bomb error threshold (twice MAX_IMAGE_PIXELS)."""
    return 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str) -> str:
    with open_regular(path) as f:
        return _hash_stream(f)


def _hash_stream(file: io.BufferedReader) -> str:
    return hashlib.file_digest(file, "sha256").hexdigest()


class Preprocess(Protocol):
    """An embedder's `preprocess`: an RGB image to the model's input, its colours converted to
    sRGB by `colours` (when not None) once it is the model's size."""

    def __call__(self, image: Image.Image, colours: ImageCmsTransform | None = None, /) -> Any: ...


def load_image(
    path: str,
    *,
    preprocess: Preprocess,
    target_size: int,
    max_pixels: int,
) -> DecodedImage:
    """Read, hash, decode and preprocess one file. Raises on any unreadable image."""
    with open_regular(path) as f:
        size = check_header(f, max_pixels)  # a huge file that is no image, or a bomb, is never read
        f.seek(0)
        if size > READ_WHOLE_MAX_BYTES:
            opened = open_oriented(f, target_size, max_pixels, defer_colours=True)
            f.seek(0)
            content_hash = _hash_stream(f)
        else:
            data = f.read()
            opened = open_oriented(data, target_size, max_pixels, defer_colours=True)
            content_hash = hash_bytes(data)
    return DecodedImage(
        preprocess(opened.image, opened.colours),
        content_hash,
        opened.width,
        opened.height,
        opened.format,
        opened.taken_at,
    )


def check_header(file: BinaryIO, max_pixels: int) -> int:
    """Raise unless `file` starts like an image of a wanted format within `max_pixels`; return
    its size in bytes.

    Opening is lazy: Pillow reads the header (a few kilobytes), no pixels, so the whole file
    is read into memory only once it is known to be an image worth decoding.
    """
    size = check_not_empty(file)
    with Image.open(file, formats=allowed_formats()) as image:
        _check_pixels(image, max_pixels)
    return size


def check_not_empty(file: BinaryIO) -> int:
    """Raise unless `file` holds some bytes; return its size. An empty file (a copy that
    never finished, a placeholder) is told as such, not as a format Pillow does not know."""
    size = os.fstat(file.fileno()).st_size
    if size == 0:
        raise ValueError("empty file")
    return size


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise Image.DecompressionBombError(
            f"{width}x{height} pixels is more than the limit of {max_pixels:,}"
        )


class OrientedImage(NamedTuple):
    image: Image.Image  # upright RGB, at least the target size on its short side
    width: int  # the full-size width and height as displayed
    height: int
    format: str
    taken_at: str | None  # EXIF date taken, see `_taken_at`
    colours: ImageCmsTransform | None = None  # to sRGB, still to apply to `image` (see below)


def open_oriented(
    source: bytes | BinaryIO, target_size: int, max_pixels: int, *, defer_colours: bool = False
) -> OrientedImage:
    """Decode an encoded image (bytes, or a file open for reading) to an upright RGB image no
    smaller than `target_size` on its short side, in sRGB.

    With `defer_colours`, an RGB or grey image whose profile is not sRGB comes in its own
    colour space, with the transform to sRGB as `colours`, for the model's preprocessing to
    apply once the image is resized to the model's input: the conversion costs by the pixel,
    and 224 x 224 is a quarter of a phone photo's 1/8-scale decode (504 x 378), a tiny share
    of a web image's. A P3 photo's vector converted after the resize has a cosine above 0.9998
    with the one converted before (tests/test_colour.py). A CMYK image is converted here
    all the same: its resize needs RGB, which only its profile makes right."""
    if not source:
        raise ValueError("empty file")
    file = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(file, formats=allowed_formats()) as image:
        _check_pixels(image, max_pixels)
        width, height = image.size
        image_format = image.format or "unknown"
        if image_format in ("JPEG", "MPO"):
            image.draft("RGB", (target_size, target_size))
        image.load()
        taken = _taken_at(image)  # after load: a PNG may keep its EXIF after the pixels
        colours = srgb_transform(image)  # after load too: a PNG's profile may follow the pixels
        upright = _upright(image)
        if upright.size != image.size:  # rotated by 90 degrees
            width, height = height, width
        if defer_colours and colours is not None and upright.mode != "CMYK":
            return OrientedImage(to_rgb(upright), width, height, image_format, taken, colours)
        return OrientedImage(as_srgb(upright, colours), width, height, image_format, taken)


def _taken_at(image: Image.Image) -> str | None:
    """The EXIF DateTimeOriginal (else DateTime) as "YYYY-MM-DD HH:MM:SS", or None.

    Cameras write "YYYY:MM:DD HH:MM:SS"; blank or impossible dates ("0000:00:00 ...") are
    common in the wild and read as no date, as is EXIF that Pillow cannot parse. A blank or
    impossible DateTimeOriginal gives way to a readable DateTime, as one left out would.
    """
    try:
        exif = image.getexif()
        # Only follow the Exif sub-IFD when IFD0 points to one: reading it from a damaged
        # block makes Pillow warn on stderr, in the middle of an index run's progress.
        original = exif.get_ifd(EXIF_IFD).get(EXIF_DATE_TIME_ORIGINAL) if EXIF_IFD in exif else None
        candidates = (original, exif.get(EXIF_DATE_TIME))
    except Exception:  # broken EXIF must not cost the image: it just has no date
        return None
    return next((taken for taken in map(_exif_date, candidates) if taken is not None), None)


def _exif_date(value: object) -> str | None:
    """One EXIF date ("YYYY:MM:DD HH:MM:SS") as "YYYY-MM-DD HH:MM:SS", or None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        taken = datetime.strptime(value.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    # isoformat, not strftime: glibc writes a year below 1000 without leading zeros, which
    # would compare wrongly as text with the date filters' (isoformat) bounds.
    return taken.isoformat(sep=" ")


def is_read_failure(exc: BaseException) -> bool:
    """Whether `exc` says the file could not be read now, rather than what it holds is bad.

    Such failures (permission denied, an I/O error, no memory left) may pass, so the file is
    tried again by the next run. The operating system's errors carry an errno; Pillow's about
    the content (not an image, truncated) do not, and recur for the same bytes.
    """
    if isinstance(exc, (MemoryError, NotRegularFileError)):  # a file may be back at the path
        return True
    return isinstance(exc, OSError) and exc.errno is not None


# What opening a path reports when no file is there any more: deleted, a path through what is
# no longer a folder, a link to nowhere, or a folder put in the file's place.
VANISHED_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR})


def is_vanished(exc: BaseException) -> bool:
    """Whether `exc` says the file is no longer there (rather than there but unreadable)."""
    return isinstance(exc, OSError) and exc.errno in VANISHED_ERRNOS


def describe_error(exc: BaseException) -> str:
    """A short, user-facing reason why a file could not be indexed."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format pixsift reads (or a damaged file)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels, refused as a possible decompression bomb: {exc}"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file disappeared before it could be read"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# Transparent areas are shown over white, as a browser or an image viewer shows them on a page.
TRANSPARENT_BACKGROUND = (255, 255, 255)


def as_srgb(image: Image.Image, colours: ImageCmsTransform | None) -> Image.Image:
    """`image` in RGB, its colours converted to sRGB by `colours` (see `pixsift.colour`), or
    taken as sRGB already where that is None. A CMYK image goes straight through its profile,
    the rest through RGB (transparent areas laid over white first, in the image's own space,
    where white is white)."""
    if colours is None:
        return to_rgb(image)
    return to_srgb(image if image.mode == "CMYK" else to_rgb(image), colours)


def to_rgb(image: Image.Image) -> Image.Image:
    if has_transparency(image):
        return _over_background(image)
    if image.mode.startswith("I"):
        # 16-bit greyscale (scans, medical, astronomy): Pillow's own conversion clips every
        # value above 255 to white, so scale the 16-bit range down to 8 bits first.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    elif image.mode == "F":
        # 32-bit float (scientific TIFFs, HDR exports) holds 0..1 by convention, which Pillow
        # would cast to 0 and 1 of 255: all black. Scale that to 8 bits; conversion clips the
        # rest. Data reaching past 1 is taken as already on the 0..255 scale.
        highest = float(image.getextrema()[1])  # type: ignore[arg-type] # one band: a number
        scale = 255.0 if highest <= 1.0 else 1.0
        image = image.point(lambda value: value * scale).convert("L")
    return image.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    """Whether `image` has an alpha band, or a colour marked transparent (a PNG's or GIF's)."""
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info
    )


def _over_background(image: Image.Image) -> Image.Image:
    """`image` in RGB over the plain background. Its colours under transparent pixels are
    what the encoder left there (black for most tools, anything for some): converted as they
    are, a red logo on a transparent PNG was a red logo on black to the model and the thumbnail."""
    if image.mode not in ("RGBA", "RGBa", "LA"):  # a palette or a colour key: as an alpha band
        image = image.convert("RGBA")
    background = Image.new("RGB", image.size, TRANSPARENT_BACKGROUND)
    background.paste(image, mask=image)  # the alpha band of `image` is the mask
    return background


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not cost the image itself: show it as stored
        return image
