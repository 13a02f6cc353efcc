"""A cap on every request body, enforced while it streams in (pure ASGI middleware).

JSON endpoints are bounded by their schemas only once parsed; this stops a client from making
the service read an arbitrarily large body first, whether it declares its length or not.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(upload_limit: int) -> str:
    """What a client is told: the limit the service was configured with (--max-upload-mb), not
    the larger cap on bodies that leaves room for an image at that limit in base64."""
    megabytes = f"{round(upload_limit / 2**20, 2):g}"
    return (
        f"The request is larger than this service accepts: images up to {megabytes} MB "
        f"({upload_limit:,} bytes)."
    )


class BodyTooLargeError(HTTPException):
    """Raised from the body stream; an HTTPException so that FastAPI's body parsing passes it
    on (it turns other errors into a 400) to the JSON error handler."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = too_large_message(upload_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.message)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": "upload_too_large", "message": self.message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
