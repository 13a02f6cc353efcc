"""Decoding in worker threads while the model embeds the previous batch.

Pillow and libjpeg release the GIL while they decode and resize, and torch releases it while
it computes, so threads overlap the two without the cost of shipping pixels between
processes. At most two batches are in flight, which bounds memory whatever the folder size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from pixsift.indexer.decode import DecodedImage, describe_error, load_image
from pixsift.models.embedder import Embedder

JobT = TypeVar("JobT")


@dataclass(frozen=True)
class Embedded(Generic[JobT]):
    job: JobT
    image: DecodedImage
    vector: np.ndarray


@dataclass(frozen=True)
class Unreadable(Generic[JobT]):
    job: JobT
    error: str


Outcome = Embedded[JobT] | Unreadable[JobT]


def embed_files(
    jobs: Iterable[tuple[str, JobT]],
    embedder: Embedder,
    *,
    batch_size: int,
    workers: int,
    max_pixels: int,
) -> Iterator[list[Outcome[JobT]]]:
    """Yield the outcome of every (path, job) pair, one batch at a time.

    A file that cannot be decoded becomes an `Unreadable` outcome; it never stops the run.
    """
    pending: deque[tuple[JobT, Future[DecodedImage]]] = deque()
    source = iter(jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixsift-decode") as pool:

        def submit_more() -> None:
            while len(pending) < 2 * batch_size:
                item = next(source, None)
                if item is None:
                    return
                path, job = item
                future = pool.submit(
                    load_image,
                    path,
                    preprocess=embedder.preprocess,
                    target_size=embedder.image_size,
                    max_pixels=max_pixels,
                )
                pending.append((job, future))

        try:
            submit_more()
            decoded: list[tuple[JobT, DecodedImage]] = []
            failed: list[Outcome[JobT]] = []
            while pending:
                job, future = pending.popleft()
                submit_more()
                try:
                    decoded.append((job, future.result()))
                except Exception as exc:  # one bad file, whatever its fault, is only recorded
                    failed.append(Unreadable(job, describe_error(exc)))
                if len(decoded) + len(failed) >= batch_size or (not pending and (decoded or failed)):
                    yield failed + _embed(decoded, embedder)
                    decoded, failed = [], []
        finally:
            for _, future in pending:  # interrupted: do not decode what nobody will use
                future.cancel()


def _embed(decoded: Sequence[tuple[JobT, DecodedImage]], embedder: Embedder) -> list[Outcome[JobT]]:
    if not decoded:
        return []
    vectors = embedder.embed_images([image.pixels for _, image in decoded])
    return [Embedded(job, image, vector) for (job, image), vector in zip(decoded, vectors, strict=True)]
