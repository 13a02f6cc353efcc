"""The images a search filter allows, as the ids FAISS may return: one catalog query per form
of the folder to search under (as written and resolved), for the other filters as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixsift.errors import InvalidPathError, given_path
from pixsift.search.filters import SearchFilters, checked_filters
from pixsift.storage.records import ImageCriteria

if TYPE_CHECKING:
    from pixsift.storage import Catalog

# The largest integer SQLite binds. A larger size filter (a mistyped --min-width) is one no
# image meets, as this is: binding it raised an OverflowError from inside SQLite.
SQLITE_INT_MAX = 2**63 - 1


def filter_criteria(filters: SearchFilters | None) -> list[ImageCriteria]:
    """`filters` as what the catalog checks: one set of criteria per form of the folder to
    search under (as written and resolved); none when nothing is filtered."""
    filters = checked_filters(filters)
    if filters is None or filters.is_empty:
        return []
    folders = [None] if filters.under is None else _existing_folders(filters.under)
    taken_after, taken_before = filters.taken_range()
    return [
        ImageCriteria(
            folder=folder,
            formats=filters.format_names(),
            min_width=_bindable(filters.min_width),
            min_height=_bindable(filters.min_height),
            taken_after=taken_after,
            taken_before=taken_before,
        )
        for folder in folders
    ]


def allowed_ids(catalog: Catalog, criteria: Sequence[ImageCriteria]) -> np.ndarray | None:
    """The ids a search may return under `criteria` (any of them), or None when nothing is
    filtered."""
    if not criteria:
        return None
    found = [catalog.ids_matching(one) for one in criteria]
    return found[0] if len(found) == 1 else np.unique(np.concatenate(found))


def _bindable(pixels: int | None) -> int | None:
    """A size filter as SQLite can bind it: one beyond its integers is cut to the largest,
    which no image reaches either, so the filter still matches nothing."""
    return None if pixels is None else min(pixels, SQLITE_INT_MAX)


def _existing_folders(under: str | os.PathLike[str]) -> list[str]:
    """The folder to search under as written (absolute) and resolved, when they differ:
    files found through a link that a root follows are stored under the link's path, and
    a root given through a link is stored resolved."""
    folder = Path(under).expanduser()
    try:
        is_folder, exists = folder.is_dir(), folder.exists()
    except (OSError, ValueError):
        is_folder = exists = False
    if exists and not is_folder:  # an image's own path, say: not "does not exist", since it does
        raise InvalidPathError(
            f"The folder to search under, {given_path(under)}, is a file, not a folder; "
            "give the folder that holds it."
        )
    if not is_folder:
        raise InvalidPathError(f"The folder to search under, {given_path(under)}, does not exist.")
    return list(dict.fromkeys([os.path.abspath(folder), str(folder.resolve())]))
