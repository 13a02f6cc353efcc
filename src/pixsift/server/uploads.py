"""Query images sent by clients: read with a size limit, as multipart or base64 JSON."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pixsift.server.errors import RETRY_AFTER_S, ApiError
from pixsift.server.limits import too_large_message
from pixsift.server.schemas import SimilarUpload

# POST /similar reads its body itself (two content types), so its OpenAPI entry is given here.
SIMILAR_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": SimilarUpload.model_json_schema()},
        },
    }
}


class UploadSlots:
    """How many query images are read, decoded and searched at once. A body at the upload limit,
    its base64 text and the decoded pixels take hundreds of MB each: without a bound, many
    clients uploading at once could take all the memory there is. One more is refused at once,
    before its body is read (a client retries; a queue would hold its connection open).

    Used from the event loop only (the route is async): taking a slot has no await in it, so
    needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self._taken >= self.limit:
            raise ApiError(
                503,
                "busy",
                # Named as a setting and as an option: the app may come from create_app too.
                f"The service is already handling {self.limit} uploaded image{_plural(self.limit)}, "
                "as many as it takes at once (its max_concurrent_uploads setting, `pixsift serve "
                "--max-concurrent-uploads`); try again shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._taken += 1
        try:
            yield
        finally:
            self._taken -= 1


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def _too_large(upload_limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", too_large_message(upload_limit))


async def read_body(request: Request, cap: int, upload_limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `cap` bytes (declared or sent);
    the message names the image limit `upload_limit` the service was configured with. How long
    it may take is bounded for every body alike (body_deadline.py): 408 past it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(upload_limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _too_large(upload_limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_query_image(request: Request, limit: int) -> bytes:
    """The image bytes of a POST /similar request."""
    # Multipart and base64 both add to the image's own size: allow for them, then check again.
    body = await read_body(request, limit * 4 // 3 + 64 * 1024, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        data = await _from_multipart(request, body)
    elif content_type == "application/json":
        data = _from_json(body)
    else:
        raise ApiError(
            415, "unsupported_media_type", "Send the image as multipart/form-data (field file) or JSON."
        )
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise ApiError(400, "empty_image", "The image sent is empty.")
    return data


async def _from_multipart(request: Request, body: bytes) -> bytes:
    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"The multipart body cannot be read: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "missing_file", "The multipart body has no file field named file.")
    try:
        return await upload.read()
    finally:
        await form.close()


def _from_json(body: bytes) -> bytes:
    try:
        upload = SimilarUpload.model_validate_json(body)
    except ValidationError as exc:  # a 422 with details, located in the body as FastAPI's are
        errors = [{**error, "loc": ("body", *error.get("loc", ()))} for error in exc.errors()]
        raise RequestValidationError(errors) from None
    try:
        return base64.b64decode(upload.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image_base64 is not valid base64.") from None
