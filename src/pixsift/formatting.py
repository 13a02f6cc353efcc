"""Text the command line prints: results, index summaries, library status and evaluations.

JSON output escapes non-ASCII (`ensure_ascii`), so a file name that is not valid UTF-8 still
makes valid JSON, and decodes back to the exact name in Python.

Pure functions from core records to strings, so every face formats the same way and tests
can check the output without a terminal.
"""

from __future__ import annotations

import json
import os
import shlex
import unicodedata
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from pixsift.timestamps import iso_utc  # datetime only: cheap to import

if TYPE_CHECKING:  # the command line imports this module before it needs the core
    from pixsift.doctor import HealthReport
    from pixsift.evaluation import EvalReport
    from pixsift.indexer import IndexReport
    from pixsift.indexer.report import CopiesOfMissingRoot
    from pixsift.search import SearchResult
    from pixsift.status import IndexSummary, LibraryStatus
    from pixsift.storage import Failure


class ResultFormat(StrEnum):
    table = "table"
    paths = "paths"
    paths0 = "paths0"  # each path ended by a NUL, as find -print0: a name may hold a newline
    json = "json"
    jsonl = "jsonl"


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


# What becomes of a search index file that status finds damaged or cannot read: a search
# refuses it as it loads it, and rebuilds the index from the stored vectors.
INDEX_FILE_FIXES = {
    "damaged": "rebuilt from the stored vectors by the next search or index run, or now by: pixsift reindex",
    # No read permission: the next save replaces the file. A folder: no save can (doctor says so).
    "unreadable": "rebuilt from the stored vectors by each search, and saved in its place when "
    "it can be replaced: a folder there must be moved away",
}


def format_results(results: Sequence[SearchResult], fmt: ResultFormat) -> str:
    """Search results as text; empty for no results, except JSON's `[]`. Every format but
    `paths0` (which ends each path with its NUL) is printed with a newline after it."""
    if fmt is ResultFormat.json:
        return json.dumps([r.to_dict() for r in results], indent=2)
    if not results:
        return ""
    if fmt is ResultFormat.jsonl:
        return "\n".join(json.dumps(r.to_dict()) for r in results)
    if fmt is ResultFormat.paths:
        return "\n".join(str(r.path) for r in results)
    if fmt is ResultFormat.paths0:
        return "".join(f"{r.path}\0" for r in results)
    # Seven characters: a cosine may be negative ("-0.0536"), and its sign must not push the path.
    lines = [f"{'rank':>4}  {'score':>7}  path"]
    lines += [f"{r.rank:>4}  {r.score:>7.4f}  {shown(r.path)}" for r in results]
    return "\n".join(lines)


def shown(path: object) -> str:
    """A path for a row of text: control characters (a newline in a file name) escaped as
    Python writes them, so one path stays one row. Other characters, invalid UTF-8 included,
    are printed as they are."""
    text = str(path)
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def format_report(report: IndexReport, *, library_removed: bool = False, reembedding: bool = False) -> str:
    """The summary of an index run: what changed, what failed, how fast. `library_removed`:
    the run was interrupted before it kept anything in the library it was to make, which is
    gone again (IndexInterrupted.library_removed); `reembedding`: it was interrupted while
    re-embedding with the library's new model (IndexInterrupted.reembedding)."""
    parts = [
        f"{report.added} new",
        f"{report.updated} updated",
        f"{report.moved} moved",
        f"{report.reused} copies",
        f"{report.removed} removed",
        f"{report.unchanged + report.touched} unchanged",
        f"{report.failed} failed",
    ]
    # The rate is the embedding phase's: a first run's one-time model export is in the total only.
    rate = (
        f", embedding {report.embedded / report.embed_s:.1f} images/s"
        if report.embedded and report.embed_s
        else ""
    )
    took = f"{'interrupted after ' if report.interrupted else ''}{report.elapsed_s:.1f} s{rate}"
    summary = f"{report.scanned} images found: {', '.join(parts)} ({took})."
    # Found, but in none of the counts above: say where they went.
    gone = [f"{report.vanished} file(s) deleted during the run, left out"] if report.vanished else []
    warnings = report_warnings(report, library_removed=library_removed, reembedding=reembedding)
    return "\n".join([summary, *gone, *warnings])


def format_kept(report: IndexReport | None) -> str | None:
    """The line after the error that stopped an index run part-way: what it had indexed, which
    is kept (PixsiftError.report). None when it had kept nothing, or no run had begun."""
    if report is None or not report.kept:
        return None
    kept = (
        "1 image was indexed before this and is"
        if report.kept == 1
        else f"{report.kept} images were indexed before this and are"
    )
    return f"{kept} kept: run the command again to index the rest."


