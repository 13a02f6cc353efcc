"""`Library`: the one object applications use. It ties the catalog, the FAISS index and the
model together; the command line and the HTTP service are thin faces over it.

A library is a folder holding `library.db` (SQLite: metadata, vectors, model record),
`vectors.faiss` (the search index, rebuilt from the database whenever it is missing or stale)
and `library.lock` (held by the one process allowed to index at a time).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout

from pixsift.config import LOCK_WAIT_S, resolve_library_dir
from pixsift.errors import (
    EmptyLibraryError,
    ImageError,
    InvalidPathError,
    LibraryBusyError,
    LibraryNotFoundError,
    LibraryWriteError,
    ModelMismatchError,
    QueryError,
)
from pixsift.indexer import Indexer, IndexProgress, IndexReport, IndexSettings, RootRequest
from pixsift.indexer.decode import default_max_pixels, describe_error, load_image
from pixsift.models import Embedder, ModelRecord, ModelSpec, resolve_model_spec
from pixsift.search import QueryTerm, SearchResult, as_terms, combine, search_vector
from pixsift.storage import Catalog, CatalogCounts, Failure, RootInfo

if TYPE_CHECKING:
    from pixsift.doctor import HealthReport
    from pixsift.storage.vector_index import VectorIndex

DB_NAME = "library.db"
INDEX_NAME = "vectors.faiss"
LOCK_NAME = "library.lock"

EmbedderLoader = Callable[[ModelSpec, str], Embedder]


def _load_clip(spec: ModelSpec, device: str) -> Embedder:
    from pixsift.models.clip import ClipEmbedder  # torch and open_clip: only when needed

    return ClipEmbedder.load(spec, device)


@dataclass(frozen=True)
class IndexFileState:
    """Whether `vectors.faiss` reflects the database: "up to date", "stale" or "missing"."""

    state: str
    generation: int | None


@dataclass(frozen=True)
class LibraryStatus:
    path: Path
    model: ModelRecord | None
    counts: CatalogCounts
    roots: list[RootInfo]
    generation: int
    index_file: IndexFileState
    disk_bytes: int


class Library:
    """A searchable collection of images. Open one with `Library.open()`."""

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        *,
        device: str = "auto",
        load_embedder: EmbedderLoader = _load_clip,
    ) -> None:
        self.path = folder
        self._catalog = catalog
        self._device = device
        self._load_embedder = load_embedder
        self._embedder: Embedder | None = None
        self._vectors: VectorIndex | None = None
        self._lock = FileLock(folder / LOCK_NAME)

    # ---- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        device: str = "auto",
    ) -> Library:
        """Open the library in folder `path` (default: `$PIXSIFT_LIBRARY` or the user data dir).

        With `create=False` a missing library raises LibraryNotFoundError instead of being made.
        `device` is where the model runs: "auto" (CUDA when available), "cpu" or "cuda".
        """
        folder = resolve_library_dir(path)
        db_path = folder / DB_NAME
        if not db_path.is_file():
            if not create:
                raise LibraryNotFoundError(
                    f"No pixsift library at {folder}. Create one by indexing a folder: pixsift index ~/Photos"
                )
            if folder.exists() and not folder.is_dir():
                raise InvalidPathError(f"Library path {folder} exists and is not a folder.")
            folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, Catalog.open(db_path), device=device)

    def close(self) -> None:
        self._catalog.close()
        self._vectors = None
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
        batch_size: int = 32,
        workers: int | None = None,
        progress: IndexProgress | None = None,
        wait: float | None = LOCK_WAIT_S,
    ) -> IndexReport:
        """Index the image files under `roots`, incrementally; with no roots, every known root.

        A new library uses `model`/`pretrained` (default ViT-B-32, laion2b_s34b_b79k). An
        existing one keeps its model: asking for another raises ModelMismatchError unless
        `reembed` is set, which re-embeds every image with the new model.

        One process indexes a library at a time: if another one is, this waits up to `wait`
        seconds (None: as long as it takes) and then raises LibraryBusyError.
        """
        requests, skipped = self._root_requests(roots, include_hidden, follow_symlinks)
        with self._locked(wait, "indexing"):
            embedder = self._embedder_for_indexing(model, pretrained, reembed)
            settings = IndexSettings(
                batch_size=batch_size,
                workers=workers or IndexSettings().workers,
                max_pixels=default_max_pixels(),
                exclude=(str(self.path),),
            )
            try:
                report = Indexer(self._catalog, embedder, settings, progress).run(requests)
            finally:  # also after Ctrl-C: save what was committed into the FAISS index
                if self._catalog.model() is not None:
                    self._refresh_vectors(save=True)
        report.skipped_roots = skipped
        return report

    @contextmanager
    def _locked(self, wait: float | None, doing: str) -> Iterator[None]:
        """Hold the library's write lock, waiting up to `wait` seconds (None: for ever)."""
        try:
            self._lock.acquire(timeout=-1 if wait is None else max(0.0, wait))
        except Timeout:
            waited = "" if not wait else f" (waited {wait:g} s)"
            raise LibraryBusyError(
                f"Another pixsift process is indexing or repairing the library at {self.path}"
                f"{waited}. Run this again when it has finished, or let it wait longer "
                f"with --wait SECONDS; {doing} needs the library to itself."
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def _root_requests(
        self, roots: Sequence[str | os.PathLike[str]], include_hidden: bool, follow_symlinks: bool
    ) -> tuple[list[RootRequest], list[str]]:
        """The folders to index, and the known roots skipped because they are not there."""
        if roots:
            return [self._new_root(r, include_hidden, follow_symlinks) for r in roots], []
        known = self._catalog.roots()
        if not known:
            raise InvalidPathError("Nothing to index yet: name a folder, e.g. pixsift index ~/Photos")
        # An unmounted drive must not look like a deleted folder: skip roots that are not there.
        present = [r for r in known if os.path.isdir(r.path)]
        skipped = [r.path for r in known if r not in present]
        return [RootRequest(r.path, r.include_hidden, r.follow_symlinks) for r in present], skipped

    @staticmethod
    def _new_root(root: str | os.PathLike[str], include_hidden: bool, follow_symlinks: bool) -> RootRequest:
        folder = Path(root).expanduser()
        if not folder.exists():
            raise InvalidPathError(f"Folder {folder} does not exist.")
        if not folder.is_dir():
            raise InvalidPathError(f"{folder} is not a folder; give the folder that holds it.")
        return RootRequest(str(folder.resolve()), include_hidden, follow_symlinks)

    def _embedder_for_indexing(
        self, model: str | None, pretrained: str | None, reembed: bool
    ) -> Callable[[], Embedder]:
        """A loader for the model this run embeds with, after checking it fits the library."""
        stored = self._catalog.model()
        requested = resolve_model_spec(model, pretrained) if (model or pretrained) else None
        if reembed:  # load first: a model that fails to load must not cost the old vectors
            embedder = self._adopt(requested or (stored.spec if stored else resolve_model_spec()))
            return lambda: embedder
        if stored is None:
            spec = requested or resolve_model_spec()
            return lambda: self._adopt(spec)
        if requested is not None and requested != stored.spec:
            raise ModelMismatchError(
                f"This library was indexed with {stored.spec.describe()}, not "
                f"{requested.describe()}. Leave out --model to keep using it, use another "
                "--library, or pass --reembed to re-embed every image with the new model."
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
    ) -> list[SearchResult]:
        """Images ranked by similarity to `text`, optionally pulled towards `plus` terms and
        away from `minus` terms. Scores are cosine similarities."""
        terms = [QueryTerm(text=text), *as_terms(plus, 1.0), *as_terms(minus, -1.0)]
        return self.search_terms(terms, k, min_score=min_score, under=under)

    def similar(
        self,
        image: str | os.PathLike[str],
        k: int = 10,
        *,
        plus: Sequence[str | QueryTerm] = (),
        minus: Sequence[str | QueryTerm] = (),
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
    ) -> list[SearchResult]:
        """Images ranked by similarity to the image file `image` (indexed or not); the image
        itself is left out of the results."""
        terms = [QueryTerm(image=os.fspath(image)), *as_terms(plus, 1.0), *as_terms(minus, -1.0)]
        return self.search_terms(terms, k, min_score=min_score, under=under)

    def search_terms(
        self,
        terms: Sequence[QueryTerm],
        k: int = 10,
        *,
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
    ) -> list[SearchResult]:
        """Images ranked by a weighted combination of text and image terms."""
        if not terms:
            raise ValueError("search_terms needs at least one term")
        vectors, query_ids = self._term_vectors(terms)
        query = combine(vectors, [term.weight for term in terms])
        return self.search_vector(query, k, min_score=min_score, under=under, exclude_ids=query_ids)

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        min_score: float | None = None,
        under: str | os.PathLike[str] | None = None,
        exclude_ids: Sequence[int] | set[int] = (),
    ) -> list[SearchResult]:
        """Images ranked by cosine similarity to an embedding `vector`."""
        if k < 1:
            raise ValueError("k must be at least 1")
        folder = None if under is None else self._existing_folder(under)
        vectors = self._refresh_vectors(save=False)
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (vectors.dim,):
            raise QueryError(
                f"A query vector of shape {query.shape} does not fit this library, whose model "
                f"makes {vectors.dim}-dimensional vectors."
            )
        return search_vector(
            self._catalog,
            vectors,
            query,
            k=k,
            min_score=min_score,
            under=folder,
            exclude_ids=set(exclude_ids),
        )

    def _term_vectors(self, terms: Sequence[QueryTerm]) -> tuple[np.ndarray, set[int]]:
        """One row per term; also the ids of indexed images used as query images."""
        rows: list[np.ndarray | None] = [None] * len(terms)
        query_ids: set[int] = set()
        for position, term in enumerate(terms):
            if term.image is not None:
                rows[position], image_id = self._image_vector(term.image)
                if image_id is not None:
                    query_ids.add(image_id)
        texts = [(p, t.text) for p, t in enumerate(terms) if t.text is not None]
        if texts:
            embedded = self._embedder_or_load().embed_texts([text for _, text in texts])
            for (position, _), vector in zip(texts, embedded, strict=True):
                rows[position] = vector
        return np.stack([row for row in rows if row is not None]), query_ids

    def _image_vector(self, image: str) -> tuple[np.ndarray, int | None]:
        """An image file's vector: the stored one if the file is indexed and unchanged."""
        path = os.path.abspath(os.path.expanduser(image))
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise InvalidPathError(f"Image {path} not found.") from None
        except OSError as exc:
            raise InvalidPathError(f"Cannot read image {path}: {exc.strerror}") from None
        # Indexed paths start from a resolved root: a path given through a link may differ.
        known = self._catalog.known_file(path) or self._catalog.known_file(os.path.realpath(path))
        if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
            stored = self._catalog.vector(known.id) if known.has_vector else None
            if stored is not None:
                return stored, known.id
        embedder = self._embedder_or_load()
        try:
            decoded = load_image(
                path,
                preprocess=embedder.preprocess,
                target_size=embedder.image_size,
                max_pixels=default_max_pixels(),
            )
        except Exception as exc:  # any decode failure is the file's fault, told as such
            raise ImageError(f"Cannot read image {path}: {describe_error(exc)}") from exc
        return embedder.embed_images([decoded.pixels])[0], known.id if known else None

    def _existing_folder(self, under: str | os.PathLike[str]) -> str:
        folder = Path(under).expanduser()
        if not folder.is_dir():
            raise InvalidPathError(f"--under: folder {folder} does not exist.")
        return str(folder.resolve())

    # ---- the model and the vector index ------------------------------------------------------

    def _embedder_or_load(self) -> Embedder:
        """The library's own model, loaded once, after checking its weights are the same.

        Checked on every call, so a long-lived Library follows another process's --reembed.
        """
        record = self._require_model()
        if self._embedder is None or self._embedder.record != record:
            embedder = self._load_embedder(record.spec, self._device)
            if embedder.record.fingerprint != record.fingerprint:
                raise ModelMismatchError(
                    f"The weights of {record.spec.describe()} are not the ones this library was "
                    f"indexed with (fingerprint {embedder.record.fingerprint}, expected "
                    f"{record.fingerprint}). Restore them, or re-embed with pixsift index --reembed."
                )
            self._embedder = embedder
        return self._embedder

    def _require_model(self) -> ModelRecord:
        record = self._catalog.model()
        if record is None:
            raise EmptyLibraryError(
                f"The library at {self.path} has no images indexed yet: run pixsift index FOLDER first."
            )
        return record

    def _refresh_vectors(self, *, save: bool) -> VectorIndex:
        """The FAISS index, caught up with the database.

        An index run (`save=True`, holding the lock) saves it whenever the file is behind; a
        search saves it only if no index run holds the lock.
        """
        from pixsift.storage.vector_index import catch_up, open_vector_index, read_generation

        dim = self._require_model().embed_dim
        if self._vectors is not None and self._vectors.dim == dim:
            self._vectors = catch_up(self._catalog, self._vectors)
        else:
            self._vectors = open_vector_index(self._catalog, self.index_path, dim)
        if read_generation(self.index_path) != self._vectors.generation:
            self._save_vectors(self._vectors, holding_lock=save)
        return self._vectors

    def _save_vectors(self, vectors: VectorIndex, *, holding_lock: bool) -> None:
        """Write the index and trim the change log it now covers; readers only if no one indexes.

        The file is a cache of the database: a search that cannot write it (full disk,
        read-only folder) still answers, from the index it built in memory.
        """
        if not holding_lock:
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                return  # an index run holds the lock and will save a newer index itself
        try:
            self._write_vectors(vectors)
        except LibraryWriteError:
            if holding_lock:
                raise
        finally:
            if not holding_lock:
                self._lock.release()

    def _write_vectors(self, vectors: VectorIndex) -> None:
        from pixsift.storage.database import write_error
        from pixsift.storage.vector_index import leftover_files

        try:
            for leftover in leftover_files(self.index_path):  # a crash cut a save short
                leftover.unlink(missing_ok=True)
            vectors.save(self.index_path)
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        with self._catalog.write() as batch:
            batch.truncate_vector_log(vectors.generation)

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> LibraryStatus:
        """What is indexed, with which model, where, and how fresh the search index is."""
        from pixsift.storage.vector_index import read_generation

        generation = self._catalog.generation()
        saved = read_generation(self.index_path)
        if saved is None:
            state = IndexFileState("missing", None)
        else:
            state = IndexFileState("up to date" if saved == generation else "stale", saved)
        disk = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return LibraryStatus(
            path=self.path,
            model=self._catalog.model(),
            counts=self._catalog.counts(),
            roots=self._catalog.roots(),
            generation=generation,
            index_file=state,
            disk_bytes=disk,
        )

    def failures(self, limit: int | None = None) -> list[Failure]:
        """Files that could not be indexed, with the reason, by path."""
        return self._catalog.failures(limit)

    # ---- health ---------------------------------------------------------------------------------

    def check(self, *, wait: float | None = LOCK_WAIT_S) -> HealthReport:
        """Check the database, the search index against it and the indexed files; change nothing.

        Waits for an index run to finish (up to `wait` seconds), so it sees a settled library.
        """
        from pixsift import doctor

        with self._locked(wait, "a check"):
            return doctor.check(self._catalog, self.index_path)

    def repair(self, *, wait: float | None = LOCK_WAIT_S) -> HealthReport:
        """Repair what can be repaired, then check again: the report lists both.

        Rebuilds the search index from the stored vectors, drops rows of files gone from disk
        (not of folders that are not there), and drops vectors that fit nothing. A database that
        SQLite finds damaged is left alone: the report says so.
        """
        from pixsift import doctor
        from pixsift.storage.database import write_error

        with self._locked(wait, "a repair"):
            before = doctor.check(self._catalog, self.index_path)
            if any(problem.kind == "database" for problem in before.problems):
                return before
            try:
                done = doctor.repair(self._catalog, self.index_path)
            except OSError as exc:
                raise write_error(self.path, exc) from exc
            self._vectors = None  # reload the rebuilt index on the next search
            after = doctor.check(self._catalog, self.index_path)
        after.repairs = done
        return after
