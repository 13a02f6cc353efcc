"""The header of a saved search index file, read without importing FAISS.

`vectors.faiss` starts with `MAGIC`, then one line of JSON (format, catalog generation, kind,
tuning, sizes, checksum; from format 4 padded with spaces before its newline), then the FAISS
bytes, then the HNSW labels (see `vector_index.py`). Whether the file is up to date is a
question of its header alone, which the quick query path asks before it loads anything.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pixsift.regular_file import open_regular
from pixsift.storage.index_choice import IndexKind, IndexPlan

MAGIC = b"PIXSIFT-VECTORS\n"
FILE_FORMAT = 4
# format 1: a flat index without the fields added in 2; format 3 adds the checksum, required;
# format 4 checksums the bytes after the header first and the header's fields last, so that
# a save computes it as it streams the FAISS bytes (see `VectorIndex.save`), and pads the
# header line with spaces to the width it reserved before those bytes were written.
READABLE_FORMATS = (1, 2, 3, 4)
CHECKSUMMED_FORMAT = 3
FIELDS_LAST_FORMAT = 4
MAX_HEADER_BYTES = 4096
FLAT_PLAN = IndexPlan(IndexKind.flat)
# A file behind the database is caught up on load from the catalog's change log, which a save
# trims. Rewriting the whole file for every delete cost 2 GB of writes per image at a million
# vectors, so a delete or a search saves it again only once the log since the file's
# generation is this share of what it holds, or this many changes (an index run always does).
REPLAY_SHARE = 0.01
REPLAY_FLOOR = 1_000
# How FAISS begins each kind's bytes: the type's four letters, then its dimension (int32) and
# vector count (int64). The hnsw count is of graph positions, tombstones included.
FAISS_FOURCC = {IndexKind.flat: b"IxM2", IndexKind.hnsw: b"IHNf", IndexKind.ivfpq: b"IxPT"}
FAISS_START = struct.Struct("<4siq")


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
        with open_regular(path) as f:  # a named pipe there is not waited on
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


@dataclass(frozen=True)
class FileCheck:
    """What a look at a saved index file's header and size finds: the header (None when the
    file is missing or its header unreadable) and, when the file cannot hold what the header
    says, why (None when it may: only its checksum, as it is loaded, tells of damage inside)."""

    header: dict[str, Any] | None
    damage: str | None = None
    readable: bool = True  # False: it cannot be opened or read at all (no permission, a folder)


def check_file(path: Path) -> FileCheck:
    """The header of a saved index and what its size and first FAISS bytes say of damage,
    reading neither the rest of the file nor FAISS: at a million vectors the file is GBs."""
    try:
        with open_regular(path) as f:  # a named pipe there is not waited on
            header = header_from(f)
            if header is None or _meta_of(header) is None:
                return FileCheck(None, "its header cannot be read")
            return FileCheck(header, _damage(f, header))
    except FileNotFoundError:
        return FileCheck(None)
    except OSError as error:  # no permission, a folder in its place: what a search cannot load
        return FileCheck(None, f"it cannot be read ({error.strerror or error})", readable=False)


def _meta_of(header: dict[str, Any]) -> IndexMeta | None:
    """The build and tuning a header records; None when its fields are not what they should be."""
    try:
        return IndexMeta.from_dict(header)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _damage(file: BinaryIO, header: dict[str, Any]) -> str | None:
    """Why `file`, left just after `header`, cannot be what the header says (cut short, longer,
    or other FAISS bytes at its start); None when its size and start agree with it."""
    start = file.tell()
    try:
        expected = start + int(header["faiss_bytes"]) + int(header["label_bytes"])
    except KeyError:  # format 1 does not record its sizes
        expected = None
    except (ValueError, TypeError):
        return "its header cannot be read"
    size = os.fstat(file.fileno()).st_size
    if expected is not None and size != expected:
        if size < expected:
            return f"cut short: {size:,} bytes of the {expected:,} its header says"
        return f"{size:,} bytes, more than the {expected:,} its header says"
    kind = IndexMeta.from_dict(header).plan.kind
    head = file.read(FAISS_START.size)
    if len(head) < FAISS_START.size or head[:4] != FAISS_FOURCC[kind]:
        return f"its FAISS data does not begin as a {kind.value} index does"
    _, dim, positions = FAISS_START.unpack(head)
    try:
        return _sizes_differ(header, kind, dim, positions)
    except (ValueError, TypeError):
        return "its header cannot be read"


def _sizes_differ(header: dict[str, Any], kind: IndexKind, dim: int, positions: int) -> str | None:
    """Why the FAISS bytes' dimension and count, `dim` and `positions`, are not the header's."""
    said_dim = int(header.get("dim", dim))
    if kind is IndexKind.hnsw:  # one label per position of the graph, tombstones included
        said = int(header.get("label_bytes", 8 * positions)) // 8
    else:
        said = int(header.get("count", positions))
    if (dim, positions) == (said_dim, said):
        return None
    return f"its FAISS data holds {positions:,} vectors of {dim}, its header says {said:,} of {said_dim}"


@dataclass(frozen=True)
class IndexShape:
    """What the decision to rebuild an index asks of it (`index_lifecycle.rebuild_reason`):
    its kind, size and training. An index in memory gives it (`VectorIndex.shape`), and so does
    a saved file's header alone (`saved_shape`): an index run that changed nothing decides from
    the header, not from a load of the whole file (GBs at a million vectors)."""

    kind: IndexKind
    dim: int
    count: int  # live vectors
    tombstones: int = 0  # hnsw: graph positions of removed vectors
    trained_count: int = 0


def saved_shape(header: dict[str, Any]) -> IndexShape | None:
    """The shape of the index a header describes; None where the header does not say all of it
    (files saved before the vector count was recorded: they are loaded to tell)."""
    try:
        meta = IndexMeta.from_dict(header)
        count = int(header["count"])
        # One 8-byte label per graph position, live or not (the other kinds keep no labels).
        positions = int(header["label_bytes"]) // 8 if meta.plan.kind is IndexKind.hnsw else count
        shape = IndexShape(meta.plan.kind, int(header["dim"]), count, positions - count, meta.trained_count)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return shape if min(shape.count, shape.tombstones, shape.dim) >= 0 else None


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
