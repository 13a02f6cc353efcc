"""A photo moved between two index runs, its source folder walked first: the first run keeps a
departed record of it, and the run that finds it at its new place gives it back its id and
vector (`storage/departed.py`). Real files, a real SQLite catalog, a real FAISS index, a real
(tiny) CLIP."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TinyModel, run_cli
from pixsift import IndexReport, Library, PixsiftError
from pixsift.storage import departed
from pixsift.storage.schema import utcnow


def index(library: Library, tiny_model: TinyModel, *roots: Path, **options: Any) -> IndexReport:
    return library.index(
        *roots, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), **options
    )


def sql(library_dir: Path, query: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(library_dir / "library.db") as db:
        rows = db.execute(query, args).fetchall()
    db.close()
    return rows


def departed_ids(library_dir: Path) -> list[int]:
    return [row[0] for row in sql(library_dir, "SELECT image_id FROM departed ORDER BY image_id")]


def ids_by_path(library: Library) -> dict[Path, int]:
    """Every indexed image's id, by path, as a search as large as the library returns them."""
    hits = library.search("anything", k=1000)
    assert len({hit.id for hit in hits}) == len(hits)  # no id twice
    return {hit.path: hit.id for hit in hits}


@pytest.fixture
def inbox(photos: Path, tmp_path: Path) -> Path:
    """A second root beside `photos`, holding two of its photos."""
    folder = tmp_path / "Inbox"
    folder.mkdir()
    for name in ("photo_0100.jpg", "photo_0101.jpg"):
        (photos / name).rename(folder / name)
    return folder


@pytest.fixture
def away(tmp_path: Path) -> Path:
    """A folder no root holds: where files go while they are out of the library."""
    folder = tmp_path / "away"
    folder.mkdir()
    return folder


def test_a_photo_moved_out_of_a_root_indexed_first_keeps_its_id_and_vector(
    library_dir: Path, photos: Path, inbox: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, inbox, photos)
        before = ids_by_path(library)
        moved_id = before[inbox / "photo_0100.jpg"]
        vector = library._catalog.vector(moved_id)
    (photos / "2024").mkdir()
    (inbox / "photo_0100.jpg").rename(photos / "2024" / "a.jpg")

    with Library.open(library_dir) as library:
        assert library.index(inbox).removed == 1  # the source first: gone, and remembered
        assert departed_ids(library_dir) == [moved_id]
        report = library.index(photos)
        assert (report.moved, report.added, report.embedded, report.reused) == (1, 0, 0, 0)
        assert library._embedder is None  # its vector was not computed again: no model loaded
        after = ids_by_path(library)
        assert after[photos / "2024" / "a.jpg"] == moved_id
        assert set(after.values()) == set(before.values())
        stored = library._catalog.vector(moved_id)
        assert vector is not None and stored is not None and np.array_equal(stored, vector)
        outside = shutil.copy(photos / "2024" / "a.jpg", library_dir.parent / "query.jpg")
        assert library.similar(outside, k=1)[0].path == photos / "2024" / "a.jpg"
        image = library.image(moved_id)
        assert (image.width, image.height, image.format) == (1600, 1200, "JPEG")  # as decoded then
        assert library.search_vector(vector, k=1)[0].id == moved_id  # the search index has it
        assert library.check().healthy
    assert departed_ids(library_dir) == []


def test_a_photo_moved_out_of_a_folder_reindexed_first_keeps_its_id(
    open_library: Library, library_dir: Path, photos: Path, inbox: Path, tiny_model: TinyModel
) -> None:
    """`reindex` of a part of a root is a run too: what leaves it is remembered."""
    (photos / "sub").mkdir()
    (photos / "photo_0102.jpg").rename(photos / "sub" / "b.jpg")
    index(open_library, tiny_model, inbox, photos)
    moved_id = ids_by_path(open_library)[photos / "sub" / "b.jpg"]

    (photos / "sub" / "b.jpg").rename(inbox / "b.jpg")
    assert open_library.reindex(photos / "sub").removed == 1
    report = open_library.index(inbox)
    assert (report.moved, report.embedded) == (1, 0)
    assert ids_by_path(open_library)[inbox / "b.jpg"] == moved_id


