"""The library's search index in memory: caught up with the catalog, saved, rebuilt, swapped.

One `IndexKeeper` per open library. Its lock serialises the in-place changes (catching up with
the catalog's change log, swapping in a rebuilt index) with the searches that read the index,
so many threads may search one library while another indexes. The index file is only ever
written by a process holding the library's write lock: an index run always, a search only
when no index run holds it (the file is a cache; the catalog is the source of truth).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from pixsift.errors import LibraryWriteError
from pixsift.storage.catalog import Catalog

if TYPE_CHECKING:
    from pixsift.storage.index_build import IndexPolicy
    from pixsift.storage.index_choice import IndexThresholds
    from pixsift.storage.vector_index import VectorIndex


class IndexKeeper:
    """Keeps `path` (the FAISS file) and its in-memory index in step with `catalog`."""

    def __init__(
        self,
        catalog: Catalog,
        path: Path,
        write_lock: FileLock,
        thresholds: IndexThresholds | None = None,
    ) -> None:
        self._catalog = catalog
        self.path = path
        self._write_lock = write_lock
        self._thresholds = thresholds  # None: the defaults of index_choice
        self._vectors: VectorIndex | None = None
        self._lock = threading.RLock()

    @property
    def thresholds(self) -> IndexThresholds:
        from pixsift.storage.index_choice import IndexThresholds

        return self._thresholds or IndexThresholds()

    def policy(self) -> IndexPolicy:
        """The kind and budget the library asks for (its settings) with these thresholds."""
        from pixsift.storage.index_lifecycle import load_policy

        return load_policy(self._catalog, self.thresholds)

    @contextmanager
    def current(self, dim: int, *, save: bool) -> Iterator[VectorIndex]:
        """The index caught up with the catalog, held so that nothing changes it meanwhile.

        `save=True` (the caller holds the write lock) saves it whenever the file is behind;
        otherwise it is saved only if no index run holds the lock.
        """
        with self._lock:
            yield self._refresh(dim, save=save)

    def refresh(self, dim: int, *, save: bool) -> None:
        """Catch the index up (loading it if need be) and save it as `current` does."""
        with self.current(dim, save=save):
            pass

    def forget(self) -> None:
        """Drop the index in memory: the next use reads the file (after a repair rewrote it)."""
        with self._lock:
            self._vectors = None

    def rebuild_if_drifted(self, dim: int) -> None:
        """After an index run: rebuild the index if it no longer suits the library."""
        from pixsift.storage.index_lifecycle import rebuild_reason

        if self._vectors is None:
            return
        policy = self.policy()
        if rebuild_reason(self._vectors, policy) is not None:
            self.rebuild(dim, policy)

    def rebuild(self, dim: int, policy: IndexPolicy) -> None:
        """Build a new index outside the search lock (searches go on with the old one), then
        catch it up with what changed meanwhile and swap it in; the caller holds the write lock."""
        from pixsift.storage.index_lifecycle import catch_up, rebuild

        fresh = rebuild(self._catalog, dim, policy)
        with self._lock:
            self._vectors = catch_up(self._catalog, fresh, policy)
            self._save(self._vectors, holding_lock=True)

    def _refresh(self, dim: int, *, save: bool) -> VectorIndex:
        from pixsift.storage.index_header import read_header
        from pixsift.storage.index_lifecycle import catch_up, load_or_rebuild
        from pixsift.storage.vector_index import read_generation

        policy = self.policy()
        from_file = True
        if self._vectors is not None and self._vectors.dim == dim:
            header = read_header(self.path)  # read once a search: what the file holds now
            saved = self._saved_elsewhere(self._vectors, header)
            file_generation = saved.generation if saved else _generation(header)
            self._vectors = catch_up(self._catalog, saved or self._vectors, policy)
        else:
            self._vectors, from_file = load_or_rebuild(self._catalog, self.path, dim, policy)
            file_generation = read_generation(self.path)
        # A damaged file whose header still reads at the current generation is saved over too:
        # else every search and index run would rebuild the whole index from the database.
        if not from_file or file_generation != self._vectors.generation:
            self._save(self._vectors, holding_lock=save)
        return self._vectors

    def _saved_elsewhere(self, held: VectorIndex, header: dict[str, Any] | None) -> VectorIndex | None:
        """The index file (whose `header` was just read), when another process saved one newer
        than `held` or of another kind or tuning (an index run, `reindex --index-type`, a
        repair); else None.

        Its save trimmed the change log up to its generation, so `held` could only be caught
        up by rebuilding it from every stored vector (retraining an IVF-PQ index) on the next
        search; and a rebuild of another kind is the library's choice now. Only the header is
        read while the file holds nothing new.
        """
        from pixsift.storage.index_header import IndexMeta
        from pixsift.storage.vector_index import VectorIndex

        if header is None or int(header["generation"]) < held.generation:
            return None  # none, unreadable, or behind: ours is the one to keep (and save)
        try:
            same = int(header["generation"]) == held.generation and IndexMeta.from_dict(header) == held.meta
        except (ValueError, KeyError, TypeError):
            return None  # a header this pixsift cannot read: keep ours
        if same:
            return None
        saved = VectorIndex.load(self.path)
        return saved if saved is not None and saved.dim == held.dim else None

    def _save(self, vectors: VectorIndex, *, holding_lock: bool) -> None:
        """Write the index and trim the change log it now covers; readers only if no one indexes.

        A search that cannot write the file (full disk, read-only folder) still answers, from
        the index it built in memory.
        """
        if not holding_lock:
            try:
                self._write_lock.acquire(timeout=0)
            except Timeout:
                return  # an index run holds the lock and will save a newer index itself
            except OSError:
                return  # a lock file this user may not write: answer from memory, as above
        try:
            self._write(vectors)
        except LibraryWriteError:
            if holding_lock:
                raise
        finally:
            if not holding_lock:
                self._write_lock.release()

    def _write(self, vectors: VectorIndex) -> None:
        from pixsift.storage.database import write_error
        from pixsift.storage.vector_index import leftover_files

        self._catalog.check_in_place()  # never over the index file of a library made anew there
        try:
            for leftover in leftover_files(self.path):  # a crash cut a save short
                leftover.unlink(missing_ok=True)
            vectors.save(self.path)
        except OSError as exc:
            raise write_error(self.path.parent, exc) from exc
        with self._catalog.write() as batch:
            batch.truncate_vector_log(vectors.generation)


def _generation(header: dict[str, Any] | None) -> int | None:
    """The generation a saved index's header names, as `read_generation` gives it."""
    return None if header is None else int(header["generation"])
