"""Searches that arrive while the service loads its search index wait for it on the event loop.

A search route is sync: FastAPI runs it in one of anyio's worker threads (40), where it would
block on the index keeper's lock for as long as the load lasts (minutes for a large index far
behind its file). Forty such searches would hold every worker thread, and every other sync
route (GET /stats, GET /images/{id}, thumbnails, POST /index) would wait behind them. This
dependency is async: it waits on the event loop, holding no thread, up to the service's
`load_wait_s`, then lets the search go on, or answers 503 `index_loading` with Retry-After.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request

from pixsift.library import Library
from pixsift.server.errors import ApiError
from pixsift.server.settings import ServerSettings

# How often a waiting request looks again: a search goes on within this of the load's end, and
# hundreds waiting at once cost the event loop a few thousand cheap attribute reads a second.
POLL_S = 0.05
# Told to a client refused while the index loads. A load that outlasted the wait takes minutes;
# a retry also waits up to `load_wait_s` on its own, so a few seconds between tries is plenty.
RETRY_AFTER_S = 5
LOADING_MESSAGE = (
    "The service is loading its search index; retry after Retry-After seconds "
    "(GET /healthz answers 200 once it is ready)."
)


async def index_loaded(request: Request) -> None:
    """Go on once the search index is in memory; while it loads, wait up to `load_wait_s`
    without a worker thread, then refuse with 503 `index_loading`.

    A client that hangs up meanwhile is not noticed: asking the connection would consume the
    start of a body that POST /similar reads itself. The wait is bounded either way."""
    library: Library = request.app.state.library
    if not library.loaded_index().loading:
        return
    settings: ServerSettings = request.app.state.settings
    deadline = time.monotonic() + settings.load_wait_s
    while library.loaded_index().loading:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(503, "index_loading", LOADING_MESSAGE, headers={"Retry-After": str(RETRY_AFTER_S)})
        await asyncio.sleep(min(POLL_S, left))
