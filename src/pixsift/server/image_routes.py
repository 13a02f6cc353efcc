"""One image: its metadata, its thumbnail, and removing it from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from pixsift.library import Library
from pixsift.server.auth import require_write_access
from pixsift.server.deps import ERRORS, library_of
from pixsift.server.schemas import ID_MAX, Deleted, ImageMeta
from pixsift.thumbnails import MAX_SIZE, MIN_SIZE

router = APIRouter(responses=ERRORS, tags=["images"])
LibraryDep = Annotated[Library, Depends(library_of)]
ImageIdParam = Annotated[int, PathParam(ge=1, le=ID_MAX)]


@router.get("/images/{image_id}", response_model=ImageMeta)
def image(library: LibraryDep, image_id: ImageIdParam) -> ImageMeta:
    """What the library knows about an image."""
    return ImageMeta.of(library.image(image_id))


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."},
        304: {"description": "The thumbnail the client holds (its `If-None-Match`) is current."},
    },
)
def thumbnail(
    library: LibraryDep,
    image_id: ImageIdParam,
    size: Annotated[
        int,
        Query(
            ge=MIN_SIZE,
            le=MAX_SIZE,
            description="Longest side in pixels (at most the image's own: thumbnails are never enlarged).",
        ),
    ] = 256,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A JPEG thumbnail of an indexed image, made once and cached in the library folder.
    Served only while the image's file lies inside the library's roots.

    Its `ETag` names the version of the image file it shows: a client revalidates it with
    `If-None-Match` (304 while the file is unchanged), so a file changed in place shows its
    new pixels at once."""
    made = library.thumbnail(image_id, size)
    # The cached file's name holds the image file's size and mtime: a changed file, a new tag.
    headers = {"Cache-Control": "private, no-cache", "ETag": f'"{image_id}-{made.stem}"'}
    if if_none_match is not None and _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(_thumbnail_bytes(library, made, image_id, size), media_type="image/jpeg", headers=headers)


def _matches(if_none_match: str, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (weakly compared, as RFC 9110 asks)."""
    given = [item.strip().removeprefix("W/") for item in if_none_match.split(",")]
    return "*" in given or tag in given


def _thumbnail_bytes(library: Library, made: Path, image_id: int, size: int) -> bytes:
    """The thumbnail's bytes, read at once: the cache keeps a few sizes per image, so another
    request may remove this one before it is sent; then it is made again."""
    try:
        return made.read_bytes()
    except FileNotFoundError:  # pushed out of the cache meanwhile: made again
        return library.thumbnail(image_id, size).read_bytes()


@router.delete("/images/{image_id}", response_model=Deleted, dependencies=[Depends(require_write_access)])
def delete_image(library: LibraryDep, image_id: ImageIdParam) -> Deleted:
    """Remove an image from the library (its file is left alone; indexing its folder again
    brings it back if the file is still there). Needs the API key."""
    return Deleted(deleted=ImageMeta.of(library.delete(image_id)))