def test_the_command_line_reports_the_move(
    photos: Path, inbox: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    library = ["--library", str(tmp_path / "library")]
    assert run_cli("index", str(inbox), str(photos), *library, *tiny_model.index_args()).returncode == 0
    (inbox / "photo_0100.jpg").rename(photos / "a.jpg")
    assert "1 removed" in run_cli("index", str(inbox), *library).stdout
    done = run_cli("index", str(photos), *library)
    assert done.returncode == 0, done.stderr
    assert "0 new, 0 updated, 1 moved, 0 copies, 0 removed" in done.stdout


def test_of_two_identical_copies_deleted_each_comes_back_under_its_own_id(
    open_library: Library, library_dir: Path, photos: Path, inbox: Path, away: Path, tiny_model: TinyModel
) -> None:
    shutil.copy(inbox / "photo_0100.jpg", inbox / "copy.jpg")
    index(open_library, tiny_model, inbox, photos)
    before = ids_by_path(open_library)
    for name in ("photo_0100.jpg", "copy.jpg"):
        (inbox / name).rename(away / name)
    assert open_library.index(inbox).removed == 2

    (away / "copy.jpg").rename(photos / "copy.jpg")  # one comes back: it takes its own id
    report = open_library.index(photos)
    assert (report.moved, report.embedded, report.reused) == (1, 0, 0)
    assert ids_by_path(open_library)[photos / "copy.jpg"] == before[inbox / "copy.jpg"]
    assert departed_ids(library_dir) == [before[inbox / "photo_0100.jpg"]]

    (away / "photo_0100.jpg").rename(photos / "renamed.jpg")  # then the other, renamed
    assert open_library.index(photos).moved == 1
    after = ids_by_path(open_library)  # (no id twice)
    assert after[photos / "renamed.jpg"] == before[inbox / "photo_0100.jpg"]
    assert departed_ids(library_dir) == []


def test_two_new_copies_of_one_departed_image_both_take_its_vector(
    library_dir: Path, photos: Path, inbox: Path, away: Path, tiny_model: TinyModel
) -> None:
    """The first copy takes the old id back; the second is a copy of it, its vector known, so
    nothing is embedded and no model is loaded."""
    with Library.open(library_dir) as library:
        index(library, tiny_model, inbox, photos)
        old_id = ids_by_path(library)[inbox / "photo_0100.jpg"]
        vector = library._catalog.vector(old_id)
    (inbox / "photo_0100.jpg").rename(away / "photo_0100.jpg")
    with Library.open(library_dir) as library:
        assert library.index(inbox).removed == 1
    for name in ("photo_0100.jpg", "second.jpg"):
        shutil.copy(away / "photo_0100.jpg", photos / name)

    with Library.open(library_dir) as library:
        report = library.index(photos)
        assert (report.moved, report.reused, report.embedded) == (1, 1, 0)
        assert library._embedder is None
        after = ids_by_path(library)
        assert after[photos / "photo_0100.jpg"] == old_id
        second = library._catalog.vector(after[photos / "second.jpg"])
        assert vector is not None and second is not None and np.array_equal(second, vector)
        image = library.image(after[photos / "second.jpg"])
        assert (image.width, image.height, image.format) == (1600, 1200, "JPEG")  # as decoded then
        assert library.check().healthy
    assert departed_ids(library_dir) == []


def test_a_photo_back_at_its_old_path_after_a_run_keeps_its_id(
    open_library: Library, photos: Path, away: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    path = photos / "photo_0103.jpg"
    image_id = ids_by_path(open_library)[path]
    path.rename(away / path.name)
    assert open_library.index(photos).removed == 1
    assert path not in ids_by_path(open_library)
    (away / path.name).rename(path)
    report = open_library.index(photos)
    assert (report.moved, report.embedded) == (1, 0)
    assert ids_by_path(open_library)[path] == image_id


def test_a_photo_back_after_the_retention_is_embedded_under_a_new_id(
    open_library: Library, library_dir: Path, photos: Path, away: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    path = photos / "photo_0104.jpg"
    image_id = ids_by_path(open_library)[path]
    path.rename(away / path.name)
    open_library.index(photos)
    long_ago = (utcnow() - departed.RETENTION - timedelta(minutes=1)).isoformat()
    sql(library_dir, "UPDATE departed SET departed_at = ?", long_ago)

    (away / path.name).rename(path)
    report = open_library.index(photos)
    assert (report.moved, report.added) == (0, 1)
    assert ids_by_path(open_library)[path] > image_id
    assert departed_ids(library_dir) == []  # purged at the end of the run


def test_departed_records_beyond_the_cap_are_purged_oldest_first(
    open_library: Library,
    library_dir: Path,
    photos: Path,
    away: Path,
    tiny_model: TinyModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(departed, "MAX_RECORDS", 2)
    index(open_library, tiny_model, photos)
    ids = ids_by_path(open_library)
    for name in ("photo_0100.jpg", "photo_0101.jpg", "photo_0102.jpg"):
        (photos / name).rename(away / name)
    assert open_library.index(photos).removed == 3
    assert len(departed_ids(library_dir)) == 2
    yesterday = (utcnow() - timedelta(days=1)).isoformat()
    sql(library_dir, "UPDATE departed SET departed_at = ?", yesterday)  # older than the next one

    (photos / "photo_0103.jpg").rename(away / "photo_0103.jpg")
    open_library.index(photos)
    kept = departed_ids(library_dir)
    assert len(kept) == 2 and ids[photos / "photo_0103.jpg"] in kept


def test_a_model_change_drops_the_departed_vectors(
    open_library: Library,
    library_dir: Path,
    photos: Path,
    away: Path,
    tiny_model: TinyModel,
    other_tiny_checkpoint: Path,
) -> None:
    index(open_library, tiny_model, photos)
    path = photos / "photo_0105.jpg"
    image_id = ids_by_path(open_library)[path]
    path.rename(away / path.name)
    open_library.index(photos)
    assert departed_ids(library_dir) == [image_id]

    open_library.index(model=str(tiny_model.config), pretrained=str(other_tiny_checkpoint), reembed=True)
    assert departed_ids(library_dir) == []  # a vector of the old model must never come back
    (away / path.name).rename(path)
    report = open_library.index(photos)
    assert (report.moved, report.added) == (0, 1)
    assert ids_by_path(open_library)[path] != image_id


def test_the_row_delete_and_the_departed_record_are_one_transaction(
    open_library: Library, library_dir: Path, photos: Path, away: Path, tiny_model: TinyModel
) -> None:
    """A write that fails after the record was made (here SQLite refuses the row's delete)
    leaves neither: a kill at that moment cannot leave the image both live and departed."""
    index(open_library, tiny_model, photos)
    path = photos / "photo_0106.jpg"
    image_id = ids_by_path(open_library)[path]
    path.rename(away / path.name)
    sql(library_dir, "CREATE TRIGGER no_delete BEFORE DELETE ON images BEGIN SELECT RAISE(ABORT, 'no'); END")
    with pytest.raises(PixsiftError):
        open_library.index(photos)
    assert departed_ids(library_dir) == []
    assert open_library.image(image_id).path == str(path)

    sql(library_dir, "DROP TRIGGER no_delete")
    assert open_library.index(photos).removed == 1
    assert departed_ids(library_dir) == [image_id]
    assert sql(library_dir, "SELECT count(*) FROM images WHERE id = ?", image_id) == [(0,)]


def test_forget_and_delete_keep_no_record_and_forget_drops_the_folders_records(
    open_library: Library, library_dir: Path, photos: Path, inbox: Path, away: Path, tiny_model: TinyModel
) -> None:
    """What the user removes on purpose does not come back: `forget` keeps no record of the
    folder's images and drops the records of those that left it before; deleting an image by
    id keeps none either. Records of other folders (an indexed folder inside it too) stay."""
    inner = photos / "inner"
    inner.mkdir()
    (photos / "photo_0102.jpg").rename(inner / "c.jpg")
    (photos / "photo_0104.jpg").rename(inner / "d.jpg")  # (a root emptied would look unmounted)
    index(open_library, tiny_model, inbox, photos)
    open_library.index(inner)
    ids = ids_by_path(open_library)
    for path in (photos / "photo_0103.jpg", inner / "c.jpg", inbox / "photo_0100.jpg"):
        path.rename(away / path.name)
    open_library.index()
    assert len(departed_ids(library_dir)) == 3

    assert open_library.forget(str(photos)) == 7  # its 12 photos, less 2 in Inbox, 2 inner, 1 gone
    assert departed_ids(library_dir) == sorted([ids[inner / "c.jpg"], ids[inbox / "photo_0100.jpg"]])
    deleted = ids[inbox / "photo_0101.jpg"]
    open_library.delete(deleted)
    assert deleted not in departed_ids(library_dir)

    (away / "photo_0103.jpg").rename(inbox / "photo_0103.jpg")  # forgotten: a new image now
    report = open_library.index(inbox)
    assert (report.moved, report.added) == (0, 2)  # and the deleted one, still on disk, is new too
    assert ids_by_path(open_library)[inbox / "photo_0103.jpg"] not in ids.values()


def test_rows_doctor_repair_drops_come_back_when_their_files_are_found(
    open_library: Library, library_dir: Path, photos: Path, away: Path, tiny_model: TinyModel
) -> None:
    """`doctor --repair` drops the rows of files gone from disk as an index run would, and keeps
    their records as a run does: a file moved out of every indexed folder, repaired away, and
    then moved into one keeps its id."""
    index(open_library, tiny_model, photos)
    path = photos / "photo_0107.jpg"
    image_id = ids_by_path(open_library)[path]
    path.rename(away / path.name)
    repaired = open_library.repair()
    assert "dropped 1 row(s) of files gone from disk" in repaired.repairs and repaired.healthy
    assert departed_ids(library_dir) == [image_id]

    (away / path.name).rename(photos / "back.jpg")
    report = open_library.index(photos)
    assert (report.moved, report.embedded) == (1, 0)
    assert ids_by_path(open_library)[photos / "back.jpg"] == image_id
    assert open_library.check().healthy


def test_a_relocated_folder_takes_its_departed_records_along(
    open_library: Library, library_dir: Path, photos: Path, inbox: Path, away: Path, tiny_model: TinyModel
) -> None:
    """After `relocate`, the records of what left the folder name its new place: forgetting
    the folder there drops them, as it would had the folder never moved."""
    index(open_library, tiny_model, inbox, photos)
    gone = inbox / "photo_0100.jpg"
    gone_id = ids_by_path(open_library)[gone]
    gone.rename(away / gone.name)
    open_library.index(inbox)
    assert departed_ids(library_dir) == [gone_id]

    moved = inbox.with_name("Inbox-2025")
    inbox.rename(moved)
    assert open_library.relocate(inbox, moved) == 1
    assert sql(library_dir, "SELECT path FROM departed") == [(str(moved / gone.name).encode(),)]
    open_library.forget(moved)
    assert departed_ids(library_dir) == []
