"""The app factory: one Library and its job manager shared by every request thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Response
from starlette.concurrency import run_in_threadpool

from pixsift import __version__
from pixsift.library import Library
from pixsift.server import admin_routes, image_routes, search_routes
from pixsift.server.auth import require_read_access
from pixsift.server.body_deadline import BodyDeadlineMiddleware
from pixsift.server.errors import AsciiJSONResponse, install_error_handlers
from pixsift.server.head import HeadAsGetMiddleware
from pixsift.server.jobs import JobManager
from pixsift.server.limits import BodyLimitMiddleware
from pixsift.server.query_params import single_valued_query
from pixsift.server.schemas import Health
from pixsift.server.settings import ServerSettings
from pixsift.server.stopping import StopAnswersMiddleware
from pixsift.server.uploads import UploadSlots

log = logging.getLogger("pixsift.server")

DESCRIPTION = """Semantic image search over one pixsift library: text search, "more like
this", recommendations from examples, and background indexing.

Reads are open on loopback; writes (`POST /index`, `DELETE /jobs/{id}`, `DELETE /images/{id}`)
need the API key in the `X-API-Key` header, and so does everything when the service listens
beyond loopback."""


# On a stop, a running index job is cancelled and given this long to commit the batch under
# way and save the search index (docker stop kills after 10 s, requests have 5 of them first).
JOB_STOP_WAIT_S = 5


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        # A forced stop (Ctrl-C again while requests finish) skips the shutdown, and this is
        # cancelled as the event loop ends: the job must still stop before the library is
        # closed under it, and a stop asked for twice is no error to log with a traceback.
        # Nothing is served any more, so waiting on the loop holds no one up.
        app.state.jobs.stop(JOB_STOP_WAIT_S)
        return
    await run_in_threadpool(app.state.jobs.stop, JOB_STOP_WAIT_S)


def create_app(library: Library, settings: ServerSettings | None = None) -> FastAPI:
    """A FastAPI app serving `library`. The caller owns the library and closes it after."""
    settings = settings or ServerSettings()
    library.max_pixels = settings.max_pixels  # query images from clients stay below it
    app = FastAPI(
        title="pixsift",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=AsciiJSONResponse,
        lifespan=_lifespan,
        dependencies=[Depends(single_valued_query)],  # every route's, before its own
    )
    app.state.library = library
    app.state.settings = settings
    app.state.jobs = JobManager(library)
    app.state.uploads = UploadSlots(settings.max_concurrent_uploads)
    install_error_handlers(app)
    # POST /similar: room for an upload at the limit in base64 or multipart; every other body
    # is JSON and has a cap of its own, far smaller (limits.MAX_JSON_BYTES).
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes * 4 // 3 + 64 * 1024,
        upload_limit=settings.max_upload_bytes,
    )
    # Every body, JSON or image, within the same time limits; outside the cap on sizes, so that
    # its refusals close their connection too (a body not all read must not keep one open).
    app.add_middleware(BodyDeadlineMiddleware, timeouts=settings.upload_timeouts)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(StopAnswersMiddleware)  # outermost: a cancel from anywhere inside

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["service"],
        responses={503: {"model": Health, "description": 'The search index is still loading: `"loading"`'}},
    )
    async def healthz(response: Response) -> Health:
        """Whether the service is up (no key needed, for load balancers and monitors): `ok`,
        or 503 `loading` while it loads the search index at start (searches would wait)."""
        # async, on the event loop: it reads one attribute, and must answer even while every
        # worker thread waits for a long load or catch-up of the index.
        if library.loaded_index().loading:
            response.status_code = 503
            return Health(status="loading")
        return Health(status="ok")

    protected = APIRouter(dependencies=[Depends(require_read_access)])
    protected.include_router(search_routes.router)
    protected.include_router(image_routes.router)
    protected.include_router(admin_routes.router)
    app.include_router(protected)
    return app
