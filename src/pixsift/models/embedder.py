"""The interface the indexer and search need from a model; tests and benchmarks may swap it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pixsift.models.spec import ModelRecord

if TYPE_CHECKING:  # Pillow costs a text search's start-up 20 to 30 ms, for a type hint
    from PIL import Image
    from PIL.ImageCms import ImageCmsTransform

# Images per model call by default. A GPU embeds a batch of 256 three times as fast per image
# as one of 32 (docs/benchmarks.md); on a CPU a larger batch gains nothing and holds more memory.
GPU_BATCH_SIZE = 256
CPU_BATCH_SIZE = 32


class Embedder(Protocol):
    """Maps images and texts into one space of L2-normalised float32 vectors."""

    @property
    def record(self) -> ModelRecord:
        """Which model this is: the identity stored with the library's vectors."""
        ...

    @property
    def image_size(self) -> int:
        """The side in pixels the model sees; decoders may shrink images towards it early."""
        ...

    @property
    def batch_size(self) -> int:
        """Images per `embed_images` call when the caller names no number: what this model
        runs best at where it runs."""
        ...

    def preprocess(self, image: Image.Image, colours: ImageCmsTransform | None = None) -> Any:
        """An RGB image to the model's input; thread-safe, called from decode workers. Where
        `colours` is not None, the image is still in its ICC profile's colour space and that
        transform converts it to sRGB: best once it is resized (see indexer/decode.py)."""
        ...

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        """Vectors (n, dim) for preprocessed images."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors (n, dim) for texts."""
        ...
