"""Where a library lives when the caller does not say.

One resolver for every face: an explicit path wins, then the `PIXSIFT_LIBRARY` environment
variable, then the platform's per-user data folder (for example `~/.local/share/pixsift`).
"""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_ENV_VAR = "PIXSIFT_LIBRARY"
CACHE_ENV_VAR = "PIXSIFT_CACHE_DIR"
APP_NAME = "pixsift"
# The files of a library folder: the catalog, the search index (a cache of the catalog's vectors).
DB_NAME = "library.db"
INDEX_NAME = "vectors.faiss"
THUMBNAILS_DIR = "thumbnails"  # the thumbnail cache's folder inside the library folder
# How long an index run (or doctor) waits by default for another one holding the library's lock.
LOCK_WAIT_S = 10.0
# The most images per model call and decode threads an index run takes, on every face. An index
# run holds up to four batches of decoded images at once: 4 x 4096 of ViT-B-32's float32 inputs
# are 10 GB already.
MAX_BATCH_SIZE = 4096
MAX_WORKERS = 64
# `pixsift serve --load-wait`: how long a search that arrives while the service loads its search
# index waits for it (on the event loop, holding no worker thread) before 503 `index_loading`.
# A load of seconds, as after most restarts, passes unnoticed; a longer one is told well within
# the 30 s that many clients and proxies give a request before giving up on it themselves.
DEFAULT_LOAD_WAIT_S = 20.0


def default_library_dir() -> Path:
    """The library folder used when none is given: `$PIXSIFT_LIBRARY`, else the user data dir."""
    from_env = os.environ.get(LIBRARY_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs  # imported here: only needed when no path was given

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Where pixsift keeps what it can always make again (model exports): `$PIXSIFT_CACHE_DIR`,
    else the platform's per-user cache folder (for example `~/.cache/pixsift`)."""
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def resolve_library_dir(path: str | os.PathLike[str] | None) -> Path:
    """An absolute library folder for `path`, or the default one when `path` is None.

    An empty path is refused: it would name the working directory, so a program's unset
    setting (`Library.open(os.environ.get("LIB", ""))`) would make a library wherever it runs.
    """
    if isinstance(path, str) and not path.strip():
        from pixsift.errors import InvalidPathError

        raise InvalidPathError(
            "The library path is empty: name a folder, or leave it out for the default library."
        )
    chosen = Path(path).expanduser() if path is not None else default_library_dir()
    return chosen.absolute()
