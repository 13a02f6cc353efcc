"""Deciding what an index run must do, from a scan and what the catalog already knows.

Only file sizes and mtimes are compared here, so an unchanged folder costs one `stat` per
file. Content hashes settle the rest later: a "new" file may be a moved one, a "changed"
one may only have been touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from pixsift.indexer.scan import ScannedFile
from pixsift.storage.records import KnownFile


@dataclass(frozen=True)
class Candidate:
    """A file that may need embedding: new, changed, or left without a vector last time."""

    file: ScannedFile
    known: KnownFile | None  # the catalog's row at this path, if any


@dataclass
class IndexPlan:
    unchanged: int = 0
    still_failed: int = 0  # of the unchanged: files whose content failed before, not retried
    candidates: list[Candidate] = field(default_factory=list)
    missing: list[KnownFile] = field(default_factory=list)  # known, but gone from disk


def plan_folder(
    scanned: dict[str, ScannedFile],
    known: dict[str, KnownFile],
    unreadable_dirs: Iterable[str] = (),
    unsupported: Iterable[str] = (),
) -> IndexPlan:
    """Compare one folder's scan with the catalog's rows for that folder.

    `unsupported` are files still there that this install cannot read (HEIC without the heif
    extra): what was indexed of them is kept, not taken for deleted.
    """
    plan = IndexPlan()
    for path, file in scanned.items():
        row = known.get(path)
        if row is not None and _is_unchanged(file, row):
            plan.unchanged += 1
            plan.still_failed += row.error is not None
        else:
            plan.candidates.append(Candidate(file, row))
    unknown_prefixes = tuple(os.path.join(folder, "") for folder in unreadable_dirs)
    still_there = set(unsupported)
    plan.missing = [
        row
        for path, row in known.items()
        if path not in scanned and path not in still_there and not path.startswith(unknown_prefixes)
    ]
    return plan


def _is_unchanged(file: ScannedFile, row: KnownFile) -> bool:
    """Same size and mtime, and fully handled last time: a vector, or a failure of the content.

    Bad content fails again for the same bytes, so it waits for the file to change; a file
    that could not be read (permission denied, an I/O error) is tried again by every run.
    """
    done = row.has_vector or (row.error is not None and not row.error_retry)
    return done and file.size == row.size and file.mtime_ns == row.mtime_ns
