"""Running the service with uvicorn: the library opened once, warmed up, then served."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from pixsift.errors import PixsiftError
from pixsift.library import Library
from pixsift.server.app import create_app
from pixsift.server.settings import ServerSettings

# On SIGTERM or Ctrl-C, requests under way get this long to finish; then the service stops
# anyway. Without a bound, one client that keeps a request open (a slow upload) would keep it
# running for as long as that client likes, until a process manager killed it.
SHUTDOWN_GRACE_S = 5

# The threads Starlette runs plain `def` routes in (anyio's name for them). Idle ones end once
# the service has stopped; one still running then carries a request the stop cut short.
WORKER_THREAD_NAME = "AnyIO worker thread"
# How long idle worker threads get to end before the others are counted as still running.
WORKER_END_WAIT_S = 0.5

log = logging.getLogger("pixsift.server")


class ListenError(PixsiftError):
    """The service cannot listen where it was asked to (a port in use, an address not here)."""


def serve(
    library: Library, host: str, port: int, settings: ServerSettings, *, log_level: str = "info"
) -> None:
    """Serve `library` until interrupted. The model is loaded before the service listens, and
    the search index while it does: GET /healthz says `loading` (503) until it is in memory,
    GET /stats answers meanwhile, and searches wait for it."""
    check_address(host, port)  # before the model loads, which can take a minute
    with _sigterm_exits_cleanly():
        library.warm_up(index_in_background=True)
        app = create_app(library, settings)
        try:
            # One process: the model and the index are loaded once and shared by every request thread.
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level=log_level,
                workers=1,
                server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
        except SystemExit as exc:
            # uvicorn exits with 3 when it cannot start, which is pixsift's "finished, with trouble"
            if exc.code in (0, None):  # stopped by SIGTERM (see _sigterm_exits_cleanly)
                _say_if_requests_still_run()
                raise
            message = f"The HTTP service could not start on {host} port {port} (see above)."
            raise ListenError(message) from None
        _say_if_requests_still_run()  # stopped by Ctrl-C


def _say_if_requests_still_run() -> None:
    """Log, in one line, the requests the stop cut short (answered 503 `shutting_down`) whose
    threads still run: the library is closed under them once this returns, so what they would
    still write is rolled back, and the process exits once they end (a wait for SQLite's lock
    held by another program, say). Nothing is waited for beyond a moment: their answer is
    sent, so finishing their work would only make it untrue."""
    deadline = time.monotonic() + WORKER_END_WAIT_S
    running = []
    for thread in threading.enumerate():
        if thread.name == WORKER_THREAD_NAME:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                running.append(thread)
    if running:
        log.warning(
            "%d request(s) cut short by the stop still run: the library is closed under them, "
            "nothing more they would write is kept, and the service exits once they end",
            len(running),
        )


@contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """SIGTERM (systemd, `docker stop`, `kill`) is how a service is asked to stop: the stop must
    exit with 0, or a service manager counts it a failure. uvicorn stops on it as on Ctrl-C, then
    sends it again to the handler in place before it started, by default the one that kills the
    process (status 143); this one exits with 0 instead, also while the model is loading."""
    if threading.current_thread() is not threading.main_thread():  # only it can set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def check_address(host: str, port: int) -> None:
    """Refuse an address uvicorn could not listen on, with the reason in one line (uvicorn logs
    it and exits with 3). Bound as uvicorn binds: IPv6 when the host has a colon."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family=family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                advice = "another program is listening there: stop it, or choose another --port"
            else:
                advice = f"{exc.strerror or exc}; check --host"
            raise ListenError(f"Cannot listen on {host} port {port}: {advice}.") from None
