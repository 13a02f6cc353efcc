"""One text search from a cold process, without SQLAlchemy, torch or open_clip when possible.

`pixsift search` runs one query and exits, so its start-up is most of its time: importing
SQLAlchemy and mapping the schema alone took longer than embedding the text and searching.
`search_once` answers from a read-only `sqlite3` connection (`storage/catalog_reader.py`), the
cached ONNX text tower and the saved FAISS file whenever that gives exactly what
`Library.search` gives, and otherwise opens the `Library` and asks it, silently:

- the library exists, its schema is this pixsift's, and it has a model;
- the query is text terms only, with no filters;
- the engine runs the text tower through ONNX Runtime on the CPU, from a cached export of the
  library's very model (the same `OnnxEmbedder` the library would load, so the same vector),
  whose files are still those checked against their checksums (`verify_unchanged_files`);
- `vectors.faiss` is at the catalog's generation, or a little behind it (a few deletes since
  the last save, see `replay_is_cheap`): the changes logged since are replayed on it, as the
  library would.

Everything is read inside one read transaction, so an index run committing meanwhile changes
nothing it sees; if it has saved a newer FAISS file by then, the generations differ and the
`Library` answers instead. Every error takes that path too, which reports it as it always has.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixsift.config import DB_NAME, INDEX_NAME, resolve_library_dir
from pixsift.errors import PixsiftError
from pixsift.models.spec import ModelRecord
from pixsift.search.filters import SearchFilters
from pixsift.search.finite import is_finite
from pixsift.search.query import QueryTerm, as_terms, combine
from pixsift.search.results import SearchResult
from pixsift.storage.catalog_reader import CatalogReader

if TYPE_CHECKING:
    from pixsift.models.onnx_embedder import OnnxEmbedder
    from pixsift.storage.vector_index import VectorIndex


STARTED_WITHIN_S = 2.0  # a thread started runs within this (milliseconds on an idle machine)


class _NotQuickError(Exception):
    """The quick path cannot give the library's answer: ask the library."""


def search_once(
    text: str,
    k: int = 10,
    *,
    library: str | os.PathLike[str] | None = None,
    plus: Sequence[str | QueryTerm] = (),
    minus: Sequence[str | QueryTerm] = (),
    min_score: float | None = None,
    filters: SearchFilters | None = None,
    device: str = "auto",
    engine: str = "auto",
) -> list[SearchResult]:
    """`Library.open(library, create=False, device=..., engine=...).search(text, k, ...)`, for a
    process that runs one search and exits: the same results, errors included, but on a library
    whose search index is up to date it imports neither SQLAlchemy nor torch.

    A long-lived program that searches many times should open a `Library` once instead.
    """
    quick = answer_quickly(
        text,
        k,
        library=library,
        plus=plus,
        minus=minus,
        min_score=min_score,
        filters=filters,
        device=device,
        engine=engine,
    )
    if quick is not None:
        return quick
    from pixsift.library import Library

    with Library.open(library, create=False, device=device, engine=engine) as opened:
        return opened.search(text, k, plus=plus, minus=minus, min_score=min_score, filters=filters)


def answer_quickly(
    text: str,
    k: int = 10,
    *,
    library: str | os.PathLike[str] | None = None,
    plus: Sequence[str | QueryTerm] = (),
    minus: Sequence[str | QueryTerm] = (),
    min_score: float | None = None,
    filters: SearchFilters | None = None,
    device: str = "auto",
    engine: str = "auto",
) -> list[SearchResult] | None:
    """`search_once`'s results from the quick path, or None when only the `Library` can give
    them (it then raises what the library would, or nothing)."""
    from pixsift.models.loading import surely_on_cpu

    if not _plain_arguments(k, min_score):
        return None  # the library refuses them, with its message
    # "CPU" or "ONNX" as typed: the library takes them in any case, so must the quick path.
    device, engine = _lowered(device), _lowered(engine)
    filtered = filters is not None and not (isinstance(filters, SearchFilters) and filters.is_empty)
    if k < 1 or filtered or not surely_on_cpu(device, engine):
        return None
    try:
        terms = [QueryTerm(text=text), *as_terms(plus, 1.0), *as_terms(minus, -1.0)]
        if any(term.text is None for term in terms):
            return None
        folder = resolve_library_dir(library)
        with CatalogReader.open(folder / DB_NAME) as reader, reader.snapshot():
            return _answer(reader, folder / INDEX_NAME, terms, k, min_score, engine)
    except (_NotQuickError, PixsiftError, sqlite3.Error, OSError):
        return None


def _lowered(name: str) -> str:
    """A device or engine name in the canonical lower case; anything else as given (the
    library refuses it, with its message)."""
    return name.lower() if isinstance(name, str) else name


def _plain_arguments(k: object, min_score: object) -> bool:
    """A whole k and a finite min_score (or none), as the library accepts them."""
    whole_k = isinstance(k, int) and not isinstance(k, bool)
    if min_score is None:
        return whole_k
    number = isinstance(min_score, (int, float)) and not isinstance(min_score, bool)
    return whole_k and number and is_finite(min_score)  # type: ignore[arg-type]


