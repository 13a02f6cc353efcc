"""Every error as a JSON body `{"error": code, "message": text}`: a 4xx status when the
request is at fault, a 5xx one when the server is (its model, its disk, its database).

The core's PixsiftError subclasses already carry messages written for users; this module only
chooses their HTTP status. A request that fails validation gets 422 with the details.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from pixsift.errors import (
    AccessDeniedError,
    BusyError,
    EmptyLibraryError,
    ImageError,
    ImageFileMissingError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidPathError,
    LibraryBusyError,
    LibraryFormatError,
    LibraryNotFoundError,
    LibraryReadError,
    LibraryWriteError,
    ModelError,
    PixsiftError,
    QueryError,
)
from pixsift.server.limits import BodyError

log = logging.getLogger("pixsift.server")

# Most specific first: the first class an error is an instance of decides.
_STATUS: list[tuple[type[PixsiftError], int, str]] = [
    (ImageNotFoundError, 404, "image_not_found"),
    (ImageFileMissingError, 404, "image_file_missing"),
    (AccessDeniedError, 403, "access_denied"),
    (ImageTooLargeError, 413, "image_too_large"),
    (ImageError, 422, "bad_image"),
    (InvalidPathError, 400, "invalid_path"),
    (QueryError, 400, "bad_query"),
    (EmptyLibraryError, 409, "empty_library"),
    (LibraryBusyError, 409, "library_busy"),
    # The server, not the request, is at fault: its model, its disk, its database.
    (ModelError, 503, "model_unavailable"),
    (LibraryWriteError, 503, "library_write_failed"),  # a full disk, a read-only folder
    (LibraryReadError, 503, "library_unreadable"),  # locked by another program, an I/O error
    (LibraryFormatError, 500, "library_damaged"),
    (LibraryNotFoundError, 503, "library_missing"),  # deleted or replaced while the service ran
    (BusyError, 503, "busy"),  # too much under way at once: the same request succeeds later
]
RETRY_AFTER_S = 1  # told to a client refused for a load that passes in moments
# An error not listed above is not one a request is known to cause: the server's, told as such.
_UNMAPPED = (500, "server_error")


class ApiError(Exception):
    """An error the service itself raises (auth, limits, jobs), with its status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: file names that are not valid UTF-8 (kept
    as lone surrogates) and odd client input echoed in errors still make valid JSON."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    body = {"error": code, "message": message, **extra}
    return AsciiJSONResponse(body, status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and why a request is invalid; the offending input is not echoed back (it may not
    even be representable in JSON, such as NaN)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


def _invalid(details: list[dict[str, Any]]) -> JSONResponse:
    return error_response(422, "invalid_request", "The request does not match the API.", details=details)


def _undecodable(cause: BaseException) -> str:
    """Why a JSON body could not be decoded, without the input."""
    if isinstance(cause, UnicodeDecodeError):
        return "Invalid JSON: not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "Invalid JSON: nested too deeply"
    return "Invalid JSON: a value out of range"  # a number of thousands of digits


def status_of(error: PixsiftError) -> tuple[int, str]:
    for cls, status, code in _STATUS:
        if isinstance(error, cls):
            return status, code
    return _UNMAPPED


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PixsiftError)
    async def _pixsift(_: Request, exc: PixsiftError) -> JSONResponse:
        status, code = status_of(exc)
        if isinstance(exc, BusyError):  # a load, not a fault: the client only has to wait
            return error_response(status, code, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})
        if status >= 500:  # the operator has something to fix: keep it in the server log too
            log.error("%s: %s", code, exc)
        return error_response(status, code, str(exc))

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else {}
        return error_response(exc.status, exc.code, exc.message, headers={**headers, **exc.headers})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(_validation_details(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's, for a JSON body it cannot decode at all: malformed JSON, as any other
        if exc.status_code == 400 and isinstance(exc.__cause__, (ValueError, RecursionError)):
            return _invalid([{"loc": ["body"], "msg": _undecodable(exc.__cause__), "type": "json_invalid"}])
        codes = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
        # A body over its cap (limits.py) says which cap, an upload's or a JSON body's; one too
        # slow (body_deadline.py) says which time limit.
        code = exc.code if isinstance(exc, BodyError) else codes.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, _exc: ClientDisconnect) -> JSONResponse:
        # The client closed the connection mid-body (POST /similar reads its own): no one is
        # left to answer, and nothing is wrong with the service.
        return error_response(400, "client_disconnected", "The client closed the connection.")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # a bug: say so, log it
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "An unexpected error occurred; see the server log.")
