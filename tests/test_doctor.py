"""`Library.check()` / `repair()` and `pixsift doctor`, on libraries damaged the ways disks and
people damage them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TerminalRun, TinyModel, needs_permissions, run_cli
from pixsift import HealthReport, ImageNotFoundError, Library, LibraryFormatError
from pixsift.cli import app
from pixsift.storage.vector_index import VectorIndex
from sample_photos import write_photos
from test_library import PhaseRecorder  # a listener that records the phases of a run


@pytest.fixture
def indexed(library_dir: Path, photos: Path, tiny_model: TinyModel) -> Path:
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    return library_dir


def check(library_dir: Path) -> HealthReport:
    with Library.open(library_dir, create=False) as library:
        return library.check()


def repair(library_dir: Path) -> HealthReport:
    with Library.open(library_dir, create=False) as library:
        return library.repair()


def kinds(report: HealthReport) -> list[str]:
    return [problem.kind for problem in report.problems]


def edit_index(library_dir: Path, change: str) -> None:
    """Save the search index back with one kind of damage, at the same generation."""
    index = VectorIndex.load(library_dir / "vectors.faiss")
    assert index is not None
    first = int(index.ids()[0])
    other = np.random.default_rng(1).standard_normal(index.dim).astype(np.float32)
    if change == "altered":
        index.remove(np.array([first]))
        index.add(np.array([first]), other[None, :])
    elif change == "duplicate":
        index.add(np.array([first]), index.vector(first)[None, :])
    elif change == "phantom":
        index.add(np.array([10_000]), other[None, :])
    elif change == "lost":
        index.remove(np.array([first]))
    index.save(library_dir / "vectors.faiss")


def test_a_healthy_library(indexed: Path) -> None:
    report = check(indexed)
    assert report.healthy and report.notes == [] and report.repairs == []
    assert (report.images, report.vectors, report.index_vectors, report.sampled) == (12, 12, 12, 12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("altered", "1 of 12 sampled vector(s) differ between the search index and the database"),
        ("duplicate", "1 vector(s) appear more than once in the search index"),
        ("phantom", "1 vector(s) in the search index have no stored vector (phantom results)"),
        ("lost", "1 vector(s) stored are missing from the search index"),
    ],
)
def test_a_search_index_that_differs_from_the_database_is_rebuilt(
    indexed: Path, change: str, message: str
) -> None:
    with Library.open(indexed) as library:
        expected = library.search("a photo", k=12)
    edit_index(indexed, change)
    found = check(indexed)
    assert kinds(found) == ["index-mismatch"] and message in found.problems[0].message
    assert found.problems[0].repairable

    repaired = repair(indexed)
    assert repaired.healthy
    assert repaired.repairs == ["rebuilt the search index from 12 stored vector(s)"]
    with Library.open(indexed) as library:
        assert library.search("a photo", k=12) == expected


def test_a_bit_flipped_in_the_index_file_is_caught_not_searched(indexed: Path) -> None:
    """FAISS loaded the damaged vector as it was: a search ranked its image first with a score
    of 4.7e36, and only doctor's sample could notice."""
    args = ["search", "a photo", "-k", "12", "-f", "json", "--library", str(indexed)]
    expected = run_cli(*args)
    assert expected.returncode == 0, expected.stderr
    data = bytearray((indexed / "vectors.faiss").read_bytes())
    middle = len(data) // 2  # inside the stored vectors: one bit of each byte of one float
    data[middle : middle + 4] = bytes(byte ^ 0x40 for byte in data[middle : middle + 4])
    (indexed / "vectors.faiss").write_bytes(bytes(data))
    found = check(indexed)
    assert kinds(found) == ["index-damaged"] and found.problems[0].repairable
    searched = run_cli(*args)  # answered from an index rebuilt from the database
    assert (searched.returncode, searched.stdout) == (0, expected.stdout), searched.stderr
    # and saved: the next searches load it, where each rebuilt the whole index from the database
    assert check(indexed).healthy and VectorIndex.load(indexed / "vectors.faiss") is not None


