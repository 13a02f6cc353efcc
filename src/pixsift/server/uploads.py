"""Query images sent by clients: read with a size limit, as multipart or base64 JSON."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pixsift.server.errors import ApiError
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


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"The request body is larger than the limit of {limit:,} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_query_image(request: Request, limit: int) -> bytes:
    """The image bytes of a POST /similar request."""
    # Multipart and base64 both add to the image's own size: allow for them, then check again.
    body = await read_body(request, limit * 4 // 3 + 64 * 1024)
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
        raise ApiError(413, "upload_too_large", f"The image is larger than the limit of {limit:,} bytes.")
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
    except ValidationError as exc:
        first = exc.errors()[0]["msg"] if exc.errors() else "invalid JSON"
        raise ApiError(
            422, "invalid_request", f'The JSON body is not {{"image_base64": ...}}: {first}'
        ) from None
    try:
        return base64.b64decode(upload.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image_base64 is not valid base64.") from None
