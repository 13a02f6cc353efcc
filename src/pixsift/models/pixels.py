"""open_clip's image preprocessing in Pillow and numpy, for engines that run without torch.

The same steps as open_clip's inference transform (torchvision on a PIL image): resize with
Pillow's antialiasing filter, centre crop, scale to [0, 1], normalise per channel. The output
is a float32 (3, size, size) array; a test checks it against open_clip's own transform.
An image still in the colour space of its ICC profile is converted to sRGB after the resize and
crop, on the model's few pixels rather than the decoded image's many (see indexer/decode.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image
    from PIL.ImageCms import ImageCmsTransform

SUPPORTED_RESIZE_MODES = ("shortest", "squash")
# Sides in a ratio above this (a panorama is about 4 to 1) count as long and thin.
LONG_AND_THIN = 8


@dataclass(frozen=True)
class PixelConfig:
    """The parts of open_clip's `preprocess_cfg` that decide the pixels."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PixelConfig | None:
        """The config of an open_clip model, or None when these steps cannot reproduce it
        (non-square inputs, letterboxing): such models keep open_clip's own transform."""
        size = cfg.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                return None
            size = size[0]
        if cfg.get("resize_mode", "shortest") not in SUPPORTED_RESIZE_MODES:
            return None
        mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
        if len(mean) != 3 or len(std) != 3:
            return None
        return cls(
            int(size),
            (mean[0], mean[1], mean[2]),
            (std[0], std[1], std[2]),
            str(cfg.get("interpolation", "bicubic")),
            str(cfg.get("resize_mode", "shortest")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixelConfig:
        mean, std = data["mean"], data["std"]
        return cls(
            int(data["size"]),
            (float(mean[0]), float(mean[1]), float(mean[2])),
            (float(std[0]), float(std[1]), float(std[2])),
            str(data["interpolation"]),
            str(data["resize_mode"]),
        )


def preprocess(
    image: Image.Image, config: PixelConfig, colours: ImageCmsTransform | None = None
) -> np.ndarray:
    """An RGB image to the model's input, float32 (3, size, size), its colours converted to
    sRGB by `colours` (when not None) once resized."""
    scaled = resize_and_crop(image, config, colours).astype(np.float32) / np.float32(255.0)
    normalised = (scaled - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def resize_and_crop(
    image: Image.Image, config: PixelConfig, colours: ImageCmsTransform | None = None
) -> np.ndarray:
    """The geometric steps alone: an RGB image to uint8 (size, size, 3), a quarter of the bytes
    of the model's input, for a device that scales and normalises it itself (see ClipEmbedder).
    `colours`, when not None, then converts those pixels to sRGB."""
    from PIL import Image  # here, not at the top: a text search reads PixelConfig, never pixels

    # open_clip maps "random" (a training option) to bicubic at inference, as here.
    resample = Image.Resampling.BILINEAR if config.interpolation == "bilinear" else Image.Resampling.BICUBIC
    size = config.size
    if config.resize_mode == "squash":
        image = image.resize((size, size), resample)
    elif long_and_thin(image.size):
        image = image.resize((size, size), resample, box=_centre_box(image.size, size))
    else:
        image = _crop_centre(image.resize(_shortest_side_to(image.size, size), resample), size)
    image = image.convert("RGB")
    if colours is not None:
        from pixsift.colour import to_srgb

        image = to_srgb(image, colours)
    return np.asarray(image, dtype=np.uint8)


def long_and_thin(current: tuple[int, int]) -> bool:
    """Whether an image is so long and thin that resizing it whole to the model's size (its
    short side to 224, say) costs far more than the square kept of it. Only such images are
    resized by their centre alone: Pillow's result then differs from torchvision's by a few
    levels in places, and ordinary photos keep open_clip's pixels exactly."""
    width, height = current
    return max(width, height) > LONG_AND_THIN * min(width, height)


def _centre_box(current: tuple[int, int], size: int) -> tuple[float, float, float, float]:
    """The part of an image of size `current` that torchvision's Resize(size) then
    CenterCrop(size) keep, in the image's own pixels. Resizing just that part gives nearly the
    same pixels (Pillow's filter still reads the pixels around it) without making the whole
    resized image first: for a long thin one (300,000 x 1) that was millions of pixels wide
    and 64 or 224 high, gigabytes for a file of a few hundred bytes."""
    width, height = current
    resized_width, resized_height = _shortest_side_to(current, size)
    left = round((resized_width - size) / 2.0)
    top = round((resized_height - size) / 2.0)
    scale_x, scale_y = width / resized_width, height / resized_height
    return (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)


def _shortest_side_to(current: tuple[int, int], size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the short side becomes `size`, the long one is truncated."""
    width, height = current
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _crop_centre(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop (the image is at least `size` on both sides here)."""
    width, height = image.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))
