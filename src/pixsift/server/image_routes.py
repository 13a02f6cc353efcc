"""One image: its metadata, its thumbnail, and removing it from the library."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from pixsift.library import Library
from pixsift.server.auth import require_write_access
from pixsift.server.deps import ERRORS, library_of
from pixsift.server.schemas import ID_MAX, Deleted, ImageMeta
from pixsift.thumbnails import MAX_SIZE, MIN_SIZE

router = APIRouter(responses=ERRORS, tags=["images"])
LibraryDep = Annotated[Library, Depends(library_of)]
ImageIdParam = Annotated[int, Path(ge=1, le=ID_MAX)]


@router.get("/images/{image_id}", response_model=ImageMeta)
def image(library: LibraryDep, image_id: ImageIdParam) -> ImageMeta:
    """What the library knows about an image."""
    return ImageMeta.of(library.image(image_id))


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."}},
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
) -> Response:
    """A JPEG thumbnail of an indexed image, made once and cached in the library folder.
    Served only while the image's file lies inside the library's roots."""
    return Response(
        _thumbnail_bytes(library, image_id, size),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


def _thumbnail_bytes(library: Library, image_id: int, size: int) -> bytes:
    """The thumbnail's bytes, read at once: the cache keeps a few sizes per image, so another
    request may remove this one before it is sent; then it is made again."""
    try:
        return library.thumbnail(image_id, size).read_bytes()
    except FileNotFoundError:  # pushed out of the cache meanwhile: made again
        return library.thumbnail(image_id, size).read_bytes()


@router.delete("/images/{image_id}", response_model=Deleted, dependencies=[Depends(require_write_access)])
def delete_image(library: LibraryDep, image_id: ImageIdParam) -> Deleted:
    """Remove an image from the library (its file is left alone; indexing its folder again
    brings it back if the file is still there). Needs the API key."""
    return Deleted(deleted=ImageMeta.of(library.delete(image_id)))
