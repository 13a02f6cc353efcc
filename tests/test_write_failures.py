"""A full disk or a read-only library: a clear message, and a library that stays usable.

A full disk is simulated honestly with RLIMIT_FSIZE in the child process: with SIGXFSZ
ignored, every write past the limit fails with EFBIG, exactly where a full disk fails with
ENOSPC. A read-only library is a read-only bind mount (in a private mount namespace) when the
tests run as root, who ignores file permissions, and a chmod otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TinyModel, needs_permissions, run_cli
from pixsift import Library
from pixsift.errors import ModelError
from sample_photos import write_photos

pytestmark = pytest.mark.slow


def file_size_limit(max_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child, before it starts Python
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def run_limited(max_bytes: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixsift", *args],
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=file_size_limit(max_bytes),
        check=False,
    )


@pytest.fixture
def indexed(library_dir: Path, photos: Path, tiny_model: TinyModel) -> Path:
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    return library_dir


def test_a_full_disk_stops_the_run_with_a_clear_message_and_loses_nothing(
    indexed: Path, photos: Path
) -> None:
    write_photos(photos, 40, size=(96, 72), seed=4000)
    result = run_limited(64_000, "index", "--library", str(indexed), "--batch-size", "1")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: Cannot write to the library at {indexed}: ")
    assert "Is the disk full, or the folder read-only?" in result.stderr
    said_error, said_kept = result.stderr.splitlines()  # two lines, no traceback
    assert "Traceback" not in result.stderr
    # What was kept is said once, in numbers: the error no longer says "Everything saved
    # before is kept; ... run the command again" above "N images ... are kept: run the command".
    assert said_error.endswith("Is the disk full, or the folder read-only?"), said_error
    assert result.stderr.count("kept") == 1 and result.stderr.count("run the command again") == 1

    with Library.open(indexed) as library:  # space freed: everything committed is there
        health = library.check()
        assert health.healthy, health.problems
        kept = library.status().counts.indexed
        assert 12 < kept < 52
        # The batch whose commit failed is not counted: the line says what the library holds.
        count, _ = said_kept.split(" ", 1)
        assert int(count) == kept - 12, said_kept
        assert said_kept.endswith(" kept: run the command again to index the rest.")
        assert len(library.search("a photo", k=100)) == kept
        report = library.index()
        assert (report.added, report.unchanged) == (52 - kept, kept)
        assert library.check().healthy and library.check().notes == []


def test_a_library_made_on_a_full_disk_says_the_disk_is_full(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """The database cannot even be made: the error is the write's, not a damaged library's,
    and nothing is left that later commands would take for a library."""
    library = tmp_path / "new" / "library"
    result = run_limited(1_000, "index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: Cannot write to the library at {library}: "), result.stderr
    assert "Is the disk full, or the folder read-only? No library was made; fix that" in result.stderr
    assert result.stderr.count("\n") == 1 and "as a pixsift library" not in result.stderr
    # Once an empty library.db stayed: status then made and showed an empty library there.
    assert not (tmp_path / "new").exists()  # the folders made for it are gone too
    status = run_cli("status", "--library", str(library))
    assert status.returncode == 1 and status.stderr.startswith(f"error: No pixsift library at {library}.")
    assert not library.exists()
    # Space freed: the same command makes the library and indexes every photo.
    again = run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert again.returncode == 0, again.stderr
    with Library.open(library) as made:
        assert made.status().counts.indexed == 12


def test_a_library_that_cannot_be_made_leaves_the_users_folder_as_it_was(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "notes.txt").write_text("mine")
    result = run_limited(1_000, "index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert result.returncode == 1 and "No library was made" in result.stderr, result.stderr
    assert sorted(p.name for p in library.iterdir()) == ["notes.txt"]
    searched = run_cli("search", "a photo", "--library", str(library))
    assert searched.returncode == 1 and "No pixsift library at" in searched.stderr, searched.stderr


def test_a_library_that_exists_is_never_removed_on_a_full_disk(indexed: Path) -> None:
    """Opening an existing library on a full disk, whatever fails, leaves its files alone."""
    before = digest(indexed)
    result = run_limited(1_000, "index", "--library", str(indexed))
    assert "No library was made" not in result.stderr
    assert digest(indexed)["library.db"] == before["library.db"]
    with Library.open(indexed, create=False) as library:
        assert library.status().counts.indexed == 12


def test_a_library_opened_on_a_full_disk_is_not_called_damaged(indexed: Path) -> None:
    """No process has it open, so even a search must make SQLite's shared-memory file, which a
    full disk refuses as an I/O error: said as a full disk, not as a file that is no library."""
    before = digest(indexed)
    for command in (["search", "a photo"], ["status"]):
        result = run_limited(1_000, *command, "--library", str(indexed))
        assert result.returncode == 1
        assert result.stderr == (
            f"error: Cannot write to the library at {indexed}: disk I/O error. Is the disk full, or "
            "the folder read-only? Everything saved before is kept; fix that and run the command again.\n"
        )
    after = digest(indexed)  # beside them, SQLite may leave its empty -wal and -shm files
    assert {name: after[name] for name in before} == before
    assert run_cli("search", "a photo", "--library", str(indexed)).returncode == 0  # room again


def test_an_index_run_that_kept_nothing_prints_the_error_alone(tmp_path: Path, photos: Path) -> None:
    """The default model cannot be had here (no hub): the run scans, then stops on the model,
    before its first batch. Nothing was indexed, so nothing more is said than the error."""
    library = tmp_path / "library"
    result = run_cli("index", str(photos), "--library", str(library))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: Cannot get the weights of ViT-B-32")
    assert result.stderr.count("\n") == 1, result.stderr
    # The API's error carries the run's report.
    with pytest.raises(ModelError) as stopped, Library.open(library) as opened:
        opened.index(photos)
    assert stopped.value.report is not None
    assert (stopped.value.report.scanned, stopped.value.report.kept) == (12, 0)


def test_a_search_on_a_full_disk_still_answers(indexed: Path) -> None:
    (indexed / "vectors.faiss").unlink()  # the search rebuilds it and cannot save it
    with Library.open(indexed) as holder:
        holder.status()  # keeps SQLite's shared-memory file open, as any running search would
        result = run_limited(1_000, "search", "a photo", "-f", "json", "--library", str(indexed))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 10
    assert not (indexed / "vectors.faiss").exists()
    assert sorted(p.name for p in indexed.iterdir() if ".tmp-" in p.name) == []


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run_read_only(library_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pixsift with `library_dir` read-only for it."""
    command = [sys.executable, "-m", "pixsift", *args]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [library_dir, *library_dir.iterdir()]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            return run_cli(*args)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"], check=False).returncode != 0:
        pytest.skip("running as root without mount namespaces: cannot make a folder read-only")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
    return subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", str(library_dir), *command],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_read_only_library_says_so_and_is_left_as_it_was(indexed: Path, photos: Path) -> None:
    write_photos(photos, 2, size=(96, 72), seed=4100)
    before = digest(indexed)
    for args in (["index"], ["search", "a photo"]):
        result = run_read_only(indexed, *args, "--library", str(indexed))
        assert result.returncode == 1, result.stderr
        assert result.stderr == (
            f"error: The library at {indexed} is read-only. pixsift needs to write there, even to "
            "search (SQLite keeps its journal beside the database): make the folder writable, or "
            "copy the library to a writable place and use --library.\n"
        )
    assert digest(indexed) == before
    with Library.open(indexed) as library:  # writable again: all there, and it goes on
        assert library.check().healthy
        assert library.index().added == 2


@needs_permissions
def test_a_lock_file_this_user_cannot_write_is_a_message_not_a_traceback(indexed: Path, photos: Path) -> None:
    """library.lock made by another user (say, a first run under sudo) with the rest writable:
    searches still answer; commands that need the lock say why they cannot run."""
    args = ["--library", str(indexed)]
    expected = run_cli("search", "a photo", "--format", "paths", *args)
    (indexed / "vectors.faiss").unlink()  # the search rebuilds it and would save it, locked
    (indexed / "library.lock").chmod(0o444)
    searched = run_cli("search", "a photo", "--format", "paths", *args, obey_permissions=True)
    assert (searched.returncode, searched.stdout) == (0, expected.stdout), searched.stderr
    write_photos(photos, 1, size=(96, 72), seed=4200)
    for command in (["index"], ["doctor"], ["forget", str(photos)]):
        result = run_cli(*command, *args, obey_permissions=True)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(
            f"error: Cannot write to the library at {indexed}: permission denied."
        )
    (indexed / "library.lock").chmod(0o644)
    with Library.open(indexed) as library:  # nothing was changed: the next run adds the photo
        assert library.check().healthy
        assert library.index().added == 1
