"""Walking a folder tree for image files, cheaply: one `scandir` per folder, no file opened.

Hidden files and folders are skipped unless asked for. Symbolic links are not followed unless
asked for; when they are, every folder is visited once (by device and inode), so a link loop
cannot trap the walk. A folder that cannot be listed, or holds an entry that cannot be
examined, is reported, and the caller must treat what it held as unknown rather than deleted.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Callable, Collection, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, NamedTuple, Protocol

from PIL import features

from pixsift.indexer.decode import heif_support

if TYPE_CHECKING:
    from pixsift.storage.records import RootInfo

BASE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".avif", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
# Formats a Pillow build may lack (its codec left out when it was built): their files are not
# looked at there, rather than each recorded as a failure.
OPTIONAL_CODECS = {".webp": "webp", ".avif": "avif"}
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# Nothing there: deleted, a link to nowhere, or a path through what is no longer a folder.
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})


def image_extensions() -> frozenset[str]:
    """File extensions the indexer reads: WebP and AVIF where this Pillow has their codecs
    (AVIF since Pillow 11.3), HEIC/HEIF too when pillow-heif is installed."""
    missing = {suffix for suffix, codec in OPTIONAL_CODECS.items() if not _has_codec(codec)}
    extensions = BASE_EXTENSIONS - missing
    return extensions | HEIF_EXTENSIONS if heif_support() else extensions


def _has_codec(codec: str) -> bool:
    """Whether this Pillow reads `codec`; False where Pillow does not know the name (AVIF
    before 11.3), where `features.check` warns and answers None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(features.check(codec))


class HoldsImages(Protocol):
    """What `looks_unmounted` and `unmounted_roots` ask of the catalog."""

    def ids_under(self, folder: str) -> Sized: ...

    def roots(self) -> Sequence[RootInfo]: ...


class ScannedFile(NamedTuple):
    """An image file found (a tuple: one is made per file, and a walk may find millions)."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: dict[str, ScannedFile] = field(default_factory=dict)
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    # HEIC/HEIF files left out because this install cannot read them (no pillow-heif)
    unsupported_heif: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScanOptions:
    include_hidden: bool = False
    follow_symlinks: bool = False
    extensions: frozenset[str] = BASE_EXTENSIONS
    exclude: Collection[str] = ()  # folders never entered, such as the library itself


def scan_folder(
    root: str, options: ScanOptions, on_folder: Callable[[int], None] | None = None
) -> ScanResult:
    """All image files under `root` (an absolute folder path), in sorted order.

    `on_folder` is told how many image files each folder held, as the walk goes.
    """
    result = ScanResult()
    visited: set[tuple[int, int]] = set()
    excluded = _folder_keys(options.exclude)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            folder_stat = os.stat(folder)
            key = (folder_stat.st_dev, folder_stat.st_ino)
            if key in visited or key in excluded:  # a link loop or twice linked; the library
                continue
            visited.add(key)
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            result.unreadable_dirs.append((folder, exc.strerror or type(exc).__name__))
            continue
        subfolders = []
        found_here = len(result.files)
        unknown_entry = None
        for entry in entries:
            if not options.include_hidden and entry.name.startswith("."):
                continue
            try:
                found = _classify(entry, options)
            except OSError as exc:  # there, but not readable: what this folder holds is unknown
                unknown_entry = unknown_entry or (
                    folder,
                    f"{entry.name}: {exc.strerror or type(exc).__name__}",
                )
                continue
            if isinstance(found, ScannedFile):
                result.files[entry.path] = found
            elif found == "dir":
                subfolders.append(entry.path)
            elif found == "heif":
                result.unsupported_heif.append(entry.path)
        if unknown_entry is not None:
            result.unreadable_dirs.append(unknown_entry)
        stack.extend(reversed(subfolders))  # pop() then visits them in name order
        if on_folder is not None:
            on_folder(len(result.files) - found_here)
    return result


def _folder_keys(folders: Collection[str]) -> set[tuple[int, int]]:
    """The device and inode of each folder that exists.

    Folders are told apart by identity, not by their path's spelling: the library given as
    `photos/../lib`, or through a symbolic link, is still the folder the walk reaches as `lib`.
    """
    keys = set()
    for folder in folders:
        try:
            folder_stat = os.stat(folder)
        except OSError:  # not there (yet): nothing under it can be walked into either
            continue
        keys.add((folder_stat.st_dev, folder_stat.st_ino))
    return keys


def _classify(entry: os.DirEntry[str], options: ScanOptions) -> ScannedFile | str | None:
    """'dir' for a folder to enter, a ScannedFile for an image file, 'heif' for a HEIC/HEIF file
    that `options` leaves out (pillow-heif is not installed), None for anything else.

    Raises OSError when the entry is there but cannot be examined (a folder without search
    permission, a stale network mount): its images must be kept, not taken for deleted.
    """
    try:
        if entry.is_symlink() and not options.follow_symlinks:
            return None
        entry_stat = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:  # vanished since the listing, or a dangling link
            return None
        raise
    mode = entry_stat.st_mode
    if stat.S_ISDIR(mode):
        return "dir"
    if not stat.S_ISREG(mode):
        return None
    extension = _extension(entry.name)
    if extension not in options.extensions:
        return "heif" if extension in HEIF_EXTENSIONS else None
    return ScannedFile(entry.path, entry_stat.st_size, entry_stat.st_mtime_ns)


def _extension(name: str) -> str:
    """`os.path.splitext(name)[1].lower()` for a file name, at a third of its cost per file:
    no extension when the name has no dot but leading ones (".jpg" is a hidden file's name)."""
    dot = name.rfind(".")
    if dot <= 0 or not name[:dot].lstrip("."):
        return ""
    return name[dot:].lower()


def is_within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it, as written (no link is resolved)."""
    return path == folder or path.startswith(os.path.join(folder, ""))


def hidden_between(folder: str, inner: str) -> bool:
    """Whether a hidden name lies on the way from `folder` down to `inner`, a path under it
    (both as written): a walk without hidden files never reaches `inner`."""
    return any(part.startswith(".") for part in PurePath(inner).relative_to(folder).parts)


def looks_unmounted(folder: str, catalog: HoldsImages) -> bool:
    """Whether an indexed folder looks unmounted: not there, or empty while the library holds
    images under it (the mount point of an unplugged drive). Its images are kept either way;
    a folder emptied or removed on purpose is dropped with `pixsift forget`."""
    if not os.path.isdir(folder):
        return True
    try:
        with os.scandir(folder) as listing:
            if next(listing, None) is not None:
                return False
    except OSError:  # unreadable: the walk reports it and keeps what it held
        return False
    return len(catalog.ids_under(folder)) > 0


def unmounted_roots(catalog: HoldsImages) -> list[str]:
    """The indexed folders that look unmounted (`looks_unmounted`): what they hold is kept
    as it is, neither walked nor taken for deleted."""
    return [root.path for root in catalog.roots() if looks_unmounted(root.path, catalog)]