def _answer(
    reader: CatalogReader,
    index_path: Path,
    terms: list[QueryTerm],
    k: int,
    min_score: float | None,
    engine: str,
) -> list[SearchResult]:
    from pixsift.storage.index_header import read_header
    from pixsift.storage.migrations import SCHEMA_VERSION

    if reader.schema_version() != SCHEMA_VERSION:
        raise _NotQuickError  # older (the library migrates it) or newer (the library refuses it)
    record = reader.model()
    if record is None:
        raise _NotQuickError
    generation = reader.generation()
    header = read_header(index_path)
    if header is None or not _caught_up_as_saved(reader, header, generation):
        raise _NotQuickError  # missing, unreadable, or far behind: the library saves it anew
    from pixsift.storage.vector_index import VectorIndex

    # The index file is read (checksum, then FAISS) on a thread while this one loads the text
    # tower and embeds the query: both are C code that mostly runs without the GIL, and the
    # read grows with the library (0.24 s for the 233 MB HNSW file of 100,000 images). FAISS
    # is imported here, not there: a Ctrl-C in the middle of an import can leave the import
    # lock held, and a thread importing anything then waited for it forever.
    loading = _IndexLoad(VectorIndex.load, index_path)
    try:
        loading.start()  # in the try: whatever stops this thread, it waits for the read to end
        embedder = _text_embedder(record, engine)
        vectors = embedder.embed_texts([term.text or "" for term in terms])
    finally:
        loaded = loading.result()  # also when the library answers instead: never two loads at once
    query = combine(vectors, [term.weight for term in terms])
    index = _saved_index(reader, loaded, generation, record.embed_dim)
    if query.shape != (index.dim,):
        raise _NotQuickError
    return _ranked(reader, index, query, k, min_score)


def _caught_up_as_saved(reader: CatalogReader, header: dict[str, Any], generation: int) -> bool:
    """Whether the index file with `header` is one the library would only catch up from the
    change log, not save anew: at the catalog's `generation`, or behind it by few changes."""
    from pixsift.storage.index_header import replay_is_cheap, saved_count

    since = int(header["generation"])
    if since == generation:  # as after an index run: no log to look at on the cold path
        return True
    changes = reader.changes_since(since)
    added = changes is not None and reader.vectors_added_since(since)
    return replay_is_cheap(changes, added, saved_count(header))


class _IndexLoad:
    """`load(path)` on a thread of its own; it must import nothing (see `_answer`).

    The process must not exit while it reads: FAISS calls back into Python for the file's
    bytes, and an interpreter shutting down under it aborts ("Fatal Python error:
    PyGILState_Release"). So `result` waits for the read to end even after a Ctrl-C, on an
    event of its own: in Python 3.11 a `Thread.join` interrupted by Ctrl-C marks the thread
    as ended while it still runs, so that a second join returns at once.
    """

    def __init__(self, load: Callable[[Path], VectorIndex | None], path: Path) -> None:
        self._load = load
        self._path = path
        self._index: VectorIndex | None = None
        self._error: BaseException | None = None
        self._running = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixsift-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._running.set()
        try:
            self._index = self._load(self._path)
        except BaseException as error:  # raised in the caller's thread, by `result`
            self._error = error
        finally:
            self._done.set()

    def result(self) -> VectorIndex | None:
        """The index read (None: none, or none that reads), once the read has ended."""
        try:
            self._wait()
        except BaseException:  # a Ctrl-C while waiting: wait on, the read ends within a second or so
            self._wait()
            raise
        if self._error is not None:
            raise self._error
        return self._index

    def _wait(self) -> None:
        # A thread stopped before it was started (a Ctrl-C at that very moment) never runs.
        if self._running.wait(STARTED_WITHIN_S):
            self._done.wait()


def _saved_index(reader: CatalogReader, index: VectorIndex | None, generation: int, dim: int) -> VectorIndex:
    """`index`, as read from the library's file (None: none that reads), of vectors of size
    `dim`, caught up to `generation` from the change log."""
    from pixsift.storage.index_lifecycle import load_policy

    load_policy(reader)  # the library's settings: bad ones are the library's to report
    if index is None or index.dim != dim:
        raise _NotQuickError  # replaced since the header was read, or made for another model
    if index.generation != generation:
        delta = reader.vector_delta(index.generation)
        if delta is None or delta.generation != generation:
            raise _NotQuickError  # replaced by an older file, or one the log no longer reaches
        index.apply(delta)
    return index


def _ranked(
    reader: CatalogReader, index: VectorIndex, query: np.ndarray, k: int, min_score: float | None
) -> list[SearchResult]:
    """What `Ranker.rank` makes of one query vector with no filter and nothing excluded."""
    from pixsift.search.engine import fetch_size, hit_ids, nearest, ranked_hits, to_results

    # Without a filter the exact-filter threshold plays no part: any value gives the same.
    scores, ids = nearest(index, query[None, :], fetch_size(index, k, 0), None, reader.vectors, 0)
    hits = ranked_hits(scores[0], ids[0], exclude_ids=set(), min_score=min_score)[:k]
    return to_results(reader.images(hit_ids([hits])), [hits])[0]


def _text_embedder(record: ModelRecord, engine: str) -> OnnxEmbedder:
    """The ONNX text tower the library would load for `record` with `engine` (not loaded yet)."""
    from pixsift.models.loading import text_precision
    from pixsift.models.onnx_embedder import OnnxEmbedder
    from pixsift.models.onnx_export import DamagedExportError, Export, read_export, verify_unchanged_files

    export = read_export(record.spec)
    if export is None or export.record != record:
        raise _NotQuickError  # not exported yet, or other weights: the library exports or refuses
    precision = text_precision(export, engine)
    if precision is None:
        raise _NotQuickError
    try:
        export = verify_unchanged_files(export, export.files_run({"text": precision}))
    except DamagedExportError:
        # Changed in place (it would load, and give other vectors): the library checks it
        # again, says which file, and exports the model again, as every load does.
        raise _NotQuickError from None

    def cannot_remake() -> Export:
        raise _NotQuickError  # a damaged file (now discarded): the library exports the model again

    return OnnxEmbedder(export, {"text": precision}, cannot_remake, one_shot=True)
