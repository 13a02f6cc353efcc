"""Backing off when a batch does not fit in a GPU's memory (CUDA or Apple's MPS).

How many images fit in a GPU's memory at once depends on the GPU, the model and what else
runs there, and `--batch-size` takes up to 4096: a batch that does not fit must not end an
index run in a torch traceback. A batch that runs out of memory is split in halves, each
embedded on its own (split again if need be), and the size that fitted becomes the cap for
the embedder's next batches, so a batch size too large for the GPU costs one failed attempt,
not one per batch. CUDA raises `torch.OutOfMemoryError`; Apple's MPS raises a plain
RuntimeError that says "MPS backend out of memory", so it is told apart by its words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from pixsift.errors import ModelError

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class MemoryBackOff:
    """The largest batch that fitted on one device, for one kind of input (images or texts)."""

    def __init__(self, device: str, kind: str) -> None:
        self._device = device  # as torch names it: "cuda", "cuda:1"
        self._kind = kind  # "image" or "text", for the messages
        self.cap: int | None = None  # None: no batch has run out of memory yet

    def embed(self, embed: Callable[[Sequence[Item]], np.ndarray], items: Sequence[Item]) -> np.ndarray:
        """`embed(items)`, in batches no larger than the cap, halved on running out of memory;
        the vectors come back in the order of `items`."""
        if not items:
            return embed(items)
        tried = min(len(items), self.cap or len(items))
        vectors = self._in_batches(embed, items)
        if self.cap is not None and self.cap < tried:  # said once per back-off, not per batch
            log.warning(
                "The GPU (%s) ran out of memory at a batch of %d %ss; going on with %d.",
                self._device,
                tried,
                self._kind,
                self.cap,
            )
        return vectors

    def _in_batches(self, embed: Callable[[Sequence[Item]], np.ndarray], items: Sequence[Item]) -> np.ndarray:
        """The cap is read again for every batch: once one runs out of memory, the rest of
        `items` is embedded at the size that then fits."""
        parts: list[np.ndarray] = []
        start = 0
        while start < len(items):
            batch = items[start : start + (self.cap or len(items))]
            parts.append(self._fitted(embed, batch))
            start += len(batch)
        return np.concatenate(parts)

    def _fitted(self, embed: Callable[[Sequence[Item]], np.ndarray], items: Sequence[Item]) -> np.ndarray:
        try:
            return embed(items)
        except RuntimeError as error:
            if not out_of_memory(error):
                raise
        # Out of the except block: the error's traceback, which holds the failed call's tensors,
        # is gone, so the memory they took goes back to the GPU with the rest of torch's cache.
        _empty_cache()
        if len(items) == 1:
            raise self._too_large()
        self.cap = min(self.cap or len(items), (len(items) + 1) // 2)
        return self._in_batches(embed, items)

    def _too_large(self) -> ModelError:
        """One input alone does not fit: no smaller batch can help, and the advice names the
        device as the face the user reached calls it."""
        lead = (
            f"One {self._kind} alone does not fit in the memory of the GPU ({self._device}) with this model"
        )
        advice = (
            ": use another GPU (or close the programs that hold this one's memory), {}, or a smaller model."
        )
        return ModelError(
            lead + advice.format('device="cpu"'), command_line=lead + advice.format("--device cpu")
        )


MPS_OUT_OF_MEMORY = "MPS backend out of memory"  # how torch's MPS allocator words it


def out_of_memory(error: RuntimeError) -> bool:
    """Whether `error` is a GPU running out of memory, not a model's own failure: the one
    kind a smaller batch can help."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or MPS_OUT_OF_MEMORY in str(error)


def _empty_cache() -> None:
    """Give torch's cached blocks back to whichever GPU ran out (a no-op for one not in use)."""
    import torch

    torch.cuda.empty_cache()
    if torch.backends.mps.is_available():  # without MPS, torch.mps.empty_cache() raises
        torch.mps.empty_cache()
