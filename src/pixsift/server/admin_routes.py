"""Indexing jobs, health and statistics."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Query, Request

from pixsift.library import Library
from pixsift.server.auth import require_write_access
from pixsift.server.deps import ERRORS, jobs_of, library_of
from pixsift.server.errors import ApiError
from pixsift.server.jobs import HISTORY, Job, JobManager
from pixsift.server.schemas import (
    PATH_MAX,
    Failures,
    IndexBody,
    IndexMemoryView,
    IndexView,
    JobView,
    ModelView,
    RootView,
    Stats,
)
from pixsift.server.settings import FAILURES_DEFAULT, FAILURES_MAX
from pixsift.storage import RootInfo

router = APIRouter(responses=ERRORS)
LibraryDep = Annotated[Library, Depends(library_of)]
JobId = Annotated[str, Path(min_length=1, max_length=64)]
JobsDep = Annotated[JobManager, Depends(jobs_of)]
FailuresLimit = Annotated[
    int, Query(ge=1, le=FAILURES_MAX, description=f"How many failed files, 1 to {FAILURES_MAX}.")
]


def after_param(
    request: Request,
    after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=PATH_MAX,
            description="The `next_after` of the page before: the failures whose path sorts after it.",
        ),
    ] = None,
) -> str | None:
    """`after` as sent, byte for byte: a file name that is not UTF-8 comes back, percent-encoded,
    as the bytes it is (surrogate escapes), where the query parser would make each odd byte a
    replacement character that sorts elsewhere, repeating or skipping failures."""
    if after is None:
        return None
    query = request.scope["query_string"].decode("utf-8", "surrogateescape")
    sent = [value for name, value in parse_qsl(query, errors="surrogateescape") if name == "after"]
    return sent[0] if sent else after  # given once (query_params.py refuses it twice)


def _view(job: Job) -> JobView:
    return JobView(**vars(job))


@router.post(
    "/index",
    response_model=JobView,
    status_code=202,
    tags=["indexing"],
    dependencies=[Depends(require_write_access)],
)
def start_index(jobs: JobsDep, body: IndexBody | None = None) -> JobView:
    """Index folders or files inside the library's roots (all roots when `paths` is empty) in
    the background. One job at a time; poll GET /jobs/{id}. Needs the API key."""
    return _view(jobs.submit(list(body.paths) if body else []))


@router.get("/jobs/{job_id}", response_model=JobView, tags=["indexing"])
def job(jobs: JobsDep, job_id: JobId) -> JobView:
    """An index job's state and progress: phase, steps done of total, and its report at the end."""
    found = jobs.get(job_id)
    if found is None:
        raise _not_found(job_id)
    return _view(found)


def _not_found(job_id: str) -> ApiError:
    return ApiError(
        404,
        "job_not_found",
        f"No index job {job_id}: the service remembers its last {HISTORY} jobs, until it restarts.",
    )


@router.delete(
    "/jobs/{job_id}",
    response_model=JobView,
    status_code=202,
    tags=["indexing"],
    dependencies=[Depends(require_write_access)],
)
def cancel_job(jobs: JobsDep, job_id: JobId) -> JobView:
    """Cancel a queued or running index job: it stops at its next step (after the batch under
    way is committed; what it committed stays) with the state `cancelled`. The answer is the job
    as it is now: a job past its last step ends as it would have, `succeeded` say, with
    `cancel_too_late: true`. Needs the API key."""
    cancelled = jobs.cancel(job_id)
    if cancelled is None:
        raise _not_found(job_id)
    return _view(cancelled)


@router.get("/failures", response_model=Failures, tags=["indexing"])
def failures(
    library: LibraryDep,
    after: Annotated[str | None, Depends(after_param)],
    limit: FailuresLimit = FAILURES_DEFAULT,
) -> Failures:
    """The files index runs could not read, with why, by path, a page at a time: pass each
    answer's `next_after` as `after` for the next page. A page is never repeated or skipped
    while an index job adds or clears failures meanwhile (those before the cursor are not
    seen again); `GET /stats` counts them all (`failed`)."""
    return Failures.of(library.failures(limit + 1, after=after), limit)


def _root_view(root: RootInfo, missing_roots: tuple[str, ...]) -> RootView:
    """An indexed folder as `pixsift status --format json` lists it, under the same names."""
    return RootView(
        path=root.path,
        include_hidden=root.include_hidden,
        follow_symlinks=root.follow_symlinks,
        added_at=root.added_at,
        last_indexed_at=root.last_indexed_at,
        missing=root.path in missing_roots,
    )


@router.get("/stats", response_model=Stats, tags=["service"])
def stats(library: LibraryDep, jobs: JobsDep) -> Stats:
    """How many images, which model, which roots, the search index file (how fresh, its kind
    and tuning), what is running."""
    status = library.status()
    loaded = library.loaded_index()  # at once, even while a load or catch-up holds the index
    in_memory = loaded.summary
    model = status.model
    running = jobs.running()
    return Stats(
        images=status.counts.total,
        indexed=status.counts.indexed,
        failed=status.counts.failed,
        pending=status.counts.pending,
        model=None
        if model is None
        else ModelView(
            name=model.spec.name,
            pretrained=model.spec.pretrained,
            embed_dim=model.embed_dim,
            fingerprint=model.fingerprint,
        ),
        roots=[_root_view(root, status.missing_roots) for root in status.roots],
        generation=status.generation,
        index_file=status.index_file.state,
        index_damage=status.index_file.damage,
        index=IndexView.model_validate(status.index_file.as_json()),
        index_in_memory=None if in_memory is None else IndexMemoryView.model_validate(in_memory.as_json()),
        index_loading=loaded.loading,
        disk_bytes=status.disk_bytes,
        running_job=None if running is None else running.id,
    )
