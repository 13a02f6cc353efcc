"""The header of a saved search index file, read without importing FAISS.

`vectors.faiss` starts with `MAGIC`, then one line of JSON (format, catalog generation, kind,
tuning), then the FAISS bytes (see `vector_index.py`). Whether the file is up to date is a
question of its header alone, which the quick query path asks before it loads anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"PIXSIFT-VECTORS\n"
FILE_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1: a flat index without the fields added in 2
MAX_HEADER_BYTES = 4096


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
