"""`relocate`: an indexed folder that moved keeps its images' ids and vectors under the new path."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

import crash_soak
from conftest import TerminalRun, TinyModel, interrupted_at, run_cli
from pixsift import InvalidPathError, Library
from pixsift.search.quick import answer_quickly
from pixsift.storage.vector_index import read_header
from sample_photos import make_photo, save, write_photos

ODD_NAME = os.fsdecode(b"caf\xe9 \xff.jpg")  # not UTF-8: stored as these very bytes


def index(library: Library, tiny_model: TinyModel, *roots: Path, include_hidden: bool = False) -> None:
    model, pretrained = str(tiny_model.config), str(tiny_model.checkpoint)
    library.index(*roots, model=model, pretrained=pretrained, include_hidden=include_hidden)


def by_path(library: Library) -> dict[str, int]:
    """Every indexed image's id, by path."""
    return {path: image_id for image_id, path in library._catalog.image_paths()}


def new_path(path: str, old: Path, new: Path) -> str:
    return str(new / Path(path).relative_to(old)) if path.startswith(f"{old}/") else path


def stored_paths(library: Library) -> set[bytes]:
    with sqlite3.connect(library.path / "library.db") as db:
        return {bytes(row[0]) for row in db.execute("SELECT path FROM images")}


def roots(library: Library) -> list[tuple[str, bool, bool]]:
    return [(r.path, r.include_hidden, r.follow_symlinks) for r in library.status().roots]


@pytest.fixture
def collection(photos: Path, tmp_path: Path) -> dict[str, Path]:
    """~/Photos with a subfolder, a hidden photo and a name that is not UTF-8, and beside it
    ~/Photos2, whose paths start with "~/Photos" too."""
    write_photos(photos / "2024" / "trip", 2, seed=700)
    save(make_photo(710), photos / ".hidden.jpg")
    save(make_photo(720), photos / ODD_NAME)
    beside = tmp_path / "Photos2"
    write_photos(beside, 3, seed=730)
    return {"photos": photos, "beside": beside, "new": tmp_path / "Pictures"}


