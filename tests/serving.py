"""Running the real HTTP service (uvicorn, on a free loopback port) for the tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from conftest import TinyModel
from pixsift import Library
from pixsift.server import ServerSettings, create_app

API_KEY = "test-key-0123456789abcdef"


@contextmanager
def running_server(library: Library, settings: ServerSettings | None = None) -> Iterator[str]:
    """The service for `library` listening on 127.0.0.1 on a free port; yields its base URL."""
    with running_uvicorn(library, settings) as (url, _):
        yield url


@contextmanager
def running_uvicorn(
    library: Library, settings: ServerSettings | None = None
) -> Iterator[tuple[str, uvicorn.Server]]:
    """`running_server`, with the uvicorn server too: `server_state.tasks` holds a task for each
    request under way, from its headers read to its answer sent, so a test can tell when
    requests it sent have all arrived."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(library, settings), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def wait_until_arrived(server: uvicorn.Server, requests: int) -> None:
    """Until the service has `requests` requests under way (read, not yet answered)."""
    deadline = time.monotonic() + 60
    while len(server.server_state.tasks) < requests:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(server.server_state.tasks)} of {requests} requests reached the service"
            )
        time.sleep(0.01)


def wait_until_answered(server: uvicorn.Server) -> None:
    """Until the service has no request under way: each one answered, or given up, and logged."""
    deadline = time.monotonic() + 60
    while server.server_state.tasks:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(server.server_state.tasks)} requests still under way")
        time.sleep(0.01)


def indexed_library(folder: Path, photos: Path, tiny_model: TinyModel) -> Library:
    """A library at `folder` with `photos` indexed by the tiny model."""
    library = Library.open(folder)
    library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), workers=2)
    return library
