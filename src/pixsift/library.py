"""`Library`: the one object applications use. It ties the catalog, the FAISS index and the
model together; the command line and the HTTP service are thin faces over it.

A library is a folder holding `library.db` (SQLite: metadata, vectors, model record),
`vectors.faiss` (the search index, rebuilt from the database whenever it is missing or stale)
and `library.lock` (held by the one process allowed to index at a time).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
from filelock import Timeout

from pixsift.access import resolve_inside
from pixsift.arguments import (
    check_diversity,
    check_image_id,
    check_k,
    excluded_ids,
    index_type_setting,
    memory_budget_setting,
    merge_under,
    run_sizes,
    unit_query_vector,
)
from pixsift.config import DB_NAME, INDEX_NAME, LOCK_WAIT_S, THUMBNAILS_DIR, resolve_library_dir
from pixsift.errors import (
    EmptyLibraryError,
    ImageNotFoundError,
    InvalidOptionError,
    InvalidPathError,
    LibraryFormatError,
    LibraryNotFoundError,
    LibraryWriteError,
    ModelMismatchError,
    PixsiftError,
    QueryError,
)
from pixsift.evaluation import DEFAULT_CUTOFFS, EvalReport, LabelledQuery, evaluate, read_queries
from pixsift.indexer import IndexInterrupted, IndexProgress, IndexReport
from pixsift.indexer.decode import default_max_pixels
from pixsift.indexer.library_run import index_library
from pixsift.indexer.lock import LOCK_NAME, WriteLock
from pixsift.indexer.progress import (
    BUILDING_INDEX_PHASE,
    SilentProgress,
    model_loading,
    phase_of_unknown_length,
)
from pixsift.indexer.roots import caller_path, drop_roots_except, root_named, root_requests, scoped_request
from pixsift.indexer.run import RootRequest
from pixsift.indexer.scan import is_within
from pixsift.models import Embedder, ModelRecord, ModelSpec, resolve_model_spec
from pixsift.models.naming import refuse_empty_names, with_weights
from pixsift.regular_file import other_than_a_file
from pixsift.search import QueryTerm, SearchFilters, SearchResult, as_terms, combine
from pixsift.search.examples import (
    Example,
    ExampleVectors,
    example_list,
    example_weights,
    query_list,
    refuse_both_sides,
    refuse_same_ids,
    similar_example,
)
from pixsift.search.ranking import Ranker
from pixsift.search.recommend import RocchioWeights, checked_weights, rocchio
from pixsift.status import IndexSummary, LibraryStatus, library_status, summarize_index
from pixsift.storage import Catalog, Failure, ImageInfo
from pixsift.storage.index_keeper import IndexKeeper, LoadedIndex
from pixsift.storage.interrupts import interrupts_deferred, kept_on_interrupt
from pixsift.thumbnails import forget_thumbnails, prune_thumbnails, thumbnail

if TYPE_CHECKING:
    from pixsift.doctor import HealthReport
    from pixsift.storage.index_choice import IndexThresholds

DEFAULT_ROCCHIO = RocchioWeights()

EmbedderLoader = Callable[[ModelSpec, str], Embedder]


def _loader(engine: str) -> EmbedderLoader:
    from pixsift.models.loading import load_embedder

    return lambda spec, device: load_embedder(spec, device, engine)


class Library:
    """A searchable collection of images. Open one with `Library.open()`."""

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        *,
        device: str = "auto",
        engine: str = "auto",
        load_embedder: EmbedderLoader | None = None,
        max_pixels: int | None = None,
        index_thresholds: IndexThresholds | None = None,
    ) -> None:
        self.path = folder
        self.max_pixels = max_pixels or default_max_pixels()  # query images above it are refused
        self._device = device
        self._load_embedder = load_embedder or _loader(engine)
        self._embedder: Embedder | None = None
        self._write_lock = WriteLock(folder)
        self._index_thresholds = index_thresholds
        self._use(catalog)
        # What `open` made for a new library, until something is kept in it (see `_Made`).
        self._made: _Made | None = None
        self._taken_back = False  # by a failed first index run: made again on the next use
        # One Library may serve many threads (the HTTP service): the model is loaded only once.
        self._embedder_lock = threading.Lock()

    def _use(self, catalog: Catalog) -> None:
        self._opened_catalog = catalog
        self._opened_index = IndexKeeper(
            catalog, self.path / INDEX_NAME, self._write_lock.file_lock, self._index_thresholds
        )

    @property
    def _catalog(self) -> Catalog:
        if self._taken_back:
            self._make_again()
        return self._opened_catalog

    @property
    def _index(self) -> IndexKeeper:
        if self._taken_back:
            self._make_again()
        return self._opened_index

    # ---- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        device: str = "auto",
        engine: str = "auto",
        max_pixels: int | None = None,
        index_thresholds: IndexThresholds | None = None,
    ) -> Library:
        """Open the library in folder `path` (default: `$PIXSIFT_LIBRARY` or the user data dir).

        With `create=False` a missing library raises LibraryNotFoundError instead of being made.
        `device` is where the model runs: "auto" (CUDA when available), "cpu", "cuda",
        "cuda:N" (one GPU of several) or "mps", in any case; another name, or a GPU this
        machine does not have, raises ModelError (and no library is made).
        `engine` is how it runs: "auto" (on a CPU, ONNX Runtime, exported and cached on first
        use: each tower in int8 when within cosine 0.99 of fp32 open_clip, else fp32), "torch",
        "onnx" (fp32) or "onnx-int8", in any case.
        `max_pixels` bounds the images given as queries (default: Pillow's bomb threshold).
        `index_thresholds` moves the sizes at which the search index turns from exact to HNSW
        to IVF-PQ (default: `IndexThresholds()`).
        """
        from pixsift.models.loading import check_runs

        # Before a library is made (a mistake must not leave one); "CPU" and "ONNX" as typed.
        device, engine = check_runs(device, engine)
        folder = resolve_library_dir(path)
        catalog, made = _open_catalog(folder, create)
        library = cls(
            folder,
            catalog,
            device=device,
            engine=engine,
            max_pixels=max_pixels,
            index_thresholds=index_thresholds,
        )
        library._made = made
        return library

    def close(self) -> None:
        # Not through the properties: closing a library taken back must not make it again.
        self._taken_back = False
        self._opened_catalog.close()
        self._opened_index.close()
        self._embedder = None

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_NAME

    # ---- indexing ---------------------------------------------------------------------------

    def index(
        self,
        *roots: str | os.PathLike[str],
        model: str | None = None,
        pretrained: str | None = None,
        reembed: bool = False,
        include_hidden: bool = False,
        follow_symlinks: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: IndexProgress | None = None,
        wait: float | None = LOCK_WAIT_S,
    ) -> IndexReport:
        """Index the image files under `roots`, incrementally; with no roots, every known root.

        A new library uses `model`/`pretrained` (default ViT-B-32, laion2b_s34b_b79k). An
        existing one keeps its model: asking for another raises ModelMismatchError unless
        `reembed` is set, which re-embeds every image with the new model. `pretrained` without
        `model` names weights for the library's own architecture (ViT-B-32 for a new library).

        `batch_size` images, 1 to 4096, go to the model at a time (None: 256 on a CUDA GPU, 32
        otherwise); `workers` threads, 1 to 64, decode them (None: the CPU count, at most 8).
        Both are this run's alone: the library does not remember them.

        One process indexes a library at a time: if another one is, this waits up to `wait`
        seconds (None: as long as it takes) and then raises LibraryBusyError.

        Work is committed batch by batch. Ctrl-C raises IndexInterrupted, and an error that
        stops the run part-way (LibraryWriteError for a full disk, ModelError...) is raised as
        itself; either carries in `report` the IndexReport of what was committed before it
        (`report.kept` images), which stays: the same call again goes on from there (without
        `reembed` once the run had begun re-embedding, `IndexInterrupted.reembedding`: with
        it, every image would be embedded again).

        When the first run into a library that `open` made fails or is interrupted before it
        keeps anything (a model that cannot be had, Ctrl-C while it loads, no folder to index),
        the library is taken back, its path left as it was before `open`; using this `Library`
        again makes it anew.
        """
        with self._taken_back_on_failure():
            batch_size, workers = run_sizes(batch_size, workers)
            refuse_empty_names(model, pretrained)  # "" would mean the default model, or the library's
            # Refused now, not after a wait:
            root_requests(self._catalog, roots, include_hidden, follow_symlinks, self.path)
            with self._write_lock.held(wait, "indexing", progress):
                # As they are once the lock is held: a run waited for may have forgotten a root.
                requests = root_requests(self._catalog, roots, include_hidden, follow_symlinks, self.path)
                # A library without a model yet records the model only once it loads: if the run
                # stops before (weights not downloadable, Ctrl-C or a progress listener's error while
                # scanning or loading), the folders named are not kept either, so a later plain
                # `pixsift index` cannot index them with the default model instead.
                roots_before = None if self._catalog.model() else {r.path for r in self._catalog.roots()}
                adopted = False
                try:
                    embedder = self._embedder_for_indexing(model, pretrained, reembed, progress)
                    # The new model is the library's from here: another reembed would start over.
                    adopted = reembed
                    report = index_library(
                        self._catalog,
                        self._index,
                        self.path,
                        requests,
                        embedder,
                        batch_size,
                        workers,
                        progress,
                    )
                    if (model or pretrained) and self._catalog.model() is None and not report.interrupted:
                        # Nothing to embed yet: still make the model asked for the library's
                        # (a model that fails to load then keeps no folder either).
                        with model_loading(progress or SilentProgress()):
                            embedder()
                except BaseException as failure:
                    if roots_before is not None and self._catalog.model() is None:
                        drop_roots_except(self._catalog, roots_before)
                    if isinstance(failure, IndexInterrupted):
                        failure.reembedding = adopted
                    raise
        return report

    def reindex(
        self,
        *paths: str | os.PathLike[str],
        batch_size: int | None = None,
        workers: int | None = None,
        progress: IndexProgress | None = None,
        wait: float | None = LOCK_WAIT_S,
    ) -> IndexReport:
        """Bring folders or files inside the library's roots up to date; with none, every root.

        Unlike `index`, this never adds a root: each path must lie inside one already indexed
        (else AccessDeniedError), and is walked with that root's options. Paths are read as
        `index` reads them (`~` expanded, a relative one from the working directory). A file is
        indexed with the rest of its folder (unchanged files there are not opened). Waits for
        another index run as `index` does.
        """
        batch_size, workers = run_sizes(batch_size, workers)
        if not paths:
            return self.index(batch_size=batch_size, workers=workers, progress=progress, wait=wait)

        # A caller's "~/Photos/new" or "Photos/new" means what it does to index(); the server
        # never calls this with a path it has not checked as absolute (check_reindex is strict).
        def requests() -> list[RootRequest]:  # refused now, and again as they are once locked
            return [scoped_request(self._catalog, caller_path(path), written=path) for path in paths]

        requests()
        with self._write_lock.held(wait, "indexing", progress):
            embedder = self._embedder_for_indexing(None, None, False, progress)
            return index_library(
                self._catalog, self._index, self.path, requests(), embedder, batch_size, workers, progress
            )

    @contextmanager
    def _taken_back_on_failure(self) -> Iterator[None]:
        """Around an index run: take back the library `open` made if the run fails before
        anything is kept in it; once one succeeds, the library is the user's."""
        try:
            yield
        except BaseException as failure:
            self._take_back_if_unused()
            if isinstance(failure, IndexInterrupted):  # its summary must not say anything was kept
                failure.library_removed = self._taken_back
            raise
        self._made = None

    def _take_back_if_unused(self) -> None:
        """After a failed index run, remove the library `open` made when nothing is kept in it:
        no model, no folder, no image. Only what `open` made goes (see `_Made`), and only while
        no other run holds the library: one that opened it meanwhile and indexes into it has
        made it its own, and one that waits for it finds it gone (its catalog checks that the
        database it opened is still in place before every read and write)."""
        made = self._made
        if made is None:
            return
        lock = self._write_lock.file_lock
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            return  # another run is at it: its library now, or its own error to report
        try:
            with interrupts_deferred():  # a second Ctrl-C must not leave half a library
                if not self._unused():
                    self._made = None
                    return
                self._opened_catalog.close()
                self._opened_index.close()
                self._taken_back = True
                _remove_library_files(self.path, made)  # the lock file while held: see there
        finally:
            lock.release()
        _remove_folders(made.folders)
        self._made = None

    def _unused(self) -> bool:
        """Whether the library holds nothing: no model, no folder, no image."""
        catalog = self._opened_catalog
        try:
            return catalog.model() is None and not catalog.roots() and catalog.counts().total == 0
        except PixsiftError:  # deleted or replaced meanwhile (not ours to remove), unreadable
            return False

    def _make_again(self) -> None:
        """Make anew the library taken back after a failed first index run, as `open` did."""
        catalog, made = _open_catalog(self.path, create=True)
        self._use(catalog)
        self._made = made
        self._taken_back = False

    def _embedder_for_indexing(
        self, model: str | None, pretrained: str | None, reembed: bool, progress: IndexProgress | None
    ) -> Callable[[], Embedder]:
        """A loader for the model this run embeds with, after checking it fits the library."""
        stored = self._catalog.model()
        requested = _requested_spec(model, pretrained, stored.spec if stored else None)
        if reembed:  # load first: a model that fails to load must not cost the old vectors
            with model_loading(progress or SilentProgress()):
                embedder = self._adopt(requested or (stored.spec if stored else resolve_model_spec()))
            return lambda: embedder
        if stored is None:
            spec = requested or resolve_model_spec()
            return lambda: self._adopt(spec)
        if requested is not None and not requested.same_model(stored.spec):
            lead = f"This library was indexed with {stored.spec.describe()}, not {requested.describe()}."
            named = "model" if model else "pretrained"  # what the caller gave, to leave out
            raise ModelMismatchError(
                f"{lead} Leave out {named} to keep using it, open another library, or pass "
                "reembed=True to re-embed every image with the new model.",
                command_line=f"{lead} Leave out --{named} to keep using it, use another --library, "
                "or pass --reembed to re-embed every image with the new model.",
            )
        return self._embedder_or_load

    def _adopt(self, spec: ModelSpec) -> Embedder:
        """Load `spec` and make it the library's model, dropping vectors made by another."""
        embedder = self._load_embedder(spec, self._device)
        with self._catalog.write() as batch:
            batch.set_model(embedder.record)
        self._embedder = embedder
        return embedder

    # ---- searching ---------------------------------------------------------------------------

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        plus: Sequence[str | QueryTerm] = (),
        minus: Sequence[str | QueryTerm] = (),
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
        filters: SearchFilters | None = None,
    ) -> list[SearchResult]:
        """Images ranked by similarity to `text`, optionally pulled towards `plus` terms and
        away from `minus` terms. Scores are cosine similarities."""
        terms = [QueryTerm(text=text), *as_terms(plus, 1.0), *as_terms(minus, -1.0)]
        return self.search_terms(terms, k, min_score=min_score, under=under, filters=filters)

    def search_many(
        self,
        texts: Iterable[str],
        k: int = 10,
        *,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
    ) -> list[list[SearchResult]]:
        """`search` for many texts at once: one model call and one FAISS call for them all.
        Any iterable of texts (a generator is read once), but not one text alone."""
        queries = query_list(texts, "search_many", "search(text)")
        if not queries:
            return []
        vectors, _ = self._examples.of([QueryTerm(text=text) for text in queries])
        return self._ranker.rank(vectors, k, filters, [set() for _ in queries], min_score)

    def similar(
        self,
        image: int | str | os.PathLike[str] | bytes,
        k: int = 10,
        *,
        plus: Sequence[str | QueryTerm] = (),
        minus: Sequence[str | QueryTerm] = (),
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
        filters: SearchFilters | None = None,
    ) -> list[SearchResult]:
        """Images ranked by similarity to `image`: an indexed image's id, an image file
        (indexed or not) or an image's encoded bytes. The image itself is left out."""
        if plus or minus:
            if not isinstance(image, (str, os.PathLike)):
                raise QueryError("plus and minus terms combine with an image file only.")
            terms = [QueryTerm(image=os.fspath(image)), *as_terms(plus, 1.0), *as_terms(minus, -1.0)]
            return self.search_terms(terms, k, min_score=min_score, under=under, filters=filters)
        return self.similar_many([image], k, min_score=min_score, filters=merge_under(filters, under))[0]

    def similar_many(
        self,
        images: Iterable[int | str | os.PathLike[str] | bytes],
        k: int = 10,
        *,
        min_score: float | None = None,
        filters: SearchFilters | None = None,
    ) -> list[list[SearchResult]]:
        """`similar` for many images at once (ids, files or bytes): one FAISS call for all.
        Any iterable of them (a generator is read once), but not one alone."""
        queries = query_list(images, "similar_many", "similar(image)")
        if not queries:
            return []
        vectors, ids = self._examples.of([similar_example(item) for item in queries])
        excludes = [set() if image_id is None else {image_id} for image_id in ids]
        return self._ranker.rank(vectors, k, filters, excludes, min_score)

    def recommend(
        self,
        positive: Example | Sequence[Example],
        negative: Example | Sequence[Example] = (),
        k: int = 10,
        *,
        filters: SearchFilters | None = None,
        exclude: int | np.integer | Iterable[int | np.integer] = (),
        diversity: float = 0.0,
        min_score: float | None = None,
        weights: RocchioWeights = DEFAULT_ROCCHIO,
    ) -> list[SearchResult]:
        """Images like the `positive` examples and unlike the `negative` ones.

        Examples are image ids (int), image files (a Path), texts (a str), encoded image bytes
        or QueryTerms (one alone may be given as it is; a QueryTerm counts as its weight, which
        must be positive); they are combined with Rocchio's formula. The examples that are
        indexed images and the `exclude` ids (say, what the user has already seen) are never
        returned. `diversity` from 0 (plain ranking) to 1 trades relevance for variety with MMR,
        which orders the first 1000 results (with a larger k, the rest follow by score).
        """
        check_diversity(diversity)
        check_k(k)
        weights = checked_weights(weights)
        never = excluded_ids(exclude)
        liked, disliked = example_list(positive), example_list(negative)
        if not liked:  # before any vector is made: nothing to stack is no error of numpy's
            raise QueryError("A recommendation needs at least one positive example.")
        scales = (example_weights(liked), example_weights(disliked))
        refuse_both_sides(liked, disliked)
        rows, ids = self._examples.of([*liked, *disliked])
        refuse_same_ids(ids, len(liked))
        query = rocchio(rows[: len(liked)], rows[len(liked) :], weights, scales=scales)
        excluded = never | {i for i in ids if i is not None}
        if diversity == 0.0:
            return self._ranker.rank(query[None, :], k, filters, [excluded], min_score)[0]
        return self._ranker.rank_diverse(query, k, filters, excluded, min_score, diversity)

    def search_terms(
        self,
        terms: Iterable[QueryTerm],
        k: int = 10,
        *,
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
        filters: SearchFilters | None = None,
    ) -> list[SearchResult]:
        """Images ranked by a weighted combination of text and image terms (any iterable of
        them: a generator is read once)."""
        given = query_list(terms, "search_terms", "search(text) or search_terms([term])")
        if not given:
            raise QueryError("A search needs at least one query term.")
        for term in given:  # a plain text or id would otherwise fail inside as an AttributeError
            if not isinstance(term, QueryTerm):
                raise QueryError(
                    f"search_terms takes QueryTerms, such as QueryTerm(text=...) or QueryTerm(image=...), "
                    f"not {type(term).__name__}."
                )
        vectors, query_ids = self._examples.of(given)
        query = combine(vectors, [term.weight for term in given])
        excluded = {image_id for image_id in query_ids if image_id is not None}
        return self._ranker.rank(query[None, :], k, merge_under(filters, under), [excluded], min_score)[0]

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
        filters: SearchFilters | None = None,
        exclude_ids: int | np.integer | Iterable[int | np.integer] = (),
    ) -> list[SearchResult]:
        """Images ranked by cosine similarity to an embedding `vector`."""
        query = unit_query_vector(vector)
        return self._ranker.rank(
            query[None, :], k, merge_under(filters, under), [excluded_ids(exclude_ids)], min_score
        )[0]

    @property
    def _examples(self) -> ExampleVectors:
        return ExampleVectors(self._catalog, self._embedder_or_load, self.max_pixels)

    @property
    def _ranker(self) -> Ranker:
        return Ranker(self._catalog, self._index, self._require_model)

    # ---- single images -------------------------------------------------------------------------

    def image(self, image_id: int) -> ImageInfo:
        """An image's stored metadata; ImageNotFoundError if the library holds no such id."""
        info = self._catalog.image(check_image_id(image_id))
        if info is None:
            raise ImageNotFoundError(f"No image in the library has id {image_id}.")
        return info

    def image_file(self, image_id: int) -> str:
        """The file of an image, resolved, after checking it still lies inside an indexed root
        (a file replaced by a link to elsewhere is refused with AccessDeniedError, unless the
        root was indexed with links followed)."""
        return self._resolve_inside_roots(self.image(image_id).path, "Image")

    def thumbnail(self, image_id: int, size: int = 256) -> Path:
        """A JPEG thumbnail of an image, at most `size` pixels on its long side (never more than
        the image's own), cached on disk. The cache keeps a few sizes per image and drops those
        of a changed file, so read the file soon after, or ask again."""
        info = self.image(image_id)
        source = self.image_file(image_id)
        long_side = max(info.width or 0, info.height or 0) or None
        cache = self.path / THUMBNAILS_DIR
        # Indexed files passed the indexer's own pixel limit: the query limit is for uploads.
        made = thumbnail(source, cache, image_id, size, default_max_pixels(), long_side)
        # Deleted or forgotten while it was made, perhaps by another process: that removal's
        # cleaning of the cache may have run before the thumbnail was written, so it is undone
        # here (a removal commits before it cleans, so one of the two sees the other).
        if self._catalog.image(image_id) is None:
            forget_thumbnails(cache, image_id)
            raise ImageNotFoundError(f"No image in the library has id {image_id}.")
        return made

    def resolve_inside_roots(self, path: str | os.PathLike[str]) -> str:
        """`path`, resolved, if it lies inside one of the library's roots (or, as written, inside
        one indexed with links followed, as `image_file` allows); else AccessDeniedError."""
        return self._resolve_inside_roots(path, "Path")

    def _resolve_inside_roots(self, path: str | os.PathLike[str], what: str) -> str:
        """`resolve_inside` the library's roots, following links in those indexed with them;
        `what` names the path in its errors."""
        roots = self._catalog.roots()
        linked = [root.path for root in roots if root.follow_symlinks]
        return resolve_inside(path, [root.path for root in roots], linked_roots=linked, what=what)

    def check_reindex(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """Raise now what `reindex(*paths)` would refuse (a path outside the roots, no roots),
        so a caller that runs it in the background can answer at once. Stricter than `reindex`
        for a service's clients: a path must be absolute as written (no `~`, nothing relative
        to this process's working directory)."""
        if not paths:  # every root: refused, as `index()` refuses it, when there is none
            root_requests(self._catalog, (), include_hidden=False, follow_symlinks=False)
        for path in paths:
            scoped_request(self._catalog, path)

    def delete(self, image_id: int, *, wait: float | None = 2.0) -> ImageInfo:
        """Remove an image (its metadata and vector) from the library; its file is left alone.

        A later index run of its folder adds the file again if it is still there. Waits up to
        `wait` seconds (None: as long as it takes) for a running index run, then raises
        LibraryBusyError. ImageNotFoundError if the library holds no such image, also when
        another delete removed it while this one waited.
        """
        self.image(image_id)  # an unknown id is refused at once, without waiting for a run
        with self._write_lock.held(wait, "deleting"):
            # As it is once the lock is held: a delete waited for may have removed it (only one
            # of two deletes of an image deletes it), a run waited for may have moved it.
            info = self.image(image_id)
            with self._catalog.write() as batch:
                batch.delete_images([image_id])
            # At once after the commit: the catch-up below fails on a library closed meanwhile
            # (the service's stop), which left the thumbnails behind. Ids are never reused, so
            # any left (a crash here) are only litter: never served, pruned by a repair.
            forget_thumbnails(self.path / THUMBNAILS_DIR, image_id)
            # Not a rewrite of the whole index file (2 GB at a million vectors) for one image:
            # every process replays the change log on load; saved once the log is long.
            if (model := self._catalog.model()) is not None:
                self._index.after_change(model.embed_dim)
        return info

    def indexed_folder(self, folder: str | os.PathLike[str]) -> str:
        """The indexed folder `folder` names, as the library stores it and `status` lists it
        (an absolute path), however it is written (relative, with `~`, through a link; it may
        no longer exist): what `forget(folder)` drops and `relocate(folder, ...)` moves.
        InvalidPathError when it names no indexed folder."""
        return root_named(folder, [root.path for root in self._catalog.roots()])

    def forget(
        self,
        folder: str | os.PathLike[str],
        *,
        wait: float | None = LOCK_WAIT_S,
        progress: IndexProgress | None = None,
    ) -> int:
        """Stop indexing an indexed folder: drop it and every image under it from the library
        (the files are left alone), for a folder renamed, moved or gone for good. Images of
        another indexed folder nested inside it stay; a folder inside another indexed folder
        is only dropped as a root (that folder's next index run decides what of it stays).
        Returns how many images were removed. While it waits for an index run (as `index`
        does), `progress` shows a waiting phase.

        Ctrl-C before the change is committed leaves the library as it was (KeyboardInterrupt);
        one while it is committed, or after, raises InterruptedAfterCommit, whose `result` is
        that count: the change is kept."""
        root_named(folder, [root.path for root in self._catalog.roots()])  # refused now, not after a wait
        with kept_on_interrupt() as change, self._write_lock.held(wait, "forgetting a folder", progress):
            # As they are once the lock is held: a run waited for may have forgotten it meanwhile.
            roots = [root.path for root in self._catalog.roots()]
            root = root_named(folder, roots)
            others = [other for other in roots if other != root]
            ids: set[int] = set()
            whole = not any(is_within(root, other) for other in others)  # else only the root goes
            inner = [other for other in others if is_within(other, root)]
            if whole:
                ids = set(self._catalog.ids_under(root).tolist())
                for nested in inner:
                    ids -= set(self._catalog.ids_under(nested).tolist())
            change.result = len(ids)
            with change.transaction(self._catalog.write()) as batch:
                batch.delete_images(sorted(ids))
                if whole:  # what left the folder earlier is forgotten too: it never comes back
                    batch.forget_departed_under(root, keep=inner)
                batch.delete_root(root)
            # Caches, after the commit: a Ctrl-C here leaves them for the next search to catch
            # up, and for a repair to prune. Thumbnails first, as a delete does: the catch-up
            # fails on a library closed meanwhile (a service's stop).
            prune_thumbnails(self.path / THUMBNAILS_DIR, self._catalog.images)
            if (model := self._catalog.model()) is not None:
                self._index.after_change(model.embed_dim)
        return len(ids)

    def relocate(
        self,
        old: str | os.PathLike[str],
        new: str | os.PathLike[str],
        *,
        wait: float | None = LOCK_WAIT_S,
        progress: IndexProgress | None = None,
    ) -> int:
        """Tell the library that the indexed folder `old` now lives at `new` (renamed, moved,
        copied to a new disk and the old one gone): its images keep their ids and vectors and
        take their new paths, and the folder keeps its options. Returns how many images moved.

        pixsift cannot tell a moved folder from an unplugged one with a copy elsewhere, so only
        this says it. Refused (InvalidPathError, nothing changed) unless `old` is an indexed
        folder and `new` an existing folder that neither is, holds nor lies in another indexed
        folder, and unless `old` is gone or empty (a folder that still holds files was copied:
        index the copy instead). Run `index(new)` after it to pick up what changed meanwhile.
        Waits for an index run as `forget` does, showing it on `progress`, and tells a Ctrl-C that
        came once the paths were committed as `forget` does (InterruptedAfterCommit, `result`: how
        many moved).
        """
        from pixsift.indexer.relocation import plan_relocation

        plan_relocation(self._catalog.roots(), old, new)  # refused now, not after a wait
        with kept_on_interrupt() as change, self._write_lock.held(wait, "relocating a folder", progress):
            plan = plan_relocation(self._catalog.roots(), old, new)  # as the roots are now
            if len(self._catalog.ids_under(plan.new)):  # no root holds it, so none should be there
                raise InvalidPathError(f"The library already holds images under {plan.new}.")
            with change.transaction(self._catalog.write()) as batch:
                moved = change.result = batch.move_paths(plan.old, plan.new, plan.roots)
        return moved

    def warm_up(self, *, index_in_background: bool = False) -> None:
        """Load the model and the search index now rather than on the first search (a server
        does this at start); an empty library has neither yet, and is left as it is.

        `index_in_background`: the index loads in a thread of its own (minutes for a large
        one far behind its file), `loaded_index().loading` meanwhile; searches wait for its
        file to be read, then answer from it as it is while it catches up (in slices).
        The model is loaded first either way, so that a model that cannot load fails here."""
        if self._catalog.model() is None:
            return
        self._embedder_or_load()
        dim = self._require_model().embed_dim
        if index_in_background:
            self._index.load_in_background(dim)
        else:
            self._index.refresh(dim)

    # ---- the model and the vector index ------------------------------------------------------

    def _embedder_or_load(self) -> Embedder:
        """The library's own model, loaded once, after checking its weights are the same.

        Checked on every call, so a long-lived Library follows another process's --reembed.
        """
        record = self._require_model()
        with self._embedder_lock:  # many threads may ask at once: load the model once
            if self._embedder is None or self._embedder.record != record:
                embedder = self._load_embedder(record.spec, self._device)
                if embedder.record.fingerprint != record.fingerprint:
                    lead = (
                        f"The weights of {record.spec.describe()} are not the ones this library was "
                        f"indexed with (fingerprint {embedder.record.fingerprint}, expected "
                        f"{record.fingerprint}). Restore them, or re-embed with"
                    )
                    raise ModelMismatchError(
                        f"{lead} index(reembed=True).", command_line=f"{lead} pixsift index --reembed."
                    )
                self._embedder = embedder
            return self._embedder

    def _require_model(self) -> ModelRecord:
        record = self._catalog.model()
        if record is None:
            lead = f"The library at {self.path} has no images indexed yet:"
            raise EmptyLibraryError(
                f"{lead} index a folder into it first.",
                command_line=f"{lead} run pixsift index FOLDER first.",
            )
        return record

    # ---- the search index's kind and rebuilds ----------------------------------------------------

    def rebuild_index(
        self,
        index_type: str | None = None,
        memory_budget: str | int | None = None,
        *,
        wait: float | None = LOCK_WAIT_S,
        progress: IndexProgress | None = None,
    ) -> IndexSummary:
        """Rebuild the search index from the stored vectors, retraining and retuning it.

        `index_type` is "auto" (chosen by size and memory budget), "flat", "hnsw" or "ivfpq"
        (in any case: "HNSW" as FAISS writes it);
        `memory_budget` is bytes or a size such as "2GB". Both are remembered by the library
        (left out: as before). Searches keep answering from the old index until the new one
        is swapped in. Waits for an index run as `forget` does, showing it on `progress`, which
        then shows the build as a phase of its own ("Building search index", without steps).
        """
        from pixsift.storage.index_choice import IndexKind
        from pixsift.storage.index_lifecycle import INDEX_TYPE_KEY, MEMORY_BUDGET_KEY

        self._require_model()
        kind = index_type_setting(index_type)
        budget = memory_budget_setting(memory_budget)
        with self._write_lock.held(wait, "rebuilding the search index", progress):
            policy = self._index.policy()
            if kind is not None:
                policy = replace(policy, forced=None if kind == "auto" else IndexKind(kind))
            if budget is not None:
                policy = replace(policy, memory_budget=budget)
            policy.check(self._catalog.counts().indexed)  # refuse before anything changes
            with phase_of_unknown_length(progress, BUILDING_INDEX_PHASE):  # minutes at 1M vectors
                self._index.rebuild(self._require_model().embed_dim, policy)
            # Remembered once the new index is saved: a rebuild that fails or is killed leaves
            # the library as it was, not set to turn into the new kind at its next run.
            with self._catalog.write() as batch:
                if kind is not None:
                    batch.set_setting(INDEX_TYPE_KEY, None if kind == "auto" else kind)
                if budget is not None:
                    batch.set_setting(MEMORY_BUDGET_KEY, str(budget))
        return self.index_summary()

    def index_summary(self) -> IndexSummary:
        """The kind of search index in use, its size and how it was tuned."""
        with self._index.current(self._require_model().embed_dim) as vectors:
            return summarize_index(vectors)

    def loaded_index_summary(self) -> IndexSummary | None:
        """The search index this Library holds in memory (a server loads it at start), as it
        is: None while none is loaded. Unlike `index_summary` it neither loads nor builds one,
        nor catches it up with changes made since its last search."""
        return self.loaded_index().summary

    def loaded_index(self) -> LoadedIndex:
        """`loaded_index_summary`, and whether the index is being loaded now (by `warm_up`, or
        by the first search), in one consistent view. It answers at once, never waiting for a
        load, catch-up or rebuild under way: it is what was published when the index in memory
        last changed (a rebuild's replacement is described once it is swapped in)."""
        # Not `_index`: a health check must not make a taken-back library again as a side effect.
        return self._opened_index.published

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> LibraryStatus:
        """What is indexed, with which model, where, and how fresh the search index is."""
        return library_status(self.path, self._catalog, self.index_path)

    def failures(
        self, limit: int | None = None, *, after: str | os.PathLike[str] | None = None
    ) -> list[Failure]:
        """Files that could not be indexed, with the reason, by path (at most `limit`).

        `after` pages through them: the failures whose path sorts after it (the last path of
        the page before), so a page neither repeats nor skips one while an index run adds or
        clears others. Paths sort by their bytes, as stored; `after` need not be a failure.
        """
        if limit is not None:
            # SQLite reads a negative limit as none, and SQLAlchemy fails on text with a ValueError.
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
                raise InvalidOptionError(f"limit must be a whole number of at least 0, not {limit!r}.")
            limit = int(limit)
        return self._catalog.failures(limit, None if after is None else _cursor_path(after))

    def evaluate(
        self, query_file: str | os.PathLike[str], cutoffs: Sequence[int] = DEFAULT_CUTOFFS
    ) -> EvalReport:
        """Retrieval quality on labelled queries (see `pixsift.evaluation` for the file format)."""
        if not os.fspath(query_file).strip():  # Path("") would be the working directory
            raise QueryError("The query file path is empty: name a query file (JSONL, one query a line).")
        record = self._require_model()
        queries = read_queries(query_file)

        def run(query: LabelledQuery, k: int) -> list[SearchResult]:
            if query.text is not None:
                return self.search(query.text, k)
            return self.similar(str(query.image), k)

        return evaluate(queries, self._catalog.embedded_paths(), run, cutoffs, record.spec.describe())

    # ---- health ---------------------------------------------------------------------------------

    def check(
        self, *, wait: float | None = LOCK_WAIT_S, progress: IndexProgress | None = None
    ) -> HealthReport:
        """Check the database, the search index against it and the indexed files; change nothing.

        Waits for an index run to finish (up to `wait` seconds), so it sees a settled library;
        meanwhile `progress` shows a waiting phase.
        """
        from pixsift import doctor

        with self._write_lock.held(wait, "a check", progress):
            return doctor.check(self._catalog, self.index_path)

    def repair(
        self, *, wait: float | None = LOCK_WAIT_S, progress: IndexProgress | None = None
    ) -> HealthReport:
        """Repair what can be repaired, then check again: the report lists both.

        Rebuilds the search index from the stored vectors, drops rows of files gone from disk
        (not of folders that are not there), drops vectors that fit nothing, and removes cached
        thumbnails of images no longer in the library. A database that
        SQLite finds damaged is left alone: the report says so. Waits as `check` does.

        Ctrl-C before the first repair is kept leaves the library as it was (KeyboardInterrupt);
        one after raises InterruptedAfterCommit, whose `result` lists the repairs kept so far
        (as `repairs` does): running the repair again finishes the job. `progress` shows the
        wait, then the search index's rebuild as a phase ("Building search index", no steps).
        """
        from pixsift import doctor
        from pixsift.storage.database import write_error

        with kept_on_interrupt() as change, self._write_lock.held(wait, "a repair", progress):
            before = doctor.check(self._catalog, self.index_path)
            if any(problem.kind == "database" for problem in before.problems):
                return before
            try:
                done = doctor.repair(self._catalog, self.index_path, self._index.policy(), change, progress)
            except OSError as exc:
                raise write_error(self.path, exc) from exc
            self._index.forget()  # reload the rebuilt index on the next search
            # Of the rows dropped above, and of any image whose removal stopped short of it.
            if pruned := prune_thumbnails(self.path / THUMBNAILS_DIR, self._catalog.images):
                done.append(f"removed the thumbnails of {pruned} image(s) no longer in the library")
            after = doctor.check(self._catalog, self.index_path)
        after.repairs = done
        return after


def _requested_spec(model: str | None, pretrained: str | None, stored: ModelSpec | None) -> ModelSpec | None:
    """The model an index run is asked for, None when it names none. Weights named without a
    model are for the library's own architecture; only a library without a model yet takes
    the default one (ViT-B-32) for them."""
    if model is None and pretrained is not None and stored is not None:
        return with_weights(stored, pretrained)
    return resolve_model_spec(model, pretrained) if (model or pretrained) else None


def _cursor_path(after: object) -> str:
    """`after` of `failures` as the text paths are stored as; a clear error for anything else
    (a number would fail deep in SQLAlchemy; a lone surrogate from JSON names no file's bytes)."""
    text = os.fspath(after) if isinstance(after, (str, os.PathLike)) else after
    if not isinstance(text, str):
        raise InvalidOptionError(f"after must be a path (text), not {type(after).__name__}.")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise InvalidOptionError(f"after is not a path a file could have: {text!r}.") from None
    return text


def _not_a_folder(path: Path) -> str:
    """Why a file cannot be a library, with the likely meant folder for its own database."""
    hint = f"; give the folder that holds it, {path.parent}" if path.name == DB_NAME else ""
    return f"Library path {path} is a file, not a library folder{hint}."


@dataclass(frozen=True)
class _Made:
    """What `Library.open` created for a new library. A first index run that fails before it
    keeps anything takes back exactly this, so the path is as it was: a folder the user made
    stays (empty, or with what else was in it), and so does a lock file left there before."""

    folders: tuple[Path, ...]  # created, innermost first
    lock_file: bool  # library.lock was not there


def _open_catalog(folder: Path, create: bool) -> tuple[Catalog, _Made | None]:
    """The catalog of the library in `folder`, made if there is none and `create` is set, with
    what was made for it then."""
    db_path = folder / DB_NAME
    if db_path.is_file():
        return Catalog.open(db_path), None
    if (other := other_than_a_file(db_path)) is not None:
        # SQLite would wait on a named pipe for a writer, for good; and a folder is no library.
        raise LibraryFormatError(
            f"Cannot use {db_path} as a pixsift library: {other} is in its place, not a database file."
        )
    if folder.exists() and not folder.is_dir():
        # Not "no library, index to make one": an index run there would fail too.
        error = InvalidPathError if create else LibraryNotFoundError
        raise error(_not_a_folder(folder))
    if not create:
        lead = f"No pixsift library at {folder}."
        raise LibraryNotFoundError(
            f"{lead} Open it with create=True to make one, then index a folder into it.",
            command_line=f"{lead} Create one by indexing a folder: pixsift index ~/Photos",
        )
    made = _Made(_missing_folders(folder), not os.path.lexists(folder / LOCK_NAME))
    try:
        _make_library_folder(folder)
        return Catalog.open(db_path), made
    except LibraryWriteError as exc:
        # The schema could not be written (a full disk): the empty file SQLite made would pass
        # for a library, which `status` would report and later commands would write into.
        from pixsift.storage.database import not_made_error

        _remove_empty_database(db_path)
        _remove_folders(made.folders)
        raise not_made_error(exc) from exc.__cause__
    except BaseException:
        _remove_folders(made.folders)  # those still empty: the database may have been made
        raise


def _remove_empty_database(db_path: Path) -> None:
    """Remove a database file that holds nothing yet, made by a failed creation. Not while a
    journal lies beside it: another process is then writing its schema, and its library would
    be lost with the file."""
    journals = [db_path.with_name(db_path.name + suffix) for suffix in ("-journal", "-wal")]
    with suppress(OSError):  # best effort: an empty file stays, as before
        if db_path.stat().st_size == 0 and not any(os.path.lexists(path) for path in journals):
            db_path.unlink()


def _missing_folders(folder: Path) -> tuple[Path, ...]:
    """`folder` and those of its parents that do not exist, innermost first."""
    missing = []
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    return tuple(missing)


def _remove_library_files(folder: Path, made: _Made) -> None:
    """Remove the files of a library made and left unused; the caller holds its write lock.

    The lock file goes while it is held: a run that waits for it then locks a file no longer
    there, which filelock notices and locks the path anew; one that had opened the library
    finds its database gone (LibraryNotFoundError), rather than writing to a removed file.
    """
    names = [DB_NAME, *(DB_NAME + suffix for suffix in ("-wal", "-shm", "-journal"))]
    if made.lock_file:
        names.append(LOCK_NAME)
    for name in names:
        with suppress(OSError):  # best effort: what stays is an empty library, as before
            (folder / name).unlink(missing_ok=True)


def _remove_folders(folders: Sequence[Path]) -> None:
    """Remove the folders made for a library, innermost first, while they are empty: one that
    holds anything (another run's new library, a file put there meanwhile) stays."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:
            return


def _make_library_folder(folder: Path) -> None:
    """Create `folder` and its parents; a path through a file, a read-only or virtual file
    system (/proc) is the user's to fix, so it is told in one line, not as a traceback."""
    from pixsift.storage.database import write_error

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError, FileNotFoundError) as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise InvalidPathError(f"Cannot create the library folder {folder}: {reason}.") from None
    except OSError as exc:  # no permission, a read-only or full disk
        raise write_error(folder, exc) from exc