def _skipped_root_warning(root: str) -> str:
    """What to do about an indexed folder found missing or empty, whose images were kept."""
    quoted = shlex.quote(root)
    choices = f"if it moved: pixsift relocate {quoted} NEW; if it is gone for good: pixsift forget {quoted}"
    if not os.path.isdir(root):
        return f"warning: folder {root} is missing (unmounted?); its images were kept ({choices})"
    # An emptied folder cannot be told from the mount point of an unplugged drive: a file left
    # in it (any, even hidden) says it is there, and its deleted photos then leave.
    keep = shlex.quote(os.path.join(root, ".keep"))
    return (
        f"warning: folder {root} is empty (unmounted?); its images were kept ({choices}; "
        f"if you emptied it on purpose, leave any file in it: touch {keep})"
    )


def _copies_warning(found: CopiesOfMissingRoot) -> str:
    """What to do about new images that are copies of a missing indexed folder's: it was
    renamed or moved (then drop the old entries), or it is an unplugged drive and these are
    its backup (then both stay). `relocate` would refuse now, the new place being indexed."""
    copies = (
        "1 of the new images is a copy of an image"
        if found.copies == 1
        else f"{found.copies} of the new images are copies of images"
    )
    return (
        f"warning: {copies} under {shown(found.root)}, which is missing (unmounted?), so the library "
        f"lists them twice: if it moved to {shown(found.moved_to)}, drop the old entries with "
        f"pixsift forget {shlex.quote(found.root)} (those under {shown(found.moved_to)} stay indexed); "
        "if it is only unplugged, keep both"
    )


def report_warnings(
    report: IndexReport, *, library_removed: bool = False, reembedding: bool = False
) -> list[str]:
    """What an index run could not do, and what to do about it: one line each."""
    lines = []
    for folder, reason in report.unreadable_dirs:
        lines.append(f"warning: could not read folder {folder} ({reason}); its images were kept")
    moved = {found.root for found in report.copies_of_missing}
    # A root whose copies were found is told about once, by the advice that fits it.
    lines.extend(_skipped_root_warning(root) for root in report.skipped_roots if root not in moved)
    lines.extend(_copies_warning(found) for found in report.copies_of_missing)
    if report.unsupported_heif:
        lines.append(
            f"{report.unsupported_heif} HEIC/HEIF file(s) skipped; to index them: pip install 'pixsift[heif]'"
        )
    if report.failed:
        lines.append(f"{report.failed} file(s) could not be read; list them with: pixsift status --failed")
    if report.still_failed:
        lines.append(
            f"{report.still_failed} file(s) still failed from earlier runs (retried when they change);"
            " list them with: pixsift status --failed"
        )
    if report.interrupted:
        lines.append(_interrupted_line(report, library_removed, reembedding))
    return lines


def _interrupted_line(report: IndexReport, library_removed: bool, reembedding: bool = False) -> str:
    """What an interrupted run kept, as it is: "what was embedded so far is saved" said of a
    run that embedded nothing, or whose new library was taken back, promised what was not there.
    A re-embedding run is continued without --reembed: the same command would drop what it
    embedded with the new model and start over (hours, on a large library)."""
    if library_removed:
        return "Nothing was kept, and no library was made; run the same command again to start."
    if not report.embedded:
        return "Nothing was embedded yet; run the same command again to continue."
    if reembedding:
        return (
            "What was embedded so far with the new model is saved; run the same command without "
            "--reembed to continue (with it, every image is embedded again)."
        )
    return "What was embedded so far is saved; run the same command again to continue."


def format_status(status: LibraryStatus, failures: Sequence[Failure] | None) -> str:
    model = status.model.describe() if status.model else "none yet (chosen by the first index run)"
    counts = status.counts
    index = status.index_file
    index_text = index.state if index.generation is None else f"{index.state} (generation {index.generation}"
    if index.changes is not None:
        count = f"{index.changes:,} change{'' if index.changes == 1 else 's'}"
        index_text += f", plus {count} replayed from the database"
    index_text += "" if index.generation is None else ")"
    if index.kind is not None:
        index_text += f", {index.kind}"
    if index.search_param is not None:
        index_text += f" ({'efSearch' if index.kind == 'hnsw' else 'nprobe'} {index.search_param}"
        index_text += "" if index.recall is None else f", recall@10 {index.recall:.3f} when tuned"
        index_text += ")"
    if index.damage is not None:  # what is wrong, and what becomes of it, on lines of their own
        index_text += f"\n         {index.damage}\n         {INDEX_FILE_FIXES[index.state]}"
    lines = [
        f"Library  {status.path}",
        f"Model    {model}",
        f"Images   {counts.indexed:,} indexed, {counts.failed:,} failed, {counts.pending:,} pending",
        f"Index    {index_text}",
        f"Disk     {status.disk_bytes / 1e6:.1f} MB",
    ]
    if not status.roots:
        lines.append("Roots    none")
    for number, root in enumerate(status.roots):
        when = root.last_indexed_at.strftime("%Y-%m-%d %H:%M UTC") if root.last_indexed_at else "never"
        options = _root_options(root.include_hidden, root.follow_symlinks)
        missing = "  missing" if root.path in status.missing_roots else ""
        lines.append(
            f"{'Roots' if number == 0 else '':<8} {shown(root.path)}{missing}  (last indexed {when}{options})"
        )
    if failures is not None:
        lines.append("")
        lines.append(f"Failed files ({len(failures)}):" if failures else "No failed files.")
        lines += [f"  {shown(f.path)}: {f.error}" for f in failures]
    return "\n".join(lines)


