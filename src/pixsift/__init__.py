"""pixsift: semantic image search. Index photo folders with CLIP, search them by text or image.

from pixsift import Library
with Library.open() as lib:
    lib.index("~/Photos")
    for hit in lib.search("dog running on a beach", k=10):
        print(hit.rank, hit.score, hit.path)
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names are imported on first use, so `import pixsift` (and `pixsift --help`) stays instant.
_EXPORTS = {
    "AccessDeniedError": "pixsift.errors",
    "EmptyLibraryError": "pixsift.errors",
    "ImageError": "pixsift.errors",
    "ImageFileMissingError": "pixsift.errors",
    "ImageNotFoundError": "pixsift.errors",
    "ImageTooLargeError": "pixsift.errors",
    "InvalidOptionError": "pixsift.errors",
    "InvalidPathError": "pixsift.errors",
    "LibraryBusyError": "pixsift.errors",
    "LibraryFormatError": "pixsift.errors",
    "LibraryNotFoundError": "pixsift.errors",
    "LibraryWriteError": "pixsift.errors",
    "ModelError": "pixsift.errors",
    "ModelMismatchError": "pixsift.errors",
    "PixsiftError": "pixsift.errors",
    "QueryError": "pixsift.errors",
    "IndexInterrupted": "pixsift.indexer",
    "IndexProgress": "pixsift.indexer",
    "IndexReport": "pixsift.indexer",
    "Library": "pixsift.library",
    "LibraryStatus": "pixsift.status",
    "IndexSummary": "pixsift.status",
    "IndexThresholds": "pixsift.storage.index_choice",
    "ModelRecord": "pixsift.models",
    "ModelSpec": "pixsift.models",
    "QueryTerm": "pixsift.search",
    "SearchFilters": "pixsift.search",
    "SearchResult": "pixsift.search",
    "search_once": "pixsift.search.quick",
    "Failure": "pixsift.storage",
    "HealthReport": "pixsift.doctor",
    "Problem": "pixsift.doctor",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixsift' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from pixsift.doctor import HealthReport, Problem
    from pixsift.errors import (
        AccessDeniedError,
        EmptyLibraryError,
        ImageError,
        ImageFileMissingError,
        ImageNotFoundError,
        ImageTooLargeError,
        InvalidOptionError,
        InvalidPathError,
        LibraryBusyError,
        LibraryFormatError,
        LibraryNotFoundError,
        LibraryWriteError,
        ModelError,
        ModelMismatchError,
        PixsiftError,
        QueryError,
    )
    from pixsift.indexer import IndexInterrupted, IndexProgress, IndexReport
    from pixsift.library import Library
    from pixsift.models import ModelRecord, ModelSpec
    from pixsift.search import QueryTerm, SearchFilters, SearchResult
    from pixsift.search.quick import search_once
    from pixsift.status import IndexSummary, LibraryStatus
    from pixsift.storage import Failure
    from pixsift.storage.index_choice import IndexThresholds

__all__ = [
    "AccessDeniedError",
    "EmptyLibraryError",
    "Failure",
    "HealthReport",
    "ImageError",
    "ImageFileMissingError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "IndexInterrupted",
    "IndexProgress",
    "IndexReport",
    "IndexSummary",
    "IndexThresholds",
    "InvalidOptionError",
    "InvalidPathError",
    "Library",
    "LibraryBusyError",
    "LibraryFormatError",
    "LibraryNotFoundError",
    "LibraryStatus",
    "LibraryWriteError",
    "ModelError",
    "ModelMismatchError",
    "ModelRecord",
    "ModelSpec",
    "PixsiftError",
    "Problem",
    "QueryError",
    "QueryTerm",
    "SearchFilters",
    "SearchResult",
    "__version__",
    "search_once",
]
