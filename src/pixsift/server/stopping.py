"""Requests still under way when a stop's grace has run out: answered 503, not 500.

On SIGTERM or Ctrl-C uvicorn lets requests under way finish for a while (run.SHUTDOWN_GRACE_S),
then cancels their tasks: that is the only thing that cancels a request's task. The cancel
went up through the app to uvicorn, which logged it as an error in the app, with a traceback
of 60 lines, and sent the client a plain-text 500. Caught here, outermost, the client gets the
service's JSON error shape and a status that tells it to try again, and the log keeps uvicorn's
own line ("Cancel 1 running task(s), timeout graceful shutdown exceeded") and the access line.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixsift.server.limits import refuse

RETRY_AFTER_S = 5  # a restart takes a few seconds; the model loads before the service listens
MESSAGE = "The service is stopping and could not finish this request; send it again once it is back."


class StopAnswersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            # Not raised again: the task ends here, as a request answered. A second cancel (the
            # event loop closing while the answer waits on a client that reads nothing) ends it.
            if not started:
                with contextlib.suppress(asyncio.CancelledError):
                    await _stopping(send)


async def _stopping(send: Send) -> None:
    retry = (b"retry-after", str(RETRY_AFTER_S).encode())
    await refuse(send, 503, "shutting_down", MESSAGE, [retry, (b"connection", b"close")])