def test_a_damaged_or_foreign_index_file(
    indexed: Path, tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    (indexed / "vectors.faiss").write_bytes(b"PIXSIFT-VECTORS\n{not json")
    assert kinds(check(indexed)) == ["index-damaged"]
    assert repair(indexed).healthy

    other = tmp_path / "other-library"  # a bigger library, further on: its index is not ours
    with Library.open(other) as library:
        for _ in range(3):
            library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
            shutil.copy(photos / "photo_0100.jpg", photos / f"copy-{library.status().generation}.jpg")
    shutil.copy(other / "vectors.faiss", indexed / "vectors.faiss")
    assert kinds(check(indexed)) == ["index-foreign"]
    assert repair(indexed).healthy


@pytest.mark.parametrize("damage", ["deleted", "damaged"])
def test_the_repair_shows_its_rebuild_of_the_search_index_as_a_phase(indexed: Path, damage: str) -> None:
    """The repair rebuilt the whole search index (minutes at 1M vectors) without a word, where
    `index` and `reindex` show the same work as "Building search index"."""
    if damage == "deleted":
        (indexed / "vectors.faiss").unlink()
    else:
        (indexed / "vectors.faiss").write_bytes(b"PIXSIFT-VECTORS\n{not json")
    recorder = PhaseRecorder()
    with Library.open(indexed, create=False) as library:
        report = library.repair(progress=recorder)
    assert report.healthy and report.repairs == ["rebuilt the search index from 12 stored vector(s)"]
    assert recorder.events == ["start Building search index", "stop"]


def test_doctor_repair_shows_the_rebuild_on_the_terminal(indexed: Path) -> None:
    (indexed / "vectors.faiss").unlink()
    code, stdout, shown = TerminalRun("doctor", "--repair", "--library", str(indexed)).finish()
    assert code == 0, (stdout, shown)
    assert "rebuilt the search index from 12 stored vector(s)" in stdout
    assert "Building search index" in shown


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_new_database_does_not_adopt_the_index_file_of_a_lost_one(
    library_dir: Path, photos: Path, tmp_path: Path, tiny_model: TinyModel, loss: str
) -> None:
    def index(library: Library, folder: Path) -> None:  # a batch, and a generation, per image
        library.index(
            folder, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), batch_size=1
        )

    with Library.open(library_dir) as library:
        index(library, photos)
    # library.db deleted (say, after doctor called it damaged) or left empty, vectors.faiss left
    # behind: the new database counts generations from 0 again, so the old file looked behind.
    for leftover in library_dir.glob("library.db-*"):
        leftover.unlink()
    if loss == "deleted":
        (library_dir / "library.db").unlink()
    else:
        (library_dir / "library.db").write_bytes(b"")
    others = tmp_path / "Others"
    write_photos(others, 14, size=(320, 240), seed=200)
    with Library.open(library_dir) as library:
        index(library, others)
        assert library.check().healthy
        found = [(r.path, round(r.score, 5)) for r in library.search("a photo", k=20)]
    with Library.open(tmp_path / "fresh") as fresh:
        index(fresh, others)
        assert found == [(r.path, round(r.score, 5)) for r in fresh.search("a photo", k=20)]


def test_an_index_file_that_cannot_be_opened_is_damaged_not_a_crash(indexed: Path) -> None:
    with Library.open(indexed) as library:
        expected = library.search("a photo", k=12)
    (indexed / "vectors.faiss").unlink()
    (indexed / "vectors.faiss").mkdir()  # open() fails with an OSError, as for an I/O error
    report = check(indexed)
    assert kinds(report) == ["index-damaged"]
    assert not report.problems[0].repairable  # no save can replace a folder
    with Library.open(indexed) as library:
        assert library.search("a photo", k=12) == expected  # rebuilt in memory; cannot be saved
    checked = run_cli("doctor", "--library", str(indexed))
    assert (checked.returncode, "Traceback" in checked.stderr) == (3, False)
    assert "A folder stands where the search index file belongs" in checked.stdout
    assert "--repair fixes" not in checked.stdout
    repaired = run_cli("doctor", "--repair", "--library", str(indexed))  # the rest, and says so
    assert (repaired.returncode, repaired.stderr) == (3, "")
    assert "A folder stands where the search index file belongs" in repaired.stdout


