"""Shared request plumbing: the library and job manager of the app, and filters from a query."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from pixsift.library import Library
from pixsift.search import SearchFilters
from pixsift.server.jobs import JobManager
from pixsift.server.schemas import PATH_MAX, ErrorBody, Filters

# Documented error answers, shared by every route (5xx: the server's model, disk or database;
# 408: a request body too slow to arrive, which any route may be sent).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 408, 409, 413, 422, 500, 503)
}


def library_of(request: Request) -> Library:
    library: Library = request.app.state.library
    return library


def jobs_of(request: Request) -> JobManager:
    jobs: JobManager = request.app.state.jobs
    return jobs


def core_filters(library: Library, filters: Filters) -> SearchFilters:
    """The core's filters; a folder must lie inside the roots, so nothing else can be probed.

    Once checked, the folder goes to the core as written: images found through a link that a
    root follows are stored under the link's path, which resolving it would lose.
    """
    if filters.under is not None:
        library.resolve_inside_roots(filters.under)
    return filters.to_core()


def filter_params(
    under: Annotated[str | None, Query(min_length=1, max_length=PATH_MAX)] = None,
    format: Annotated[list[str] | None, Query(max_length=16)] = None,
    min_width: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    min_height: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    after: Annotated[datetime | None, Query()] = None,
    before: Annotated[datetime | None, Query()] = None,
) -> Filters:
    """Filters given as query parameters (`format` may repeat)."""
    try:
        return Filters(
            under=under,
            formats=format or [],
            min_width=min_width,
            min_height=min_height,
            after=after,
            before=before,
        )
    except ValidationError as exc:
        raise RequestValidationError([_as_query_error(error) for error in exc.errors()]) from None


# The Filters field each query parameter fills, where the names differ.
_QUERY_NAMES = {"formats": "format"}


def _as_query_error(error: Any) -> Any:
    """An error of the Filters model, located at the query parameter that was given (the model
    calls it `formats`, the client sent `format`), as FastAPI locates its own parameters."""
    field, *rest = error.get("loc") or ("",)
    return {**error, "loc": ("query", _QUERY_NAMES.get(str(field), field), *rest)}
