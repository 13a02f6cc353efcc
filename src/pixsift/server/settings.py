"""What the service allows: its API key, who needs it, and its limits."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from pixsift.config import DEFAULT_LOAD_WAIT_S
from pixsift.errors import InvalidOptionError, PixsiftError

API_KEY_ENV = "PIXSIFT_API_KEY"
K_MAX = 200  # results per query: enough for any page of results, small enough to stay cheap
# Failed files per page of GET /failures: a screenful by default, a bounded read at most.
FAILURES_DEFAULT = 100
FAILURES_MAX = 1000
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_MEGAPIXELS = 50.0
# Query images read and decoded at once: each can take a body of the upload limit and, decoded,
# 4 bytes a pixel up to the megapixel limit and copies (about 0.55 GB for a 50-megapixel PNG).
DEFAULT_MAX_CONCURRENT_UPLOADS = 4
# A request body (an upload, JSON) that sends nothing for this long is given up: it holds its
# connection (an upload, one of those slots too), and a client that lost its network without
# closing it would hold them for ever. Long enough for a phone on a poor link to resume.
DEFAULT_UPLOAD_IDLE_TIMEOUT_S = 30.0
# A whole request body must be in within this long: a client sending a byte now and then never
# trips the idle timeout, and would hold its connection as long as it liked. 5 minutes lets an
# image at the default upload limit, in base64 (27 MB), arrive at 90 kB/s, a poor mobile link's
# rate; a JSON body (4 MB at most) needs far less, and one limit for both keeps it simple.
DEFAULT_UPLOAD_DEADLINE_S = 300.0
MIN_API_KEY_LENGTH = 16


class UnsafeBindError(PixsiftError):
    """The service was asked to listen beyond this machine without an API key."""


@dataclass(frozen=True)
class UploadTimeouts:
    """How long a request body may take: `idle_s` without a byte, `total_s` in all."""

    idle_s: float
    total_s: float


@dataclass(frozen=True)
class ServerSettings:
    """`api_key` enables the write endpoints (and is required for them); with
    `require_key_for_reads` every endpoint but /healthz and the docs needs it too, as it must
    when the service listens beyond loopback. `max_concurrent_uploads` POST /similar requests
    are handled at once; one more is refused with 503 `busy`. A search that arrives while the
    search index loads waits up to `load_wait_s` seconds for it (0: not at all), then is
    refused with 503 `index_loading`. A request body (an upload or JSON) that sends nothing for
    `upload_idle_timeout_s` seconds, or is not all in `upload_deadline_s` seconds after the
    service began to read it, is refused with 408 `upload_timeout` (an upload's slot freed)."""

    api_key: str | None = None
    require_key_for_reads: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    load_wait_s: float = DEFAULT_LOAD_WAIT_S
    upload_idle_timeout_s: float = DEFAULT_UPLOAD_IDLE_TIMEOUT_S
    upload_deadline_s: float = DEFAULT_UPLOAD_DEADLINE_S

    def __post_init__(self) -> None:
        if self.api_key is not None:
            check_api_key(self.api_key)
        if self.max_concurrent_uploads < 1:
            raise InvalidOptionError("The service must accept at least 1 upload at a time.")
        _check_load_wait(self.load_wait_s)
        _check_upload_timeout("upload_idle_timeout_s", self.upload_idle_timeout_s)
        _check_upload_timeout("upload_deadline_s", self.upload_deadline_s)

    @property
    def upload_timeouts(self) -> UploadTimeouts:
        return UploadTimeouts(idle_s=self.upload_idle_timeout_s, total_s=self.upload_deadline_s)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


def _check_load_wait(wait: object) -> None:
    # NaN would compare false with everything, infinity would leave a client waiting for ever.
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
        raise InvalidOptionError(f"load_wait_s must be a number of seconds of 0 or more, not {wait!r}.")


def _check_upload_timeout(name: str, timeout: object) -> None:
    # 0 would refuse every upload at once; no timeout at all is what let slots leak.
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise InvalidOptionError(f"{name} must be a number of seconds above 0, not {timeout!r}.")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_api_key(api_key: str) -> None:
    """Refuse a key no client could send: HTTP headers are read as Latin-1 bytes and stripped of
    surrounding blanks, so a key with other characters would never match the one sent."""
    if len(api_key) < MIN_API_KEY_LENGTH:
        raise UnsafeBindError(f"An API key must be at least {MIN_API_KEY_LENGTH} characters long.")
    if not (api_key.isascii() and api_key.isprintable()) or api_key != api_key.strip():
        raise UnsafeBindError(
            "An API key must be printable ASCII (letters, digits, punctuation) without spaces at "
            "either end: clients send it in an HTTP header, which cannot carry other characters."
        )


def check_bind(host: str, api_key: str | None) -> ServerSettings:
    """The settings for listening on `host`, refusing a non-loopback bind without a key."""
    if api_key is not None:
        check_api_key(api_key)
    if is_loopback(host):
        return ServerSettings(api_key=api_key)
    if api_key is None:
        # Reached from Python too (pixsift.server.check_bind), where no option or $PIXSIFT_API_KEY is read.
        where = host or 'every interface (host "")'  # as 0.0.0.0 and :: do
        lead = f"Listening on {where} lets other machines reach the library: give an API key"
        raise UnsafeBindError(
            f"{lead} (api_key=...), or listen on 127.0.0.1.",
            command_line=f"{lead} with --api-key or ${API_KEY_ENV}, or listen on 127.0.0.1.",
        )
    return ServerSettings(api_key=api_key, require_key_for_reads=True)
