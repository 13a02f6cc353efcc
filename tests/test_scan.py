"""Walking folders: extensions, hidden files, symlinks and loops, unreadable folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pixsift.indexer.plan import plan_folder
from pixsift.indexer.run import RootRequest, distinct_requests
from pixsift.indexer.scan import BASE_EXTENSIONS, HEIF_EXTENSIONS, ScannedFile, ScanOptions, scan_folder
from pixsift.storage.records import KnownFile


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(root: Path, **options: object) -> list[str]:
    result = scan_folder(str(root), ScanOptions(extensions=BASE_EXTENSIONS, **options))  # type: ignore[arg-type]
    return sorted(os.path.relpath(p, root) for p in result.files)


def test_only_image_extensions_any_case(tmp_path: Path) -> None:
    for name in [
        "a.jpg",
        "b.JPEG",
        "c.png",
        "d.webp",
        "d2.avif",
        "e.gif",
        "f.bmp",
        "g.tif",
        "h.TIFF",
        "notes.txt",
        "raw.cr2",
    ]:
        touch(tmp_path / name)
    kept = ["a.jpg", "b.JPEG", "c.png", "d.webp", "d2.avif", "e.gif", "f.bmp", "g.tif", "h.TIFF"]
    assert names(tmp_path) == kept


def test_heif_files_this_install_cannot_read_are_told_apart(tmp_path: Path) -> None:
    for name in ["a.jpg", "IMG_0001.HEIC", "sub/b.heif", ".hidden.heic", "notes.txt"]:
        touch(tmp_path / name)
    without = scan_folder(str(tmp_path), ScanOptions(extensions=BASE_EXTENSIONS))
    assert sorted(os.path.relpath(p, tmp_path) for p in without.files) == ["a.jpg"]
    assert sorted(os.path.relpath(p, tmp_path) for p in without.unsupported_heif) == [
        "IMG_0001.HEIC",
        "sub/b.heif",
    ]
    with_heif = scan_folder(str(tmp_path), ScanOptions(extensions=BASE_EXTENSIONS | HEIF_EXTENSIONS))
    assert len(with_heif.files) == 3 and not with_heif.unsupported_heif


def test_recursive_and_hidden(tmp_path: Path) -> None:
    touch(tmp_path / "2024" / "06" / "a.jpg")
    touch(tmp_path / ".thumbnails" / "t.jpg")
    touch(tmp_path / ".secret.jpg")
    assert names(tmp_path) == ["2024/06/a.jpg"]
    assert names(tmp_path, include_hidden=True) == [".secret.jpg", ".thumbnails/t.jpg", "2024/06/a.jpg"]


def test_symlinks_are_skipped_unless_followed_and_loops_end(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root / "a.jpg")
    touch(outside / "b.jpg")
    (root / "link-dir").symlink_to(outside)
    (root / "link-file.jpg").symlink_to(outside / "b.jpg")
    (root / "loop").symlink_to(root)
    (root / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")

    assert names(root) == ["a.jpg"]
    assert names(root, follow_symlinks=True) == ["a.jpg", "link-dir/b.jpg", "link-file.jpg"]


def test_excluded_folders_are_not_entered(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "library" / "thumb.jpg")
    assert names(tmp_path, exclude=[str(tmp_path / "library")]) == ["a.jpg"]


def test_size_and_mtime_come_from_the_scan(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jpg", b"12345")
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    result = scan_folder(str(tmp_path), ScanOptions())
    assert result.files[str(path)] == ScannedFile(str(path), 5, 2_000_000_000)


def test_a_folder_that_vanishes_mid_scan_is_unknown_not_deleted(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "1.jpg")
    touch(tmp_path / "b" / "2.jpg")
    listed: list[int] = []

    def remove_b_after_the_root_is_listed(found: int) -> None:
        if not listed:
            shutil.rmtree(tmp_path / "b")
        listed.append(found)

    result = scan_folder(str(tmp_path), ScanOptions(), on_folder=remove_b_after_the_root_is_listed)
    assert list(result.files) == [str(tmp_path / "a" / "1.jpg")]
    assert result.unreadable_dirs == [(str(tmp_path / "b"), "No such file or directory")]
    known = {
        str(tmp_path / "b" / "2.jpg"): KnownFile(1, str(tmp_path / "b" / "2.jpg"), 1, 1, "h", True, None)
    }
    assert plan_folder(result.files, known, [str(tmp_path / "b")]).missing == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_reported_and_its_files_are_not_missing(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    touch(locked / "b.jpg")
    locked.chmod(0)
    try:
        result = scan_folder(str(tmp_path), ScanOptions())
    finally:
        locked.chmod(0o755)
    assert [folder for folder, _ in result.unreadable_dirs] == [str(locked)]
    known = {str(locked / "b.jpg"): KnownFile(1, str(locked / "b.jpg"), 1, 1, "h", True, None)}
    assert plan_folder(result.files, known, [str(locked)]).missing == []


def test_plan_separates_unchanged_candidates_and_missing() -> None:
    def known(i: int, path: str, size: int = 10, vector: bool = True, error: str | None = None) -> KnownFile:
        return KnownFile(i, path, size, 100, "hash", vector, error)

    scanned = {p: ScannedFile(p, 10, 100) for p in ["/r/same", "/r/new", "/r/failed", "/r/pending"]}
    scanned["/r/grown"] = ScannedFile("/r/grown", 11, 100)
    rows = {
        "/r/same": known(1, "/r/same"),
        "/r/grown": known(2, "/r/grown"),
        "/r/failed": known(3, "/r/failed", vector=False, error="bad"),
        "/r/pending": known(4, "/r/pending", vector=False),
        "/r/gone": known(5, "/r/gone"),
        "/r/locked/x": known(6, "/r/locked/x"),
    }
    plan = plan_folder(scanned, rows, ["/r/locked"])
    assert plan.unchanged == 2  # same, and the unchanged failure (not retried)
    assert sorted(c.file.path for c in plan.candidates) == ["/r/grown", "/r/new", "/r/pending"]
    assert [row.path for row in plan.missing] == ["/r/gone"]


def test_folders_named_twice_or_inside_another_are_walked_once() -> None:
    """A folder inside another of the same root and options is left to the outer walk; a
    sibling whose name only starts alike ("a b" beside "a") is not inside it; other options
    walk other files, so they stay."""
    requests = [
        RootRequest("/p", scope="/p/a"),
        RootRequest("/p", scope="/p/a/b"),
        RootRequest("/p", scope="/p/a b"),
        RootRequest("/p", scope="/p/a"),
        RootRequest("/q", scope="/q/x"),
        RootRequest("/q"),
        RootRequest("/p", include_hidden=True, scope="/p/a/b"),
        RootRequest("/q"),
    ]
    assert distinct_requests(requests) == [requests[0], requests[2], requests[5], requests[6]]
