"""Running the service with uvicorn: the library opened once, warmed up, then served."""

from __future__ import annotations

import uvicorn

from pixsift.library import Library
from pixsift.server.app import create_app
from pixsift.server.settings import ServerSettings


def serve(
    library: Library, host: str, port: int, settings: ServerSettings, *, log_level: str = "info"
) -> None:
    """Serve `library` until interrupted. The model and index are loaded before the first request,
    so the first search is as fast as the rest."""
    library.warm_up()
    app = create_app(library, settings)
    # One process: the model and the index are loaded once and shared by every request thread.
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)