def test_index_runs_and_reindex_name_a_folder_in_place_of_the_index_file(indexed: Path, photos: Path) -> None:
    """A save cannot replace a folder: the error says so, not "Is the disk full?", which would
    send the user looking at the wrong thing (and running the command again changes nothing)."""
    (indexed / "vectors.faiss").unlink()
    (indexed / "vectors.faiss").mkdir()
    shutil.copy(next(photos.glob("*.jpg")), photos / "a-new-copy.jpg")
    told = f"A folder stands where the search index file belongs ({indexed / 'vectors.faiss'}): move it away"
    for command in (["reindex"], ["index"]):
        ran = run_cli(*command, "--library", str(indexed))
        assert ran.returncode == 1, ran.stderr
        assert ran.stderr.startswith(f"error: {told}"), ran.stderr
        assert "disk full" not in ran.stderr
    # The index run's second line says what it kept, so the first does not say it too.
    assert ran.stderr.splitlines() == [
        f"error: {told}, then run the command again.",
        "1 image was indexed before this and is kept: run the command again to index the rest.",
    ]
    (indexed / "vectors.faiss").rmdir()
    assert run_cli("reindex", "--library", str(indexed)).returncode == 0
    with Library.open(indexed, create=False) as library:
        assert library.status().counts.indexed == 13  # the copy, kept by the index run that failed


@needs_permissions
def test_an_index_file_without_read_permission_is_rebuilt(indexed: Path) -> None:
    args = ["--library", str(indexed)]
    expected = run_cli("search", "a photo", "-k", "12", "--format", "paths", *args)
    assert expected.returncode == 0
    (indexed / "vectors.faiss").chmod(0)
    checked = run_cli("doctor", *args, obey_permissions=True)
    assert (checked.returncode, "Traceback" in checked.stderr) == (3, False)
    assert "The search index file cannot be used: it cannot be read (Permission denied)." in checked.stdout
    searched = run_cli("search", "a photo", "-k", "12", "--format", "paths", *args, obey_permissions=True)
    assert (searched.returncode, searched.stdout) == (0, expected.stdout)
    (indexed / "vectors.faiss").chmod(0)
    repaired = run_cli("doctor", "--repair", *args, obey_permissions=True)
    assert repaired.returncode == 0, repaired.stderr
    assert "rebuilt the search index from 12 stored vector(s)" in repaired.stdout


def test_missing_index_and_leftovers_are_notes_not_problems(indexed: Path) -> None:
    """Notes in the words of the face: `repair()` from Python, `--repair` on the command line."""
    (indexed / "vectors.faiss").unlink()
    (indexed / "vectors.faiss.tmp-4242").write_bytes(b"half a save")
    report = check(indexed)
    assert report.healthy
    assert report.notes == [
        "no search index file yet: the next search or repair() builds it",
        "1 temporary file(s) of an interrupted index save; removed by the next save or by repair()",
    ]
    doctor = runner.invoke(app, ["doctor", "--library", str(indexed)])
    assert doctor.stdout.splitlines()[2:4] == [
        "note: no search index file yet: the next search or --repair builds it",
        "note: 1 temporary file(s) of an interrupted index save; removed by the next save or by --repair",
    ]
    as_json = json.loads(runner.invoke(app, ["doctor", "-f", "json", "--library", str(indexed)]).stdout)
    assert as_json["notes"] == [line.removeprefix("note: ") for line in doctor.stdout.splitlines()[2:4]]
    repaired = repair(indexed)
    assert repaired.repairs == [
        "rebuilt the search index from 12 stored vector(s)",
        "removed 1 temporary file(s) of an interrupted save",
    ]
    assert repaired.notes == [] and not (indexed / "vectors.faiss.tmp-4242").exists()


def test_files_gone_from_disk_are_dropped_but_not_an_unmounted_folder(
    indexed: Path, photos: Path, tmp_path: Path
) -> None:
    for path in sorted(photos.iterdir())[:2]:
        path.unlink()
    found = check(indexed)
    assert kinds(found) == ["missing-files"]
    assert (
        found.problems[0].message
        == "2 indexed file(s) no longer exist on disk (if moved, index() finds them again and "
        "keeps their ids)."
    )
    repaired = repair(indexed)
    assert repaired.healthy and "dropped 2 row(s) of files gone from disk" in repaired.repairs
    assert (repaired.images, repaired.index_vectors) == (10, 10)

    photos.rename(tmp_path / "unplugged")
    unmounted = repair(indexed)
    assert unmounted.healthy
    kept = "10 image(s) under folders that are missing or empty (unmounted?): kept as they are"
    assert unmounted.notes == [
        f"{kept} (relocate(folder, new) for a folder that moved; forget(folder) drops a folder gone for good)"
    ]
    doctor = runner.invoke(app, ["doctor", "--library", str(indexed)])
    assert (
        f"note: {kept} (pixsift relocate FOLDER NEW for a folder that moved; "
        "pixsift forget FOLDER drops a folder gone for good)\n" in doctor.stdout
    )
    assert unmounted.images == 10


