"""API-key checks: a header compared in constant time, so its value cannot be guessed by timing."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from pixsift.server.errors import ApiError
from pixsift.server.settings import ServerSettings

API_KEY_HEADER = "X-API-Key"
_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The service's API key")


def settings_of(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def _check(settings: ServerSettings, given: str | None) -> None:
    if settings.api_key is None:
        raise ApiError(
            403, "writes_disabled", "This service was started without an API key, so it is read-only."
        )
    if given is None:
        raise ApiError(401, "unauthorized", f"This needs the API key in the {API_KEY_HEADER} header.")
    if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise ApiError(401, "unauthorized", "The API key is not the right one.")


def require_read_access(
    settings: Annotated[ServerSettings, Depends(settings_of)],
    given: Annotated[str | None, Security(_header)] = None,
) -> None:
    """Reads are open on loopback; beyond it they need the key too."""
    if settings.require_key_for_reads:
        _check(settings, given)


def require_write_access(
    settings: Annotated[ServerSettings, Depends(settings_of)],
    given: Annotated[str | None, Security(_header)] = None,
) -> None:
    """Writes (indexing, deleting) always need the key."""
    _check(settings, given)
