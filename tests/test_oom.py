"""A batch too large for the GPU's memory is split, not the end of an index run (models/oom.py).

These run on the CPU: the back-off is given a callable that runs out of memory as CUDA does
(`torch.cuda.OutOfMemoryError`, which torch defines without a GPU), or as Apple's MPS does (a
RuntimeError in the words of torch's MPS allocator), above a number of items.
tests/test_gpu.py makes a GPU really run out of memory, where one is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from pixsift.errors import ModelError
from pixsift.models.oom import MemoryBackOff


class SmallGpu:
    """Embeds numbers as vectors, running out of memory above `fits` numbers at once."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[int] = []  # the size of every call, failed or not

    def __call__(self, items: Sequence[int]) -> np.ndarray:
        self.calls.append(len(items))
        if len(items) > self.fits:
            raise self.out_of_memory(len(items))
        return np.array([[item, -item, 0.5] for item in items], dtype=np.float32)

    def out_of_memory(self, gib: int) -> RuntimeError:
        return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {gib} GiB.")


class SmallAppleGpu(SmallGpu):
    def out_of_memory(self, gib: int) -> RuntimeError:
        return RuntimeError(
            "MPS backend out of memory (MPS allocated: 7.64 GiB, other allocations: 0 bytes, "
            f"max allowed: 9.07 GiB). Tried to allocate {gib} GiB on private pool."
        )


def one_at_a_time(items: Sequence[int]) -> np.ndarray:
    return np.concatenate([SmallGpu(fits=1)([item]) for item in items])


def test_a_batch_too_large_is_split_and_its_vectors_come_back_in_order() -> None:
    gpu, backoff = SmallGpu(fits=40), MemoryBackOff("cuda:0", "image")
    items = list(range(100))
    np.testing.assert_array_equal(backoff.embed(gpu, items), one_at_a_time(items))
    # 100 fails, 50 fails, then 25 at a time: the first half's failure sets the size for the rest.
    assert gpu.calls == [100, 50, 25, 25, 25, 25]
    assert backoff.cap == 25


def test_the_size_that_fitted_is_the_cap_for_the_next_batches() -> None:
    """A batch size too large for the GPU costs one failed attempt, not one per batch."""
    gpu, backoff = SmallGpu(fits=128), MemoryBackOff("cuda", "image")
    first, second = list(range(256)), list(range(256, 512))
    backoff.embed(gpu, first)
    assert gpu.calls == [256, 128, 128]
    gpu.calls.clear()
    assert backoff.embed(gpu, second).shape == (256, 3)
    assert gpu.calls == [128, 128]  # would be 256, 128, 128 without the cap
    gpu.calls.clear()
    np.testing.assert_array_equal(backoff.embed(gpu, [7, 8, 9]), one_at_a_time([7, 8, 9]))
    assert gpu.calls == [3]  # a batch under the cap goes whole


def test_a_batch_that_fits_is_embedded_in_one_call_and_nothing_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpu, backoff = SmallGpu(fits=256), MemoryBackOff("cuda", "image")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(backoff.embed(gpu, list(range(256))), one_at_a_time(range(256)))
    assert gpu.calls == [256]
    assert backoff.cap is None
    assert not caplog.records


def test_the_user_is_told_once_per_back_off(caplog: pytest.LogCaptureFixture) -> None:
    gpu, backoff = SmallGpu(fits=128), MemoryBackOff("cuda:1", "image")
    with caplog.at_level(logging.WARNING, logger="pixsift.models.oom"):
        for start in range(0, 1024, 256):
            backoff.embed(gpu, list(range(start, start + 256)))
    assert [record.getMessage() for record in caplog.records] == [
        "The GPU (cuda:1) ran out of memory at a batch of 256 images; going on with 128."
    ]


def test_texts_back_off_on_their_own_terms(caplog: pytest.LogCaptureFixture) -> None:
    gpu, backoff = SmallGpu(fits=3), MemoryBackOff("cuda", "text")
    with caplog.at_level(logging.WARNING, logger="pixsift.models.oom"):
        np.testing.assert_array_equal(backoff.embed(gpu, [1, 2, 3, 4, 5]), one_at_a_time([1, 2, 3, 4, 5]))
    assert gpu.calls == [5, 3, 2]
    assert caplog.records[0].getMessage() == (
        "The GPU (cuda) ran out of memory at a batch of 5 texts; going on with 3."
    )


def test_apples_gpu_running_out_of_memory_backs_off_the_same_way(caplog: pytest.LogCaptureFixture) -> None:
    gpu, backoff = SmallAppleGpu(fits=40), MemoryBackOff("mps", "image")
    items = list(range(100))
    with caplog.at_level(logging.WARNING, logger="pixsift.models.oom"):
        np.testing.assert_array_equal(backoff.embed(gpu, items), one_at_a_time(items))
    assert gpu.calls == [100, 50, 25, 25, 25, 25]
    assert [record.getMessage() for record in caplog.records] == [
        "The GPU (mps) ran out of memory at a batch of 100 images; going on with 25."
    ]
    with pytest.raises(ModelError, match=r"One image alone does not fit in the memory of the GPU \(mps\)"):
        MemoryBackOff("mps", "image").embed(SmallAppleGpu(fits=0), [1, 2])


def test_one_image_that_never_fits_is_a_model_error_with_advice_for_each_face() -> None:
    gpu, backoff = SmallGpu(fits=0), MemoryBackOff("cuda:0", "image")
    with pytest.raises(ModelError) as raised:
        backoff.embed(gpu, list(range(8)))
    assert gpu.calls == [8, 4, 2, 1]
    lead = "One image alone does not fit in the memory of the GPU (cuda:0) with this model: "
    assert str(raised.value) == (
        f'{lead}use another GPU (or close the programs that hold this one\'s memory), device="cpu", '
        "or a smaller model."
    )
    assert raised.value.for_command_line() == (
        f"{lead}use another GPU (or close the programs that hold this one's memory), --device cpu, "
        "or a smaller model."
    )
    assert raised.value.__cause__ is None  # one line: no torch traceback chained to it


def test_other_errors_are_not_taken_for_running_out_of_memory() -> None:
    """Only a GPU's out-of-memory error backs off: a model's own failure is not hidden by
    splitting the batch again and again."""

    def broken(items: Sequence[int]) -> np.ndarray:
        raise RuntimeError("shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        MemoryBackOff("cuda", "image").embed(broken, [1, 2, 3, 4])
