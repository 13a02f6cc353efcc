"""One index run: scan, plan, settle moves and duplicates by content hash, embed, commit.

Work is committed batch by batch, so an interrupted run keeps everything done so far and the
next run continues from there. The model is loaded only if something needs embedding: a
re-run over an unchanged folder opens no image and loads no model.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol, TypeVar

from pixsift.errors import PixsiftError
from pixsift.indexer.decode import default_max_pixels, describe_error, hash_file, is_vanished
from pixsift.indexer.pipeline import Embedded, Outcome, Unreadable, embed_files
from pixsift.indexer.plan import Candidate, IndexPlan, plan_folder
from pixsift.indexer.progress import (
    EMBEDDING_PHASE,
    CountsListener,
    IndexProgress,
    SilentProgress,
    model_loading,
)
from pixsift.indexer.report import CopiesOfMissingRoot, IndexInterrupted, IndexReport
from pixsift.indexer.scan import (
    GONE_ERRNOS,
    ScanOptions,
    ScanResult,
    hidden_between,
    image_extensions,
    is_within,
    looks_unmounted,
    scan_folder,
)
from pixsift.models.embedder import Embedder
from pixsift.regular_file import open_regular
from pixsift.storage.catalog import Catalog, CatalogWriter
from pixsift.storage.departed import DepartedImage
from pixsift.storage.interrupts import interrupts_deferred
from pixsift.storage.records import FreshEmbedding, KnownFile, StoredEmbedding


@dataclass(frozen=True)
class RootRequest:
    """A folder to index (absolute path) and how to walk it."""

    path: str
    include_hidden: bool = False
    follow_symlinks: bool = False
    scope: str | None = None  # a folder inside the root: index only that part of it

    @property
    def folder(self) -> str:
        """The folder this request scans: its scope, or the whole root."""
        return self.scope or self.path


def distinct_requests(requests: Sequence[RootRequest]) -> list[RootRequest]:
    """`requests`, in their order, without those another one already walks: the same folder
    named twice, a folder inside a root or part also named, each file's folder when a client
    names the new files of one folder one by one. Each would walk the whole folder again (200
    files of a folder of 2,000, 200 walks of it), and count its files again in the scanning
    progress. Sorted by path parts, a folder's sub-folders follow it: n log n for many paths."""
    groups: dict[tuple[str, bool, bool], list[int]] = {}
    for i, request in enumerate(requests):  # a walk covers another only of the same root and options
        groups.setdefault((request.path, request.include_hidden, request.follow_symlinks), []).append(i)
    kept: set[int] = set()
    for members in groups.values():
        whole = [i for i in members if requests[i].scope is None]
        kept.update(whole[:1] or _outermost_scopes(requests, members))
    return [request for i, request in enumerate(requests) if i in kept]


def _outermost_scopes(requests: Sequence[RootRequest], members: list[int]) -> list[int]:
    """Of the scoped requests `members` of one root, the first of each folder that lies in no
    other's (a folder in a hidden one is never a request of a root walked without hidden
    files: see scoped_request)."""
    outermost: list[int] = []
    last: str | None = None
    for i in sorted(members, key=lambda i: (PurePath(str(requests[i].scope)).parts, i)):
        scope = str(requests[i].scope)
        if last is None or not is_within(scope, last):
            outermost.append(i)
            last = scope
    return outermost


@dataclass(frozen=True)
class IndexSettings:
    batch_size: int | None = None  # None: the embedder's own (larger on a GPU)
    workers: int = min(8, os.cpu_count() or 2)
    max_pixels: int = default_max_pixels()
    exclude: tuple[str, ...] = ()  # folders never scanned (the library's own folder)
    keep: tuple[str, ...] = ()  # folders whose images stay whatever a walk finds (unmounted roots)