def _root_options(include_hidden: bool, follow_symlinks: bool) -> str:
    """The walking options a folder was indexed with, which `pixsift index` alone reuses."""
    chosen = [("--include-hidden", include_hidden), ("--follow-symlinks", follow_symlinks)]
    return "".join(f", {name}" for name, on in chosen if on)


def status_as_json(status: LibraryStatus, failures: Sequence[Failure] | None) -> str:
    model = status.model
    data: dict[str, object] = {
        "library": str(status.path),
        "model": None
        if model is None
        else {
            "name": model.spec.name,
            "pretrained": model.spec.pretrained,
            "embed_dim": model.embed_dim,
            "fingerprint": model.fingerprint,
        },
        "images": {
            "indexed": status.counts.indexed,
            "failed": status.counts.failed,
            "pending": status.counts.pending,
        },
        "roots": [
            {
                "path": r.path,
                "include_hidden": r.include_hidden,
                "follow_symlinks": r.follow_symlinks,
                "added_at": iso_utc(r.added_at),
                "last_indexed_at": iso_utc(r.last_indexed_at) if r.last_indexed_at else None,
                "missing": r.path in status.missing_roots,
            }
            for r in status.roots
        ],
        "index": status.index_file.as_json(),
        "generation": status.generation,
        "disk_bytes": status.disk_bytes,
    }
    if failures is not None:
        data["failures"] = [{"path": f.path, "error": f.error} for f in failures]
    return json.dumps(data, indent=2)


def format_eval(report: EvalReport) -> str:
    """The evaluation as a small table: recall and precision at each cut-off, then MRR and latency."""
    # A column is as wide as its label, with two spaces before it: @100000000 keeps its gap.
    widths = [max(8, len(f"@{k}") + 2) for k in report.cutoffs]
    header = "".join(f"{'@' + str(k):>{width}}" for k, width in zip(report.cutoffs, widths, strict=True))
    queries = "1 query" if len(report.per_query) == 1 else f"{len(report.per_query)} queries"

    def row(name: str, value: Callable[[int], float]) -> str:
        cells = (f"{value(k):>{width}.3f}" for k, width in zip(report.cutoffs, widths, strict=True))
        return f"{name:<12}" + "".join(cells)

    lines = [
        f"{queries} on {report.images:,} images, model {report.model}",
        "",
        f"{'':<12}{header}",
        row("recall", report.recall),
        row("precision", report.precision),
        "",
        f"{'MRR@' + str(report.depth):<11} {report.mrr:.3f}",
        f"median query latency  {report.median_latency_ms:.1f} ms",
    ]
    return "\n".join(lines)


def eval_as_json(report: EvalReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


def format_health(report: HealthReport) -> str:
    """What `pixsift doctor` found and did, problems first."""
    from pixsift.doctor import for_command_line  # here: the doctor module loads numpy

    index = "none" if report.index_vectors is None else f"{report.index_vectors:,} vectors"
    checked = (
        f"{report.images:,} images, {report.vectors:,} stored vectors, search index {index}, "
        f"{report.sampled} vectors compared"
        if report.contents_read
        else "the database only: its images could not be read (below)"
    )
    lines = [f"Library  {report.library}", f"Checked  {checked}"]
    lines += [f"repaired: {action}" for action in report.repairs]
    lines += [f"note: {for_command_line(note)}" for note in report.notes]
    for problem in report.problems:
        fix = " (pixsift doctor --repair fixes this)" if problem.repairable and not report.repairs else ""
        lines.append(f"problem: {problem.for_command_line()}{fix}")
    lines.append("No problems found." if report.healthy else f"{len(report.problems)} problem(s) found.")
    return "\n".join(lines)


def health_as_json(report: HealthReport) -> str:
    from pixsift.doctor import for_command_line

    data = {
        "library": str(report.library),
        "healthy": report.healthy,
        "contents_read": report.contents_read,  # false: images and vectors were not counted
        "images": report.images,
        "vectors": report.vectors,
        "index_vectors": report.index_vectors,
        "sampled": report.sampled,
        "problems": [
            {"kind": p.kind, "message": p.for_command_line(), "repairable": p.repairable}
            for p in report.problems
        ],
        "notes": [for_command_line(note) for note in report.notes],
        "repairs": report.repairs,
    }
    return json.dumps(data, indent=2)


def format_index_summary(summary: IndexSummary) -> str:
    """The search index after a rebuild: kind, size, memory and tuning, one line each."""
    lines = [
        f"Index    {summary.kind}, {summary.vectors:,} vectors, {summary.memory_bytes / 1e6:.1f} MB",
    ]
    if summary.search_param is not None:
        name = "efSearch" if summary.kind == "hnsw" else "nprobe"
        recall = "" if summary.recall is None else f", recall@10 {summary.recall:.3f} against exact search"
        lines.append(f"Tuned    {name} {summary.search_param}{recall}")
    return "\n".join(lines)
