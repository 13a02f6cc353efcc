"""An index run of a library: the `Indexer` over its roots, with the roots that look unmounted
left alone, then the search index and the thumbnail cache brought in line with what it changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pixsift.config import THUMBNAILS_DIR
from pixsift.errors import PixsiftError
from pixsift.indexer.decode import default_max_pixels
from pixsift.indexer.progress import (
    BUILDING_INDEX_PHASE,
    SAVING_INDEX_PHASE,
    IndexProgress,
    phase_of_unknown_length,
)
from pixsift.indexer.report import IndexInterrupted, IndexReport
from pixsift.indexer.run import Indexer, IndexSettings, RootRequest
from pixsift.indexer.scan import unmounted_roots
from pixsift.thumbnails import prune_thumbnails

if TYPE_CHECKING:
    from pixsift.models import Embedder
    from pixsift.storage import Catalog
    from pixsift.storage.index_keeper import IndexKeeper


def index_library(
    catalog: Catalog,
    index: IndexKeeper,
    folder: Path,
    requests: Sequence[RootRequest],
    embedder: Callable[[], Embedder],
    batch_size: int | None,
    workers: int | None,
    progress: IndexProgress | None,
) -> IndexReport:
    """Index `requests` into the library in `folder` (never walked itself), whose catalog and
    search index are `catalog` and `index`; the caller holds the library's write lock."""
    # An unmounted drive must not look like a deleted folder: a known root that looks
    # unmounted is not walked, and no other root's walk drops what it held.
    unmounted = unmounted_roots(catalog)
    skipped = [r.path for r in requests if r.scope is None and r.path in unmounted]
    settings = IndexSettings(
        batch_size=batch_size,
        workers=workers or IndexSettings().workers,
        max_pixels=default_max_pixels(),
        exclude=(str(folder),),
        keep=tuple(unmounted),
    )
    walked = [r for r in requests if r.path not in skipped]
    started = time.monotonic()
    report: IndexReport | None = None
    try:
        report = Indexer(catalog, embedder, settings, progress).run(walked)
    except (IndexInterrupted, PixsiftError) as stopped:  # each carries what was committed
        report = stopped.report
        raise
    finally:  # also after Ctrl-C or an error: save what was committed into the FAISS index
        if report is not None:
            report.skipped_roots = skipped
        with _interrupt_reported(report), _error_reported(report), _timed(report, started):
            if (model := catalog.model()) is not None:
                _save_index(index, model.embed_dim, progress)
    with _interrupt_reported(report), _error_reported(report), _timed(report, started):
        if model is not None:
            _rebuild_if_drifted(index, model.embed_dim, progress)
        if report.removed:
            prune_thumbnails(folder / THUMBNAILS_DIR, catalog.images)
    return report


def _save_index(index: IndexKeeper, dim: int, progress: IndexProgress | None) -> None:
    """Catch the search index up and save it, in a phase of its own when there is something
    to write: at 100,000s of vectors that takes a while, after every file's bar has finished.
    A run that changed nothing shows no phase (nor loads its index: the file's header answers
    the drift check)."""
    work = index.save_work()
    if work is None:
        index.save_current(dim)
        return
    with phase_of_unknown_length(progress, BUILDING_INDEX_PHASE if work == "build" else SAVING_INDEX_PHASE):
        index.save_current(dim)


def _rebuild_if_drifted(index: IndexKeeper, dim: int, progress: IndexProgress | None) -> None:
    """Rebuild the search index if it no longer suits the library (grown past a threshold,
    say, from flat to HNSW): a build of many vectors is a long phase of its own."""
    policy = index.rebuild_due(dim)
    if policy is not None:
        with phase_of_unknown_length(progress, BUILDING_INDEX_PHASE):
            index.rebuild(dim, policy)


@contextmanager
def _timed(report: IndexReport | None, started: float) -> Iterator[None]:
    """The run's `elapsed_s` up to the end of the block, however it ends: the search index's
    save and rebuild are part of the run (its summary's time, and a server job whose time
    grew while they went on must not end with a smaller one)."""
    try:
        yield
    finally:
        if report is not None:
            report.elapsed_s = max(report.elapsed_s, time.monotonic() - started)


@contextmanager
def _interrupt_reported(report: IndexReport | None) -> Iterator[None]:
    """Ctrl-C after the files were indexed (while the search index is saved or rebuilt) ends
    the run as Ctrl-C during it does: IndexInterrupted with the report of what was committed,
    which the command prints. The search index is left behind; the next search or run
    catches it up from the database's change log."""
    try:
        yield
    except IndexInterrupted:
        raise
    except KeyboardInterrupt as interrupt:
        if report is None:  # the run itself failed: its error is the one to see
            raise
        report.interrupted = True
        raise IndexInterrupted(report) from interrupt


@contextmanager
def _error_reported(report: IndexReport | None) -> Iterator[None]:
    """An error while the search index is saved or rebuilt (a full disk) carries the report of
    what the run committed, as an error during the run does: the database keeps it all, and
    the next search or run catches the search index up."""
    try:
        yield
    except PixsiftError as error:
        if error.report is None:
            error.report = report
        raise
