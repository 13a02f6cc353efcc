"""An indexed folder renamed or moved (`mv ~/Photos ~/Pictures`) and indexed under its new name:
its photos are copies of the old folder's, which is missing, and the run says what to do then."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import TinyModel, run_cli
from pixsift import CopiesOfMissingRoot, Library
from pixsift.formatting import format_report
from sample_photos import write_photos


def index(library: Library, tiny_model: TinyModel, *roots: Path) -> None:
    library.index(*roots, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))


def test_indexing_a_renamed_folder_says_the_old_one_is_missing_and_how_to_drop_it(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    library = ["--library", str(tmp_path / "library")]
    # In a subfolder too: the new place is the root, not that subfolder.
    write_photos(photos / "2024", 2, size=(320, 240), seed=800)
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    pictures = tmp_path / "Pictures"
    photos.rename(pictures)  # mv ~/Photos ~/Pictures

    result = run_cli("index", str(pictures), *library)
    assert result.returncode == 0, result.stderr
    assert "0 new, 0 updated, 0 moved, 14 copies" in result.stdout
    assert (
        f"warning: 14 of the new images are copies of images under {photos}, which is missing "
        f"(unmounted?), so the library lists them twice: if it moved to {pictures}, drop the old "
        f"entries with pixsift forget {photos} (those under {pictures} stay indexed); if it is only "
        "unplugged, keep both"
    ) in result.stdout.splitlines()

    # The advice is the command that works: relocate refuses a new place indexed already.
    refused = run_cli("relocate", str(photos), str(pictures), *library)
    assert refused.returncode != 0 and f"pixsift forget {photos}" in refused.stderr
    assert run_cli("forget", str(photos), *library).returncode == 0
    found = run_cli("search", "photo", *library, "-k", "50", "--format", "paths").stdout.split()
    assert len(found) == 14 and all(path.startswith(f"{pictures}/") for path in found)
    again = run_cli("index", *library)
    assert (again.returncode, "warning" in again.stdout) == (0, False), again.stdout


def test_a_folder_moved_into_another_indexed_folder_is_told_instead_of_relocate(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A plain run skips the missing folder, and finds its photos inside another root: the
    run says where it seems to have gone, and not to relocate it (which refuses a place there)."""
    trips = write_photos(tmp_path / "Trips" / "2023", 3, size=(320, 240), seed=810)[0].parent.parent
    index(open_library, tiny_model, photos, trips)
    trips.rename(photos / "Trips")

    report = open_library.index()
    assert (report.skipped_roots, report.reused) == ([str(trips)], 3)
    assert report.copies_of_missing == [CopiesOfMissingRoot(str(trips), 3, str(photos / "Trips"))]
    printed = format_report(report)  # what `pixsift index` prints
    assert f"{trips} NEW" not in printed  # the relocate advice of a missing folder
    assert f"if it moved to {photos / 'Trips'}, drop the old entries with pixsift forget {trips}" in printed


def test_a_few_copies_of_an_unplugged_drive_say_nothing_of_a_move(
    open_library: Library, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Two photos of twelve, also kept elsewhere while the drive is away, are not a sign that
    the drive's folder moved there: the run counts them as copies and says no more."""
    index(open_library, tiny_model, photos)
    elsewhere = tmp_path / "Desktop"
    elsewhere.mkdir()
    for photo in sorted(photos.iterdir())[:2]:
        shutil.copy(photo, elsewhere)
    photos.rename(tmp_path / "unplugged")

    report = open_library.index(elsewhere)
    assert (report.reused, report.copies_of_missing) == (2, [])
    assert "warning" not in run_cli("index", "--library", str(open_library.path)).stdout.replace(
        f"warning: folder {photos} is missing", ""
    )


def test_status_marks_an_indexed_folder_that_is_missing_now(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    library = ["--library", str(tmp_path / "library")]
    scans = write_photos(tmp_path / "Scans", 2, size=(320, 240), seed=830)[0].parent
    indexed = run_cli("index", str(photos), str(scans), *library, *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    scans.rename(tmp_path / "Scans-unplugged")

    table = run_cli("status", *library).stdout
    assert re.search(rf"\n         {re.escape(str(scans))}  missing  \(last indexed [\d:\- ]+UTC\)\n", table)
    assert re.search(rf"\nRoots    {re.escape(str(photos))}  \(last indexed [\d:\- ]+UTC\)\n", table)
    roots = json.loads(run_cli("status", "-f", "json", *library).stdout)["roots"]
    assert [(root["path"], root["missing"]) for root in roots] == [(str(photos), False), (str(scans), True)]