class Indexer:
    """Brings the catalog in line with the image files under some folders."""

    def __init__(
        self,
        catalog: Catalog,
        embedder: Callable[[], Embedder],
        settings: IndexSettings = IndexSettings(),
        progress: IndexProgress | None = None,
    ) -> None:
        self._catalog = catalog
        self._embedder = embedder  # called only when something needs embedding
        self._settings = settings
        self._progress = progress or SilentProgress()
        self._counts = progress if isinstance(progress, CountsListener) else None
        self._started = time.monotonic()  # of the run, set again when it starts
        self._embedding_since: float | None = None  # while the embedding phase goes on

    def run(self, roots: Sequence[RootRequest]) -> IndexReport:
        """Index every image under `roots`, in one plan so files may move between them.

        Ctrl-C raises IndexInterrupted, after the batches already embedded were committed. A
        PixsiftError that stops the run (a full disk, a model that fails) carries the report
        of what was committed before it, as IndexInterrupted does.
        """
        started = self._started = time.monotonic()
        roots = distinct_requests(roots)
        report = IndexReport(roots=[root.folder for root in roots])
        with self._catalog.write() as batch:
            for root in roots:
                batch.upsert_root(
                    root.path, include_hidden=root.include_hidden, follow_symlinks=root.follow_symlinks
                )
        try:
            plan = self._plan(roots, report)
            settled = self._settle_by_content(plan, report)
            embed_queue = self._without_still_unreadable(settled, roots, report)
            if embed_queue:
                self._embed(embed_queue, roots, report)
            with self._catalog.write() as batch:
                for root in roots:
                    if root.scope is None:  # only a whole root counts as indexed
                        batch.mark_root_indexed(root.path)
                batch.purge_departed()
        except KeyboardInterrupt as interrupt:
            report.interrupted = True
            report.elapsed_s = time.monotonic() - started
            raise IndexInterrupted(report) from interrupt
        except PixsiftError as error:
            report.elapsed_s = time.monotonic() - started
            error.report = report
            raise
        finally:
            self._progress.stop()
        report.elapsed_s = time.monotonic() - started
        return report

    @contextmanager
    def _counted_write(self, report: IndexReport) -> Iterator[tuple[CatalogWriter, IndexReport]]:
        """A write transaction, and the counts of what it does, added to `report` once it has
        committed (a write that failed is rolled back whole, and counts nothing).

        Ctrl-C stays held back until the counts are in: the transaction alone holds it only
        until it has committed, and delivers it there, so a batch committed with Ctrl-C
        pressed while it was written was kept in the library but missing from the report of
        the interrupted run (and counted as unchanged by the next run).
        """
        counts = IndexReport()
        with interrupts_deferred():  # the transaction's own hold hands a Ctrl-C on to this one
            with self._catalog.write() as batch:
                yield batch, counts
            report.count_in(counts)
            self._counted(report)

    def _counted(self, report: IndexReport) -> None:
        if self._counts is None:
            return
        # The times so far, with the counts: a listener showing a long run to someone else
        # (a server's job) gives its time and rate while it goes, not zeros until it ends.
        now = time.monotonic()
        report.elapsed_s = now - self._started
        if self._embedding_since is not None:
            report.embed_s = now - self._embedding_since
        self._counts.counted(report)

    # ---- phase 1: scan and compare with the catalog ---------------------------------------

    def _plan(self, roots: Sequence[RootRequest], report: IndexReport) -> IndexPlan:
        extensions = image_extensions()
        self._progress.start("Scanning")
        scan = ScanResult()
        unsupported_heif: set[str] = set()  # a set: nested roots walk the same files twice
        known: dict[str, KnownFile] = {}
        # Nested roots simply scan the same files twice into one dict: a file stays while any
        # root that holds it reaches it with its own options.
        for root in [*roots, *self._overlapping_roots(roots)]:
            options = ScanOptions(
                include_hidden=root.include_hidden,
                follow_symlinks=root.follow_symlinks,
                extensions=extensions,
                exclude=self._settings.exclude,
            )
            found = scan_folder(root.folder, options, on_folder=self._progress.advance)
            scan.files.update(found.files)
            scan.unreadable_dirs.extend(found.unreadable_dirs)
            unsupported_heif.update(found.unsupported_heif)
            known.update(self._catalog.known_files(root.folder))
        self._progress.stop()
        report.scanned = len(scan.files)
        report.unreadable_dirs = scan.unreadable_dirs
        report.unsupported_heif = len(unsupported_heif)
        unknown = [folder for folder, _ in scan.unreadable_dirs] + list(self._settings.keep)
        plan = plan_folder(scan.files, known, unknown, unsupported_heif)
        report.unchanged = plan.unchanged
        report.still_failed = plan.still_failed
        self._counted(report)
        return plan

    def _overlapping_roots(self, roots: Sequence[RootRequest]) -> list[RootRequest]:
        """Walks of the run's folders by the other known roots that share them with other options.

        With `R --follow-symlinks` and `R/trips` both roots, a run over `R/trips` alone would
        otherwise take the images `R` reaches through links for deleted, and the next run over
        `R` would add them again. So the run also walks the part it shares with each enclosing
        or enclosed root as that root would: what any root finds is kept. An enclosed root of
        the same options is walked too when the run's own walk cannot reach it (`R/.archive`
        indexed as a root of its own, while `R` is walked without hidden folders).
        """
        whole = {root.path for root in roots if root.scope is None}
        extra: set[RootRequest] = set()
        for other in self._catalog.roots():
            if other.path in whole:  # walked whole already, with its own options
                continue
            if other.path in self._settings.keep:  # unmounted: kept as is, nothing there to walk
                continue
            for root in roots:
                same_options = (other.include_hidden, other.follow_symlinks) == (
                    root.include_hidden,
                    root.follow_symlinks,
                )
                if is_within(root.folder, other.path):  # `other` encloses the run's folder
                    scope = root.folder
                    needed = not same_options  # else the run's own walk finds the same files
                elif is_within(other.path, root.folder):  # `other` lies inside it
                    scope = other.path
                    unreached = not root.include_hidden and hidden_between(root.folder, other.path)
                    needed = not same_options or unreached
                else:
                    continue
                if needed:
                    extra.add(RootRequest(other.path, other.include_hidden, other.follow_symlinks, scope))
        return sorted(extra, key=lambda request: request.folder)

    # ---- phase 2: moves, touches, duplicates and deletions, decided by content hash -------

    def _settle_by_content(self, plan: IndexPlan, report: IndexReport) -> list[Candidate]:
        """Apply everything that needs no model; return the candidates left to embed."""
        hashes = self._hash_move_candidates(plan.candidates)
        leaving: dict[str, list[KnownFile]] = {}
        for row in plan.missing:
            if row.has_vector and row.content_hash is not None:  # (imports have no hash)
                leaving.setdefault(row.content_hash, []).append(row)
        # Only a new path can be where a missing file went: a known path that now holds its
        # content is a copy, and must leave the missing row to a new path found later.
        arrived = {
            c.file.path: hashes[c.file.path]
            for c in plan.candidates
            if c.known is None and c.file.path in hashes
        }
        for row in self._gone_elsewhere(set(arrived.values()) - leaving.keys()):
            leaving.setdefault(row.content_hash or "", []).append(row)  # (found by its hash)
        moves = _pair_moves(arrived, leaving)
        # A live row claims first; what no live row claims may be an image an earlier run
        # found gone from its folder (walked before the folder it moved to).
        unclaimed = {path: digest for path, digest in arrived.items() if path not in moves}
        returns = _pair_moves(unclaimed, self._catalog.departed_with_hashes(unclaimed.values()))
        sources = self._catalog.embeddings_by_hash(hashes.values())  # read before any write
        matches = _Matches(moves, returns, sources)
        gone = {row.id for row in plan.missing}
        to_embed: list[Candidate] = []
        with self._counted_write(report) as (batch, settled):
            for candidate in plan.candidates:
                content_hash = hashes.get(candidate.file.path)
                if content_hash is None or not self._reuse(
                    batch, candidate, content_hash, matches, gone, settled
                ):
                    to_embed.append(candidate)
            batch.depart_images(gone)  # in this transaction: a kill keeps the rows or the records
            settled.removed = len(gone)
        # A new path neither moved here nor embedded is a copy of an image (a returning one is not).
        not_copies = returns.keys() | {candidate.file.path for candidate in to_embed}
        copied = {path: digest for path, digest in unclaimed.items() if path not in not_copies}
        report.copies_of_missing = self._copies_of_missing(copied)
        return to_embed

    def _copies_of_missing(self, copied: Mapping[str, str]) -> list[CopiesOfMissingRoot]:
        """The unmounted roots most of whose images `copied` (new paths, by content hash) are
        copies of: a folder renamed (`mv ~/Photos ~/Pictures`) and indexed under its new name
        looks like this, and the user should hear it now, not at some later run."""
        # Only a folder that is not there: one left empty may be an inbox emptied into another
        # root on purpose, whose own warning says how to keep it (leave a file in it).
        missing = [root for root in self._settings.keep if not os.path.isdir(root)]
        if not copied or not missing:
            return []
        originals: dict[str, list[str]] = {}
        for row in self._catalog.embedded_files_with_hashes(copied.values()):
            originals.setdefault(row.content_hash or "", []).append(row.path)
        places: dict[str, Counter[str]] = {}  # by missing root: where its copies say it went
        for path, digest in copied.items():
            for root in missing:
                under = [original for original in originals.get(digest, []) if is_within(original, root)]
                if under:
                    places.setdefault(root, Counter())[_moved_to(root, under, path)] += 1
                    break
        found = []
        for root, moved_to in places.items():
            copies = moved_to.total()
            # A few photos also kept on an unplugged drive say nothing about where it went.
            if 2 * copies >= len(self._catalog.ids_under(root)):
                found.append(CopiesOfMissingRoot(root, copies, moved_to.most_common(1)[0][0]))
        return found

    def _gone_elsewhere(self, hashes: set[str]) -> list[KnownFile]:
        """Embedded images with these hashes, outside what this run walks, whose file is gone.

        A run over one root (or `reindex` of one folder) finds a file moved in from another
        root or folder as new: its old row is where it came from, kept with its id and vector,
        rather than copied from before the next run over the source drops it. Images of an
        unmounted root are not gone: their drive is only away.
        """
        if not hashes:
            return []
        kept = self._settings.keep
        return [
            row
            for row in self._catalog.embedded_files_with_hashes(hashes)
            if not any(is_within(row.path, folder) for folder in kept) and _is_gone(row.path)
        ]

    def _reuse(
        self,
        batch: CatalogWriter,
        candidate: Candidate,
        content_hash: str,
        matches: _Matches,
        gone: set[int],
        report: IndexReport,
    ) -> bool:
        """Settle a candidate whose content is already embedded somewhere. False if it is not."""
        file, known = candidate.file, candidate.known
        if known is not None and known.has_vector and known.content_hash == content_hash:
            batch.touch_image(known.id, size=file.size, mtime_ns=file.mtime_ns)
            report.touched += 1
            return True
        moved_from = matches.moves.get(file.path)
        if moved_from is not None:
            batch.move_image(moved_from.id, file.path, size=file.size, mtime_ns=file.mtime_ns)
            gone.discard(moved_from.id)
            report.moved += 1
            return True
        returning = matches.returns.get(file.path)
        if returning is not None:  # moved out of a folder an earlier run walked: same id, vector
            batch.restore_departed(returning, file.path, size=file.size, mtime_ns=file.mtime_ns)
            report.moved += 1
            return True
        source = matches.sources.get(content_hash)
        if source is None:
            return False
        if known is None:
            image_id = batch.add_image(file.path, file.size, file.mtime_ns, content_hash)
        else:
            image_id = known.id
            batch.touch_image(image_id, size=file.size, mtime_ns=file.mtime_ns)
        batch.copy_embedding(image_id, source, content_hash=content_hash)
        report.reused += 1
        return True

    def _hash_move_candidates(self, candidates: Sequence[Candidate]) -> dict[str, str]:
        """Content hashes of the candidates that could be copies of an embedded image.

        Only a file with the size of some embedded image can be one, so a first index of a
        folder hashes nothing here (its files are hashed from the bytes read for decoding).
        """
        if not candidates:  # an unchanged re-run: no need to read the size of every image
            return {}
        sizes = self._catalog.sizes_with_vectors() | self._catalog.departed_sizes()
        paths = [c.file.path for c in candidates if c.file.size in sizes]
        if not paths:
            return {}
        self._progress.start("Checking moved files", len(paths))
        hashes: dict[str, str] = {}
        with ThreadPoolExecutor(self._settings.workers) as pool:
            for path, digest in zip(paths, pool.map(_hash_or_none, paths), strict=True):
                if digest is not None:
                    hashes[path] = digest
                self._progress.advance()
        self._progress.stop()
        return hashes

    def _without_still_unreadable(
        self, queue: list[Candidate], roots: Sequence[RootRequest], report: IndexReport
    ) -> list[Candidate]:
        """Files that could not be read last time and have not changed are tried with a cheap
        read first: one that still cannot be read is recorded again here, so it does not make
        every run load the model (and one deleted since the scan leaves the library)."""
        failed: list[tuple[KnownFile, str]] = []
        vanished: list[Candidate] = []
        for candidate in queue:
            known = candidate.known
            if known is None or not known.error_retry:
                continue
            if (known.size, known.mtime_ns) != (candidate.file.size, candidate.file.mtime_ns):
                continue
            try:
                with open_regular(candidate.file.path) as f:  # a named pipe now: refused, not waited on
                    f.read(1)
            except OSError as exc:
                if is_vanished(exc) and self._is_vanished(candidate.file.path, roots):
                    vanished.append(candidate)
                else:
                    failed.append((known, describe_error(exc)))
        if not failed and not vanished:
            return queue
        with self._counted_write(report) as (batch, forgotten):
            for known, error in failed:
                batch.record_failure(
                    known.id, error, size=known.size, mtime_ns=known.mtime_ns, content_hash=None, retry=True
                )
            _forget_vanished(batch, vanished, forgotten)
            forgotten.failed += len(failed)
        settled = {known.id for known, _ in failed} | {c.known.id for c in vanished if c.known is not None}
        return [c for c in queue if c.known is None or c.known.id not in settled]

    def _is_vanished(self, path: str, roots: Sequence[RootRequest]) -> bool:
        """Whether the file at `path`, which could not be opened as gone, was deleted during
        the run: nothing, or a folder, is there now, and its root is still there. A root that
        went away meanwhile (a drive unplugged during the run) keeps its images: the failure is
        recorded, and the next run skips the root as unmounted."""
        if not _is_gone(path) and not os.path.isdir(path):  # a file is back: read it next time
            return False
        return not any(
            is_within(path, root.path) and looks_unmounted(root.path, self._catalog) for root in roots
        )

    # ---- phase 3: decode and embed, committing batch by batch ------------------------------

    def _embed(self, queue: list[Candidate], roots: Sequence[RootRequest], report: IndexReport) -> None:
        with model_loading(self._progress):
            embedder = self._embedder()
        self._progress.start(EMBEDDING_PHASE, len(queue))
        started = self._embedding_since = time.monotonic()
        try:
            for outcomes in self._outcomes(queue, embedder):
                # A file deleted (or replaced by a folder) since the scan is not a failure to
                # report and retry: it is gone, as if deleted before the run.
                kept: list[Outcome[Candidate]] = []
                vanished: list[Candidate] = []
                for o in outcomes:
                    if isinstance(o, Unreadable) and o.vanished and self._is_vanished(o.job.file.path, roots):
                        vanished.append(o.job)
                    else:
                        kept.append(o)
                with self._counted_write(report) as (batch, stored):
                    _store(batch, kept, stored)
                    _forget_vanished(batch, vanished, stored)
                self._progress.advance(len(outcomes))
        finally:
            report.embed_s = time.monotonic() - started
            self._embedding_since = None

    def _outcomes(self, queue: list[Candidate], embedder: Embedder) -> Iterator[list[Outcome[Candidate]]]:
        return embed_files(
            ((c.file.path, c) for c in queue),
            embedder,
            batch_size=self._settings.batch_size or embedder.batch_size,
            workers=self._settings.workers,
            max_pixels=self._settings.max_pixels,
        )


