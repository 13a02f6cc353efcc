"""Plain records the catalog hands out, so callers never hold ORM objects or sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class KnownFile:
    """What the catalog knows about one path, enough to decide whether to re-index it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    has_vector: bool
    error: str | None
    error_retry: bool = False  # the error was a failure to read the file: retry it


@dataclass(frozen=True)
class StoredEmbedding:
    """A stored vector (raw float32 bytes) with the metadata of the image it was made from."""

    vector: bytes
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """An image's stored metadata. `error` says why its file could not be indexed (it then has
    no vector, and its size and format may be unknown); None when it was indexed."""

    id: int
    path: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    format: str | None
    indexed_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class ImageCriteria:
    """What a search filter asks of an image's record: inside `folder` (recursively), in one
    of `formats`, at least `min_width` by `min_height` pixels, taken at or after `taken_after`
    and before `taken_before` ("YYYY-MM-DD HH:MM:SS[.ffffff]", local time; the EXIF date, else
    the file's modification time). A field left as None or () does not restrict."""

    folder: str | None = None
    formats: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    taken_after: str | None = None
    taken_before: str | None = None


@dataclass(frozen=True)
class RootInfo:
    """An indexed folder (resolved), how it is walked, when it was added and when an index run
    last went through it whole (None if none has finished yet)."""

    path: str
    include_hidden: bool
    follow_symlinks: bool
    added_at: datetime
    last_indexed_at: datetime | None


@dataclass(frozen=True)
class Failure:
    """A file that could not be indexed, and why (the message the indexer recorded)."""

    path: str
    error: str


@dataclass(frozen=True)
class CatalogCounts:
    """How many images the library knows, by state."""

    total: int
    indexed: int
    failed: int

    @property
    def pending(self) -> int:
        """Known files with neither a vector nor an error (an interrupted run left them)."""
        return self.total - self.indexed - self.failed


@dataclass(frozen=True)
class FreshEmbedding:
    """A vector just computed for an image, with what decoding its file found."""

    image_id: int
    vector: np.ndarray
    content_hash: str
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class VectorDelta:
    """The vector changes between a generation and now, read in one snapshot."""

    generation: int
    removed_ids: np.ndarray
    upserted_ids: np.ndarray
    upserted_vectors: np.ndarray
