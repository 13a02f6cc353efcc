"""What an index run did, for the summary line and for callers of the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CopiesOfMissingRoot:
    """New images of a run that are copies of most images of a known root that is missing (not
    one left empty, which may be an inbox emptied on purpose): it may have moved to `moved_to`.
    pixsift cannot tell a moved folder from an unplugged drive with a copy elsewhere, so both
    stay indexed, and the user is told how to drop the old one."""

    root: str  # the indexed folder that is missing
    copies: int  # new images of the run that are copies of images under it
    moved_to: str  # where the copies lie: the folder it seems to have become


@dataclass
class IndexReport:
    roots: list[str] = field(default_factory=list)
    scanned: int = 0  # image files found on disk
    unchanged: int = 0  # skipped without being opened (same size and mtime)
    added: int = 0  # new files embedded
    updated: int = 0  # changed files re-embedded
    moved: int = 0  # files found under a new path (or back after a run): id and vector kept
    reused: int = 0  # files identical to an indexed one: its vector copied
    touched: int = 0  # files whose timestamp changed but not their content
    removed: int = 0  # files gone from disk, dropped from the library
    failed: int = 0  # files that could not be read this run
    vanished: int = 0  # files deleted (or replaced by a folder) between the scan and their reading
    still_failed: int = 0  # unchanged files whose content failed in an earlier run (not retried)
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)
    unsupported_heif: int = 0  # HEIC/HEIF files not indexed: the heif extra is not installed
    skipped_roots: list[str] = field(default_factory=list)  # known roots not on disk: kept as is
    copies_of_missing: list[CopiesOfMissingRoot] = field(default_factory=list)  # moved, perhaps
    elapsed_s: float = 0.0
    embed_s: float = 0.0  # time spent in the embedding phase (decode + model)
    interrupted: bool = False

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def complete(self) -> bool:
        """Whether every file and folder found is indexed or could be read (the rest of the run
        went on). Files that failed in an earlier run and are unchanged count as failed still."""
        return not self.failed and not self.still_failed and not self.unreadable_dirs

    @property
    def kept(self) -> int:
        """Images this run indexed into the library: new, re-embedded, moved, or copies of one
        indexed (a run that an error stopped keeps these; the next run goes on from there)."""
        return self.added + self.updated + self.moved + self.reused

    def count_in(self, committed: IndexReport) -> None:
        """Add the counts of `committed`, which one transaction made, once it was committed: a
        write that failed is rolled back whole, and its files must not count as indexed."""
        for name in _TRANSACTION_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(committed, name))


# What one transaction of a run counts (the rest is counted once, by the scan and the plan).
_TRANSACTION_COUNTS = ("added", "updated", "moved", "reused", "touched", "removed", "failed", "vanished")


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during an index run. Everything committed before it is kept; `report` says what.

    `library_removed` is True when the run was the first into a library that `Library.open`
    made and it stopped before keeping anything (while the model loaded, say): the library was
    taken back, so nothing at all was kept.

    `reembedding` is True when the run re-embeds (`reembed=True`) and had already made its
    model the library's: the images it embedded are kept, and the run is continued by the same
    call without `reembed`, which with it would drop them and start over.
    """

    def __init__(self, report: IndexReport) -> None:
        super().__init__("index run interrupted")
        self.report = report
        self.library_removed = False
        self.reembedding = False
