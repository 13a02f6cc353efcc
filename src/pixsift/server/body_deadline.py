"""A time limit on every request body, enforced while it streams in (pure ASGI middleware).

uvicorn waits for a body for as long as the client keeps its connection open: a client that
sends its headers and then nothing, or a byte now and then, held the connection and what its
body had sent so far for ever (an upload also held one of the few upload slots). Every body,
JSON or image, must now send something every `idle_s` seconds and be all in `total_s` seconds
after the service began to read it, or it is answered 408 `upload_timeout`.

The clock starts at the first read, not at the request's arrival: POST /similar reads its
body only once it has an upload slot and the search index, and that wait is not the client's.

An answer sent before its request's body is all in (this 408, a 413, a route that reads no
body) closes the connection: uvicorn would keep it open to skip the rest of the body, and a
client sending a byte now and then after the answer held it for ever (each byte cancels
uvicorn's keep-alive timer, which is only started again by a next request). Before it closes,
the rest of the body is read and dropped for a few seconds (a "lingering close", as web
servers do): a connection closed with bytes unread is reset, and a client still sending its
body, as most send it whole before they read, got the reset instead of the answer.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixsift.server.limits import BodyError, refuse
from pixsift.server.settings import UploadTimeouts

CLOSE = (b"connection", b"close")
# How long the rest of a body is read and dropped after an early answer, in all and between
# two reads: enough for a client on a fast link to send a body at the size limits and read
# the answer, while one trickling its body holds the connection no longer than that.
LINGER_S = 10.0
LINGER_IDLE_S = 2.0


class BodyTimeoutError(BodyError):
    def __init__(self, message: str) -> None:
        super().__init__(408, "upload_timeout", message)


def timed_out(timeouts: UploadTimeouts, *, whole: bool) -> BodyTimeoutError:
    """The refusal, naming the limit hit: the idle one, or the one on a whole body."""
    if whole:
        what = f"was not all sent within {timeouts.total_s:g} seconds (the limit on a whole request body)"
    else:
        what = f"sent nothing for {timeouts.idle_s:g} seconds"
    return BodyTimeoutError(f"The request body {what} and was given up; send it again.")


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, timeouts: UploadTimeouts) -> None:
        self.app = app
        self.timeouts = timeouts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeouts = self.timeouts
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:  # past the body: a wait for a disconnect (a streamed answer) is no body's
                return await receive()
            now = loop.time()
            deadline = now + timeouts.total_s if deadline is None else deadline
            left = deadline - now
            try:
                event = await asyncio.wait_for(receive(), min(timeouts.idle_s, max(left, 0)))
            except TimeoutError:
                raise timed_out(timeouts, whole=left <= timeouts.idle_s) from None
            complete = event["type"] != "http.request" or not event.get("more_body", False)
            return event

        async def closing_send(event: Message) -> None:
            nonlocal started, complete
            early = not complete and _has_body(scope)
            if event["type"] == "http.response.start":
                started = True
                if early:
                    event = {**event, "headers": [*event.get("headers", []), CLOSE]}
            elif early and event["type"] == "http.response.body" and not event.get("more_body", False):
                # uvicorn closes the connection with the last part of the answer: the answer
                # goes out first, then the rest of the body is read, then the close.
                await send({**event, "more_body": True})
                await _drop_rest_of_body(receive)
                complete = True
                event = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(event)

        try:
            await self.app(scope, timed_receive, closing_send)
        except BodyTimeoutError as exc:  # raised where no error handler of the app saw it
            if not started:
                await refuse(closing_send, exc.status_code, exc.code, str(exc.detail))


async def _drop_rest_of_body(receive: Receive) -> None:
    """Read what is left of the request's body and drop it, for at most `LINGER_S` seconds
    and while it keeps coming (`LINGER_IDLE_S`): then the connection closes cleanly."""
    loop = asyncio.get_running_loop()
    until = loop.time() + LINGER_S
    while (left := until - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(receive(), min(LINGER_IDLE_S, left))
        except TimeoutError:
            return
        if event["type"] != "http.request" or not event.get("more_body", False):
            return


def _has_body(scope: Scope) -> bool:
    """Whether the request's headers announce a body (HTTP/1.1 has no other way to send one)."""
    headers = dict(scope.get("headers", []))
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or length not in (b"", b"0")
