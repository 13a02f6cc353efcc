"""How the indexer reports progress without printing: the caller passes a listener."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from pixsift.indexer.report import IndexReport
from pixsift.models.preparing import PREPARING_PHASE, listen_for_preparing
from pixsift.models.spec import ModelSpec

LOADING_PHASE = "Loading model"
EMBEDDING_PHASE = "Embedding"
# After the files: the search index caught up and written, or built anew (a minute or more
# at 100,000s of vectors), shown so that bars all finished over a silent wait do not look hung.
SAVING_INDEX_PHASE = "Saving search index"
BUILDING_INDEX_PHASE = "Building search index"
SEARCH_INDEX_PHASES = (SAVING_INDEX_PHASE, BUILDING_INDEX_PHASE)


class IndexProgress(Protocol):
    """Receives the phases of an index run; the command line draws them as progress bars."""

    def start(self, phase: str, total: int | None = None) -> None:
        """A phase begins; `total` is the number of steps, or None when unknown."""
        ...

    def advance(self, steps: int = 1) -> None:
        """Some steps of the current phase are done."""
        ...

    def stop(self) -> None:
        """The current phase has ended."""
        ...


@runtime_checkable
class CountsListener(Protocol):
    """What an IndexProgress may also have, to see the run's counts grow as it goes: a
    listener that only draws phases has no use for them, one that shows a long run to someone
    else (a server's job) wants the files that failed so far before the end."""

    def counted(self, report: IndexReport) -> None:
        """What the run found and committed so far, after the scan and after each write, with
        its `elapsed_s` (and, once the embedding phase has begun, `embed_s`) up to now. The
        run's own report, still changing: read it now, keep a copy."""
        ...


class SilentProgress:
    """The default listener: reports nothing."""

    def start(self, phase: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass


@contextmanager
def phase_of_unknown_length(progress: IndexProgress | None, phase: str) -> Iterator[None]:
    """`phase` shown while the block runs, without steps (a spinner); stopped however the block
    ends, Ctrl-C included, so that nothing shows it still going after. None: nothing shown."""
    if progress is None:
        yield
        return
    progress.start(phase)
    try:
        yield
    finally:
        progress.stop()


@contextmanager
def model_loading(progress: IndexProgress) -> Iterator[None]:
    """The phase shown while the block loads a model: LOADING_PHASE, replaced by
    PREPARING_PHASE when the model is exported for its first use (a minute for ViT-B-32), so
    the user sees why this run waits, and that the next one will not."""
    progress.start(LOADING_PHASE)

    def preparing(_spec: ModelSpec) -> None:
        progress.stop()
        progress.start(PREPARING_PHASE)

    with listen_for_preparing(preparing):
        yield
    progress.stop()
