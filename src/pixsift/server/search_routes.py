"""Search, similar and recommend: each parses its request, calls the library, shapes the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from pixsift.library import Library
from pixsift.search import QueryTerm, SearchResult
from pixsift.search.examples import Example
from pixsift.server.deps import ERRORS, core_filters, filter_params, library_of
from pixsift.server.index_wait import index_loaded
from pixsift.server.schemas import (
    ID_MAX,
    TEXT_MAX,
    BatchResults,
    BatchSearchBody,
    ErrorBody,
    Filters,
    Hit,
    PathExample,
    RecommendBody,
    Results,
    SearchBody,
)
from pixsift.server.settings import K_MAX, ServerSettings
from pixsift.server.uploads import SIMILAR_REQUEST_BODY, UploadSlots, read_query_image

INDEX_LOADING = "The search index is still loading (`index_loading`): try again after Retry-After seconds."
# Every route here needs the search index: while it loads, a request waits for it on the event
# loop (see index_wait), not in a worker thread that other routes need meanwhile.
router = APIRouter(
    responses={**ERRORS, 503: {"model": ErrorBody, "description": INDEX_LOADING}},
    dependencies=[Depends(index_loaded)],
)
LibraryDep = Annotated[Library, Depends(library_of)]
KParam = Annotated[int, Query(ge=1, le=K_MAX, description=f"How many results, 1 to {K_MAX}.")]
MinScoreParam = Annotated[float | None, Query(ge=-1.0, le=1.0, allow_inf_nan=False)]
FiltersParam = Annotated[Filters, Depends(filter_params)]


@router.get("/search", response_model=Results, tags=["search"])
def search_get(
    library: LibraryDep,
    q: Annotated[str, Query(min_length=1, max_length=TEXT_MAX, description="What to look for.")],
    filters: FiltersParam,
    k: KParam = 10,
    min_score: MinScoreParam = None,
) -> Results:
    """Images ranked by similarity to the text `q`."""
    hits = library.search(q, k, min_score=min_score, filters=core_filters(library, filters))
    return Results.of(hits)


@router.post("/search", response_model=Results, tags=["search"])
def search_post(library: LibraryDep, body: SearchBody) -> Results:
    """Images ranked by a text, pulled towards `plus` texts and away from `minus` texts."""
    hits = library.search(
        body.q,
        body.k,
        plus=[QueryTerm(text=t) for t in body.plus],
        minus=[QueryTerm(text=t) for t in body.minus],
        min_score=body.min_score,
        filters=core_filters(library, body.filters),
    )
    return Results.of(hits)


@router.post("/search/batch", response_model=BatchResults, tags=["search"])
def search_batch(library: LibraryDep, body: BatchSearchBody) -> BatchResults:
    """Many text queries in one request and one model call: one result list per query."""
    batches = library.search_many(
        body.queries, body.k, min_score=body.min_score, filters=core_filters(library, body.filters)
    )
    return BatchResults(results=[[Hit.of(r) for r in hits] for hits in batches])


@router.get("/images/{image_id}/similar", response_model=Results, tags=["search"])
def similar_to_indexed(
    library: LibraryDep,
    image_id: Annotated[int, Path(ge=1, le=ID_MAX)],
    filters: FiltersParam,
    k: KParam = 10,
    min_score: MinScoreParam = None,
) -> Results:
    """Images most like an indexed image (itself left out)."""
    hits = library.similar(image_id, k, min_score=min_score, filters=core_filters(library, filters))
    return Results.of(hits)


@router.post(
    "/similar",
    response_model=Results,
    tags=["search"],
    openapi_extra=SIMILAR_REQUEST_BODY,
    responses={
        415: {"model": ErrorBody, "description": "Neither multipart nor JSON."},
        503: {
            "model": ErrorBody,
            "description": f"As many uploads under way as the service takes (`busy`). {INDEX_LOADING}",
        },
    },
)
async def similar_to_upload(
    request: Request,
    library: LibraryDep,
    filters: FiltersParam,
    k: KParam = 10,
    min_score: MinScoreParam = None,
) -> Results:
    """Images most like an image sent with the request: a multipart upload (field `file`) or
    JSON `{"image_base64": ...}`. Size and megapixel limits apply, and a limit on uploads
    handled at once (503 `busy` beyond it: try again after Retry-After seconds)."""
    uploads: UploadSlots = request.app.state.uploads
    with uploads.slot():  # held until the search is done: the body, then the decoded pixels
        settings: ServerSettings = request.app.state.settings
        data = await read_query_image(request, settings.max_upload_bytes)

        def run() -> list[SearchResult]:  # decoding and the model: off the event loop
            return library.similar(data, k, min_score=min_score, filters=core_filters(library, filters))

        return Results.of(await run_in_threadpool(run))


@router.post("/recommend", response_model=Results, tags=["search"])
def recommend(library: LibraryDep, body: RecommendBody) -> Results:
    """More like the positive examples, less like the negative ones (Rocchio), never the
    examples or `exclude` ids; `diversity` > 0 varies the results (MMR)."""
    hits = library.recommend(
        [_example(library, e) for e in body.positive],
        [_example(library, e) for e in body.negative],
        body.k,
        filters=core_filters(library, body.filters),
        exclude=body.exclude,
        diversity=body.diversity,
        min_score=body.min_score,
    )
    return Results.of(hits)


def _example(library: Library, example: int | str | PathExample) -> Example:
    """Ids and texts as they are; a path only once it is known to lie inside the roots, and
    then as written: a file found through a link that its root follows is indexed under the
    link's path, and is only known by it (known examples are left out of the results)."""
    if isinstance(example, PathExample):
        library.resolve_inside_roots(example.path)
        return QueryTerm(image=example.path)
    return example
