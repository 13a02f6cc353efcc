"""Decoding in worker threads while the model embeds the previous batch.

Pillow and libjpeg release the GIL while they decode and resize, and the model releases it
while it computes, so threads overlap the two without the cost of shipping pixels between
processes. The model runs on its own thread too, so that it keeps embedding while the caller
stores the previous batch. At most four batches of images are held at once (two queued for
decoding, one waiting to be embedded, one being embedded), which bounds memory whatever the
folder size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from pixsift.indexer.decode import DecodedImage, describe_error, is_read_failure, is_vanished, load_image
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
    retry: bool = False  # the file could not be read (not bad content): try it again next run
    vanished: bool = False  # nothing (or a folder) was at its path any more: deleted meanwhile


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
    decoding = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixsift-decode")
    embedding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixsift-embed")
    with decoding, embedding:

        def submit_more() -> None:
            while len(pending) < 2 * batch_size:
                item = next(source, None)
                if item is None:
                    return
                path, job = item
                future = decoding.submit(
                    load_image,
                    path,
                    preprocess=embedder.preprocess,
                    target_size=embedder.image_size,
                    max_pixels=max_pixels,
                )
                pending.append((job, future))

        def next_batch() -> list[tuple[JobT, Future[DecodedImage]]]:
            batch: list[tuple[JobT, Future[DecodedImage]]] = []
            while pending and len(batch) < batch_size:
                batch.append(pending.popleft())
                submit_more()
            return batch

        # While the caller stores one batch's outcomes, the next batch is being embedded.
        in_flight: Future[list[Outcome[JobT]]] | None = None
        try:
            submit_more()
            while pending:
                batch = next_batch()
                finished = in_flight
                in_flight = embedding.submit(_outcomes, batch, embedder)
                if finished is not None:
                    yield finished.result()
            if in_flight is not None:
                yield in_flight.result()
        finally:
            for _, future in pending:  # interrupted: do not decode what nobody will use
                future.cancel()
            if in_flight is not None:
                in_flight.cancel()


def _outcomes(batch: Sequence[tuple[JobT, Future[DecodedImage]]], embedder: Embedder) -> list[Outcome[JobT]]:
    """Wait for a batch's decoding, then embed the images that could be read."""
    decoded: list[tuple[JobT, DecodedImage]] = []
    failed: list[Outcome[JobT]] = []
    for job, future in batch:
        try:
            decoded.append((job, future.result()))
        except Exception as exc:  # one bad file, whatever its fault, is only recorded
            failed.append(
                Unreadable(job, describe_error(exc), retry=is_read_failure(exc), vanished=is_vanished(exc))
            )
    return failed + _embed(decoded, embedder)


def _embed(decoded: Sequence[tuple[JobT, DecodedImage]], embedder: Embedder) -> list[Outcome[JobT]]:
    if not decoded:
        return []
    vectors = embedder.embed_images([image.pixels for _, image in decoded])
    return [Embedded(job, image, vector) for (job, image), vector in zip(decoded, vectors, strict=True)]