def test_vectors_of_the_wrong_size_are_dropped_and_embedded_again(indexed: Path, photos: Path) -> None:
    with sqlite3.connect(indexed / "library.db") as db:
        db.execute("UPDATE embeddings SET vector = zeroblob(12) WHERE image_id = 1")
    found = check(indexed)
    assert kinds(found) == ["vector-size"]
    repaired = repair(indexed)
    assert repaired.healthy and repaired.vectors == 11
    assert repaired.notes == ["1 image(s) not embedded yet: the next index run embeds them"]
    with Library.open(indexed) as library:
        assert library.index(photos).updated == 1
        assert library.check().notes == []


def test_a_changed_schema_is_reported_not_repaired(indexed: Path) -> None:
    with sqlite3.connect(indexed / "library.db") as db:
        db.execute("ALTER TABLE images ADD COLUMN rating INTEGER")
    found = check(indexed)
    assert kinds(found) == ["schema"] and "table images has columns" in found.problems[0].message
    assert not repair(indexed).healthy


@pytest.mark.parametrize(
    ("statement", "difference"),
    [
        ("DROP TABLE roots", "roots is missing"),
        ("ALTER TABLE embeddings RENAME COLUMN vector TO v", "embeddings has columns ['image_id', 'v']"),
    ],
)
def test_a_schema_missing_a_table_or_column_is_reported_not_a_crash(
    indexed: Path, statement: str, difference: str
) -> None:
    """The checks after the schema's read the missing part: doctor stopped with an error there."""
    with sqlite3.connect(indexed / "library.db") as db:
        db.execute(statement)
    before = dump(indexed)
    result = run_cli("doctor", "--repair", "--library", str(indexed))
    assert result.returncode == 3, result.stderr
    assert f"problem: The database schema differs: table {difference}" in result.stdout
    assert (
        "Nothing more can be checked or repaired without it: restore the database from a backup, "
        "or index your folders into a new library." in result.stdout
    )
    assert "repaired:" not in result.stdout and result.stderr == ""
    assert "Checked  the database only: its images could not be read (below)" in result.stdout
    assert dump(indexed) == before
    assert kinds(check(indexed)) == ["schema"]
    as_json = json.loads(run_cli("doctor", "--format", "json", "--library", str(indexed)).stdout)
    assert as_json["contents_read"] is False and as_json["healthy"] is False


def dump(library_dir: Path) -> list[str]:
    """The database's content as SQL (its file's bytes change when SQLite checkpoints it)."""
    with sqlite3.connect(library_dir / "library.db") as db:
        return list(db.iterdump())


def test_a_damaged_database_is_reported_and_left_alone(indexed: Path, photos: Path) -> None:
    db_path = indexed / "library.db"
    with sqlite3.connect(db_path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_images_content_hash'"
        ).fetchone()[0]
    data = bytearray(db_path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + page_size] = b"\xff" * page_size  # an index page of the images table
    db_path.write_bytes(bytes(data))

    found = check(indexed)
    assert kinds(found) == ["database"] and not found.problems[0].repairable
    assert not found.contents_read  # nothing read from a damaged file can be trusted
    assert "Restore it from a backup" in found.problems[0].message
    assert repair(indexed).repairs == []
    assert db_path.read_bytes() == bytes(data)
    shutil.copy(photos / "photo_0100.jpg", photos / "copy.jpg")  # looked up by content hash
    with Library.open(indexed) as library, pytest.raises(LibraryFormatError, match="is damaged"):
        library.index(photos)  # reads the damaged page: a clear error, not a traceback


runner = CliRunner()


