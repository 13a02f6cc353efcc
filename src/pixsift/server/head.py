"""HEAD answered as GET, without the body (pure ASGI middleware).

HTTP requires a server that answers GET to answer HEAD too (RFC 9110, 9.3.2), and uptime
checkers, proxies and link checkers send it. Starlette's routes do so; FastAPI's API routes
answer 405 (fastapi/fastapi#1773). Adding HEAD to each route would also add a HEAD operation
for each to the OpenAPI schema. Instead the app sees GET, and its answer goes out with the
same status and headers (Content-Length included, as RFC 9110 asks) and no body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            # uvicorn leaves the body of a HEAD answer out itself; other servers may not.
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server reads the method from its own scope, and must still see HEAD.
        await self.app({**scope, "method": "GET"}, receive, without_body)
