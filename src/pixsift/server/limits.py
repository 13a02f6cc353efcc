"""A cap on every request body, enforced while it streams in (pure ASGI middleware).

JSON endpoints are bounded by their schemas only once parsed; this stops a client from making
the service read an arbitrarily large body first, whether it declares its length or not.

Two caps: POST /similar takes an image (up to --max-upload-mb, in base64 or multipart); every
other body is JSON, parsed and validated on the event loop before any check of the API key, so
its cap is far smaller: a 26 MB JSON list of ids held every other request for 1.5 seconds.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The largest JSON request the schemas allow with real paths: 256 paths to index (or 128
# examples), each at most 4,095 bytes as Linux has them, about 12 kB when a client escapes
# non-ASCII characters as \uXXXX (Python's json.dumps does), is 3.1 MB; ids to exclude
# (10,000) and texts take less. Room for that, and no more.
MAX_JSON_BYTES = 4 * 2**20
UPLOAD_PATH = "/similar"  # the one route whose body is an image


def too_large_message(upload_limit: int) -> str:
    """What a client is told: the limit the service was configured with (--max-upload-mb), not
    the larger cap on bodies that leaves room for an image at that limit in base64."""
    megabytes = f"{round(upload_limit / 2**20, 2):g}"
    return (
        f"The request is larger than this service accepts: images up to {megabytes} MB "
        f"({upload_limit:,} bytes)."
    )


def json_too_large_message() -> str:
    return (
        f"The request body is larger than this service accepts for JSON: "
        f"{MAX_JSON_BYTES // 2**20} MB ({MAX_JSON_BYTES:,} bytes)."
    )


class BodyError(HTTPException):
    """Raised from the body stream; an HTTPException so that FastAPI's body parsing passes it
    on (it turns other errors into a 400) to the JSON error handler, which answers `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


class BodyTooLargeError(BodyError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(413, code, message)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int) -> None:
        self.app = app
        self.upload_cap = (max_bytes, "upload_too_large", too_large_message(upload_limit))
        self.json_cap = (MAX_JSON_BYTES, "request_too_large", json_too_large_message())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The path as the app was reached, under whatever prefix it is mounted at.
        uploads = str(scope.get("path", "")).endswith(UPLOAD_PATH)
        max_bytes, code, message = self.upload_cap if uploads else self.json_cap
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            await refuse(send, 413, code, message)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLargeError(code, message)
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await refuse(send, 413, code, message)


async def refuse(
    send: Send, status: int, code: str, message: str, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """The JSON error answer, sent by a middleware where the app's error handlers cannot."""
    body = json.dumps({"error": code, "message": message}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
