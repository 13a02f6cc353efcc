"""Coalescing text queries from many threads into one model call.

A served library gets many searches at once, and a CLIP text encoder on a CPU costs nearly as
much for one short text as for a dozen: the work is dominated by per-call overhead and small
matrix products. So concurrent `embed_texts` calls are queued; one thread at a time runs the
model on everything queued so far, hands each caller its rows, and passes the lead to the
next waiting caller. A lone query never waits: it leads at once, with a batch of one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pixsift.models.embedder import Embedder

MAX_BATCH_TEXTS = 64


@dataclass(eq=False)
class _Request:
    embedder: Embedder
    texts: list[str]
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to run the next batch, not with a result
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class TextBatcher:
    """Thread-safe: `embed(embedder, texts)` returns what `embedder.embed_texts(texts)` would."""

    def __init__(self, max_texts: int = MAX_BATCH_TEXTS) -> None:
        self._max_texts = max_texts
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._running = False

    @property
    def waiting(self) -> int:
        """Callers queued behind the batch being embedded."""
        with self._lock:
            return len(self._queue)

    def embed(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        request = _Request(embedder, list(texts))
        with self._lock:
            self._queue.append(request)
            leads = not self._running
            self._running = True
        if not leads:
            request.ready.wait()  # for its rows, or for its turn to lead
            leads = request.leads and request.vectors is None and request.error is None
        if leads:
            self._run_batch()
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _run_batch(self) -> None:
        """Embed the requests at the head of the queue (the caller's own among them), deliver
        their rows, and wake the next waiting caller to lead, or go idle."""
        batch = self._take()
        try:
            vectors = batch[0].embedder.embed_texts([text for r in batch for text in r.texts])
            start = 0
            for request in batch:
                request.vectors = vectors[start : start + len(request.texts)]
                start += len(request.texts)
        except BaseException as exc:  # every caller in the batch gets the model's error
            for request in batch:
                request.error = exc
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].ready.set()
                else:
                    self._running = False
            for request in batch:
                request.ready.set()

    def _take(self) -> list[_Request]:
        """Whole requests from the head of the queue, same embedder, up to the text limit."""
        with self._lock:
            head = self._queue[0]
            batch, count = [head], len(head.texts)
            for request in self._queue[1:]:
                if request.embedder is not head.embedder or count + len(request.texts) > self._max_texts:
                    break
                batch.append(request)
                count += len(request.texts)
            del self._queue[: len(batch)]
            return batch
