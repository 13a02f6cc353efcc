"""The header of a saved search index file, read without importing FAISS.

`vectors.faiss` starts with `MAGIC`, then one line of JSON (format, catalog generation, kind,
tuning), then the FAISS bytes (see `vector_index.py`). Whether the file is up to date is a
question of its header alone, which the quick query path asks before it loads anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pixsift.storage.index_choice import IndexKind, IndexPlan

MAGIC = b"PIXSIFT-VECTORS\n"
FILE_FORMAT = 3
# format 1: a flat index without the fields added in 2; format 3 adds the checksum, required
READABLE_FORMATS = (1, 2, 3)
CHECKSUMMED_FORMAT = 3
MAX_HEADER_BYTES = 4096
FLAT_PLAN = IndexPlan(IndexKind.flat)
# A file behind the database is caught up on load from the catalog's change log, which a save
# trims. Rewriting the whole file for every delete cost 2 GB of writes per image at a million
# vectors, so a delete or a search saves it again only once the log since the file's
# generation is this share of what it holds, or this many changes (an index run always does).
REPLAY_SHARE = 0.01
REPLAY_FLOOR = 1_000


def replay_limit(count: int) -> int:
    """How many logged changes an index of `count` vectors is left behind by before it is saved."""
    return max(REPLAY_FLOOR, int(REPLAY_SHARE * count))


def replay_is_cheap(changes: int | None, added: bool, count: int) -> bool:
    """Whether a file `changes` logged changes behind (None: further than the log reaches), of
    an index of `count` vectors, may be left so and caught up on load. Not when the log holds
    an added vector (`added`): only an index run that died before its save leaves one, and
    adding to an HNSW graph on every load costs what a save once does not."""
    return changes is not None and not added and changes <= replay_limit(count)


def saved_count(header: dict[str, Any]) -> int:
    """The vectors a saved index holds, as its header says (0 where it does not: older files)."""
    try:
        return int(header.get("count", 0))
    except (ValueError, TypeError):
        return 0


def read_header(path: Path) -> dict[str, Any] | None:
    """The header of a saved index (generation, kind, tuning), reading only its start."""
    try:
        with open(path, "rb") as f:
            return header_from(f)
    except OSError:
        return None


def header_from(file: BinaryIO) -> dict[str, Any] | None:
    """The header at the start of an open index file, which is left just after it (where the
    FAISS bytes begin); None if it is not a readable pixsift index header."""
    if file.read(len(MAGIC)) != MAGIC:
        return None
    line = file.readline(MAX_HEADER_BYTES)
    try:
        header = json.loads(line)
        if not isinstance(header, dict) or header.get("format") not in READABLE_FORMATS:
            return None
        int(header["generation"])
    except (ValueError, KeyError, TypeError):
        return None
    return header if line.endswith(b"\n") else None


def read_generation(path: Path) -> int | None:
    """The generation stamped in a saved index, reading only its header; None if unreadable."""
    header = read_header(path)
    return None if header is None else int(header["generation"])


@dataclass(frozen=True)
class IndexMeta:
    """What the header records beside the FAISS bytes: how the index was built and tuned."""

    plan: IndexPlan = FLAT_PLAN
    trained_count: int = 0  # vectors when it was built: the measure of drift
    search_param: int = 0  # nprobe (ivfpq) or efSearch (hnsw), tuned for `recall`
    recall: float | None = None  # recall@10 measured against exact search when tuned
    rerank: int = 0  # candidates per result re-ranked exactly (ivfpq)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "trained_count": self.trained_count,
            "search_param": self.search_param,
            "recall": self.recall,
            "rerank": self.rerank,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexMeta:
        if "plan" not in data:
            return cls()
        recall = data.get("recall")
        return cls(
            plan=IndexPlan.from_dict(data["plan"]),
            trained_count=int(data.get("trained_count", 0)),
            search_param=int(data.get("search_param", 0)),
            recall=None if recall is None else float(recall),
            rerank=int(data.get("rerank", 0)),
        )
