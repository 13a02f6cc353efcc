"""Which folders an index run walks: the roots a caller names (checked, then resolved), every
root the library knows, or a part of one (`reindex`), walked with that root's options.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pixsift.access import resolve_inside
from pixsift.errors import InvalidPathError, given_path
from pixsift.indexer.run import RootRequest
from pixsift.indexer.scan import hidden_between, is_within

if TYPE_CHECKING:
    from pixsift.storage import Catalog


def root_requests(
    catalog: Catalog,
    roots: Sequence[str | os.PathLike[str]],
    include_hidden: bool,
    follow_symlinks: bool,
    library: str | os.PathLike[str] | None = None,
) -> list[RootRequest]:
    """The folders to index: those named (none of them in `library`, the library's own
    folder), else every known root."""
    known = catalog.roots()
    if roots:
        requests = [new_root(r, include_hidden, follow_symlinks) for r in roots]
        if library is not None:
            for written, request in zip(roots, requests, strict=True):
                _refuse_library_folder(written, request.path, library)
        return [_as_known_root(request, [root.path for root in known]) for request in requests]
    if not known:
        raise InvalidPathError(
            "Nothing to index yet: name a folder, e.g. index('~/Photos')",
            command_line="Nothing to index yet: name a folder, e.g. pixsift index ~/Photos",
        )
    return [RootRequest(r.path, r.include_hidden, r.follow_symlinks) for r in known]


def new_root(root: str | os.PathLike[str], include_hidden: bool, follow_symlinks: bool) -> RootRequest:
    if not os.fspath(root).strip():  # Path("") is the working directory: an unset "$DIR" would index it
        raise InvalidPathError(
            "A folder path to index is empty: name a folder, e.g. index('~/Photos')",
            command_line="A folder path to index is empty: name a folder, e.g. pixsift index ~/Photos",
        )
    folder = Path(root).expanduser()
    if not folder.exists():
        raise InvalidPathError(f"Folder {given_path(root)} does not exist.")
    if not folder.is_dir():
        raise InvalidPathError(f"{given_path(root)} is not a folder; give the folder that holds it.")
    return RootRequest(str(folder.resolve()), include_hidden, follow_symlinks)


def _refuse_library_folder(
    written: str | os.PathLike[str], folder: str, library: str | os.PathLike[str]
) -> None:
    """Refuse `folder` (resolved) when it is the library's folder or lies in it. A run never
    walks the library (its thumbnails are JPEGs), so such a root would find nothing: "0 images
    found" and exit 0, from `pixsift index ~/Photos --library ~/Photos`, hides the mistake."""
    own = os.path.realpath(library)
    if folder == own:
        lead = f"{given_path(written)} is the library's own folder, which pixsift never indexes"
        raise InvalidPathError(
            f"{lead}: keep the library in a folder of its own, or name another folder.",
            command_line=f"{lead}: keep the library in a folder of its own (--library DIR), "
            "or name another folder.",
        )
    if is_within(folder, own):
        raise InvalidPathError(
            f"{given_path(written)} lies in the library {own}, which pixsift never indexes: "
            "name a folder of your images."
        )


def _as_known_root(request: RootRequest, known: Sequence[str]) -> RootRequest:
    """`request` under the path of the known root holding its folder, reached another way.

    A root whose folder was moved (to a bigger disk) and left as a link to where it went
    resolves elsewhere now: as a new root, its files (or a subfolder's) would be indexed a
    second time under the other path, and every photo found twice. So the folder is named
    under the path the root's images have.
    """
    if request.path in known:
        return request
    walked = {root: os.path.realpath(root) for root in known}
    for root in sorted(known, key=lambda r: len(walked[r]), reverse=True):  # the innermost first
        if is_within(request.path, walked[root]):
            path = _path_under(root, walked[root], request.path)
            return RootRequest(path, request.include_hidden, request.follow_symlinks)
    return request


