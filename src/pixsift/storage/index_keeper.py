"""The library's search index in memory: caught up with the catalog, saved, rebuilt, swapped.

One `IndexKeeper` per open library. Its lock serialises the in-place changes (catching up with
the catalog's change log, swapping in a rebuilt index) with the searches that read the index,
so many threads may search one library while another indexes. The index file is only ever
written by a process holding the library's write lock: an index run always (once, at its
end), a search only when no index run holds it (the file is a cache; the catalog is the source
of truth). A delete or a search leaves a file a little behind as it is: every process catches
it up on load from the catalog's change log, and it is saved again once that log has grown
past `replay_limit` (a share of the index, with a floor), which also bounds the log.

A long catch-up (an index run in another process added 100,000 images, or one in this process
ran with no searches meanwhile) is applied in slices of whole catalog generations, at most
`IndexThresholds.catch_up_slice` changes each, with the lock released between slices and every
thread already waiting for it let in first (see `handoff.py`): adding 100,000 vectors to an
HNSW graph takes about 20 s on two cores, and every search waited for all of it. One thread
catches up at a time; a search that comes meanwhile answers from the index as it is, at the
generation of the last slice applied (never halfway through one), rather than queue to catch
up itself. Its hits are named from the catalog as it is now (`Catalog.images`), so an image
deleted since is never returned. What must see the index whole (an index run's save, a
delete's catch-up) waits for that catch-up to end and finishes it. The file is saved once the
index is caught up fully, as before.

What the keeper holds is also published, without its lock, as one immutable `LoadedIndex`
(a summary of the index in memory and whether it is being loaded), replaced whole under the
lock each time the index in memory is loaded, caught up or swapped: a status or health check
reads it at once, even while a load or a catch-up of minutes holds the lock, and never sees a
summary of one index mixed with another's (one attribute, read and written whole).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, Timeout

from pixsift.errors import LibraryClosedError, LibraryWriteError
from pixsift.storage.catalog import Catalog
from pixsift.storage.handoff import HandOff

if TYPE_CHECKING:
    from pixsift.status import IndexSummary
    from pixsift.storage.index_build import IndexPolicy
    from pixsift.storage.index_choice import IndexThresholds
    from pixsift.storage.index_header import IndexShape
    from pixsift.storage.vector_index import VectorIndex

# What a save at the end of an index run has to write (see `IndexKeeper.save_work`).
SaveWork = Literal["save", "build"]

log = logging.getLogger("pixsift")


@dataclass(frozen=True)
class LoadedIndex:
    """The keeper's index as last published: `summary` of the index in memory (None: none),
    and whether one is `loading` (read from its file, or built, to be held in memory)."""

    summary: IndexSummary | None = None
    loading: bool = False


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
        # Taken through `_handoff` (see `_held`), so that a catch-up in slices lets waiters in.
        self._handoff = HandOff()
        # Signalled after each step of a catch-up: a thread waiting for it looks again.
        self._turn = threading.Condition(self._lock)
        # The thread catching the index up, slice by slice; None while none is.
        self._catcher: threading.Thread | None = None
        # (file generation, index generation) last found not worth a save: not asked again
        self._checked: tuple[int, int] | None = None
        # Replaced whole, under `_lock`, by `_publish`; read without it (see the module's doc).
        self.published = LoadedIndex()
        # The index and generation `published` describes: summarised again only when they change.
        self._summarized: tuple[VectorIndex | None, int | None] = (None, None)
        # A rebuilt index saved, not yet swapped in (see `rebuild`): the file is its copy.
        self._swapping: VectorIndex | None = None

    @property
    def thresholds(self) -> IndexThresholds:
        from pixsift.storage.index_choice import IndexThresholds

        return self._thresholds or IndexThresholds()

    def policy(self) -> IndexPolicy:
        """The kind and budget the library asks for (its settings) with these thresholds."""
        from pixsift.storage.index_lifecycle import load_policy

        return load_policy(self._catalog, self.thresholds)

    @contextmanager
    def current(self, dim: int, *, locked: bool = False) -> Iterator[VectorIndex]:
        """The index caught up with the catalog, held so that nothing changes it meanwhile.

        The file is saved only when it has fallen far behind the catalog (see `replay_limit`)
        or could not be caught up (rebuilt, or of another kind): a file a little behind is
        caught up on load from the change log, by every process. `locked`: the caller holds the
        write lock; else the file is saved only if no index run holds it. A save that fails
        (full disk, read-only folder) is no error: the index answers from memory.

        While another thread catches the index up, it is the index as it is (see the module's
        doc): a consistent earlier state of the catalog, caught up by that thread.
        """
        with self._caught_up(dim, always=False, as_is=True) as (vectors, save_due):
            if save_due:
                # Decided and written under the lock: without the write lock (`locked`), the
                # catalog may move on meanwhile, and another search's catch-up would change
                # the index while it is written. Only a search far behind the catalog saves.
                seen = None if locked else save_due
                self._save(vectors, holding_lock=locked, over=seen)
            yield vectors

    def refresh(self, dim: int, *, locked: bool = False) -> None:
        """Catch the index up (loading it if need be) and save it as `current` does."""
        with self.current(dim, locked=locked):
            pass

    def save_current(self, dim: int) -> None:
        """At the end of an index run (the caller holds the write lock): catch the index up and
        save it whenever the file is behind at all, once a run; LibraryWriteError if it cannot.

        A file already caught up is not loaded (unless the index is in memory anyway, as in a
        server): its header tells `rebuild_due` all it asks, and reading a whole index to
        change nothing cost seconds and GBs of memory at a million vectors."""
        with self._held():
            if self._vectors is None and self._caught_up_shape(dim) is not None:
                return
        self._refresh_and_save(dim, always=True)

    def load_in_background(self, dim: int) -> threading.Thread:
        """Load the index (and catch it up) in a thread of its own, as a server does at start
        so that it answers health checks meanwhile. It is `published` as loading from now on,
        not only once the thread has the lock. A load that fails is logged: the next search
        tries again and reports the error to its caller."""
        with self._lock:
            if self._vectors is None:
                self.published = replace(self.published, loading=True)
        thread = threading.Thread(target=self._load, args=(dim,), name="pixsift-index-load", daemon=True)
        thread.start()
        return thread

    def _load(self, dim: int) -> None:
        try:
            self.refresh(dim)
        except LibraryClosedError:
            pass  # the service stopped, and closed the library, while the index loaded
        except Exception:
            log.exception("the search index could not be loaded; the next search tries again")
        finally:
            with self._lock:
                self._publish()  # no longer loading, whatever became of the load

    @contextmanager
    def in_memory(self) -> Iterator[VectorIndex | None]:
        """The index in memory as it is (None when none is loaded), neither loaded nor caught
        up: held so that nothing changes it meanwhile. A status asks it, which must not read
        a whole index file, or build one, to describe it."""
        with self._held():
            yield self._vectors

    @property
    def loaded(self) -> bool:
        """Whether the index is in memory (else the next use reads the file)."""
        return self._vectors is not None

    def after_change(self, dim: int) -> None:
        """After a delete or a forget committed (the caller holds the write lock): catch the
        index in memory up, and save the file if the change log has grown long since it was
        saved. A process that has not loaded the index only reads the file's header: loading a
        whole index to leave it unsaved would cost more than the delete."""
        from pixsift.storage.index_header import read_header, saved_count

        with self._held():
            if self._vectors is None or self._vectors.dim != dim:
                header = read_header(self.path)  # none or unreadable: the next search builds it
                if header is None or not self._far_behind(header, saved_count(header)):
                    return
        self._refresh_and_save(dim, always=False)

    def _refresh_and_save(self, dim: int, *, always: bool) -> None:
        """Catch the index up under the lock, then save it if due outside it, so that searches
        go on meanwhile (a file of GBs takes seconds to write); the caller holds the write lock.
        A catch-up under way in another thread (a search's) is waited for and finished.

        Searches only read the index, as the save does, and nothing changes it meanwhile: a
        change to the catalog needs the write lock, so any catch-up finds nothing to do. What
        may replace the index in memory (a rebuild, a repair's `forget`) also needs it."""
        with self._caught_up(dim, always=always, as_is=False) as (vectors, save_due):
            pass
        if save_due:
            self._save(vectors, holding_lock=True, required=always)

    def close(self) -> None:
        """Drop the index in memory as the library closes, unless the lock is held: a service
        stopped while its index loads (minutes, for a large one far behind its file) must not
        wait for the load to end. That load then fails on the closed catalog, or ends; either
        way the index goes with this keeper."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.forget()
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Drop the index in memory: the next use reads the file (after a repair rewrote it)."""
        with self._held():
            self._vectors = None
            self._checked = None
            self._publish()

    def save_work(self) -> SaveWork | None:
        """What `save_current` will have to do, found cheaply (the file's header and the
        catalog's generation, not the index): "build" the index from every stored vector, as
        there is no index file that reads; "save" the file, which is behind the catalog; or
        None, the file being caught up (it is only loaded, if it is not in memory yet)."""
        from pixsift.storage.index_header import read_header

        header = read_header(self.path)
        if header is None:
            return "build"
        return None if int(header["generation"]) == self._catalog.generation() else "save"

    def rebuild_due(self, dim: int) -> IndexPolicy | None:
        """After an index run (after `save_current`): the policy to `rebuild` the index for
        when it no longer suits the library; None while it does. Asked of the index in memory,
        else of the caught-up file's header (the rebuild reads the database, not the file)."""
        from pixsift.storage.index_lifecycle import rebuild_reason

        vectors = self._vectors  # read once: a close() in another thread may drop it meanwhile
        shape = vectors.shape if vectors is not None else self._caught_up_shape(dim)
        if shape is None:
            return None
        policy = self.policy()
        return policy if rebuild_reason(shape, policy) is not None else None

    def _caught_up_shape(self, dim: int) -> IndexShape | None:
        """The shape of the saved index, from its header alone, when the file is at the
        catalog's generation and for vectors of `dim`; None when it is not, or when its header
        does not say (an older file) or shows damage (cut short): those are loaded, which
        catches up, rebuilds and saves as need be.

        Damage inside a file whose header and size are right (its checksum, which only a read
        of the whole file checks) is not looked for here: the next search fails to load it,
        rebuilds it from the database and saves it, and `pixsift doctor` reports it."""
        from pixsift.storage.index_header import check_file, saved_shape

        found = check_file(self.path)
        header = found.header
        if header is None or found.damage is not None:
            return None
        if int(header["generation"]) != self._catalog.generation():
            return None
        shape = saved_shape(header)
        return shape if shape is not None and shape.dim == dim else None

    def rebuild(self, dim: int, policy: IndexPolicy) -> None:
        """Build a new index outside the search lock (searches go on with the old one), then
        catch it up with what changed meanwhile and swap it in; the caller holds the write lock."""
        from pixsift.storage.index_lifecycle import catch_up, rebuild

        fresh = rebuild(self._catalog, dim, policy)
        # Caught up and saved before it is swapped in, still outside the lock: no one else
        # holds `fresh`, and the write lock keeps the catalog as it is. Saving it under the
        # lock made every search wait for the file's write (seconds at a million vectors).
        fresh = catch_up(self._catalog, fresh, policy)
        # Once the file is replaced, a search that takes the lock before the swap sees a file
        # newer than its index, or of another kind: it would read the whole file (seconds and
        # GBs at a million vectors, with every other search waiting) for a copy of `fresh`.
        self._swapping = fresh
        try:
            self._save(fresh, holding_lock=True, required=True)
            with self._held():
                self._vectors = fresh
                self._publish()
        finally:
            self._swapping = None

    @contextmanager
    def _held(self) -> Iterator[None]:
        """The keeper's lock, taken in turn with a catch-up in slices (see `handoff.py`)."""
        with self._handoff.holding(self._lock):
            yield

    @contextmanager
    def _caught_up(
        self, dim: int, *, always: bool, as_is: bool
    ) -> Iterator[tuple[VectorIndex, _Seen | None]]:
        """Under the lock, the index caught up with the catalog as it was when this began
        (loaded or rebuilt if need be), and, if it should be saved, the file's header as read
        before the last step (see `_Seen`); else None.

        Caught up one slice at a time, letting waiting threads in between slices. `as_is`:
        while another thread catches up, the index as it is (never saved) rather than wait for
        that thread to end; none is loaded yet, or not `as_is`: wait, then finish it. Never
        entered by a thread that already holds the lock: it could not let waiters in."""
        me = threading.current_thread()
        with self._held():
            target: int | None = None
            rebuilt = False  # in this catch-up, from every stored vector: the file is behind
            try:
                while True:
                    held = self._vectors
                    if self._catcher is not None and self._catcher is not me:
                        if as_is and held is not None and held.dim == dim:
                            found: tuple[VectorIndex, _Seen | None] = (held, None)
                            break
                        self._turn.wait()
                        continue
                    self._catcher = me
                    if target is None:
                        target = self._catalog.generation()
                    vectors, on_disk, fresh = self._step(dim, target)
                    rebuilt |= fresh
                    if vectors.generation >= target:
                        header = None if rebuilt else on_disk
                        due = self._save_due(vectors, header, always=always)
                        found = (vectors, _Seen(on_disk) if due else None)
                        break
                    self._turn.notify_all()  # an index is in memory now: `as_is` may answer
                    self._handoff.let_waiters_in(self._lock)
            finally:
                if self._catcher is me:
                    self._catcher = None
                    self._turn.notify_all()
            yield found

    def _step(self, dim: int, target: int) -> tuple[VectorIndex, dict[str, Any] | None, bool]:
        """One step of a catch-up to the catalog's generation `target` (the caller holds the
        lock): the index loaded (or rebuilt) if none of `dim` is in memory, else one slice of
        the change log applied, if any is left. Returns the index, the file's header as read
        before, and whether the index was rebuilt from every stored vector as the file could
        not be read."""
        from pixsift.storage.index_header import read_header
        from pixsift.storage.index_lifecycle import catch_up_slice, load_or_rebuild

        # Read before the file is loaded: what the file holds now, and what a save decided
        # from it may replace (see `_Seen`).
        on_disk = read_header(self.path)
        rebuilt = False
        if self._vectors is not None and self._vectors.dim == dim:
            # While a rebuild saves its index, the file is its own: it is swapped in next.
            saved = None if self._swapping is not None else self._saved_elsewhere(self._vectors, on_disk)
            held = saved or self._vectors
            # Most searches find the index caught up: reading the policy (two settings) and the
            # generation again for nothing cost them 0.6 ms, a tenth of a recommendation's time.
            if held.generation != target:
                most = self.thresholds.catch_up_slice
                held = catch_up_slice(self._catalog, held, self.policy(), max_changes=most)
            self._vectors = held
        else:
            self.published = replace(self.published, loading=True)
            try:
                loaded = load_or_rebuild(self._catalog, self.path, dim, self.policy(), replay=False)
                self._vectors, from_file = loaded
            finally:
                self._publish()
            # A damaged file whose header still reads is saved over too: else every search
            # and index run would rebuild the whole index from the database.
            rebuilt = not from_file
        self._publish()
        return self._vectors, on_disk, rebuilt

    def _publish(self) -> None:
        """Publish the index in memory now (the caller holds the lock): summarised again only
        when it is another index or at another generation, as a search must not pay for it."""
        from pixsift.status import summarize_index

        vectors = self._vectors
        described, generation = self._summarized
        same = vectors is described and (vectors is None or vectors.generation == generation)
        if same and not self.published.loading:
            return
        summary = None if vectors is None else summarize_index(vectors)
        self._summarized = (vectors, None if vectors is None else vectors.generation)
        self.published = LoadedIndex(summary=summary)

    def _save_due(self, vectors: VectorIndex, header: dict[str, Any] | None, *, always: bool) -> bool:
        """Whether the file (whose `header` was read; None: none, unreadable or damaged) should
        be saved from `vectors`, which is caught up with the catalog."""
        from pixsift.storage.index_header import IndexMeta

        if header is None:
            return True
        file_generation = int(header["generation"])
        if file_generation == vectors.generation:
            return False
        if always:
            return True
        if self._checked == (file_generation, vectors.generation):
            return False  # asked at the last search, and nothing changed since
        self._checked = (file_generation, vectors.generation)
        try:
            same_kind = IndexMeta.from_dict(header) == vectors.meta
        except (ValueError, KeyError, TypeError):
            return True  # a header this pixsift cannot read
        # Of another kind or tuning: rebuilt in memory, which loading the file would redo.
        return not same_kind or self._far_behind(header, vectors.count)

    def _far_behind(self, header: dict[str, Any], count: int) -> bool:
        """Whether the file whose `header` this is, of an index of `count` vectors, is too far
        behind the change log to be left as it is (or cannot be caught up from it at all)."""
        from pixsift.storage.index_header import replay_is_cheap

        since = int(header["generation"])
        changes = self._catalog.changes_since(since)
        added = changes is not None and self._catalog.vectors_added_since(since)
        return not replay_is_cheap(changes, added, count)

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

    def _save(
        self, vectors: VectorIndex, *, holding_lock: bool, required: bool = False, over: _Seen | None = None
    ) -> None:
        """Write the index and trim the change log it now covers; readers only if no one indexes.

        Unless the save is `required` (an index run, a rebuild), a file that cannot be written
        (full disk, read-only folder) is left behind: the index answers from memory, and other
        processes catch the file up from the change log as they load it. `over`: the file as
        it was when the save was decided, which it may replace only if it is still so; None:
        whatever the file is (the caller held the write lock since it decided, or rebuilt).
        """
        if not holding_lock:
            try:
                self._write_lock.acquire(timeout=0)
            except Timeout:
                return  # an index run holds the lock and will save a newer index itself
            except OSError:
                return  # a lock file this user may not write: answer from memory, as above
        try:
            self._write(vectors, over)
        except LibraryWriteError:
            if required:
                raise
        finally:
            if not holding_lock:
                self._write_lock.release()

    def _write(self, vectors: VectorIndex, over: _Seen | None) -> None:
        from pixsift.storage.database import write_error
        from pixsift.storage.vector_index import leftover_files

        self._catalog.check_in_place()  # never over the index file of a library made anew there
        if self.path.is_dir():
            # No save can replace a folder, and "is the disk full?" would send the user the
            # wrong way: only moving it away helps (as `doctor` says).
            problem = (
                f"A folder stands where the search index file belongs ({self.path}): move it "
                "away, then run the command again."
            )
            # `problem` alone when an index run's own line says what it kept, as for a full disk.
            raise LibraryWriteError(f"{problem} Everything saved before is kept.", problem=problem)
        if (over is not None and over.changed(self.path)) or self._saved_newer(vectors):
            return
        try:
            for leftover in leftover_files(self.path):  # a crash cut a save short
                leftover.unlink(missing_ok=True)
            vectors.save(self.path)
        except OSError as exc:
            raise write_error(self.path.parent, exc) from exc
        with self._catalog.write() as batch:
            batch.truncate_vector_log(vectors.generation)

    def _saved_newer(self, vectors: VectorIndex) -> bool:
        """Whether another process saved the file at a later generation than `vectors` since
        they were caught up (a search that got the write lock just after an index run): written
        over, the file would be older than the log it trimmed, and rebuilt by every process
        that loads it. A file ahead of the database (from another one) is still saved over."""
        from pixsift.storage.index_header import read_generation

        saved = read_generation(self.path)
        if saved is None or saved <= vectors.generation:
            return False
        return self._catalog.changes_since(saved) is not None  # None: ahead of the database


@dataclass(frozen=True)
class _Seen:
    """The index file's header as read when a save of it was decided (None: no file, or none
    that reads).

    A search decides to save without the write lock, and takes it only to write: meanwhile
    another process may have saved a file at the very same generation, rebuilt of the kind
    `pixsift reindex --index-type` asked for, or repaired. `_saved_newer` cannot tell that
    file from the one the search saw, and writing over it undid the reindex (a flat file
    under a library set to HNSW). The header names a build (its CRC-32 covers the FAISS
    bytes), so a header other than the one seen means someone else saved since, and the save
    is no longer due: the next search reads the new file and decides again.
    """

    header: dict[str, Any] | None

    def changed(self, path: Path) -> bool:
        from pixsift.storage.index_header import read_header

        return read_header(path) != self.header
