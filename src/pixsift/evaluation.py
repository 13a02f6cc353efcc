"""Measuring retrieval quality on a user's own labelled queries: recall@k, precision@k, MRR.

A query file is JSON Lines, one query per line:

    {"query": "a red circle", "relevant": ["shapes/*red_circle*.jpg"]}
    {"image": "shapes/00012_blue_star.jpg", "relevant": ["shapes/*blue_star*"]}

`relevant` lists paths or glob patterns (relative ones are relative to the query file's folder)
naming the images that answer the query. As in the shell, `*`, `?` and `[...]` stay within one
folder's names, and a `**` folder matches any number of folders (`2024/**/*.jpg`); in the folder
a relative one is taken from (the query file's, or `~`'s) they are only themselves. An image
query leaves the query image itself out, as `pixsift similar` does.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pixsift.errors import ImageError, InvalidPathError, QueryError, given_path
from pixsift.regular_file import other_than_a_file
from pixsift.search.query import QueryTerm
from pixsift.search.results import SearchResult

DEFAULT_CUTOFFS = (1, 5, 10)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class RelevantPath:
    """One of a query's relevant paths or glob patterns, made absolute.

    Its first `literal` names are the folder it was made absolute with (the query file's, or
    the home folder of `~`): names the user did not write as a pattern, so a `[`, `*` or `?`
    in them is only itself."""

    path: str
    literal: int

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class LabelledQuery:
    """One line of a query file: a text or an image query and the images that answer it."""

    line: int
    relevant: tuple[RelevantPath, ...]
    text: str | None = None
    image: str | None = None

    def describe(self) -> str:
        return self.text if self.text is not None else f"image {self.image}"


@dataclass(frozen=True)
class QueryOutcome:
    """How one query fared: where its relevant images ranked (1-based) among the results.

    `query` describes it for people ("image /path" for an image query); `text` or `image`
    says which it was, and `line` where it is in the query file (0 when not from a file)."""

    query: str
    relevant: int
    ranks: tuple[int, ...]
    latency_ms: float
    line: int = 0
    text: str | None = None
    image: str | None = None

    def recall(self, k: int) -> float:
        return sum(rank <= k for rank in self.ranks) / self.relevant

    def precision(self, k: int) -> float:
        return sum(rank <= k for rank in self.ranks) / k

    def reciprocal_rank(self) -> float:
        return 1.0 / min(self.ranks) if self.ranks else 0.0


@dataclass(frozen=True)
class EvalReport:
    """Averages over all queries; `per_query` keeps each query's outcome for a closer look."""

    cutoffs: tuple[int, ...]
    images: int
    per_query: tuple[QueryOutcome, ...]
    model: str = ""

    @property
    def depth(self) -> int:
        return max(self.cutoffs)

    def recall(self, k: int) -> float:
        return statistics.fmean(outcome.recall(self._within_depth(k)) for outcome in self.per_query)

    def precision(self, k: int) -> float:
        return statistics.fmean(outcome.precision(self._within_depth(k)) for outcome in self.per_query)

    def _within_depth(self, k: int) -> int:
        """`k`, if the ranking went that deep: beyond it every relevant image would count as
        missed, a wrong figure given as a right one."""
        if not 1 <= k <= self.depth:
            raise ValueError(
                f"Recall and precision are known at 1 to {self.depth} here (the deepest cut-off): "
                f"evaluate with a cut-off of {k} for @{k}."
            )
        return k

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank of the first relevant image within the top `depth` results."""
        return statistics.fmean(outcome.reciprocal_rank() for outcome in self.per_query)

    @property
    def median_latency_ms(self) -> float:
        return statistics.median(outcome.latency_ms for outcome in self.per_query)

    def to_dict(self) -> dict[str, object]:
        return {
            "queries": len(self.per_query),
            "images": self.images,
            "model": self.model,
            "recall": {str(k): round(self.recall(k), 4) for k in self.cutoffs},
            "precision": {str(k): round(self.precision(k), 4) for k in self.cutoffs},
            f"mrr@{self.depth}": round(self.mrr, 4),  # kept for scripts that read it so
            "mrr": round(self.mrr, 4),  # a key that does not move with the cut-offs
            "mrr_depth": self.depth,
            "median_latency_ms": round(self.median_latency_ms, 2),
            "per_query": [
                {
                    "query": o.query,
                    "line": o.line,
                    "text": o.text,
                    "image": o.image,
                    "relevant": o.relevant,
                    "ranks": list(o.ranks),
                    "latency_ms": round(o.latency_ms, 2),
                }
                for o in self.per_query
            ],
        }


# Far more than any labelled query set (a line is a few hundred bytes): past this, the path
# names something else (a disk image, a log), and reading on would only fill memory.
MAX_QUERY_FILE_BYTES = 64 * 2**20


def read_queries(query_file: str | os.PathLike[str]) -> list[LabelledQuery]:
    """Parse a query file, with an error naming the line for anything malformed.

    A pipe (`<(make-queries)`, a named pipe) is read as it comes, its relative paths taken
    from the working folder, as it has no folder of its own; a device or a socket is refused
    (`/dev/zero` never ends).
    """
    path, named = Path(query_file).expanduser(), given_path(query_file)
    kind = other_than_a_file(path)
    if kind in ("a device", "a socket"):
        raise QueryError(f"{named} is {kind}; give a query file (JSONL, one query a line).")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_QUERY_FILE_BYTES + 1)
        if len(data) > MAX_QUERY_FILE_BYTES:
            raise QueryError(
                f"{named} holds more than {MAX_QUERY_FILE_BYTES // 2**20} MiB: too large for a query "
                "file (JSONL, one query a line)."
            )
        # utf-8-sig: editors on Windows (Notepad, PowerShell 5's Out-File) start the file with a BOM
        # split("\n"), not splitlines(): JSON text may hold U+2028, U+0085 and the like unescaped,
        # which splitlines() takes for line ends (a trailing "\r" is whitespace to json.loads)
        lines = data.decode("utf-8-sig").split("\n")
    except FileNotFoundError:
        raise QueryError(f"Query file {named} not found.") from None
    except IsADirectoryError:
        raise QueryError(f"{named} is a folder; give a query file (JSONL, one query a line).") from None
    except UnicodeDecodeError:  # an image or another binary file given by mistake
        raise QueryError(f"{named} is not a query file: not UTF-8 text (JSONL, one query a line).") from None
    except OSError as exc:  # the reason alone: Python's text repeats the path, with its errno
        reason = (exc.strerror or type(exc).__name__).lower()
        raise QueryError(f"Cannot read query file {named}: {reason}.") from exc
    base = Path.cwd() if kind == "a named pipe" else path.resolve().parent
    queries = [_parse_line(number, line, base) for number, line in enumerate(lines, 1) if line.strip()]
    if not queries:
        raise QueryError(f"Query file {named} has no queries.")
    return queries


def _parse_line(number: int, line: str, base: Path) -> LabelledQuery:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise QueryError(f"Line {number}: not valid JSON ({exc.msg}).") from exc
    if not isinstance(record, dict):
        raise QueryError(f"Line {number}: expected an object with 'query' (or 'image') and 'relevant'.")
    text, image, relevant = record.get("query"), record.get("image"), record.get("relevant")
    if (text is None) == (image is None) or not isinstance(text or image, str) or not (text or image):
        raise QueryError(f"Line {number}: give either a 'query' text or an 'image' path.")
    _check_text(number, text)
    if isinstance(relevant, str):
        relevant = [relevant]
    if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
        raise QueryError(f"Line {number}: 'relevant' must be a non-empty list of paths or glob patterns.")
    return LabelledQuery(
        line=number,
        relevant=tuple(_relevant_path(pattern, base) for pattern in relevant),
        text=text,
        image=_absolute(image, base) if image is not None else None,
    )


def _check_text(number: int, text: str | None) -> None:
    """Refuse a query text no search takes (blank, broken Unicode) before any query runs."""
    if text is None:
        return
    try:
        QueryTerm(text=text)
    except QueryError as exc:
        raise QueryError(f"Line {number}: {exc}") from None


def _absolute(pattern: str, base: Path) -> str:
    expanded = os.path.expanduser(pattern)
    return os.path.normpath(expanded if os.path.isabs(expanded) else os.path.join(base, expanded))


def _relevant_path(written: str, base: Path) -> RelevantPath:
    path = _absolute(written, base)
    head = written.split(os.sep, 1)[0]
    if head.startswith("~") and os.path.expanduser(head) != head:
        folder = os.path.expanduser(head)  # "~/x" or "~user/x"
    elif os.path.isabs(written):
        return RelevantPath(path, 1)  # all written: only the root (or drive) is not a pattern
    else:
        folder = str(base)
    # The names `path` shares with `folder`: what a ".." in `written` left of it
    shared = os.path.commonpath([os.path.normpath(folder), path]).rstrip(os.sep)  # "/" as ""
    return RelevantPath(path, len(shared.split(os.sep)))


def _fixed_names(relevant: RelevantPath) -> int:
    """How many of `relevant`'s names come before its first wildcard: a path's all but its last."""
    parts = relevant.path.split(os.sep)
    wild = (i for i, part in enumerate(parts) if i >= relevant.literal and not _GLOB_CHARS.isdisjoint(part))
    return next(wild, len(parts) - 1)


def _with_real_folders(relevant: RelevantPath) -> set[str]:
    """`relevant` as a glob pattern (its literal folder escaped), as written and with links
    resolved in its folders up to the first wildcard: roots are stored resolved, so a relevant
    path written through a linked folder names them only this way."""
    parts = relevant.path.split(os.sep)
    fixed = _fixed_names(relevant)
    folder = os.sep.join(parts[:fixed]) or os.sep
    return {os.path.join(glob.escape(name), *parts[fixed:]) for name in (folder, os.path.realpath(folder))}


def relevant_paths(query: LabelledQuery, indexed: Sequence[str], indexed_set: set[str]) -> set[str]:
    """The indexed images (given as a list for globbing and a set for lookups) that `query`'s
    relevant paths and patterns name."""
    found: set[str] = set()
    for written in query.relevant:
        named = _named_by(written, indexed, indexed_set)
        if not named:
            # Each one, not only all together: a typo among several paths would otherwise drop
            # an image the user counts as relevant, and recall would be measured without it.
            raise QueryError(
                f"Line {query.line}: no indexed image matches {written} "
                "(a mistyped path, or an image not indexed?)."
            )
        found |= named
    if query.image is not None:  # the query image is never among its own results
        found -= {query.image, os.path.realpath(query.image)}
    if not found:  # each path named an image, so only the query image itself: say so
        raise QueryError(
            f"Line {query.line}: its relevant paths name only the query image {query.image}, which is "
            "never among its own results: name the other images that answer it."
        )
    return found


def _named_by(relevant: RelevantPath, indexed: Sequence[str], indexed_set: set[str]) -> set[str]:
    """The indexed images that one relevant path or pattern names."""
    folder, name = os.path.split(relevant.path)
    # as a path first: a name may hold [ itself, "beach [1].jpg"
    named = {relevant.path, os.path.join(os.path.realpath(folder), name)} & indexed_set
    parts = relevant.path.split(os.sep)
    if any(not _GLOB_CHARS.isdisjoint(part) for part in parts[relevant.literal :]):
        for pattern in _with_real_folders(relevant):
            matches = _glob_regex(pattern).match
            named.update(path for path in indexed if matches(path))
    return named


@functools.lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as the shell reads it: `*`, `?` and `[...]` match within one name, never across
    a folder separator, so `2024/*.jpg` leaves out `2024/rejects/x.jpg` (fnmatch's `*` would
    take it); a whole `**` name matches any number of folders, none included."""
    sep = re.escape(os.sep)
    parts: list[str] = []
    names = pattern.split(os.sep)
    for position, name in enumerate(names):
        last = position == len(names) - 1
        if name == "**":
            parts.append(".*" if last else f"(?:[^{sep}]*{sep})*")
        else:
            parts.append(_name_regex(name, sep) + ("" if last else sep))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _name_regex(name: str, sep: str) -> str:
    """One folder or file name of a glob pattern as a regular expression that never crosses `sep`."""
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char == "*":
            while i < len(name) and name[i] == "*":
                i += 1
            out.append(f"[^{sep}]*")
            continue
        if char == "?":
            out.append(f"[^{sep}]")
        elif char == "[" and (end := _class_end(name, i)) != -1:
            out.append(f"(?!{sep})" + _class_regex(name[i : end + 1]))
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(name: str, start: int) -> int:
    """Where the `[...]` class opened at `start` closes (as fnmatch reads it), or -1: a literal `[`."""
    end = start + 1
    if end < len(name) and name[end] == "!":
        end += 1
    if end < len(name) and name[end] == "]":
        end += 1
    return name.find("]", end)