def _store(batch: CatalogWriter, outcomes: Sequence[Outcome[Candidate]], report: IndexReport) -> None:
    """Store one batch's outcomes: new rows, vectors and metadata in bulk, failures one by one."""
    new_files = [o.job.file for o in outcomes if o.job.known is None]
    new_ids = iter(batch.add_images([(file.path, file.size, file.mtime_ns) for file in new_files]))
    fresh: list[FreshEmbedding] = []
    for outcome in outcomes:
        file, known = outcome.job.file, outcome.job.known
        image_id = known.id if known is not None else next(new_ids)
        if isinstance(outcome, Embedded):
            image = outcome.image
            fresh.append(
                FreshEmbedding(
                    image_id,
                    outcome.vector,
                    content_hash=image.content_hash,
                    width=image.width,
                    height=image.height,
                    format=image.format,
                    taken_at=image.taken_at,
                    size=file.size,
                    mtime_ns=file.mtime_ns,
                )
            )
            if known is None:
                report.added += 1
            else:
                report.updated += 1
        else:
            batch.record_failure(
                image_id,
                outcome.error,
                size=file.size,
                mtime_ns=file.mtime_ns,
                content_hash=None,
                retry=outcome.retry,
            )
            report.failed += 1
    batch.save_embeddings(fresh)


