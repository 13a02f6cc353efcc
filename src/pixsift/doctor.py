"""Checking a library for damage, and repairing what can be repaired (`pixsift doctor`).

The database is the source of truth and SQLite keeps it consistent through crashes, so most
of what can go wrong is outside it: a search index that no longer matches the stored vectors
(a file restored from a backup, a damaged disk), rows for files deleted from disk, leftovers of
a save that a crash cut short. The check reads only; the repair rebuilds the search index from
the stored vectors and drops what points nowhere. Both run under the library's lock, so they
never see an index run half-way.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixsift.indexer.progress import BUILDING_INDEX_PHASE, IndexProgress, phase_of_unknown_length
from pixsift.indexer.scan import GONE_ERRNOS, unmounted_roots
from pixsift.storage import Catalog
from pixsift.storage.catalog import folder_prefix_range
from pixsift.storage.index_build import IndexPolicy
from pixsift.storage.index_header import check_file
from pixsift.storage.index_lifecycle import catch_up, rebuild
from pixsift.storage.interrupts import Change
from pixsift.storage.vector_index import VectorIndex, leftover_files, read_generation

VECTOR_SAMPLE = 256  # stored vectors compared with the search index's copies, per check
VECTOR_TOLERANCE = 1e-6
FILE_THERE = "there"
FILE_GONE = "gone"
SCHEMA_LACKING = (
    " Nothing more can be checked or repaired without it: restore the database from a backup, "
    "or index your folders into a new library."
)


class Note(str):
    """A note of a check, in the Python API's words (`repair()`), as `notes` hold it; where its
    advice differs on the command line (`--repair`), `command_line` holds that form, as for a
    PixsiftError. A str, so that `notes` stay the strings they were."""

    command_line: str | None

    def __new__(cls, text: str, command_line: str | None = None) -> Note:
        note = super().__new__(cls, text)
        note.command_line = command_line
        return note


def for_command_line(text: str) -> str:
    """A note (or any text of a report) as the `pixsift doctor` command shows it."""
    command_line = getattr(text, "command_line", None)
    return text if command_line is None else command_line


@dataclass(frozen=True)
class Problem:
    """Something wrong with a library. `kind` is a stable name for scripts. `message` is in the
    Python API's words; `command_line`, where set, in the `pixsift` command's (as a Note)."""

    kind: str
    message: str
    repairable: bool
    command_line: str | None = None

    def for_command_line(self) -> str:
        return self.message if self.command_line is None else self.command_line


@dataclass
class HealthReport:
    """What a check found (and, after a repair, what the repair did)."""

    library: Path
    contents_read: bool = False  # False when damage or a missing table stopped the check first
    images: int = 0  # image rows in the database
    vectors: int = 0  # stored vectors
    index_vectors: int | None = None  # vectors in the search index file, once caught up
    sampled: int = 0  # vectors compared between the database and the search index
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # found, but harmless
    repairs: list[str] = field(default_factory=list)  # what a repair did

    @property
    def healthy(self) -> bool:
        return not self.problems


def check(catalog: Catalog, index_path: Path, *, seed: int = 0) -> HealthReport:
    """Check the database, the search index against it, and the files it points to."""
    report = HealthReport(index_path.parent)
    errors = catalog.integrity_errors()
    if errors:
        report.problems.append(
            Problem(
                "database",
                f"SQLite finds the database damaged ({'; '.join(errors[:3])}). Restore it from a "
                "backup, or index your folders into a new library.",
                repairable=False,
            )
        )
        return report  # nothing read from a damaged file can be trusted
    lacking = catalog.lacks_schema()  # then the other checks would read what is missing
    report.problems += [
        Problem(
            "schema",
            f"The database schema differs: {difference}.{SCHEMA_LACKING if lacking else ''}",
            repairable=False,
        )
        for difference in catalog.schema_differences()
    ]
    if lacking:
        return report
    _check_vectors(catalog, report)
    _check_index(catalog, index_path, report, np.random.default_rng(seed))
    _check_files(catalog, report)
    leftovers = leftover_files(index_path)
    if leftovers:
        lead = (
            f"{len(leftovers)} temporary file(s) of an interrupted index save; removed by the next save or by"
        )
        report.notes.append(Note(f"{lead} repair()", command_line=f"{lead} --repair"))
    pending = catalog.counts().pending
    if pending:
        report.notes.append(f"{pending} image(s) not embedded yet: the next index run embeds them")
    return report


def _check_vectors(catalog: Catalog, report: HealthReport) -> None:
    counts = catalog.counts()
    report.contents_read = True
    report.images, report.vectors = counts.total, counts.indexed
    orphans = catalog.orphan_vector_ids()
    if orphans:
        report.problems.append(
            Problem("orphan-vectors", f"{len(orphans)} vector(s) belong to no image.", repairable=True)
        )
    model = catalog.model()
    if model is None:
        if report.vectors:
            report.problems.append(
                Problem("model", "Vectors are stored but no model is recorded.", repairable=False)
            )
        return
    misfits = catalog.misfit_vector_ids(model.embed_dim)
    if misfits:
        report.problems.append(
            Problem(
                "vector-size",
                f"{len(misfits)} vector(s) are not {model.embed_dim}-dimensional like the model's.",
                repairable=True,
            )
        )


def _unusable_index(index_path: Path) -> str:
    """Why the search index file does not load, in the words `pixsift status` uses for it (cut
    short, longer than its header says, no permission...), from its header and size."""
    damage = check_file(index_path).damage
    # Damage its size and first bytes do not show (only a full read's checksum does).
    return f"The search index file cannot be used: {damage or 'its contents do not load'}."


def _check_index(catalog: Catalog, index_path: Path, report: HealthReport, rng: np.random.Generator) -> None:
    """Compare the saved search index, caught up as a search would, with the stored vectors."""
    model = catalog.model()
    if model is None:
        return
    generation = catalog.generation()
    saved = read_generation(index_path)
    if saved is None and not index_path.exists():
        report.notes.append(
            Note(
                "no search index file yet: the next search or repair() builds it",
                command_line="no search index file yet: the next search or --repair builds it",
            )
        )
        return
    if index_path.is_dir():  # no save can replace a folder: only the user can move it away
        report.problems.append(
            Problem(
                "index-damaged",
                f"A folder stands where the search index file belongs ({index_path}): move it "
                "away; until then every search rebuilds the index in memory.",
                repairable=False,
            )
        )
        return
    index = VectorIndex.load(index_path)
    if index is None or saved is None:
        report.problems.append(Problem("index-damaged", _unusable_index(index_path), repairable=True))
        return
    if index.dim != model.embed_dim or saved > generation:
        report.problems.append(
            Problem(
                "index-foreign",
                "The search index file does not belong to this database "
                f"({index.dim}-d at generation {saved}; the database is {model.embed_dim}-d "
                f"at generation {generation}).",
                repairable=True,
            )
        )
        return
    if saved < generation:
        report.notes.append(_behind_note(catalog.changes_since(saved), saved, generation))
    index = catch_up(catalog, index)
    _compare(catalog, index, report, rng)


def _behind_note(changes: int | None, saved: int, generation: int) -> str:
    """What a search index file saved before the latest changes means: normally nothing (a
    delete does not rewrite it; loading it replays the changes since), else a rebuild."""
    behind = f"search index file is behind the database (generation {saved} of {generation})"
    if changes is None:
        return f"{behind}, further than its change log reaches: rebuilt as it is loaded"
    count = "1 change since is" if changes == 1 else f"{changes:,} changes since are"
    return f"{behind}: the {count} replayed as it is loaded, as every search does"


def _compare(catalog: Catalog, index: VectorIndex, report: HealthReport, rng: np.random.Generator) -> None:
    held = index.ids()
    report.index_vectors = len(held)
    stored = catalog.embedded_ids()
    duplicates = [i for i, n in Counter(held.tolist()).items() if n > 1]
    phantoms = np.setdiff1d(held, stored)
    absent = np.setdiff1d(stored, held)
    for count, what in [
        (len(duplicates), "appear more than once in the search index"),
        (len(phantoms), "in the search index have no stored vector (phantom results)"),
        (len(absent), "stored are missing from the search index (never found by a search)"),
    ]:
        if count:
            report.problems.append(Problem("index-mismatch", f"{count} vector(s) {what}.", repairable=True))
    both = np.intersect1d(held, stored)
    if not index.exact:  # compressed vectors cannot equal the stored ones: ids are the check
        report.notes.append(f"search index is {index.kind.value} (compressed): compared ids, not vectors")
        return
    sample = rng.choice(both, size=min(VECTOR_SAMPLE, len(both)), replace=False) if len(both) else both
    report.sampled = len(sample)
    differ = 0
    for image_id in sample.tolist():
        vector = catalog.vector(image_id)
        if vector is None or vector.shape != (index.dim,):
            continue  # reported by the vector checks
        if not np.allclose(index.vector(image_id), vector, atol=VECTOR_TOLERANCE, rtol=0):
            differ += 1
    if differ:
        report.problems.append(
            Problem(
                "index-mismatch",
                f"{differ} of {len(sample)} sampled vector(s) differ between the search index "
                "and the database.",
                repairable=True,
            )
        )


def _check_files(catalog: Catalog, report: HealthReport) -> None:
    absent_roots = unmounted_roots(catalog)
    gone = 0
    kept = 0
    unknown: Counter[str] = Counter()
    for _, path in catalog.image_paths():
        state = _file_state(path)
        if state == FILE_THERE:
            continue
        if _under_any(path, absent_roots):
            kept += 1
        elif state == FILE_GONE:
            gone += 1
        else:
            unknown[state] += 1
    if gone:
        # A moved file is only missing until the next index run finds it under its new path
        # (same id); a repair would drop it, and that run would add it anew.
        lead = f"{gone} indexed file(s) no longer exist on disk (if moved,"
        end = "finds them again and keeps their ids)."
        report.problems.append(
            Problem(
                "missing-files",
                f"{lead} index() {end}",
                repairable=True,
                command_line=f"{lead} pixsift index {end}",
            )
        )
    if kept:
        lead = f"{kept} image(s) under folders that are missing or empty (unmounted?): kept as they are"
        report.notes.append(
            Note(
                f"{lead} (relocate(folder, new) for a folder that moved; "
                "forget(folder) drops a folder gone for good)",
                command_line=f"{lead} (pixsift relocate FOLDER NEW for a folder that moved; "
                "pixsift forget FOLDER drops a folder gone for good)",
            )
        )
    for reason, count in unknown.items():
        report.notes.append(f"{count} indexed file(s) could not be checked ({reason}): kept as they are")


def _file_state(path: str) -> str:
    """FILE_THERE, FILE_GONE, or why the file could not be looked at (a folder without
    permission, a stale network mount): such a file is not known to be gone, so it is kept."""
    try:
        return FILE_THERE if stat.S_ISREG(os.stat(path).st_mode) else FILE_GONE
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:
            return FILE_GONE
        return exc.strerror or type(exc).__name__


def repair(
    catalog: Catalog,
    index_path: Path,
    policy: IndexPolicy | None = None,
    change: Change | None = None,
    progress: IndexProgress | None = None,
) -> list[str]:
    """Fix what a check can find, short of a damaged database; returns what was done.

    Rows of files gone from disk are dropped (not those under a folder that is not there) and
    kept as departed records, as an index run keeps them (`storage/departed.py`), so a file
    found moved by a later run gets its id and vector back; vectors that fit nothing are
    dropped (their images are embedded again by the next index run), and the search index is
    rebuilt from the stored vectors. `change` learns each repair as it is kept (see
    `kept_on_interrupt`), so a Ctrl-C part-way can say which are. `progress` shows the rebuild
    as a phase of its own, as an index run's: minutes of silence at 1M vectors otherwise.
    """
    change = change or Change()
    done: list[str] = []
    change.result = done
    if catalog.lacks_schema():  # nothing can be read to repair from; check() says so
        return done
    model = catalog.model()
    orphans = catalog.orphan_vector_ids()
    misfits = catalog.misfit_vector_ids(model.embed_dim) if model is not None else []
    absent_roots = unmounted_roots(catalog)
    gone = [
        image_id
        for image_id, path in catalog.image_paths()
        if _file_state(path) == FILE_GONE and not _under_any(path, absent_roots)
    ]
    if orphans or misfits or gone:
        with change.transaction(catalog.write()) as batch:
            batch.drop_vectors([*orphans, *misfits])
            batch.depart_images(gone)  # as an index run would: found moved later, they come back
            # Listed in the transaction: a Ctrl-C held back until it commits finds them there.
            if orphans:
                done.append(f"dropped {len(orphans)} vector(s) that belonged to no image")
            if misfits:
                done.append(
                    f"dropped {len(misfits)} vector(s) of the wrong size (re-embedded by the next index run)"
                )
            if gone:
                done.append(f"dropped {len(gone)} row(s) of files gone from disk")
    if model is not None and not index_path.is_dir():  # a folder there: check() says to move it
        with phase_of_unknown_length(progress, BUILDING_INDEX_PHASE):
            index = rebuild(catalog, model.embed_dim, policy)
            index.save(index_path)
        done.append(f"rebuilt the search index from {index.count} stored vector(s)")
        change.committed = True
        with change.transaction(catalog.write()) as batch:
            batch.truncate_vector_log(index.generation)
    leftovers = leftover_files(index_path)
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    if leftovers:
        done.append(f"removed {len(leftovers)} temporary file(s) of an interrupted save")
        change.committed = True
    return done


def _under_any(path: str, folders: list[str]) -> bool:
    encoded = os.fsencode(path)
    return any(low <= encoded < high for low, high in map(folder_prefix_range, folders))
