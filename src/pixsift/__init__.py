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
    "BusyError": "pixsift.errors",
    "EmptyLibraryError": "pixsift.errors",
    "ExportCacheError": "pixsift.errors",
    "ImageError": "pixsift.errors",
    "ImageFileMissingError": "pixsift.errors",
    "ImageNotFoundError": "pixsift.errors",
    "ImageTooLargeError": "pixsift.errors",
    "InvalidOptionError": "pixsift.errors",
    "InvalidPathError": "pixsift.errors",
    "LibraryBusyError": "pixsift.errors",
    "LibraryClosedError": "pixsift.errors",
    "LibraryFormatError": "pixsift.errors",
    "LibraryNotFoundError": "pixsift.errors",
    "LibraryReadError": "pixsift.errors",
    "LibraryWriteError": "pixsift.errors",
    "ModelError": "pixsift.errors",
    "ModelMismatchError": "pixsift.errors",
    "PixsiftError": "pixsift.errors",
    "QueryError": "pixsift.errors",
    "IndexInterrupted": "pixsift.indexer",
    "CopiesOfMissingRoot": "pixsift.indexer",
    "InterruptedAfterCommit": "pixsift.storage.interrupts",
    "IndexProgress": "pixsift.indexer",
    "IndexReport": "pixsift.indexer",
    "Library": "pixsift.library",
    "LibraryStatus": "pixsift.status",
    "IndexSummary": "pixsift.status",
    "LoadedIndex": "pixsift.storage.index_keeper",
    "IndexFileState": "pixsift.status",
    "EvalReport": "pixsift.evaluation",
    "QueryOutcome": "pixsift.evaluation",
    "RocchioWeights": "pixsift.search.recommend",
    "IndexThresholds": "pixsift.storage.index_choice",
    "ModelRecord": "pixsift.models",
    "ModelSpec": "pixsift.models",
    "QueryTerm": "pixsift.search",
    "SearchFilters": "pixsift.search",
    "SearchResult": "pixsift.search",
    "search_once": "pixsift.search.quick",
    "Failure": "pixsift.storage",
    "CatalogCounts": "pixsift.storage",
    "ImageInfo": "pixsift.storage",
    "RootInfo": "pixsift.storage",
    "HealthReport": "pixsift.doctor",
    "Problem": "pixsift.doctor",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixsift' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The lazily imported names too, for completion in an interactive shell or an editor."""
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from pixsift.doctor import HealthReport, Problem
    from pixsift.errors import (
        AccessDeniedError,
        BusyError,
        EmptyLibraryError,
        ExportCacheError,
        ImageError,
        ImageFileMissingError,
        ImageNotFoundError,
        ImageTooLargeError,
        InvalidOptionError,
        InvalidPathError,
        LibraryBusyError,
        LibraryClosedError,
        LibraryFormatError,
        LibraryNotFoundError,
        LibraryReadError,
        LibraryWriteError,
        ModelError,
        ModelMismatchError,
        PixsiftError,
        QueryError,
    )
    from pixsift.evaluation import EvalReport, QueryOutcome
    from pixsift.indexer import CopiesOfMissingRoot, IndexInterrupted, IndexProgress, IndexReport
    from pixsift.library import Library
    from pixsift.models import ModelRecord, ModelSpec
    from pixsift.search import QueryTerm, SearchFilters, SearchResult
    from pixsift.search.quick import search_once
    from pixsift.search.recommend import RocchioWeights
    from pixsift.status import IndexFileState, IndexSummary, LibraryStatus
    from pixsift.storage import CatalogCounts, Failure, ImageInfo, RootInfo
    from pixsift.storage.index_choice import IndexThresholds
    from pixsift.storage.index_keeper import LoadedIndex
    from pixsift.storage.interrupts import InterruptedAfterCommit

__all__ = [
    "AccessDeniedError",
    "BusyError",
    "CatalogCounts",
    "CopiesOfMissingRoot",
    "EmptyLibraryError",
    "EvalReport",
    "ExportCacheError",
    "Failure",
    "HealthReport",
    "ImageError",
    "ImageFileMissingError",
    "ImageInfo",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "IndexFileState",
    "IndexInterrupted",
    "IndexProgress",
    "IndexReport",
    "IndexSummary",
    "IndexThresholds",
    "InterruptedAfterCommit",
    "InvalidOptionError",
    "InvalidPathError",
    "Library",
    "LibraryBusyError",
    "LibraryClosedError",
    "LibraryFormatError",
    "LibraryNotFoundError",
    "LibraryReadError",
    "LibraryStatus",
    "LibraryWriteError",
    "LoadedIndex",
    "ModelError",
    "ModelMismatchError",
    "ModelRecord",
    "ModelSpec",
    "PixsiftError",
    "Problem",
    "QueryError",
    "QueryOutcome",
    "QueryTerm",
    "RocchioWeights",
    "RootInfo",
    "SearchFilters",
    "SearchResult",
    "__version__",
    "search_once",
]
