"""Telling the library that an indexed folder moved (`pixsift relocate OLD NEW`).

An index run cannot tell a folder that moved from one that is unplugged while a backup copy
of it is indexed: both leave the old folder missing and the same photos elsewhere. So a moved
folder indexed under its new path gets every image anew (new ids, vectors copied), and only
the user can say it moved. `relocate` then rewrites the paths, keeping ids and vectors; this
module decides whether it may, refusing with one line whatever would leave the library wrong.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from pixsift.errors import InvalidPathError, given_path
from pixsift.indexer.roots import root_named
from pixsift.indexer.scan import is_within
from pixsift.storage.records import RootInfo


@dataclass(frozen=True)
class Relocation:
    """An indexed folder `old` (as stored) that now lives at `new` (resolved), with the roots
    nested inside it, which move with it: (path as stored, path at the new place)."""

    old: str
    new: str
    roots: list[tuple[str, str]]


def plan_relocation(
    roots: Sequence[RootInfo], old: str | os.PathLike[str], new: str | os.PathLike[str]
) -> Relocation:
    """What moving the indexed folder `old` to the existing folder `new` changes, or
    InvalidPathError saying why it must not."""
    paths = [root.path for root in roots]
    root = root_named(old, paths)
    target = _existing_folder(new)
    if target == root:
        raise InvalidPathError(f"{root} is where the library already has it: nothing to relocate.")
    inner = [path for path in paths if is_within(path, root)]  # the root itself and roots inside it
    _refuse_overlap(root, target, [path for path in paths if path not in inner], _root_info(roots, root))
    _refuse_if_still_there(root, target)
    moved = [(path, _moved_path(path, root, target)) for path in inner]
    return Relocation(root, target, moved)


def catch_up_command(roots: Sequence[RootInfo], new: str | os.PathLike[str]) -> tuple[str, str]:
    """Where a folder was relocated to `new` is now stored, and the `pixsift index` command that
    walks it with the options its root keeps (naming the folder without them would index it
    without its hidden files, say)."""
    folder = _existing_folder(new)
    return folder, _index_command(folder, _root_info(roots, folder))


def _root_info(roots: Sequence[RootInfo], path: str) -> RootInfo | None:
    return next((root for root in roots if root.path == path), None)


def _index_command(folder: str, options: RootInfo | None = None) -> str:
    """The `pixsift index` command that walks `folder` with the options of the root `options`."""
    return shlex.join(
        [
            "pixsift",
            "index",
            *(["--include-hidden"] if options and options.include_hidden else []),
            *(["--follow-symlinks"] if options and options.follow_symlinks else []),
            folder,
        ]
    )


def _index_call(folder: str, options: RootInfo | None = None) -> str:
    """The same as `_index_command`, in the Python API's words: `index('/x', include_hidden=True)`."""
    arguments = [
        repr(folder),
        *(["include_hidden=True"] if options and options.include_hidden else []),
        *(["follow_symlinks=True"] if options and options.follow_symlinks else []),
    ]
    return f"index({', '.join(arguments)})"


def _moved_path(path: str, old: str, new: str) -> str:
    """`path`, the folder `old` or a path inside it, at the same place inside `new`."""
    if path == old:
        return new
    return os.path.join(new, "") + path[len(os.path.join(old, "")) :]  # "/" stays "/"


def _existing_folder(new: str | os.PathLike[str]) -> str:
    """`new` resolved, as `pixsift index` stores a folder, if it is an existing folder."""
    if not os.fspath(new).strip():  # an unset "$NEW"
        raise InvalidPathError("The new folder path is empty: name the folder the indexed folder moved to.")
    folder = os.path.expanduser(os.fspath(new))
    if not os.path.exists(folder):
        raise InvalidPathError(f"Folder {given_path(new)} does not exist: move the folder there first.")
    if not os.path.isdir(folder):
        raise InvalidPathError(
            f"{given_path(new)} is not a folder; give the folder the indexed folder moved to."
        )
    return os.path.realpath(folder)


