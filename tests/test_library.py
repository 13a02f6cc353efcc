"""The Python API end to end: a real SQLite catalog, a real FAISS index, a real (tiny) CLIP."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, event

from conftest import TinyModel
from pixsift import (
    EmptyLibraryError,
    IndexInterrupted,
    IndexReport,
    InvalidPathError,
    Library,
    LibraryClosedError,
    LibraryNotFoundError,
    ModelError,
    ModelMismatchError,
    PixsiftError,
    QueryError,
    QueryTerm,
)
from sample_photos import make_photo, save, write_photos


def index(library: Library, tiny_model: TinyModel, *roots: Path, **options: Any) -> IndexReport:
    return library.index(
        *roots, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), **options
    )


def stored_vector(library: Library, path: Path) -> np.ndarray:
    known = library._catalog.known_file(str(path))
    assert known is not None
    vector = library._catalog.vector(known.id)
    assert vector is not None
    return vector


def indexed_paths(library: Library) -> set[str]:
    """Every path the library can return, found through a search as large as the library."""
    count = library.status().counts.indexed
    if not count:
        return set()
    return {str(hit.path) for hit in library.search("anything", k=count + 5)}


def test_index_then_search_by_text(open_library: Library, photos: Path, tiny_model: TinyModel) -> None:
    report = index(open_library, tiny_model, photos)

    assert (report.added, report.failed, report.scanned) == (12, 0, 12)
    hits = open_library.search("a cat sitting on a sofa", k=5)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5]
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= score <= 1.0 for score in scores)
    assert all(hit.path.parent == photos and hit.path.is_file() for hit in hits)
    assert hits[0].width == 1600 and hits[0].height == 1200 and hits[0].format == "JPEG"


def test_scores_are_cosine_similarities_of_stored_vectors(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    text_vector = open_library._embedder_or_load().embed_texts(["a rocket"])[0]
    hits = open_library.search("a rocket", k=12)

    for hit in hits:
        stored = open_library._catalog.vector(hit.id)
        assert stored is not None
        assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-4)
        assert hit.score == pytest.approx(float(stored @ text_vector), abs=1e-4)


def test_search_uses_the_library_model_when_reopened(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        before = library.search("a horse", k=3)
    with Library.open(library_dir, create=False) as reopened:
        assert reopened.status().model is not None
        assert reopened.search("a horse", k=3) == before


def test_a_model_asked_for_is_kept_even_when_the_first_run_finds_no_images(
    library_dir: Path, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with Library.open(library_dir) as library:
        assert index(library, tiny_model, empty).scanned == 0
        chosen = library.status().model
        assert chosen is not None and chosen.spec.name == str(tiny_model.config)
    for photo in sorted(photos.glob("*.jpg"))[:3]:
        shutil.copy(photo, empty / photo.name)
    with Library.open(library_dir) as reopened:  # no model named: the one chosen above, no download
        assert reopened.index().added == 3
        assert reopened.status().model == chosen


def test_similar_finds_an_exact_copy_first_and_leaves_the_query_out(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    query = photos / "photo_0103.jpg"
    shutil.copy(query, photos / "copy-of-0103.jpg")
    index(open_library, tiny_model, photos)

    hits = open_library.similar(query, k=3)
    assert hits[0].path == photos / "copy-of-0103.jpg"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert query not in [hit.path for hit in hits]


def test_similar_with_an_image_outside_the_library(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    index(open_library, tiny_model, photos)
    outside = shutil.copy(photos / "photo_0105.jpg", tmp_path / "elsewhere.jpg")

    hits = open_library.similar(outside, k=1)
    assert hits[0].path == photos / "photo_0105.jpg"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_similar_errors(open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    index(open_library, tiny_model, photos)
    with pytest.raises(InvalidPathError, match="not found"):
        open_library.similar(tmp_path / "nope.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(Exception, match="Cannot read image"):
        open_library.similar(tmp_path / "notes.jpg")


def test_combined_query_is_the_normalised_weighted_sum(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    embed = open_library._embedder_or_load().embed_texts
    beach, sunset, people = embed(["beach", "sunset", "people"])
    expected = beach + 0.5 * sunset - people
    expected /= np.linalg.norm(expected)

    combined = open_library.search(
        "beach", k=12, plus=[QueryTerm(text="sunset", weight=0.5)], minus=["people"]
    )
    by_vector = open_library.search_vector(expected, k=12)
    assert [h.id for h in combined] == [h.id for h in by_vector]
    assert [h.score for h in combined] == pytest.approx([h.score for h in by_vector], abs=1e-5)
    assert [h.id for h in combined] != [h.id for h in open_library.search("beach", k=12)]


def test_under_filters_inside_the_index_and_matches_brute_force(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    write_photos(photos / "trip", 5, seed=300)
    write_photos(photos / "trip2", 2, seed=400)  # a sibling whose name starts like "trip"
    index(open_library, tiny_model, photos)

    hits = open_library.search("mountains", k=10, under=photos / "trip")
    assert len(hits) == 5  # all of them, although 14 other images rank among the top 10 overall
    assert all(hit.path.parent == photos / "trip" for hit in hits)

    query = open_library._embedder_or_load().embed_texts(["mountains"])[0]
    scores = {path: float(stored_vector(open_library, path) @ query) for path in (photos / "trip").iterdir()}
    assert [hit.path for hit in hits] == sorted(scores, key=lambda path: -scores[path])


def test_min_score_and_limit(open_library: Library, photos: Path, tiny_model: TinyModel) -> None:
    index(open_library, tiny_model, photos)
    everything = open_library.search("a clock", k=100)
    assert len(everything) == 12
    threshold = everything[5].score
    assert [h.id for h in open_library.search("a clock", k=100, min_score=threshold)] == [
        h.id for h in everything if h.score >= threshold
    ]
    assert open_library.search("a clock", k=100, min_score=1.01) == []
    with pytest.raises(QueryError, match="k \\(how many results\\) must be"):
        open_library.search("a clock", k=0)
    with pytest.raises(QueryError, match="64-dimensional"):
        open_library.search_vector(np.ones(512), k=3)
    with pytest.raises(QueryError, match="cancel each other out"):
        open_library.search("a clock", minus=["a clock"])
    with pytest.raises(QueryError, match="empty"):
        open_library.search("  ")


def test_incremental_rerun_skips_unchanged_files_without_loading_the_model(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
    with Library.open(library_dir) as library:
        report = library.index(photos)
        assert (report.unchanged, report.embedded, report.removed) == (12, 0, 0)
        assert library._embedder is None  # nothing to embed: no model was loaded


def test_new_changed_moved_copied_touched_and_deleted_files(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    ids_before = {str(h.path): h.id for h in open_library.search("x", k=50)}

    write_photos(photos, 1, seed=500)  # new
    save(make_photo(999), photos / "photo_0100.jpg")  # changed content, same path
    (photos / "sub").mkdir()
    (photos / "photo_0101.jpg").rename(photos / "sub" / "moved.jpg")  # moved
    shutil.copy(photos / "photo_0102.jpg", photos / "duplicate.jpg")  # copied
    os.utime(photos / "photo_0103.jpg", ns=(10**18, 10**18))  # touched only
    (photos / "photo_0104.jpg").unlink()  # deleted

    report = open_library.index(photos)
    assert (report.added, report.updated, report.moved, report.reused) == (1, 1, 1, 1)
    assert (report.touched, report.removed, report.unchanged, report.failed) == (1, 1, 8, 0)

    after = {str(h.path): h.id for h in open_library.search("x", k=50)}
    assert set(after) == {str(p) for p in photos.rglob("*.jpg")}
    assert after[str(photos / "sub" / "moved.jpg")] == ids_before[str(photos / "photo_0101.jpg")]
    assert after[str(photos / "photo_0100.jpg")] == ids_before[str(photos / "photo_0100.jpg")]
    copy_hits = open_library.similar(photos / "photo_0102.jpg", k=1)
    assert copy_hits[0].path == photos / "duplicate.jpg"
    assert open_library.status().counts.indexed == 13


def test_heif_files_without_the_heif_extra_are_counted_and_the_summary_says_what_to_install(
    open_library: Library, photos: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixsift.formatting import format_report
    from pixsift.indexer.scan import BASE_EXTENSIONS

    monkeypatch.setattr("pixsift.indexer.run.image_extensions", lambda: BASE_EXTENSIONS)  # no pillow-heif
    shutil.copy(photos / "photo_0100.jpg", photos / "IMG_0001.HEIC")  # the name is what counts
    report = index(open_library, tiny_model, photos, photos)  # twice the same root: counted once
    assert (report.scanned, report.added, report.unsupported_heif) == (12, 12, 1)
    assert report.complete  # not a failure: the run exits with 0
    assert "1 HEIC/HEIF file(s) skipped; to index them: pip install 'pixsift[heif]'" in format_report(report)
    (photos / "IMG_0001.HEIC").unlink()
    assert "HEIC" not in format_report(open_library.index(photos))


def test_heif_files_indexed_before_are_kept_when_the_heif_extra_is_gone(
    open_library: Library, photos: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uninstalling pillow-heif must not cost the HEIC photos' vectors: they are still there."""
    from pixsift.indexer.scan import BASE_EXTENSIONS, HEIF_EXTENSIONS

    shutil.copy(photos / "photo_0100.jpg", photos / "IMG_0001.HEIC")  # Pillow reads it by content
    monkeypatch.setattr("pixsift.indexer.run.image_extensions", lambda: BASE_EXTENSIONS | HEIF_EXTENSIONS)
    assert index(open_library, tiny_model, photos).added == 13
    heic_id = next(r.id for r in open_library.search("a photo", k=13) if r.path.name == "IMG_0001.HEIC")
    monkeypatch.setattr("pixsift.indexer.run.image_extensions", lambda: BASE_EXTENSIONS)  # extra gone
    report = open_library.index(photos)
    assert (report.removed, report.unsupported_heif) == (0, 1)
    assert open_library.image(heic_id).path.endswith("IMG_0001.HEIC")
    (photos / "IMG_0001.HEIC").unlink()  # deleted for real: removed as any file is
    assert open_library.index(photos).removed == 1


