"""Saying why a model's first load takes long: it is being prepared (exported to ONNX).

The export runs once per model (a minute for ViT-B-32, seconds for synthetic-tiny), deep inside
`load_embedder`, where no progress display reaches. Whoever shows the user a wait (an index
run's progress bars, the command line's stderr, a server job's phase) listens for it here. A
context variable, so that each thread of a server hears only the loads it started itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pixsift.models.spec import ModelSpec

# The phase an index run shows meanwhile: says that the wait is once per model, not every run;
# 20 characters at most, the width of the phase column of the progress bars on 80 columns.
PREPARING_PHASE = "One-time model setup"

PreparingListener = Callable[[ModelSpec], None]

_listener: ContextVar[PreparingListener | None] = ContextVar("pixsift_preparing", default=None)


@contextmanager
def listen_for_preparing(listener: PreparingListener) -> Iterator[None]:
    """Within the block, `listener(spec)` is called when a model is about to be exported."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def announce_preparing(spec: ModelSpec) -> None:
    """Tell the listener in place, if any, that `spec` is about to be exported."""
    listener = _listener.get()
    if listener is not None:
        listener(spec)


def preparing_message(spec: ModelSpec) -> str:
    """The line a command without progress bars prints meanwhile."""
    return f"One-time setup of {spec.describe()} for fast CPU use (later runs skip it)..."