def _refuse_overlap(root: str, target: str, others: Sequence[str], options: RootInfo | None) -> None:
    """Refuse a new place that overlaps the old one or another indexed folder: two folders'
    images would mix (and paths under both could not be rewritten one by one). `options` is
    `root` as stored, whose options the advice on what to do instead keeps."""
    if is_within(target, root):
        raise InvalidPathError(f"{target} lies inside {root}: a folder cannot move into itself.")
    if is_within(root, target):
        raise InvalidPathError(
            f"{target} contains {root}: relocate moves a folder to a new place outside where it was."
        )
    for other in others:
        for form in dict.fromkeys([other, os.path.realpath(other)]):
            if target == form:
                lead = (
                    f"{target} is already an indexed folder, with ids of its own. If it holds the "
                    f"photos of {root}, indexed there again, drop the old ones:"
                )
                raise InvalidPathError(
                    f"{lead} forget({root!r})", command_line=f"{lead} pixsift forget {shlex.quote(root)}"
                )
            if is_within(target, form):
                raise _inside_another(root, target, other, options)
            if is_within(form, target):
                raise InvalidPathError(f"{target} holds the indexed folder {other}.")


def _inside_another(root: str, target: str, other: str, options: RootInfo | None) -> InvalidPathError:
    """Why a folder cannot be relocated into the indexed folder `other`, and what does it: the
    calls to make from Python, the commands to run from the command line.

    Renamed inside `other`, which holds it too (~/Photos/trips to ~/Photos/travel): forgetting
    it only drops it as a folder of its own, its images stay as `other`'s, and indexing the new
    name finds them moved (same content), with their ids and vectors. Moved in from outside:
    forgetting it first would drop its images, so `other` is indexed first (its new paths get
    new ids and the vectors of the old ones, as copies) and the old folder forgotten after."""
    refused = f"{target} lies inside the indexed folder {other}, which relocate does not move folders into"
    forget = f"pixsift forget {shlex.quote(root)}"
    if is_within(root, other):
        lead = f"{refused}. As {root} lies in it too, forget the old name and index the new one:"
        why = "(its photos are matched by content: those unchanged keep their ids and vectors)."
        return InvalidPathError(
            f"{lead} forget({root!r}), then {_index_call(target, options)} {why}",
            command_line=f"{lead} {forget} && {_index_command(target, options)} {why}",
        )
    lead = f"{refused}. To index its photos as part of {other} instead:"
    why = "(they get new ids; their vectors are reused, not embedded again)."
    return InvalidPathError(
        f"{lead} {_index_call(other)}, then forget({root!r}) {why}",
        command_line=f"{lead} {_index_command(other)} && {forget} {why}",
    )


def _refuse_if_still_there(root: str, target: str) -> None:
    """Refuse an old folder still there with anything in it: it was copied, not moved (or the
    copy is a backup), and its photos must keep their place. An empty folder is the mount
    point of a drive now mounted elsewhere, or a folder emptied by the move; a link to the
    new place is the folder moved and left as a link."""
    if not os.path.exists(root) or os.path.realpath(root) == target:
        return
    if not os.path.isdir(root):
        raise InvalidPathError(f"{root} is still there (as a file): relocate is for a folder moved away.")
    try:
        with os.scandir(root) as listing:
            empty = next(listing, None) is None
    except OSError as exc:
        raise InvalidPathError(
            f"Cannot tell whether {root} was moved away: it cannot be read ({exc.strerror or exc})."
        ) from None
    if not empty:
        lead = (
            f"{root} still holds files, so it was copied, not moved: to index the copy as a folder "
            "of its own,"
        )
        why = "(its images get the vectors of the originals without being embedded again)."
        raise InvalidPathError(
            f"{lead} {_index_call(target)} {why}", command_line=f"{lead} {_index_command(target)} {why}"
        )
