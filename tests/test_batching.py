"""Concurrent text queries share model calls, and each caller still gets exactly its rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import TinyModel
from pixsift.models.batching import TextBatcher
from pixsift.models.clip import ClipEmbedder
from pixsift.models.embedder import Embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.spec import ModelRecord

CALLERS = 12


class Recording:
    """The real tiny model, recording each batch it is given; its first call holds until every
    other caller is queued, so what gets batched does not depend on thread timing."""

    def __init__(self, inner: Embedder, batcher: TextBatcher, fail_on: str | None = None) -> None:
        self.inner, self.batcher, self.fail_on = inner, batcher, fail_on
        self.batches: list[list[str]] = []

    @property
    def record(self) -> ModelRecord:
        return self.inner.record

    @property
    def image_size(self) -> int:
        return self.inner.image_size

    def preprocess(self, image: Image.Image) -> Any:
        return self.inner.preprocess(image)

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        return self.inner.embed_images(batch)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.batches:
            deadline = time.monotonic() + 30
            while self.batcher.waiting < CALLERS - 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("model failed")
        return self.inner.embed_texts(texts)


@pytest.fixture(scope="module")
def tiny(tiny_model: TinyModel) -> ClipEmbedder:
    return ClipEmbedder.load(resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint)), "cpu")


def test_concurrent_queries_share_one_model_call(tiny: ClipEmbedder) -> None:
    batcher = TextBatcher()
    model = Recording(tiny, batcher)
    queries = [[f"query {n}"] if n % 3 else [f"query {n}", f"and {n}"] for n in range(CALLERS)]
    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(lambda texts: batcher.embed(model, texts), queries))
    assert len(model.batches) == 2  # the first caller alone, then everyone who queued meanwhile
    assert sorted(chain.from_iterable(model.batches)) == sorted(chain.from_iterable(queries))
    for texts, vectors in zip(queries, results, strict=True):
        np.testing.assert_allclose(vectors, tiny.embed_texts(texts), atol=1e-5)
    assert batcher.embed(model, ["alone"]).shape == (1, 64) and model.batches[-1] == ["alone"]


def test_a_model_error_reaches_every_caller_of_that_batch(tiny: ClipEmbedder) -> None:
    batcher = TextBatcher()
    model = Recording(tiny, batcher, fail_on="query 5")
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            batcher.embed(model, [f"query {n}"])
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    failed_batch = next(batch for batch in model.batches if "query 5" in batch)
    assert len(errors) == len(failed_batch)
    assert batcher.embed(model, ["after"]).shape == (1, 64)  # the batcher goes on