def test_a_renamed_folder_keeps_its_ids_vectors_options_and_thumbnails(
    open_library: Library,
    collection: dict[str, Path],
    tiny_model: TinyModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photos, beside, new = collection["photos"], collection["beside"], collection["new"]
    index(open_library, tiny_model, photos, include_hidden=True)
    index(open_library, tiny_model, beside)
    before = by_path(open_library)
    vectors = open_library._catalog.vectors(before.values())
    generation = open_library._catalog.generation()
    shown = before[str(photos / ODD_NAME)]
    thumbnail = open_library.thumbnail(shown)
    made = thumbnail.stat().st_mtime_ns

    photos.rename(new)  # mv ~/Photos ~/Pictures
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_library.relocate("~/Photos/", new) == 12 + 2 + 2

    moved = {new_path(path, photos, new): image_id for path, image_id in before.items()}
    assert by_path(open_library) == moved
    assert sum(path.startswith(f"{beside}/") for path in moved) == 3  # the folder beside is untouched
    assert os.fsencode(new / ODD_NAME) in stored_paths(open_library)
    assert roots(open_library) == [(str(beside), False, False), (str(new), True, False)]
    assert open_library._catalog.generation() == generation  # no vector changed: the index stays
    after = open_library._catalog.vectors(before.values())
    assert all((after[i] == vectors[i]).all() for i in vectors)
    hits = open_library.search("a photo", k=100)
    assert {str(hit.path): hit.id for hit in hits} == moved
    assert open_library.thumbnail(shown) == thumbnail  # cached by id: served as it was
    assert thumbnail.stat().st_mtime_ns == made

    # What `pixsift index` then does: every file unchanged, none opened, no new id.
    report = open_library.index()
    counts = (report.unchanged, report.added, report.embedded, report.reused, report.removed)
    assert counts == (16 + 3, 0, 0, 0, 0)
    assert report.skipped_roots == []
    assert by_path(open_library) == moved


def test_the_quick_search_shows_the_new_paths_at_once(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    folder = tmp_path / "library"
    with Library.open(folder) as library:
        index(library, tiny_model, photos)
    first = answer_quickly("a photo", 5, library=folder)
    assert first is not None and all(hit.path.parent == photos for hit in first)
    saved = read_header(folder / "vectors.faiss")
    new = tmp_path / "Pictures"
    photos.rename(new)
    with Library.open(folder) as library:
        assert library.relocate(photos, new) == 12
    assert read_header(folder / "vectors.faiss") == saved  # the search index file is reused
    again = answer_quickly("a photo", 5, library=folder)
    assert again is not None, "the quick path handed over to the library"
    assert [(hit.id, hit.path) for hit in again] == [(hit.id, new / hit.path.name) for hit in first]


def test_roots_inside_the_folder_move_with_it(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    drive = photos / "drive"
    write_photos(drive, 2, seed=740)
    index(open_library, tiny_model, photos)
    index(open_library, tiny_model, drive, include_hidden=True)
    new = tmp_path / "Pictures"
    photos.rename(new)
    assert open_library.relocate(photos, new) == 14
    assert roots(open_library) == [(str(new), False, False), (str(new / "drive"), True, False)]
    report = open_library.index()
    assert (report.unchanged, report.added, report.reused) == (14, 0, 0)


def test_an_empty_mount_point_left_behind_is_a_move(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """The drive mounted at ~/Photos is mounted elsewhere now: its old mount point is empty."""
    index(open_library, tiny_model, photos)
    ids = sorted(by_path(open_library).values())
    new = tmp_path / "media" / "disk"
    shutil.copytree(photos, new)
    shutil.rmtree(photos)
    photos.mkdir()
    assert open_library.relocate(str(photos), str(new)) == 12
    assert sorted(by_path(open_library).values()) == ids
    assert all(path.startswith(f"{new}/") for path in by_path(open_library))


def test_a_folder_moved_and_left_as_a_link_is_a_move(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    index(open_library, tiny_model, photos)
    new = tmp_path / "big-disk" / "Photos"
    new.parent.mkdir()
    photos.rename(new)
    photos.symlink_to(new, target_is_directory=True)  # still holds every file, through the link
    assert open_library.relocate(photos, new) == 12
    assert roots(open_library) == [(str(new), False, False)]


def test_a_new_folder_given_through_a_link_is_stored_resolved(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """As `pixsift index` stores it: the next index run of either path is the same folder."""
    index(open_library, tiny_model, photos)
    new = tmp_path / "disk" / "Pictures"
    new.parent.mkdir()
    photos.rename(new)
    link = tmp_path / "Pictures"
    link.symlink_to(new, target_is_directory=True)
    assert open_library.relocate(photos, link) == 12
    assert roots(open_library) == [(str(new), False, False)]
    assert open_library.index(link).unchanged == 12


def refused(
    library: Library, old: str | Path, new: str | Path, message: str, command_line: str | None = None
) -> None:
    """`relocate(old, new)` is refused with `message` and leaves the library as it was; the
    command line says it as `command_line` (by default, as `message`)."""
    paths, known, generation = by_path(library), roots(library), library._catalog.generation()
    with pytest.raises(InvalidPathError) as raised:
        library.relocate(old, new)
    assert str(raised.value) == message
    assert raised.value.for_command_line() == (message if command_line is None else command_line)
    assert (by_path(library), roots(library), library._catalog.generation()) == (paths, known, generation)


def test_what_is_refused_changes_nothing(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    other = tmp_path / "Other"
    write_photos(other / "inner", 2, seed=750)
    index(open_library, tiny_model, photos, other)
    new = tmp_path / "Pictures"
    known = f"{other}, {photos}"

    nope = tmp_path / "Nope"
    refused(open_library, nope, new, f"{nope} is not an indexed folder (indexed folders: {known}).")
    empty_old = f"The folder path is empty: name an indexed folder (indexed folders: {known})."
    refused(open_library, "", new, empty_old)
    empty_new = "The new folder path is empty: name the folder the indexed folder moved to."
    refused(open_library, photos, "", empty_new)
    refused(open_library, photos, new, f"Folder {new} does not exist: move the folder there first.")
    file = photos / "photo_0100.jpg"
    refused(
        open_library, photos, file, f"{file} is not a folder; give the folder the indexed folder moved to."
    )
    same = f"{photos} is where the library already has it: nothing to relocate."
    refused(open_library, photos, photos, same)

    # Still there with files: copied, not moved (a backup, or a drive copied to a new one)
    shutil.copytree(photos, new)
    copied = (
        f"{photos} still holds files, so it was copied, not moved: to index the copy as a folder of its own,"
    )
    why = "(its images get the vectors of the originals without being embedded again)."
    refused(
        open_library,
        photos,
        new,
        f"{copied} index({str(new)!r}) {why}",
        f"{copied} pixsift index {new} {why}",
    )
    (photos / "sub").mkdir()
    inside = f"{photos / 'sub'} lies inside {photos}: a folder cannot move into itself."
    refused(open_library, photos, photos / "sub", inside)

    shutil.rmtree(photos)
    indexed = (
        f"{other} is already an indexed folder, with ids of its own. If it holds the photos of "
        f"{photos}, indexed there again, drop the old ones:"
    )
    refused(
        open_library,
        photos,
        other,
        f"{indexed} forget({str(photos)!r})",
        f"{indexed} pixsift forget {photos}",
    )
    inner = other / "inner"
    into = (
        f"{inner} lies inside the indexed folder {other}, which relocate does not move folders "
        f"into. To index its photos as part of {other} instead:"
    )
    why = "(they get new ids; their vectors are reused, not embedded again)."
    refused(
        open_library,
        photos,
        inner,
        f"{into} index({str(other)!r}), then forget({str(photos)!r}) {why}",
        f"{into} pixsift index {other} && pixsift forget {photos} {why}",
    )
    around_old = f"{tmp_path} contains {photos}: relocate moves a folder to a new place outside where it was."
    refused(open_library, photos, tmp_path, around_old)
    around = tmp_path / "around"
    around.mkdir()
    other.rename(around / "Other")
    (tmp_path / "Other").symlink_to(around / "Other")  # the other root, left as a link
    refused(open_library, photos, around, f"{around} holds the indexed folder {other}.")

    assert open_library.relocate(photos, new) == 12  # what is allowed still works


@pytest.mark.slow
def test_the_command_says_what_moved_and_how_to_catch_up(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    library = ["--library", str(tmp_path / "library")]
    first = run_cli("index", str(photos), "--include-hidden", *library, *tiny_model.index_args())
    assert first.returncode == 0, first.stderr
    new = tmp_path / "Pictures"
    photos.rename(new)
    kept = run_cli("index", *library)
    assert f"(if it moved: pixsift relocate {photos} NEW; if it is gone for good: " in kept.stdout

    moved = run_cli("relocate", str(photos), str(new), *library)
    assert (moved.returncode, moved.stderr) == (0, "")
    assert moved.stdout == (
        f"Relocated {photos} to {new}: 12 image(s) moved, their ids and vectors kept. "
        f"To pick up what changed meanwhile: pixsift index --include-hidden {new}\n"
    )
    again = run_cli("index", "--include-hidden", str(new), *library)
    assert again.returncode == 0, again.stderr
    assert "0 new, 0 updated, 0 moved, 0 copies, 0 removed, 12 unchanged, 0 failed" in again.stdout

    twice = run_cli("relocate", str(photos), str(new), *library)
    assert (twice.returncode, twice.stdout) == (1, "")
    assert twice.stderr == f"error: {photos} is not an indexed folder (indexed folders: {new}).\n"


def test_paths_typed_relative_are_named_as_the_library_stores_them(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`pixsift relocate ../Photos ../Pictures` and `pixsift forget ./Pictures/` said "Relocated
    ../Photos" and "Forgot ./Pictures/": what they moved and dropped is named as `status` lists it."""
    library = ["--library", str(tmp_path / "library")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    new = tmp_path / "Pictures"
    photos.rename(new)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    moved = run_cli("relocate", "../Photos", "../Pictures/", *library, cwd=elsewhere)
    assert (moved.returncode, moved.stderr) == (0, "")
    assert moved.stdout.startswith(f"Relocated {photos} to {new}: 12 image(s) moved,"), moved.stdout
    with Library.open(tmp_path / "library", create=False) as lib:
        assert lib.indexed_folder(elsewhere / ".." / "Pictures") == str(new)
        with pytest.raises(InvalidPathError, match=r"Photos .* is not an indexed folder"):
            lib.indexed_folder("../Photos")

    forgot = run_cli("forget", "./Pictures/", *library, cwd=tmp_path)
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout == f"Forgot {new}: 12 image(s) removed from the library; no file was touched.\n"


@pytest.mark.slow
def test_killed_before_its_transaction_commits_it_changes_nothing_and_runs_again(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """The real `pixsift relocate`, killed with SIGKILL after rewriting every path and root,
    before its commit (the soak's child pauses it there): the library opens, checks clean and
    answers with the old paths; the same command then moves everything, ids and vectors kept."""
    folder = tmp_path / "library"
    drive = photos / "drive"
    write_photos(drive, 2, seed=760)
    with Library.open(folder) as library:
        index(library, tiny_model, photos)
        index(library, tiny_model, drive, include_hidden=True)
        before, known = by_path(library), roots(library)
    new = tmp_path / "Pictures"
    photos.rename(new)
    pause = tmp_path / "pause"
    pause.mkdir()
    argv = ["relocate", str(photos), str(new), "--library", str(folder)]
    child = subprocess.Popen(
        [sys.executable, crash_soak.__file__, "child", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, crash_soak.PAUSE_ENV: str(pause)},
    )
    deadline = time.monotonic() + 60
    while not (pause / "moving").exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)

    with Library.open(folder) as library:
        assert library.check(wait=0).healthy
        assert (by_path(library), roots(library)) == (before, known)
        hits = library.search("a photo", k=100)
        assert {str(hit.path): hit.id for hit in hits} == before
        assert library.relocate(photos, new, wait=0) == 14
        moved = {new_path(path, photos, new): image_id for path, image_id in before.items()}
        assert by_path(library) == moved
        report = library.index()
        assert (report.unchanged, report.added, report.reused, report.removed) == (14, 0, 0, 0)
        assert library.check(wait=0).healthy


@pytest.mark.slow
def test_ctrl_c_while_it_commits_reports_the_move_it_kept(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Ctrl-C inside the real `pixsift relocate`'s transaction is held back until it has
    committed; the command then said only "Interrupted." (exit 130), though every path had
    moved. It now prints what moved, then that the change is kept."""
    folder = tmp_path / "library"
    with Library.open(folder) as library:
        index(library, tiny_model, photos)
        before = by_path(library)
    new = tmp_path / "Pictures"
    photos.rename(new)
    done = interrupted_at(
        "moving", tmp_path / "pause", "relocate", str(photos), str(new), "--library", str(folder)
    )
    assert (done.returncode, done.stderr) == (
        130,
        "Interrupted once the change above was saved: it is kept.\n",
    )
    assert done.stdout.startswith(
        f"Relocated {photos} to {new}: 12 image(s) moved, their ids and vectors kept."
    )
    with Library.open(folder) as library:
        assert by_path(library) == {
            new_path(path, photos, new): image_id for path, image_id in before.items()
        }
        assert library.check(wait=0).healthy


@pytest.mark.slow
def test_ctrl_c_before_it_commits_says_nothing_changed(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Ctrl-C while the real `pixsift relocate` waits for another run (its line on the
    terminal says so) ends it with a line that says nothing changed, not a bare "Interrupted."."""
    folder = tmp_path / "library"
    with Library.open(folder) as library:
        index(library, tiny_model, photos)
        before, known = by_path(library), roots(library)
    new = tmp_path / "Pictures"
    photos.rename(new)
    with FileLock(folder / "library.lock"):  # another run holds the library
        run = TerminalRun("relocate", str(photos), str(new), "--library", str(folder), "--wait", "60")
        run.wait_for("Waiting for another index run")
        run.process.send_signal(signal.SIGINT)
        code, stdout, shown = run.finish()
    assert (code, stdout) == (130, "")
    assert shown.endswith("\x1b[?25hInterrupted: nothing was changed.\r\n"), shown  # once the line is gone
    with Library.open(folder) as library:
        assert (by_path(library), roots(library)) == (before, known)


@pytest.mark.slow
def test_a_nested_folder_renamed_inside_its_enclosing_one_is_told_how_to_keep_its_ids(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """~/Photos and ~/Photos/trips both indexed, trips renamed to travel: relocate refuses
    (travel lies inside ~/Photos) and said only that, leaving the user no way forward. It now
    gives the commands that keep the ids; run as given, they do, and travel is indexed with
    trips' options."""
    library = ["--library", str(tmp_path / "library")]
    trips = photos / "trips"
    write_photos(trips, 3, size=(96, 72), seed=780)
    save(make_photo(790), trips / ".hidden.jpg")
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    assert run_cli("index", "--include-hidden", str(trips), *library).returncode == 0
    with Library.open(tmp_path / "library") as library_before:
        before = by_path(library_before)
    travel = photos / "travel"
    trips.rename(travel)

    refusal = run_cli("relocate", str(trips), str(travel), *library)
    assert (refusal.returncode, refusal.stdout) == (1, "")
    commands = f"pixsift forget {trips} && pixsift index --include-hidden {travel}"
    assert refusal.stderr == (
        f"error: {travel} lies inside the indexed folder {photos}, which relocate does not move "
        f"folders into. As {trips} lies in it too, forget the old name and index the new one: "
        f"{commands} (its photos are matched by content: those unchanged keep their ids and vectors).\n"
    )
    with Library.open(tmp_path / "library") as opened, pytest.raises(InvalidPathError) as from_python:
        opened.relocate(trips, travel)
    assert str(from_python.value) == (  # what to call, not the commands to run
        f"{travel} lies inside the indexed folder {photos}, which relocate does not move folders "
        f"into. As {trips} lies in it too, forget the old name and index the new one: "
        f"forget({str(trips)!r}), then index({str(travel)!r}, include_hidden=True) (its photos are "
        "matched by content: those unchanged keep their ids and vectors)."
    )
    for command in commands.split(" && "):
        done = run_cli(*command.split()[1:], *library)
        assert done.returncode == 0, done.stderr
    assert "4 moved, 0 copies" in done.stdout
    with Library.open(tmp_path / "library") as opened:
        assert by_path(opened) == {
            new_path(path, trips, travel): image_id for path, image_id in before.items()
        }
        assert roots(opened) == [(str(photos), False, False), (str(travel), True, False)]