def test_two_files_that_swap_names_swap_vectors(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    first, second = photos / "photo_0108.jpg", photos / "photo_0109.jpg"
    assert first.stat().st_size != second.stat().st_size
    index(open_library, tiny_model, photos)
    vectors = {first: stored_vector(open_library, first), second: stored_vector(open_library, second)}

    first.rename(tmp_path / "swap")  # mv keeps mtimes: only the sizes tell the files changed
    second.rename(first)
    (tmp_path / "swap").rename(second)
    report = open_library.index(photos)
    assert (report.reused, report.added, report.updated) == (2, 0, 0)  # no decoding needed
    assert np.allclose(stored_vector(open_library, first), vectors[second])
    assert np.allclose(stored_vector(open_library, second), vectors[first])


def test_other_content_of_the_same_size_and_mtime_is_not_seen_until_touched(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    """The documented limit of skipping files by size and mtime (docs/reliability.md)."""
    target, other = sorted(photos.glob("*.jpg"), key=lambda path: path.stat().st_size)[-1:-3:-1]
    index(open_library, tiny_model, photos)
    old_vector, new_vector = stored_vector(open_library, target), stored_vector(open_library, other)
    before = target.stat()
    padding = before.st_size - other.stat().st_size  # a JPEG ignores bytes after its end
    target.write_bytes(other.read_bytes() + b"\0" * padding)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` or `cp -p`

    assert open_library.index(photos).unchanged == 12  # not opened: the old vector stays
    assert np.allclose(stored_vector(open_library, target), old_vector)
    target.touch()
    assert open_library.index(photos).embedded == 1
    assert float(stored_vector(open_library, target) @ new_vector) > 0.999


def test_a_file_moved_keeps_its_id_when_a_known_path_also_takes_its_content(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    """`cp a.jpg b.jpg; mv a.jpg z.jpg`: b (a known path, earlier in the run) is a copy, and z
    is where a went, keeping its id."""
    moved, overwritten = photos / "photo_0101.jpg", photos / "photo_0100.jpg"
    index(open_library, tiny_model, photos)
    ids_before = {str(h.path): h.id for h in open_library.search("x", k=50)}
    shutil.copy(moved, overwritten)
    moved.rename(photos / "z_moved.jpg")

    report = open_library.index(photos)
    assert (report.moved, report.reused, report.removed, report.embedded) == (1, 1, 0, 0)
    after = {str(h.path): h.id for h in open_library.search("x", k=50)}
    assert after[str(photos / "z_moved.jpg")] == ids_before[str(moved)]
    assert after[str(overwritten)] == ids_before[str(overwritten)]


def test_a_file_moved_into_another_root_keeps_its_id_when_only_that_root_is_indexed(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`mv ~/Inbox/a.jpg ~/Photos/; pixsift index ~/Photos` (or `reindex` of one folder): the
    run does not walk the source, but the file is gone from there, so it is a move, not a copy."""
    inbox = tmp_path / "Inbox"
    inbox.mkdir()
    (photos / "photo_0100.jpg").rename(inbox / "a.jpg")
    (photos / "sub").mkdir()
    index(open_library, tiny_model, photos, inbox)
    ids_before = {str(h.path): h.id for h in open_library.search("x", k=50)}
    unmoved = photos / "photo_0101.jpg"
    shutil.copy(unmoved, inbox / "copy.jpg")  # a copy whose original stays is still a copy

    (inbox / "a.jpg").rename(photos / "a.jpg")
    report = open_library.index(photos)
    assert (report.moved, report.reused, report.embedded, report.removed) == (1, 0, 0, 0)
    (photos / "photo_0102.jpg").rename(photos / "sub" / "b.jpg")
    assert open_library.reindex(photos / "sub").moved == 1
    assert open_library.index(inbox).reused == 1

    after = {str(h.path): h.id for h in open_library.search("x", k=50)}
    assert set(after) == {str(p) for p in (*photos.rglob("*.jpg"), *inbox.rglob("*.jpg"))}
    assert after[str(photos / "a.jpg")] == ids_before[str(inbox / "a.jpg")]
    assert after[str(photos / "sub" / "b.jpg")] == ids_before[str(photos / "photo_0102.jpg")]
    assert after[str(unmoved)] == ids_before[str(unmoved)]


def test_files_moved_between_roots_keep_their_ids_whichever_root_is_walked_first(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`mv ~/Inbox/a.jpg ~/Inbox/a-copy.jpg ~/Photos/; pixsift index ~/Inbox ~/Photos`: the
    source root comes first in the run, and the two files moved are identical copies, which
    share a content hash: each keeps its own id, not one the other's and one a new id."""
    inbox = tmp_path / "Inbox"
    inbox.mkdir()
    (photos / "photo_0100.jpg").rename(inbox / "a.jpg")
    shutil.copy(inbox / "a.jpg", inbox / "a-copy.jpg")
    (photos / "photo_0101.jpg").rename(inbox / "stays.jpg")  # an emptied root looks unmounted
    index(open_library, tiny_model, inbox, photos)
    ids_before = {h.path.name: h.id for h in open_library.search("x", k=50)}

    for name in ("a.jpg", "a-copy.jpg"):
        (inbox / name).rename(photos / name)
    report = open_library.index(inbox, photos)  # the source first
    assert (report.moved, report.reused, report.embedded, report.removed) == (2, 0, 0, 0)
    assert {h.path.name: h.id for h in open_library.search("x", k=50)} == ids_before

    (photos / "a-copy.jpg").rename(inbox / "a-copy.jpg")
    (photos / "a.jpg").rename(inbox / "renamed.jpg")  # moved and renamed: still a move
    report = open_library.index()  # every root, the source (Photos) last
    assert (report.moved, report.reused, report.embedded, report.removed) == (2, 0, 0, 0)
    after = {h.path.name: h.id for h in open_library.search("x", k=50)}
    assert after["renamed.jpg"] == ids_before["a.jpg"]
    assert after["a-copy.jpg"] == ids_before["a-copy.jpg"]


def test_changed_file_gets_a_new_vector(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    index(open_library, tiny_model, photos)
    target = photos / "photo_0106.jpg"
    before = stored_vector(open_library, target)

    save(make_photo(777), target)
    assert open_library.index(photos).updated == 1
    after = stored_vector(open_library, target)
    assert float(before @ after) < 0.9999
    outside_copy = shutil.copy(target, tmp_path / "new-content.jpg")  # embedded afresh
    best = open_library.similar(outside_copy, k=1)[0]
    assert best.path == target and best.score == pytest.approx(1.0, abs=1e-4)


def test_files_deleted_from_disk_are_never_returned(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    index(open_library, tiny_model, photos)
    hits = {str(hit.path): hit.id for hit in open_library.search("x", k=12)}
    thumbnails = {path: open_library.thumbnail(image_id) for path, image_id in hits.items()}
    for path in sorted(photos.iterdir())[:5]:
        path.unlink()
    report = open_library.index()  # no roots: every known root
    assert report.removed == 5
    assert indexed_paths(open_library) == {str(p) for p in photos.iterdir()}
    # thumbnails of the images that left the library go with them; the others stay
    assert {path for path, file in thumbnails.items() if file.exists()} == indexed_paths(open_library)


def test_an_unmounted_root_keeps_its_images(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    index(open_library, tiny_model, photos)
    photos.rename(tmp_path / "unplugged")
    report = open_library.index()
    assert report.skipped_roots == [str(photos)]
    assert report.removed == 0
    assert open_library.status().counts.indexed == 12
    photos.mkdir()  # the empty mount point a drive leaves when it is unplugged
    for again in (open_library.index(), open_library.index(photos)):
        assert (again.skipped_roots, again.removed) == ([str(photos)], 0)
    assert open_library.check().healthy and open_library.repair().images == 12
    (photos / "new.jpg").write_bytes((tmp_path / "unplugged" / "photo_0100.jpg").read_bytes())
    assert open_library.index().removed == 11  # not empty: a folder whose photos were deleted


def test_a_root_emptied_on_purpose_is_kept_until_a_file_is_left_in_it(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`mv ~/Inbox/* ~/Photos/`: an empty indexed folder looks like the mount point of an
    unplugged drive, so its images are kept, and the summary says how to tell pixsift it is
    not (a file left in it), after which its deleted photos leave the library."""
    from pixsift.formatting import format_report

    inbox = tmp_path / "Inbox"
    inbox.mkdir()
    (photos / "photo_0100.jpg").rename(inbox / "a.jpg")
    index(open_library, tiny_model, inbox, photos)
    (inbox / "a.jpg").rename(photos / "a.jpg")
    emptied = open_library.index()
    assert (emptied.skipped_roots, emptied.removed) == ([str(inbox)], 0)
    assert f"folder {inbox} is empty (unmounted?)" in format_report(emptied)
    assert f"leave any file in it: touch {inbox / '.keep'})" in format_report(emptied)

    (inbox / ".keep").touch()
    report = open_library.index()
    assert (report.skipped_roots, report.removed) == ([], 1)
    assert indexed_paths(open_library) == {str(p) for p in photos.glob("*.jpg")}


def test_a_root_moved_elsewhere_and_left_as_a_link_is_not_indexed_twice(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`mv ~/Photos /mnt/big/; ln -s /mnt/big/Photos ~/Photos`: naming either path again is the
    known root, not a second root holding every photo a second time."""
    index(open_library, tiny_model, photos)
    ids_before = {str(h.path): h.id for h in open_library.search("x", k=50)}
    moved = tmp_path / "big-disk" / "Photos"
    moved.parent.mkdir()
    photos.rename(moved)
    photos.symlink_to(moved, target_is_directory=True)

    for named in (photos, moved):
        report = open_library.index(named)
        assert (report.roots, report.unchanged, report.embedded, report.reused) == ([str(photos)], 12, 0, 0)
    assert [root.path for root in open_library.status().roots] == [str(photos)]
    (moved / "trips").mkdir()
    (moved / "photo_0100.jpg").rename(moved / "trips" / "a.jpg")
    assert open_library.index(moved / "trips").moved == 1  # a root inside it, not a second copy
    ids_before[str(photos / "trips" / "a.jpg")] = ids_before.pop(str(photos / "photo_0100.jpg"))
    assert {str(h.path): h.id for h in open_library.search("x", k=50)} == ids_before
    assert open_library.forget(moved) == 11


def test_reindex_of_a_part_of_a_root_left_as_a_link_adds_no_second_copy(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Reindexing a folder of a root moved elsewhere and left as a link walks it under the root's
    path, the one its images have: under the other, every file was added again, for good."""
    (photos / "trips").mkdir()
    (photos / "photo_0100.jpg").rename(photos / "trips" / "a.jpg")
    index(open_library, tiny_model, photos)
    moved = tmp_path / "big-disk" / "Photos"
    moved.parent.mkdir()
    photos.rename(moved)
    photos.symlink_to(moved, target_is_directory=True)
    save(make_photo(600), moved / "trips" / "new.jpg")

    report = open_library.reindex(moved / "trips")
    assert (report.roots, report.added, report.reused, report.unchanged) == ([str(photos / "trips")], 1, 0, 1)
    assert open_library.reindex(photos / "trips" / "a.jpg").unchanged == 2
    assert indexed_paths(open_library) == {str(photos / p.relative_to(moved)) for p in moved.rglob("*.jpg")}
    assert open_library.index().unchanged == 13


def test_an_empty_nested_root_keeps_its_images_whichever_run_meets_it(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    drive = photos / "drive"  # a drive mounted inside the photo folder, indexed as a root too
    write_photos(drive, 3, seed=830)
    index(open_library, tiny_model, photos)
    open_library.index(drive)
    for path in drive.iterdir():  # unplugged: its mount point stays, empty
        path.unlink()
    runs: list[Callable[[], IndexReport]] = [
        open_library.index,  # every root
        lambda: open_library.index(photos),  # the enclosing root only
        lambda: open_library.reindex(drive),  # the empty root by its path, as POST /index does
        lambda: open_library.reindex(photos),
    ]
    for run in runs:
        report = run()
        assert report.removed == 0
        assert report.skipped_roots in ([str(drive)], [])
    assert open_library.status().counts.indexed == 15
    assert open_library.check().healthy
    # Gone for good: forgotten as a root; the enclosing root's next run drops what it no longer finds
    assert open_library.forget(drive) == 0
    assert open_library.index().removed == 3


def test_an_unmounted_nested_root_of_other_options_is_only_skipped(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A drive mounted inside the photo folder, indexed with other options, then unplugged:
    a warning that it was skipped, as for any unmounted root, not also a folder that "could
    not be read", which made the run exit with 3."""
    drive = photos / "drive"
    write_photos(drive, 3, seed=850)
    index(open_library, tiny_model, photos)
    open_library.index(drive, include_hidden=True)
    drive.rename(tmp_path / "unplugged")
    every_root, enclosing_root = open_library.index(), open_library.index(photos)
    assert every_root.skipped_roots == [str(drive)]
    for report in (every_root, enclosing_root):
        assert (report.unreadable_dirs, report.removed) == ([], 0)
        assert report.complete
    assert open_library.status().counts.indexed == 15


def test_a_folder_renamed_for_good_is_forgotten_with_its_images_only(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    inner = photos / "inner"
    write_photos(inner, 2, seed=810)
    other = tmp_path / "Other"
    write_photos(other, 3, seed=820)
    index(open_library, tiny_model, photos, other)
    open_library.index(inner)  # a root nested inside another keeps its images
    shown = open_library.search("x", k=1, under=photos)[0].id
    assert open_library.thumbnail(shown).is_file()
    photos.rename(tmp_path / "Renamed")
    assert open_library.index(tmp_path / "Renamed").reused == 14  # what index runs alone can do

    assert open_library.forget(str(photos)) == 12
    assert {root.path for root in open_library.status().roots} == {
        str(inner),  # gone with the rename too, but only forgetting it would drop its images
        str(tmp_path / "Renamed"),
        str(other),
    }
    left = {str(hit.path) for hit in open_library.search("x", k=100)}
    assert not any(path.startswith(f"{photos}/") and not path.startswith(f"{inner}/") for path in left)
    assert len(left) == 14 + 3 + 2
    with pytest.raises(InvalidPathError, match=r"is not an indexed folder \(indexed folders: "):
        open_library.forget(str(photos))
    assert not (open_library.path / "thumbnails" / str(shown)).exists()  # its thumbnails went too


def test_bad_files_are_recorded_and_indexing_goes_on(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    (photos / "notes.jpg").write_text("this is a text file")
    (photos / "empty.png").write_bytes(b"")
    good = (photos / "photo_0107.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])

    report = index(open_library, tiny_model, photos)
    assert (report.added, report.failed) == (12, 3)
    failures = {Path(f.path).name: f.error for f in open_library.failures()}
    assert set(failures) == {"notes.jpg", "empty.png", "truncated.jpg"}
    assert "not an image" in failures["notes.jpg"]
    assert "empty" in failures["empty.png"]
    assert "truncated" in failures["truncated.jpg"]
    assert open_library.status().counts.failed == 3
    assert "notes.jpg" not in {Path(p).name for p in indexed_paths(open_library)}

    again = open_library.index(photos)  # unchanged bad files are not retried, but still count
    assert (again.failed, again.still_failed, again.unchanged) == (0, 3, 15)
    assert not again.complete
    (photos / "notes.jpg").unlink()
    save(make_photo(600), photos / "empty.png")  # fixed
    fixed = open_library.index(photos)
    assert (fixed.updated, fixed.removed) == (1, 1)
    assert [f.path for f in open_library.failures()] == [str(photos / "truncated.jpg")]


class ChangesWhenEmbeddingStarts:
    """A progress listener that runs `change` once the scan is over, before any file is read."""

    def __init__(self, change: Callable[[], object]) -> None:
        self.change = change

    def start(self, phase: str, total: int | None = None) -> None:
        if phase == "Embedding":
            self.change()

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass


def test_files_deleted_between_the_scan_and_their_reading_are_gone_not_failed(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A file deleted (or replaced by a folder) while the run reads the others is not a file that
    could not be read: the run is complete (exit 0), no failed row is left to retry, and the next
    run has nothing to do."""
    index(open_library, tiny_model, photos)
    changed, replaced, new = photos / "photo_0100.jpg", photos / "photo_0101.jpg", photos / "new.jpg"
    save(make_photo(900), changed)  # known, with new content to read
    save(make_photo(901), replaced)
    save(make_photo(902), new)
    ids = {h.path.name: h.id for h in open_library.search("x", k=50)}

    def delete_them() -> None:
        changed.unlink()
        new.unlink()
        replaced.unlink()
        replaced.mkdir()

    from pixsift.formatting import format_report

    report = open_library.index(photos, progress=ChangesWhenEmbeddingStarts(delete_them))
    assert report.complete and (report.failed, report.vanished, report.removed) == (0, 3, 2)
    assert format_report(report).splitlines()[1] == "3 file(s) deleted during the run, left out"
    assert (report.added, report.updated) == (0, 0)
    assert open_library.failures() == []
    assert open_library._catalog.images([ids[changed.name], ids[replaced.name]]) == {}
    assert indexed_paths(open_library) == {str(p) for p in photos.glob("*.jpg") if p.is_file()}
    again = open_library.index(photos)
    assert (again.unchanged, again.removed, again.failed, again.embedded) == (10, 0, 0, 0)


def test_a_root_gone_during_the_run_keeps_its_images(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Files missing because their whole folder went away (a drive unplugged during the run)
    are not taken for deleted: the next run skips the folder as unmounted, and keeps them."""
    index(open_library, tiny_model, photos)
    changed = photos / "photo_0100.jpg"
    save(make_photo(900), changed)
    unplug = ChangesWhenEmbeddingStarts(lambda: photos.rename(tmp_path / "unplugged"))

    report = open_library.index(photos, progress=unplug)
    assert (report.failed, report.vanished, report.removed) == (1, 0, 0)
    assert open_library.status().counts.total == 12
    assert open_library.index().skipped_roots == [str(photos)]
    (tmp_path / "unplugged").rename(photos)
    assert open_library.index().updated == 1


def test_interrupted_run_keeps_committed_batches_and_the_next_run_finishes(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    class CtrlCAfterFirstBatch:
        embedded = 0

        def start(self, phase: str, total: int | None = None) -> None:
            self.phase = phase

        def advance(self, steps: int = 1) -> None:
            if self.phase == "Embedding":
                self.embedded += steps
                raise KeyboardInterrupt

        def stop(self) -> None:
            pass

    listener = CtrlCAfterFirstBatch()
    with Library.open(library_dir) as library:
        with pytest.raises(IndexInterrupted) as interrupted:
            index(library, tiny_model, photos, batch_size=4, progress=listener)
        assert interrupted.value.report.interrupted
        assert interrupted.value.report.added == 4
        assert library.status().counts.indexed == 4
        assert library.status().index_file.state == "up to date"  # saved despite Ctrl-C

    with Library.open(library_dir) as library:
        report = library.index(photos)
        assert (report.unchanged, report.added) == (4, 8)
        assert indexed_paths(library) == {str(p) for p in photos.iterdir()}


def test_an_interrupted_reembed_is_continued_without_reembed(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path
) -> None:
    """Ctrl-C part-way through --reembed keeps what the new model embedded; its summary said
    "run the same command again to continue", but with --reembed that command drops those
    vectors and embeds every image again."""
    from pixsift.formatting import format_report

    class CtrlCAfterFirstBatch:
        phase = ""

        def start(self, phase: str, total: int | None = None) -> None:
            self.phase = phase

        def advance(self, steps: int = 1) -> None:
            if self.phase == "Embedding":
                raise KeyboardInterrupt

        def stop(self) -> None:
            pass

    model, other = str(tiny_model.config), str(other_tiny_checkpoint)
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        with pytest.raises(IndexInterrupted) as interrupted:
            library.index(
                model=model, pretrained=other, reembed=True, batch_size=4, progress=CtrlCAfterFirstBatch()
            )
        assert interrupted.value.reembedding and interrupted.value.report.updated == 4
        summary = format_report(interrupted.value.report, reembedding=interrupted.value.reembedding)
        assert summary.splitlines()[-1] == (
            "What was embedded so far with the new model is saved; run the same command without "
            "--reembed to continue (with it, every image is embedded again)."
        )
        report = library.index(model=model, pretrained=other)  # as advised: the four are kept
        assert (report.unchanged, report.updated) == (4, 8)
        assert library.status().model.spec.pretrained == str(other_tiny_checkpoint)  # type: ignore[union-attr]


class CtrlCWhileCommitting:
    """A progress listener that presses Ctrl-C (a real SIGINT, to this process) while the
    `nth` write transaction since `phase` began commits: the catalog holds it back until the
    commit is done, so what that transaction wrote is kept."""

    def __init__(self, phase: str, nth: int = 1) -> None:
        self.phase, self.nth = phase, nth
        self.commits: int | None = None  # write transactions counted from the phase on
        self.wrote = False  # the transaction now open changed something (reads commit too)

    def start(self, phase: str, total: int | None = None) -> None:
        if phase == self.phase and self.commits is None:
            self.commits = 0

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass

    def executed(self, connection: object, cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.wrote = True

    def committing(self, connection: object) -> None:
        wrote, self.wrote = self.wrote, False
        if self.commits is not None and wrote:
            self.commits += 1
            if self.commits == self.nth:
                signal.raise_signal(signal.SIGINT)

    @contextmanager
    def listening(self) -> Iterator[None]:
        """SQLAlchemy's own hooks, on every engine, with Python's Ctrl-C handler."""
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        hooks: list[tuple[str, Callable[..., None]]] = [
            ("after_cursor_execute", self.executed),
            ("commit", self.committing),
        ]
        for name, hook in hooks:
            event.listen(Engine, name, hook)
        try:
            yield
        finally:
            for name, hook in hooks:
                event.remove(Engine, name, hook)
            signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("reembed", [False, True], ids=["new", "reembed"])
def test_ctrl_c_while_a_batch_commits_counts_the_batch(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path, reembed: bool
) -> None:
    """The batch being committed when Ctrl-C came is kept: the report said one batch fewer
    than the library held ("4 new" of 8 kept), and the next run found 8 unchanged."""
    listener = CtrlCWhileCommitting("Embedding", nth=2)
    with Library.open(library_dir) as library:
        if reembed:
            index(library, tiny_model, photos)
        run: dict[str, Any] = (
            {"model": str(tiny_model.config), "pretrained": str(other_tiny_checkpoint), "reembed": True}
            if reembed
            else {"model": str(tiny_model.config), "pretrained": str(tiny_model.checkpoint)}
        )
        with listener.listening(), pytest.raises(IndexInterrupted) as interrupted:
            library.index(*([] if reembed else [photos]), batch_size=4, progress=listener, **run)
        report = interrupted.value.report
        assert library.status().counts.indexed == 8
        assert (report.added, report.updated, report.kept) == ((0, 8, 8) if reembed else (8, 0, 8))
        run.pop("reembed", None)
        assert library.index(*([] if reembed else [photos]), **run).unchanged == 8


class CtrlCWhileTheModelSwitches(CtrlCWhileCommitting):
    """Ctrl-C while the transaction that records a new model for the library commits."""

    def __init__(self) -> None:
        super().__init__(phase="")
        self.commits = 0

    def executed(self, connection: object, cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO MODEL"):
            self.wrote = True


def test_ctrl_c_while_a_reembed_switches_models_says_what_changed(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path
) -> None:
    """The switch is kept (the old vectors are gone): a bare "Interrupted." let the user think
    nothing had changed. The advice given works: the next run without --reembed embeds all."""
    from typer.testing import CliRunner

    from pixsift.cli import app

    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
    switch = ["--model", str(tiny_model.config), "--pretrained", str(other_tiny_checkpoint)]
    with CtrlCWhileTheModelSwitches().listening():
        result = CliRunner().invoke(app, ["index", "--library", str(library_dir), *switch, "--reembed", "-q"])
    assert result.exit_code == 130, result.output
    assert "switched to the new model" in result.output
    assert "without --reembed" in result.output
    with Library.open(library_dir) as library:
        assert library.status().counts.indexed == 0
        assert library.index(model=switch[1], pretrained=switch[3]).updated == 12


def test_ctrl_c_while_moves_commit_counts_them(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Moves (and copies, touches, removals) are committed in one transaction: Ctrl-C while it
    committed reported "0 moved" of the 12 the library had moved."""
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        (photos / "trip").mkdir()
        for photo in sorted(photos.glob("*.jpg")):
            photo.rename(photos / "trip" / photo.name)
        listener = CtrlCWhileCommitting("Checking moved files")
        with listener.listening(), pytest.raises(IndexInterrupted) as interrupted:
            library.index(photos, progress=listener)
        assert (interrupted.value.report.moved, interrupted.value.report.kept) == (12, 12)
        assert library.index(photos).unchanged == 12


def test_a_reembed_interrupted_while_its_model_loads_is_run_again_as_it_was(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path
) -> None:
    """Stopped before the new model became the library's, nothing changed: the same command,
    --reembed included, is the one to run again."""
    from pixsift.indexer.progress import LOADING_PHASE

    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        with pytest.raises(KeyboardInterrupt) as interrupted:
            library.index(
                model=str(tiny_model.config),
                pretrained=str(other_tiny_checkpoint),
                reembed=True,
                progress=CtrlCAtPhase(LOADING_PHASE),
            )
        assert not getattr(interrupted.value, "reembedding", False)
        assert library.status().model.spec.pretrained == str(tiny_model.checkpoint)  # type: ignore[union-attr]


def test_a_progress_listeners_error_stops_the_run_and_keeps_what_was_embedded(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    class FailsAfterFirstBatch:
        phase = ""

        def start(self, phase: str, total: int | None = None) -> None:
            self.phase = phase

        def advance(self, steps: int = 1) -> None:
            if self.phase == "Embedding":
                raise RuntimeError("the progress window was closed")

        def stop(self) -> None:
            pass

    with Library.open(library_dir) as library:
        with pytest.raises(RuntimeError, match="progress window"):
            index(library, tiny_model, photos, batch_size=4, progress=FailsAfterFirstBatch())
        assert library.status().counts.indexed == 4
        assert library.status().index_file.state == "up to date"
        assert len(library.search("a cat", k=12)) == 4
        report = library.index()
        assert (report.unchanged, report.added) == (4, 8)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_first_run_stopped_before_its_model_loaded_keeps_no_folder(
    library_dir: Path, photos: Path, tiny_model: TinyModel, stop: type[BaseException]
) -> None:
    """Ctrl-C (or a progress listener's error) while a new library's model loads: a later plain
    run must not index the folder with the default model instead of the one asked for."""

    class StopWhileLoading:
        def start(self, phase: str, total: int | None = None) -> None:
            if phase == "Loading model":
                raise stop("stopped while the model loads")

        def advance(self, steps: int = 1) -> None:
            pass

        def stop(self) -> None:
            pass

    with Library.open(library_dir) as library:
        with pytest.raises(stop):
            index(library, tiny_model, photos, progress=StopWhileLoading())
        assert not library_dir.exists()  # nothing was kept: the new library was taken back
        assert (library.status().model, library.status().roots) == (None, [])  # made again
        with pytest.raises(InvalidPathError, match="Nothing to index yet"):
            library.index()
        assert index(library, tiny_model, photos).added == 12
        assert library.status().model is not None
        assert library.status().model.spec.pretrained == str(tiny_model.checkpoint)  # type: ignore[union-attr]
    assert (library_dir / "library.db").is_file()


def test_a_failed_first_index_from_python_leaves_no_library(tmp_path: Path, photos: Path) -> None:
    """`Library.open(NEW).index(...)` that fails before it keeps anything leaves the path as it
    was; the same `Library`, used again, makes the library anew."""
    new = tmp_path / "libraries" / "new"
    library = Library.open(new)
    with pytest.raises(ModelError, match="Unknown model 'nosuch'"):
        library.index(photos, model="nosuch")
    assert not (tmp_path / "libraries").exists()
    with pytest.raises(InvalidPathError, match="Nothing to index yet"):
        library.index()
    assert not (tmp_path / "libraries").exists()
    report = library.index(photos, model="synthetic-tiny")
    assert report.added == 12 and len(library.search("a photo", k=20)) == 12
    with pytest.raises(ModelError):  # the library is the user's now: kept, as it was
        library.index(photos, model="nosuch")
    library.close()
    with Library.open(new, create=False) as reopened:
        assert reopened.status().counts.indexed == 12


def _open_files_under(folder: Path) -> list[str]:
    """The files under `folder` this process holds open (Linux's /proc)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(str(folder)):
            held.append(target)
    return held


def test_a_closed_library_says_so_and_holds_nothing(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    library = Library.open(library_dir)
    index(library, tiny_model, photos)
    image_id = library.search("a cat", k=1)[0].id
    library.close()
    library.close()  # closing twice is harmless

    calls: list[Callable[[], object]] = [
        lambda: library.search("a cat"),
        lambda: library.similar(image_id),
        lambda: library.similar(photos / sorted(os.listdir(photos))[0]),
        lambda: library.recommend([image_id], ["a dog"]),
        lambda: library.search_vector(np.ones(64, dtype=np.float32)),
        lambda: library.image(image_id),
        lambda: library.thumbnail(image_id),
        lambda: library.delete(image_id),
        lambda: library.status(),
        lambda: library.failures(),
        lambda: library.index(),
        lambda: library.index(photos),
        lambda: library.check(),
        lambda: library.warm_up(),
        lambda: library.index_summary(),
    ]
    for call in calls:
        with pytest.raises(LibraryClosedError, match=f"library at {library_dir} was closed"):
            call()
    assert not issubclass(LibraryClosedError, PixsiftError)  # the program's mistake, not its user's
    if os.path.isdir("/proc/self/fd"):
        assert _open_files_under(library_dir) == []  # no connection was opened again

    with Library.open(library_dir) as reopened:
        assert reopened.image(image_id).id == image_id
    with pytest.raises(LibraryClosedError):
        reopened.search("a cat")  # the with block closed it


def test_index_file_is_rebuilt_when_missing_or_stale(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        expected = library.search("a moon", k=12)
        saved_index = library.index_path.read_bytes()

    (library_dir / "vectors.faiss").unlink()
    with Library.open(library_dir) as library:
        assert library.status().index_file.state == "missing"
        assert library.search("a moon", k=12) == expected
        assert library.status().index_file.state == "up to date"  # the rebuild was saved

    with Library.open(library_dir) as library:  # make the saved index stale: delete 3 files
        for path in sorted(photos.iterdir())[:3]:
            path.unlink()
        library.index(photos)
    (library_dir / "vectors.faiss").write_bytes(saved_index)  # an old index comes back
    with Library.open(library_dir) as library:
        assert library.status().index_file.state == "stale"
        assert indexed_paths(library) == {str(p) for p in photos.iterdir()}
        assert len(library.search("a moon", k=12)) == 9

    (library_dir / "vectors.faiss").write_bytes(b"garbage")
    with Library.open(library_dir) as library:
        assert len(library.search("a moon", k=12)) == 9


def test_a_search_sees_images_indexed_after_it_opened(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as writer, Library.open(library_dir) as reader:
        index(writer, tiny_model, photos)
        assert len(reader.search("a coin", k=50)) == 12
        write_photos(photos, 3, seed=700)
        writer.index(photos)
        assert len(reader.search("a coin", k=50)) == 15


def test_an_open_library_follows_a_reembed_made_elsewhere(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path
) -> None:
    with Library.open(library_dir) as writer, Library.open(library_dir) as reader:
        index(writer, tiny_model, photos)
        reader.search("a boat")  # loads the first model into the reader
        writer.index(model=str(tiny_model.config), pretrained=str(other_tiny_checkpoint), reembed=True)
        assert reader.search("a boat", k=12) == writer.search("a boat", k=12)
        assert reader._embedder is not None
        assert reader._embedder.record.spec.pretrained == str(other_tiny_checkpoint)


def test_another_model_is_refused_unless_reembedding(
    open_library: Library, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path
) -> None:
    index(open_library, tiny_model, photos)
    fingerprint = open_library.status().model.fingerprint  # type: ignore[union-attr]
    with pytest.raises(ModelMismatchError, match=r"reembed=True") as refused:
        open_library.index(photos, model=str(tiny_model.config), pretrained=str(other_tiny_checkpoint))
    assert "--" not in str(refused.value)  # the command line's options mean nothing here

    report = open_library.index(
        photos, model=str(tiny_model.config), pretrained=str(other_tiny_checkpoint), reembed=True
    )
    assert report.updated == 12
    model = open_library.status().model
    assert model is not None and model.fingerprint != fingerprint
    assert model.spec.pretrained == str(other_tiny_checkpoint)
    assert len(open_library.search("a rocket", k=20)) == 12


def test_weights_changed_on_disk_are_detected(
    library_dir: Path, photos: Path, tiny_model: TinyModel, other_tiny_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = shutil.copy(tiny_model.checkpoint, tmp_path / "weights.pt")
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(checkpoint))
    shutil.copy(other_tiny_checkpoint, checkpoint)  # same path, other weights
    with Library.open(library_dir) as library, pytest.raises(ModelMismatchError, match="not the ones"):
        library.search("a horse")


def test_errors_for_missing_library_empty_library_and_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(LibraryNotFoundError, match="No pixsift library"):
        Library.open(tmp_path / "none", create=False)
    with Library.open(tmp_path / "fresh") as library:
        with pytest.raises(EmptyLibraryError, match="no images indexed"):
            library.search("anything")
        with pytest.raises(InvalidPathError, match="does not exist"):
            library.index(tmp_path / "missing-folder")
        (tmp_path / "file.jpg").write_bytes(b"x")
        with pytest.raises(InvalidPathError, match="not a folder"):
            library.index(tmp_path / "file.jpg")
        with pytest.raises(InvalidPathError, match="Nothing to index"):
            library.index()


def test_default_library_location_comes_from_the_environment(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    with Library.open() as library:
        assert library.path == tmp_path / "default-library"  # set by the conftest fixture
        index(library, tiny_model, photos)
    assert (tmp_path / "default-library" / "library.db").is_file()


def test_hidden_files_and_symlinks_follow_the_options(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    write_photos(photos / ".hidden", 1, seed=800)
    write_photos(tmp_path / "linked", 1, seed=801)
    (photos / "link").symlink_to(tmp_path / "linked")
    (photos / "loop").symlink_to(photos)

    assert index(open_library, tiny_model, photos).scanned == 12
    report = open_library.index(photos, include_hidden=True, follow_symlinks=True)
    assert report.added == 2
    assert any("/.hidden/" in p for p in indexed_paths(open_library))
    assert any("/link/" in p for p in indexed_paths(open_library))
    # what a followed link led to is the library's, to show as well as to search
    linked = next(hit for hit in open_library.search("x", k=20) if "/link/" in str(hit.path))
    assert open_library.thumbnail(linked.id).is_file()
    assert Path(open_library.image_file(linked.id)).parent == tmp_path / "linked"


@pytest.mark.parametrize("option", ["follow_symlinks", "include_hidden"])
def test_nested_roots_with_other_options_keep_each_others_images(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path, option: str
) -> None:
    """`index R --follow-symlinks`, then `index R/trips`: each run keeps what the other root
    reaches, in either order, instead of removing and re-adding it every time."""
    trips = photos / "trips"
    trips.mkdir()
    for path in sorted(photos.glob("*.jpg"))[:3]:
        path.rename(trips / path.name)
    if option == "follow_symlinks":
        write_photos(tmp_path / "shared", 2, seed=810)
        (trips / "shared").symlink_to(tmp_path / "shared")
    else:
        write_photos(trips / ".shared", 2, seed=810)
    assert index(open_library, tiny_model, photos, **{option: True}).added == 14
    ids = {hit.path: hit.id for hit in open_library.search("a photo", k=20)}
    runs: list[Callable[[], IndexReport]] = [
        lambda: open_library.index(trips),
        open_library.index,
        lambda: open_library.index(trips),
    ]
    for run in runs:
        report = run()
        assert (report.removed, report.embedded) == (0, 0)
        assert {hit.path: hit.id for hit in open_library.search("a photo", k=20)} == ids
    again = open_library.index(photos, **{option: True})  # type: ignore[arg-type]  # the enclosing root, later
    assert (again.removed, again.embedded, again.unchanged) == (0, 0, 14)


def test_a_root_inside_a_hidden_folder_of_another_root_keeps_its_images(
    open_library: Library, photos: Path, tiny_model: TinyModel
) -> None:
    """`index R/.archive`, then `index R` (both without --include-hidden): the walk of R never
    enters `.archive`, which must not make the images of that root look deleted."""
    archive = photos / ".archive" / "2019"
    write_photos(archive, 3, seed=840)
    index(open_library, tiny_model, archive)
    index(open_library, tiny_model, photos)
    ids = {hit.path: hit.id for hit in open_library.search("a photo", k=20)}
    assert len(ids) == 15
    runs: list[Callable[[], IndexReport]] = [
        lambda: open_library.index(photos),
        lambda: open_library.index(archive),
        open_library.index,
    ]
    for run in runs:
        report = run()
        assert (report.removed, report.embedded) == (0, 0)
        assert {hit.path: hit.id for hit in open_library.search("a photo", k=20)} == ids


def test_the_library_folder_inside_a_root_is_not_indexed(photos: Path, tiny_model: TinyModel) -> None:
    write_photos(photos / "pixsift-library" / "cache", 2, seed=900)  # images of its own
    with Library.open(photos / "pixsift-library") as library:
        assert index(library, tiny_model, photos).scanned == 12
        assert not any("pixsift-library" in p for p in indexed_paths(library))


@pytest.mark.parametrize("spelling", ["dot-dot", "symlink"])
def test_the_library_folder_is_not_indexed_however_its_path_is_spelled(
    photos: Path, tiny_model: TinyModel, tmp_path: Path, spelling: str
) -> None:
    (photos / "sub").mkdir()
    (tmp_path / "alias").symlink_to(photos)  # the same folder under another name
    given = {"dot-dot": photos / "sub" / ".." / "lib", "symlink": tmp_path / "alias" / "lib"}[spelling]
    with Library.open(given) as library:
        index(library, tiny_model, photos)
        thumbnail = library.thumbnail(1)  # a JPEG inside the library, as the web service makes
        assert thumbnail.resolve().is_relative_to(photos / "lib")
        report = library.index()
        assert (report.scanned, report.added) == (12, 0)
        assert not any("/lib/" in p for p in indexed_paths(library))


class CtrlCAtPhase:
    """A progress listener that is interrupted (as by Ctrl-C) when `phase` begins."""

    def __init__(self, phase: str) -> None:
        self.interrupt_at = phase

    def start(self, phase: str, total: int | None = None) -> None:
        if phase == self.interrupt_at:
            raise KeyboardInterrupt

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_first_run_interrupted_before_it_keeps_anything_does_not_say_it_saved_work(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Ctrl-C while the model of a first run loads: the new library is taken back, so its
    summary said "What was embedded so far is saved" of a library no longer there."""
    from pixsift.formatting import format_report
    from pixsift.indexer.progress import LOADING_PHASE

    folder = tmp_path / "new-library"
    with Library.open(folder) as library, pytest.raises(IndexInterrupted) as interrupted:
        index(library, tiny_model, photos, progress=CtrlCAtPhase(LOADING_PHASE))
    assert interrupted.value.library_removed and not folder.exists()
    summary = format_report(interrupted.value.report, library_removed=interrupted.value.library_removed)
    assert summary.splitlines()[-1] == (
        "Nothing was kept, and no library was made; run the same command again to start."
    )


def test_a_run_interrupted_before_its_first_batch_says_nothing_was_embedded(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Ctrl-C once the model loaded but before a batch was committed: the library (and its
    model) stays, but nothing was embedded, which "what was embedded so far is saved" hid."""
    from pixsift.formatting import format_report

    with Library.open(library_dir) as library:
        with pytest.raises(IndexInterrupted) as interrupted:
            index(library, tiny_model, photos, progress=CtrlCAtPhase("Embedding"))
        assert not interrupted.value.library_removed
        assert library.status().model is not None and library.status().counts.indexed == 0
    summary = format_report(interrupted.value.report)
    assert summary.splitlines()[-1] == "Nothing was embedded yet; run the same command again to continue."


class PhaseRecorder:
    """A progress listener that records each phase that starts and stops, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, phase: str, total: int | None = None) -> None:
        self.events.append(f"start {phase}" if total is None else f"start {phase} of {total}")

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        self.events.append("stop")

    def after_the_files(self) -> list[str]:
        """The events from the first phase of the search index on (they come last), if any."""
        index_phases = ("start Saving search index", "start Building search index")
        first = next((i for i, event in enumerate(self.events) if event in index_phases), len(self.events))
        return self.events[first:]


def test_the_search_index_save_and_build_are_phases_of_their_own(
    library_dir: Path, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Once the files were embedded, the search index was saved and maybe rebuilt (flat to
    HNSW past a size: minutes at 100,000s of vectors) with every bar finished and nothing
    moving, as if the run hung: each is now a phase, shown only when there is work to do."""
    from pixsift.storage.index_choice import IndexThresholds

    aside = tmp_path / "aside"
    aside.mkdir()
    for photo in sorted(photos.glob("*.jpg"))[4:]:
        photo.rename(aside / photo.name)
    with Library.open(library_dir, index_thresholds=IndexThresholds(flat_max=6)) as library:
        first = PhaseRecorder()
        index(library, tiny_model, photos, progress=first)  # no index file yet: built
        assert first.after_the_files() == ["start Building search index", "stop"]
        assert library.index_summary().kind == "flat"
        for photo in aside.iterdir():
            photo.rename(photos / photo.name)
        grown = PhaseRecorder()
        report = library.index(progress=grown)  # 12 images: saved, then rebuilt as HNSW
        assert report.added == 8
        saved_then_built = ["start Saving search index", "stop", "start Building search index", "stop"]
        assert grown.after_the_files() == saved_then_built
        assert "start Embedding of 8" in grown.events
        assert library.index_summary().kind == "hnsw"
        same = PhaseRecorder()
        library.index(progress=same)  # nothing new: no flash of a phase with nothing to write
        assert same.after_the_files() == []
        rebuilt = PhaseRecorder()
        assert library.rebuild_index("flat", progress=rebuilt).kind == "flat"
        assert rebuilt.events == ["start Building search index", "stop"]
    with Library.open(library_dir, create=False) as reopened:  # what was built was saved
        assert reopened.index_summary().kind == "flat" and reopened.index_summary().vectors == 12
