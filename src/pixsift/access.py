"""Which files pixsift may read on behalf of someone else: only those inside indexed roots.

The HTTP service reads and serves files named by clients, directly (a path) or indirectly (an
image id whose file may since have been replaced by a link). Every such path is resolved,
symbolic links included, and must land inside one of the library's roots, resolved the same
way; `..` segments and links that lead out are refused, except in a root indexed with links
followed, whose links the user chose to take in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pixsift.errors import AccessDeniedError, InvalidPathError


def resolve_inside(
    path: str | os.PathLike[str],
    roots: Iterable[str],
    *,
    linked_roots: Iterable[str] = (),
    what: str = "Path",
    named: str | None = None,
) -> str:
    """`path` with every link resolved, if that lies inside one of `roots`; else AccessDeniedError.

    `linked_roots` are roots indexed with links followed: there the user chose to take in what
    links lead to, so a path inside one of them as written (without `..`) is accepted wherever
    its links lead. `named`: how a refusal names the path, if not as `path` is written (a
    caller's relative path made absolute here names both, see `errors.given_path`).
    """
    try:
        text = os.fspath(path)
        if not text or "\x00" in text:
            raise ValueError("empty or with a NUL byte")
        os.fsencode(text)  # lone surrogates from a JSON string cannot name any file
        resolved = os.path.realpath(os.path.expanduser(text), strict=False)
        if not os.path.isabs(text):
            raise InvalidPathError(f"{what} {text!r} must be absolute.")
    except (ValueError, UnicodeError, OSError):
        raise InvalidPathError(f"{what} {path!r} is not a valid path.") from None
    for root in roots:
        real_root = os.path.realpath(root)
        if resolved == real_root or resolved.startswith(os.path.join(real_root, "")):
            return resolved
    if ".." not in text.split(os.sep) and any(_written_inside(text, root) for root in linked_roots):
        return resolved
    raise AccessDeniedError(f"{what} {named or text} is outside the library's indexed folders.")


def _written_inside(path: str, root: str) -> bool:
    """Whether `path`, as written, names something under `root` (no link is resolved)."""
    return os.path.normpath(path).startswith(os.path.join(os.path.normpath(root), ""))
