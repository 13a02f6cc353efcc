"""Colour management: an image's pixels, in the colour space its ICC profile names, as sRGB.

A phone stores its photos in Display P3, a camera in Adobe RGB, an editor in ProPhoto, a print
file in CMYK; each names its space in an embedded ICC profile. Read as if they were sRGB (what
CLIP was trained on, and what every viewer takes an untagged JPEG to be), such pixels look
washed out, or for CMYK quite wrong. Pillow's LittleCMS binding (`PIL.ImageCms`) converts them.

A transform is built once per profile (a few milliseconds) and kept: a collection from one
device has one profile. A profile that is sRGB already (whatever its bytes: cameras, editors
and browsers each write their own) gets no transform, so such images keep their pixels exactly
as without one. A profile that cannot be read gets none either: the image is read as stored, as
without colour management, never refused for it. Without LittleCMS in this Pillow, likewise.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, features

if TYPE_CHECKING:
    from PIL.ImageCms import ImageCmsTransform

# The image modes a profile of each colour space (the ICC header's field) describes, and the
# mode a transform reads them in. An RGB profile describes a palette's colours and an RGB image
# with alpha too: those are turned into plain RGB first (over white), then converted.
_SPACES = {
    b"RGB ": ({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"}, "RGB"),
    b"CMYK": ({"CMYK"}, "CMYK"),
    b"GRAY": ({"L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}, "L"),
}
# An sRGB-like profile moves no colour by more than this (0..255): rounding, not a colour space.
SAME_AS_SRGB = 1


@functools.cache
def littlecms_available() -> bool:
    """Whether this Pillow carries LittleCMS (its wheels do; a distribution's build may not)."""
    return bool(features.check("littlecms2"))


def srgb_transform(image: Image.Image) -> ImageCmsTransform | None:
    """What turns `image`'s pixels (decoded, before any conversion to RGB) into sRGB, going by
    its embedded ICC profile; None when there is nothing to do: no profile, an sRGB one, one of
    another colour space than the pixels', one that cannot be read, or no LittleCMS."""
    profile = image.info.get("icc_profile")
    if not isinstance(profile, bytes) or len(profile) < 128:  # shorter than the ICC header
        return None
    space = _SPACES.get(profile[16:20])
    if space is None or image.mode not in space[0] or not littlecms_available():
        return None
    return _transform(profile, space[1])


def to_srgb(image: Image.Image, transform: ImageCmsTransform) -> Image.Image:
    """`image` converted by `transform` into sRGB, as an RGB image. `image` is in the mode the
    transform reads, or RGB where it reads grey (a grey image, already turned into RGB)."""
    if image.mode != transform.input_mode:
        image = image.convert(transform.input_mode)
    return transform.apply(image)


@functools.lru_cache(maxsize=16)  # a library's photos come from a few devices: a few profiles
def _transform(profile: bytes, mode: str) -> ImageCmsTransform | None:
    """The transform from `profile`'s space (pixels in `mode`) to sRGB; None if the profile is
    damaged, or is sRGB already."""
    # Imported here: 20 to 30 ms that every command would pay, most with no profile to convert.
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        transform = ImageCms.buildTransform(source, srgb, mode, "RGB")
        if mode != "CMYK" and _moves_nothing(transform, mode):
            return None
    except Exception:  # a damaged profile must not cost the image, as broken EXIF does not
        return None
    return transform


def _moves_nothing(transform: ImageCmsTransform, mode: str) -> bool:
    """Whether `transform` leaves every colour where it was, within rounding: the profile is
    sRGB's, under whatever name and bytes. Tried on every level of each primary and of grey,
    and on a cube of 16 levels a side (every level of grey alone for a grey profile)."""
    ramp = np.arange(256, dtype=np.uint8)
    zero = np.zeros(256, np.uint8)
    samples = [np.stack([ramp, ramp, ramp], axis=1)]
    if mode != "L":
        levels = np.arange(0, 256, 17, dtype=np.uint8)
        cube = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(-1, 3)
        samples += [
            np.stack(bands, axis=1) for bands in ((ramp, zero, zero), (zero, ramp, zero), (zero, zero, ramp))
        ]
        samples.append(cube)
    before = np.concatenate(samples)[np.newaxis]
    after = np.asarray(transform.apply(Image.fromarray(before, "RGB").convert(mode)))
    return bool(np.abs(after.astype(np.int16) - before).max() <= SAME_AS_SRGB)
