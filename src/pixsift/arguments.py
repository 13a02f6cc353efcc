"""Checks of the arguments `Library` takes, done before any work: what a caller may get wrong
(a count below 1, a NaN threshold, a vector with no direction, an unknown index kind) is
refused with a message written for them, not met later as a numpy or FAISS error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from pixsift.config import MAX_BATCH_SIZE, MAX_WORKERS
from pixsift.errors import InvalidOptionError, QueryError
from pixsift.indexer.roots import new_root
from pixsift.models import resolve_model_spec
from pixsift.models.naming import refuse_empty_names
from pixsift.search import SearchFilters
from pixsift.search.filters import checked_filters
from pixsift.search.finite import is_finite, shown


def run_sizes(batch_size: int | None, workers: int | None) -> tuple[int | None, int | None]:
    """The batch size and worker count as plain ints (a numpy integer is one; None: the default),
    refusing one outside what the command line takes: a batch of 0 images would index nothing
    and still report a complete run, and one of 100,000 would hold that many decoded images in
    memory at once, four times over."""
    return _run_size("batch_size", batch_size, MAX_BATCH_SIZE), _run_size("workers", workers, MAX_WORKERS)


def _run_size(name: str, value: int | None, most: int) -> int | None:
    if value is None:
        return None
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not whole or not 1 <= value <= most:
        raise InvalidOptionError(f"{name} must be a whole number from 1 to {most}, not {value!r}.")
    return int(value)


def check_k(k: int) -> None:
    """Refuse a result count that is not a whole number of at least 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k (how many results) must be a whole number of at least 1, not {k!r}.")


def check_image_id(image_id: int | np.integer) -> int:
    """An image id as the catalog keys it; a numpy integer is one. A string or a float is
    refused rather than looked up: "3" would be reported as no image, though image 3 exists."""
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
        raise QueryError(f"Image ids are whole numbers, not {image_id!r}.")
    return int(image_id)


def excluded_ids(ids: int | np.integer | Iterable[int | np.integer]) -> set[int]:
    """The ids never to return, as whole numbers; one id may be given alone. A string, a
    float or None is refused: int() would have turned 2.7 into image 2 and "a" into a
    ValueError that is no PixsiftError."""
    if isinstance(ids, (int, np.integer)):
        return {check_image_id(ids)}
    if isinstance(ids, (str, bytes)):
        raise QueryError(f"Ids to exclude are whole numbers, not {ids!r}.")
    try:
        items = list(ids)
    except TypeError:
        raise QueryError(f"Ids to exclude are whole numbers, not {ids!r}.") from None
    return {check_image_id(image_id) for image_id in items}


def check_diversity(diversity: float) -> None:
    """Refuse a diversity that is not a number from 0 to 1 (NaN included)."""
    number = isinstance(diversity, (int, float, np.integer, np.floating)) and not isinstance(diversity, bool)
    if not number or not 0.0 <= diversity <= 1.0:
        raise QueryError(f"diversity must be a number from 0 to 1, not {diversity!r}.")


def check_min_score(min_score: float | None) -> None:
    """Refuse a NaN or infinite threshold: NaN compares false with every score, so it would
    silently return nothing. Worded for both faces: min_score to the API, --min-score on the
    command line."""
    if min_score is None:
        return
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.floating)):
        raise QueryError(f"The minimum score must be a number, not {min_score!r}.")
    if not is_finite(min_score):
        raise QueryError(f"The minimum score must be a finite number, not {shown(min_score)}.")


def unit_query_vector(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1, so that scores are cosine similarities as for any query
    (the index holds unit vectors); QueryError for a vector that has no direction.

    Any finite vector not all zeros has one, whatever its scale: it is read in float64 and
    divided by its largest value before its length is taken, so neither the length (of 1e38s
    in float32, 1e300s in float64) overflows nor the squares (of 1e-40s) vanish.
    """
    try:
        query = np.asarray(vector, dtype=np.float64)
    except OverflowError:  # Python ints beyond float64
        raise QueryError("A query vector holds numbers too large to be floating-point numbers.") from None
    except (TypeError, ValueError):
        raise QueryError("A query vector must be a sequence of numbers.") from None
    if query.ndim != 1:
        raise QueryError(f"A query vector must be one-dimensional, not of shape {query.shape}.")
    if not np.all(np.isfinite(query)):
        raise QueryError("A query vector holds values that are not finite numbers (NaN or infinity).")
    largest = float(np.max(np.abs(query), initial=0.0))
    if largest == 0.0:
        raise QueryError("A query vector of length zero has no direction to search in.")
    scaled = query / largest  # values in [-1, 1], one of them ±1: a length in [1, sqrt(dim)]
    return np.asarray(scaled / np.linalg.norm(scaled), dtype=np.float32)


def index_type_setting(index_type: str | None) -> str | None:
    from pixsift.storage.index_choice import IndexKind

    if index_type is None:
        return None
    names = ["auto", *(kind.value for kind in IndexKind)]
    # Any case: FAISS's docs (and so users) write HNSW, IVFPQ and Flat; stored in lower case.
    if not isinstance(index_type, str) or index_type.lower() not in names:
        raise QueryError(f"Index type {index_type!r} is not one of {', '.join(names)}.")
    return index_type.lower()


def memory_budget_setting(budget: str | int | None) -> int | None:
    from pixsift.storage.index_choice import parse_memory_budget

    if budget is None:
        return None
    return parse_memory_budget(str(budget))


def merge_under(filters: SearchFilters | None, under: str | os.PathLike[str] | None) -> SearchFilters | None:
    """`filters` with the older `under=` argument folded in."""
    filters = checked_filters(filters)
    if under is None:
        return filters
    if filters is not None and filters.under is not None:
        raise QueryError("Give the folder once: either under= or filters.under, not both.")
    return (filters or SearchFilters()).with_under(os.fspath(under))


def check_index_arguments(
    roots: Sequence[str | os.PathLike[str]], model: str | None, pretrained: str | None
) -> None:
    """Raise now what `Library.index` would refuse in its folders and model names, so a
    command can check them before it creates a library (weights are not loaded here)."""
    for root in roots:
        new_root(root, include_hidden=False, follow_symlinks=False)
    if model is not None:
        resolve_model_spec(model, pretrained)
    else:  # weights alone are for the library's own architecture, which `index` knows
        refuse_empty_names(model, pretrained)