def test_doctor_command(indexed: Path, photos: Path) -> None:
    healthy = runner.invoke(app, ["doctor", "--library", str(indexed)])
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stdout.splitlines()[-1] == "No problems found."

    (photos / "photo_0100.jpg").unlink()
    sick = runner.invoke(app, ["doctor", "--library", str(indexed)])
    assert sick.exit_code == 3
    assert (
        "problem: 1 indexed file(s) no longer exist on disk (if moved, pixsift index finds them again "
        "and keeps their ids). (pixsift doctor --repair fixes this)" in sick.stdout
    )
    as_json = json.loads(runner.invoke(app, ["doctor", "-f", "json", "--library", str(indexed)]).stdout)
    assert as_json["healthy"] is False and as_json["contents_read"] is True
    assert as_json["problems"] == [
        {
            "kind": "missing-files",
            "message": "1 indexed file(s) no longer exist on disk (if moved, pixsift index finds them "
            "again and keeps their ids).",
            "repairable": True,
        }
    ]

    fixed = runner.invoke(app, ["doctor", "--repair", "--library", str(indexed)])
    assert fixed.exit_code == 0
    assert "repaired: dropped 1 row(s) of files gone from disk" in fixed.stdout
    assert fixed.stdout.splitlines()[-1] == "No problems found."

    missing = runner.invoke(app, ["doctor", "--library", str(indexed.parent / "none")])
    assert missing.exit_code == 1 and missing.stderr.startswith("error: No pixsift library at ")


@needs_permissions
def test_files_that_cannot_be_examined_are_kept_by_index_doctor_and_repair(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """A folder that lists but whose entries cannot be looked at (no search permission, as a
    stale network mount) is not a deleted folder: nothing of it is dropped, anywhere."""
    inside = photos / "inside"
    inside.mkdir()
    for path in sorted(photos.glob("*.jpg"))[:4]:
        path.rename(inside / path.name)
    args = ["--library", str(library_dir)]
    assert run_cli("index", str(photos), *args, *tiny_model.index_args()).returncode == 0
    inside.chmod(0o644)  # readable list of names, no stat of any of them
    try:
        again = run_cli("index", *args, obey_permissions=True)
        checked = run_cli("doctor", *args, obey_permissions=True)
        repaired = run_cli("doctor", "--repair", *args, obey_permissions=True)
    finally:
        inside.chmod(0o755)
    assert again.returncode == 3, again.stderr
    assert "0 removed" in again.stdout
    assert f"warning: could not read folder {inside} (" in again.stdout
    assert checked.returncode == 0, checked.stdout
    assert "4 indexed file(s) could not be checked (Permission denied): kept as they are" in checked.stdout
    assert repaired.returncode == 0 and "dropped" not in repaired.stdout
    after = run_cli("index", *args)
    assert after.returncode == 0 and "0 new" in after.stdout and "12 unchanged" in after.stdout


def test_thumbnails_of_images_no_longer_in_the_library_are_never_served_and_a_repair_removes_them(
    indexed: Path, photos: Path
) -> None:
    """A delete stopped after its commit (a crash) left its image's thumbnails behind, and a
    repair that dropped rows of files gone left theirs; ids are never reused, so they are only
    litter, but nothing but an index run that removed an image cleaned them up."""
    with Library.open(indexed, create=False) as library:
        deleted, gone, kept = (hit.id for hit in library.search("x", k=3))
        for image_id in (deleted, gone, kept):
            library.thumbnail(image_id, 64)
        cache = indexed / "thumbnails"
        shutil.copytree(cache / str(deleted), tmp := indexed.parent / "left-behind")
        library.delete(deleted)
        assert not (cache / str(deleted)).exists()
        tmp.rename(cache / str(deleted))  # as a delete stopped before its cleaning leaves it
        with pytest.raises(ImageNotFoundError):
            library.thumbnail(deleted, 64)
        Path(library.image(gone).path).unlink()
    result = runner.invoke(app, ["doctor", "--repair", "--library", str(indexed)])
    assert result.exit_code == 0, result.output
    assert "removed the thumbnails of 2 image(s) no longer in the library" in result.stdout
    assert sorted(path.name for path in cache.iterdir()) == [str(kept)]
    again = runner.invoke(app, ["doctor", "--repair", "--library", str(indexed)])
    assert "removed the thumbnails" not in again.stdout  # only what it did is said