def _path_under(root: str, walked: str, folder: str) -> str:
    """`folder`, a resolved path inside `walked` (the resolved `root`), written under `root`."""
    inside = os.path.relpath(folder, walked)
    return root if inside == os.curdir else os.path.join(root, inside)


def reaches_a_root(folder: str | os.PathLike[str], roots: Sequence[str]) -> bool:
    """Whether images of `roots` can lie under `folder` (`~` expanded, relative to the working
    directory): it is inside one of them or holds one, as written or with its links resolved."""
    written = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    forms = {written, os.path.realpath(written)}
    return any(is_within(form, root) or is_within(root, form) for root in roots for form in forms)


def caller_path(path: str | os.PathLike[str]) -> str:
    """A path a Python caller names, as `index` reads one: `~` expanded, a relative path from
    the working directory. An empty one (an unset variable) is refused, not read as the latter."""
    text = os.fspath(path)
    if not text.strip():
        raise InvalidPathError("A path to re-index is empty: name a folder or file inside an indexed folder.")
    written = os.path.expanduser(text)
    # Joined, not normalised: "link/.." is resolved later, links first, as the file system does.
    return written if os.path.isabs(written) else os.path.join(os.getcwd(), written)


def scoped_request(
    catalog: Catalog, path: str | os.PathLike[str], written: str | os.PathLike[str] | None = None
) -> RootRequest:
    """The part of an indexed root that `path` (absolute) names (a folder, or a file's folder),
    to be walked with that root's options; AccessDeniedError outside every root. Messages name
    the path as the caller wrote it (`written`: relative, with `~`) and where it was looked for."""
    roots = catalog.roots()
    named = given_path(path if written is None else written)
    resolved = resolve_inside(path, [root.path for root in roots], named=named)
    if not os.path.exists(resolved):
        raise InvalidPathError(f"{named} does not exist.")
    folder = resolved if os.path.isdir(resolved) else os.path.dirname(resolved)
    # The innermost root holding it decides how to walk (hidden files, links).
    root = max(
        (r for r in roots if is_within(folder, os.path.realpath(r.path))),
        key=lambda r: len(os.path.realpath(r.path)),
    )
    walked = os.path.realpath(root.path)
    # Under the root's own path: a root left as a link to where its folder went has its
    # images there, and a walk under the other path would add every file a second time.
    scope = None if folder == walked else _path_under(root.path, walked, folder)
    if scope is not None and not root.include_hidden and hidden_between(root.path, scope):
        # What a run added there, the next run over the whole root would take for deleted.
        lead = (
            f"{named} lies in a hidden folder, which {root.path} is indexed without; "
            "to index hidden files there:"
        )
        raise InvalidPathError(
            f"{lead} index({root.path!r}, include_hidden=True)",
            command_line=f"{lead} pixsift index --include-hidden {shlex.quote(root.path)}",
        )
    return RootRequest(root.path, root.include_hidden, root.follow_symlinks, scope=scope)


def drop_roots_except(catalog: Catalog, kept: set[str]) -> None:
    with catalog.write() as batch:
        for root in catalog.roots():
            if root.path not in kept:
                batch.delete_root(root.path)


def root_named(folder: str | os.PathLike[str], roots: Sequence[str]) -> str:
    """The indexed folder `folder` names, however written (it may no longer exist)."""
    known = ", ".join(roots) or "none yet"
    if not os.fspath(folder).strip():  # an unset variable ("$OLD"): say so, not " is not indexed"
        raise InvalidPathError(
            f"The folder path is empty: name an indexed folder (indexed folders: {known})."
        )
    written = os.path.expanduser(os.fspath(folder))
    for candidate in (os.path.abspath(written), os.path.realpath(written)):
        if candidate in roots:
            return candidate
    # A root moved elsewhere and left as a link to where it went, named by its new place.
    for root in roots:
        if os.path.realpath(root) == os.path.realpath(written):
            return root
    raise InvalidPathError(f"{given_path(folder)} is not an indexed folder (indexed folders: {known}).")