def _class_regex(bracketed: str) -> str:
    """A `[...]` class as fnmatch translates it (ranges, `!`, empty ranges), without its anchors."""
    translated = fnmatch.translate(bracketed)  # "(?s:[...])\Z"
    body = re.fullmatch(r"\(\?s:(.*)\)\\[zZ]", translated, re.DOTALL)
    return body.group(1) if body else re.escape(bracketed)


Searcher = Callable[[LabelledQuery, int], list[SearchResult]]


def checked_cutoffs(cutoffs: Sequence[int]) -> tuple[int, ...]:
    """The ranks to measure at, sorted and each once; QueryError naming the first that is no
    whole number of at least 1, or saying none was given. Checked before any query runs."""
    cutoffs = tuple(cutoffs)
    if not cutoffs:
        raise QueryError("No cut-offs given: name the ranks to measure at, e.g. 1,5,10.")
    for cutoff in cutoffs:
        if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1:
            raise QueryError(f"Cut-offs must be whole numbers of at least 1, e.g. 1,5,10, not {cutoff!r}.")
    return tuple(sorted(set(cutoffs)))


def evaluate(
    queries: Sequence[LabelledQuery],
    indexed: Sequence[str],
    search: Searcher,
    cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
    model: str = "",
) -> EvalReport:
    """Run every query through `search` and score its ranking against the relevant images.

    The first query is run once untimed, so loading the model does not count as query latency.
    """
    cutoffs = checked_cutoffs(cutoffs)
    depth = max(cutoffs)
    indexed_set = set(indexed)
    judged = [(query, relevant_paths(query, indexed, indexed_set)) for query in queries]
    _run(search, queries[0], depth)
    outcomes = []
    for query, relevant in judged:
        started = time.perf_counter()
        results = _run(search, query, depth)
        latency_ms = (time.perf_counter() - started) * 1000
        ranks = tuple(hit.rank for hit in results if str(hit.path) in relevant)
        outcomes.append(
            QueryOutcome(
                query.describe(), len(relevant), ranks, latency_ms, query.line, query.text, query.image
            )
        )
    return EvalReport(cutoffs, len(indexed), tuple(outcomes), model)


def _run(search: Searcher, query: LabelledQuery, depth: int) -> list[SearchResult]:
    """`search(query, depth)`, with a query's own fault (an image not found or not readable)
    told with its line: in a file of hundreds of queries the message alone does not say which."""
    try:
        return search(query, depth)
    except (QueryError, ImageError, InvalidPathError) as exc:
        raise QueryError(f"Line {query.line}: {exc}") from exc