@dataclass(frozen=True)
class _Matches:
    """What a new path's content may already be, by path: a live row that moved (`moves`), an
    image a run found gone (`returns`); by content hash: an embedded image (`sources`)."""

    moves: dict[str, KnownFile]
    returns: dict[str, DepartedImage]
    sources: dict[str, StoredEmbedding]


class _Row(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=_Row)


def _pair_moves(arrived: dict[str, str], departed: Mapping[str, list[R]]) -> dict[str, R]:
    """Which departed row each arrived path (new, with its content hash) is, when it is one: a
    live row whose file is gone, or the record of an image an earlier run found gone.

    Identical copies moved together (`mv a.jpg a-copy.jpg ~/Photos/`) share a hash: each
    takes the row of its own name first, so each keeps its own id; then any row of that
    content still unclaimed, in walk order (a file moved and renamed).
    """
    moves: dict[str, R] = {}
    claimed: set[int] = set()

    def claim(path: str, rows: list[R]) -> None:
        if rows:
            moves[path] = rows[0]
            claimed.add(rows[0].id)

    for path, content_hash in arrived.items():
        name = os.path.basename(path)
        rows = departed.get(content_hash, [])
        claim(path, [r for r in rows if r.id not in claimed and os.path.basename(r.path) == name])
    for path, content_hash in arrived.items():
        if path not in moves:
            claim(path, [r for r in departed.get(content_hash, []) if r.id not in claimed])
    return moves


def _moved_to(root: str, originals: Sequence[str], copy: str) -> str:
    """Where the folder `root` would now lie if `copy` is one of `originals` (paths under it)
    moved with it: `copy` less the original's path inside `root`; else the copy's folder."""
    for original in originals:
        inside = os.path.relpath(original, root)
        if copy.endswith(os.sep + inside):
            return copy[: -len(inside) - 1]
    return os.path.dirname(copy)


def _forget_vanished(batch: CatalogWriter, vanished: Sequence[Candidate], report: IndexReport) -> None:
    """Drop the rows of files deleted during the run; a new one is simply not added."""
    known = [c.known.id for c in vanished if c.known is not None]
    batch.depart_images(known)
    report.removed += len(known)
    report.vanished += len(vanished)


def _is_gone(path: str) -> bool:
    """Whether nothing is at `path` (not merely unreadable: that keeps its image)."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno in GONE_ERRNOS
    return False


def _hash_or_none(path: str) -> str | None:
    try:
        return hash_file(path)
    except OSError:  # unreadable or vanished: the embedding phase records why
        return None
