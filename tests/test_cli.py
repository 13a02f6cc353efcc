"""The `pixsift` command as users run it: real subprocesses, files, database and index."""

from __future__ import annotations

import array
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import IO, Any

import pytest
from typer.testing import CliRunner

import crash_soak
from conftest import TinyModel, ctrl_c_as_in_a_terminal, interrupted_at, needs_permissions, run_cli
from crash_soak import PAUSE_ENV
from pixsift import InvalidPathError, Library, SearchResult
from pixsift.cli import app
from sample_photos import write_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel
) -> dict[str, Path]:
    """A library of the photo set plus a copy of one photo and one broken file, made by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    photos = root / "Photos"
    shutil.copytree(photo_set, photos)
    shutil.copy(photos / "photo_0100.jpg", photos / "copy.jpg")
    (photos / "broken.jpg").write_text("not a jpeg")
    library = root / "library"
    result = run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert result.returncode == 3, result.stderr  # finished, but one file could not be read
    assert result.stdout.startswith(
        "14 images found: 13 new, 0 updated, 0 moved, 0 copies, 0 removed, 0 unchanged, 1 failed"
    )
    assert "1 file(s) could not be read; list them with: pixsift status --failed" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    return {"photos": photos, "library": library}


def test_second_run_changes_nothing(indexed: dict[str, Path]) -> None:
    result = run_cli("index", "--library", str(indexed["library"]))
    assert result.returncode == 3  # the broken file is still broken: said, not hidden
    assert "0 new, 0 updated, 0 moved, 0 copies, 0 removed, 14 unchanged, 0 failed" in result.stdout
    assert "1 file(s) still failed from earlier runs (retried when they change)" in result.stdout


def test_a_quiet_run_still_says_why_it_exits_with_3(indexed: dict[str, Path]) -> None:
    result = run_cli("index", "--quiet", "--library", str(indexed["library"]))
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == (
        "1 file(s) still failed from earlier runs (retried when they change); "
        "list them with: pixsift status --failed\n"
    )


def test_broken_exif_prints_no_warning_among_the_output(tmp_path: Path, tiny_model: TinyModel) -> None:
    from sample_photos import make_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(46, (640, 480)).save(photos / "garbage-exif.jpg", exif=b"Exif\x00\x00II*\x00garbage")
    result = run_cli("index", str(photos), "--library", str(tmp_path / "lib"), *tiny_model.index_args())
    assert (result.returncode, result.stderr) == (0, "")  # Pillow warned "Corrupt EXIF data" here
    assert "1 new" in result.stdout


def test_forget_a_folder_gone_for_good(photos: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    library = ["--library", str(tmp_path / "library")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    photos.rename(tmp_path / "Moved")
    kept = run_cli("index", *library)
    assert kept.returncode == 0
    assert f"folder {photos} is missing (unmounted?); its images were kept" in kept.stdout
    assert (
        f"; if it is gone for good: pixsift forget {photos})" in kept.stdout
    )  # no `touch` of what is not there
    forgot = run_cli("forget", str(photos), *library)
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout == f"Forgot {photos}: 12 image(s) removed from the library; no file was touched.\n"
    status = json.loads(run_cli("status", "-f", "json", *library).stdout)
    assert (status["roots"], status["images"]["indexed"]) == ([], 0)
    unknown = run_cli("forget", str(photos), *library)
    assert unknown.returncode == 1
    assert unknown.stderr == f"error: {photos} is not an indexed folder (indexed folders: none yet).\n"


@pytest.mark.parametrize("folder", ["", "  "])
def test_forget_an_empty_path_says_it_is_empty(indexed: dict[str, Path], folder: str) -> None:
    result = run_cli("forget", folder, "--library", str(indexed["library"]))  # pixsift forget "$UNSET"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: The folder path is empty: name an indexed folder (indexed folders: {indexed['photos']}).\n"
    )


def test_search_table(indexed: dict[str, Path]) -> None:
    result = run_cli("search", "dog running on a beach", "-k", "3", "--library", str(indexed["library"]))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["rank", "score", "path"]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert all(Path(row.split(maxsplit=2)[2]).is_file() for row in rows)


def test_search_table_columns_hold_negative_scores(indexed: dict[str, Path]) -> None:
    library = ["--library", str(indexed["library"]), "-k", "13"]
    # "x" pulled away from tenfold itself: the query is minus "x", whose scores are those of "x"
    # negated, so one of the two tables has negative scores whatever the model
    tables = [run_cli("search", "x", *library), run_cli("search", "x", "--minus", "10*x", *library)]
    scores = []
    for table in tables:
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        path_at = header.index("path")
        for row in rows:
            _rank, score = row[:path_at].split()
            assert row[path_at:].startswith(str(indexed["photos"]))  # every path in the path column
            assert row.index(score) + len(score) == header.index("score") + len("score")
            scores.append(float(score))
    assert min(scores) < 0


def test_search_formats_agree(indexed: dict[str, Path]) -> None:
    library = str(indexed["library"])
    as_json = json.loads(run_cli("search", "a red car", "-k", "4", "-f", "json", "--library", library).stdout)
    lines = run_cli("search", "a red car", "-k", "4", "-f", "jsonl", "--library", library).stdout.splitlines()
    paths = run_cli(
        "search", "a red car", "-k", "4", "--format", "paths", "--library", library
    ).stdout.splitlines()

    fields = {field.name for field in dataclasses.fields(SearchResult)}  # what the Python API returns
    assert [set(item) for item in as_json] == [fields] * 4
    assert {(item["width"], item["height"], item["format"]) for item in as_json} == {(1600, 1200, "JPEG")}
    assert [json.loads(line) for line in lines] == as_json
    assert paths == [item["path"] for item in as_json]
    assert [item["rank"] for item in as_json] == [1, 2, 3, 4]


def test_combined_query_and_under(indexed: dict[str, Path]) -> None:
    library = str(indexed["library"])
    plain = json.loads(run_cli("search", "beach", "-k", "13", "-f", "json", "--library", library).stdout)
    combined = json.loads(
        run_cli(
            "search",
            "beach",
            "--plus",
            "sunset",
            "--minus",
            "0.5*people",
            "-k",
            "13",
            "-f",
            "json",
            "--library",
            library,
        ).stdout
    )
    assert {item["id"] for item in plain} == {item["id"] for item in combined}
    assert [item["id"] for item in plain] != [item["id"] for item in combined]

    under = run_cli("search", "beach", "--under", str(indexed["photos"]), "-f", "paths", "--library", library)
    assert under.returncode == 0 and len(under.stdout.splitlines()) == 10


def test_similar(indexed: dict[str, Path]) -> None:
    query = indexed["photos"] / "photo_0100.jpg"
    result = run_cli("similar", str(query), "-k", "2", "-f", "json", "--library", str(indexed["library"]))
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["path"] == str(indexed["photos"] / "copy.jpg")
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert (hits[0]["width"], hits[0]["height"], hits[0]["format"]) == (1600, 1200, "JPEG")
    assert str(query) not in [hit["path"] for hit in hits]


def test_empty_result_is_success_with_a_message(indexed: dict[str, Path]) -> None:
    library = str(indexed["library"])
    table = run_cli("search", "anything", "--min-score", "1.5", "--library", library)
    assert (table.returncode, table.stdout, table.stderr) == (0, "", "No matching images.\n")
    as_json = run_cli("search", "anything", "--min-score", "1.5", "-f", "json", "--library", library)
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


def test_an_empty_result_under_a_folder_outside_the_library_says_so(
    indexed: dict[str, Path], tmp_path: Path
) -> None:
    """A mistyped or another library's folder given to --under matched nothing, with no word
    why; a folder inside the indexed ones that merely matches nothing gets no hint."""
    library = str(indexed["library"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["search", "anything"], ["similar", str(indexed["photos"] / "photo_0100.jpg")]):
        outside = run_cli(*command, "--under", str(elsewhere), "--library", library)
        assert (outside.returncode, outside.stdout) == (0, ""), outside.stderr
        assert outside.stderr == (
            f"No matching images. {elsewhere} is not inside an indexed folder "
            f"(indexed: {indexed['photos']}).\n"
        )
    inside = run_cli(
        "search", "anything", "--under", str(indexed["photos"]), "--min-score", "1.5", "--library", library
    )
    assert (inside.returncode, inside.stderr) == (0, "No matching images.\n")


def test_status(indexed: dict[str, Path], tiny_model: TinyModel) -> None:
    library = str(indexed["library"])
    table = run_cli("status", "--library", library)
    assert table.returncode == 0
    assert f"Library  {library}" in table.stdout
    assert f"Model    {tiny_model.config} ({tiny_model.checkpoint}), 64-d, weights " in table.stdout
    assert "Images   13 indexed, 1 failed, 0 pending" in table.stdout
    assert f"Roots    {indexed['photos']}  (last indexed " in table.stdout
    assert "Index    up to date" in table.stdout

    data = json.loads(run_cli("status", "-f", "json", "--failed", "--library", library).stdout)
    assert data["images"] == {"indexed": 13, "failed": 1, "pending": 0}
    assert data["model"]["embed_dim"] == 64
    assert data["failures"] == [
        {
            "path": str(indexed["photos"] / "broken.jpg"),
            "error": "not an image format pixsift reads (or a damaged file)",
        }
    ]
    failed = run_cli("status", "--failed", "--library", library)
    assert f"  {indexed['photos'] / 'broken.jpg'}: not an image format" in failed.stdout


def test_status_shows_the_options_each_folder_is_walked_with(tmp_path: Path, tiny_model: TinyModel) -> None:
    """`pixsift index` alone walks each folder with the options it was last indexed with;
    status showed neither, in the table nor in JSON."""
    plain, hidden = tmp_path / "plain", tmp_path / "hidden"
    write_photos(plain, 1)
    write_photos(hidden / ".inside", 1, seed=7)
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(plain), *library, *tiny_model.index_args()).returncode == 0
    walked = run_cli("index", str(hidden), "--include-hidden", "--follow-symlinks", *library)
    assert walked.returncode == 0, walked.stderr
    table = run_cli("status", *library).stdout
    assert re.search(
        rf"{re.escape(str(hidden))}  \(last indexed [^)]*, --include-hidden, --follow-symlinks\)\n", table
    )
    assert re.search(rf"{re.escape(str(plain))}  \(last indexed [\d:\- ]+UTC\)\n", table)
    roots = json.loads(run_cli("status", "-f", "json", *library).stdout)["roots"]
    assert [(r["path"], r["include_hidden"], r["follow_symlinks"]) for r in roots] == [
        (str(hidden), True, True),
        (str(plain), False, False),
    ]
    assert all(r["added_at"] <= r["last_indexed_at"] for r in roots)


def test_status_loads_neither_the_model_nor_the_search_index(indexed: dict[str, Path]) -> None:
    program = (
        "import sys; from pixsift.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('faiss', 'torch', 'open_clip', 'onnxruntime')\n"
        "print([m for m in heavy if m in sys.modules], file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "status", "--library", str(indexed["library"])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Index    up to date" in done.stdout
    assert done.stderr.splitlines()[-1] == "[]"


def test_library_from_the_environment(indexed: dict[str, Path]) -> None:
    result = run_cli("status", "-f", "json", env={"PIXSIFT_LIBRARY": str(indexed["library"])})
    assert json.loads(result.stdout)["library"] == str(indexed["library"])


def test_non_utf8_file_names_print_as_their_bytes(tmp_path: Path, tiny_model: TinyModel) -> None:
    photos = tmp_path / "photos"
    (path,) = write_photos(photos, 1)
    odd = photos.as_posix().encode() + b"/caf\xe9.jpg"
    path.rename(odd.decode("utf-8", "surrogateescape"))
    library = str(tmp_path / "lib")
    assert run_cli("index", str(photos), "--library", library, *tiny_model.index_args()).returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "pixsift", "search", "x", "-f", "paths", "--library", library],
        capture_output=True,
        check=True,
    )
    assert result.stdout == odd + b"\n"
    as_json = run_cli("search", "x", "-f", "json", "--library", library)
    assert json.loads(as_json.stdout)[0]["path"].encode("utf-8", "surrogateescape") == odd


def test_names_the_output_encoding_cannot_hold_print_escaped(tmp_path: Path, tiny_model: TinyModel) -> None:
    """A stdout in another encoding than the file names' (Windows gives a redirected one its
    code page) printed a traceback for a Japanese name, after the search had run."""
    photos = tmp_path / "photos"
    (path,) = write_photos(photos, 1)
    path.rename(photos / "日本.jpg")
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    latin1 = {"PYTHONIOENCODING": "latin-1"}
    table = run_cli("search", "x", *library, env=latin1)
    assert (table.returncode, table.stderr) == (0, "")
    assert table.stdout.splitlines()[1].endswith(f"  {photos}/\\u65e5\\u672c.jpg")
    paths = run_cli("search", "x", "-f", "paths", *library, env=latin1)
    assert (paths.returncode, paths.stdout) == (0, f"{photos}/\\u65e5\\u672c.jpg\n")
    missing = run_cli("similar", str(photos / "日本-2.jpg"), *library, env=latin1)
    assert missing.returncode == 1
    assert missing.stderr == f"error: Image {photos}/\\u65e5\\u672c-2.jpg not found.\n"


def test_a_newline_in_a_file_name_stays_in_its_row(tmp_path: Path, tiny_model: TinyModel) -> None:
    photos = tmp_path / "photos"
    (path,) = write_photos(photos, 1)
    path.rename(photos / "two\nlines.jpg")
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    table = run_cli("search", "x", *library)
    assert table.stdout.splitlines()[1:] == [f"   1  {table.stdout.split()[-2]:>7}  {photos}/two\\nlines.jpg"]
    status = run_cli("status", *library)
    assert f"{photos}  (last indexed" in status.stdout
    as_json = run_cli("search", "x", "-f", "json", *library)  # machine formats keep the name exact
    assert json.loads(as_json.stdout)[0]["path"] == str(photos / "two\nlines.jpg")


def test_paths0_keeps_a_name_with_a_newline_whole(tmp_path: Path, tiny_model: TinyModel) -> None:
    photos = tmp_path / "photos"
    first, second = write_photos(photos, 2)
    first = first.rename(photos / "two\nlines.jpg")
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    as_json = run_cli("search", "x", "-f", "json", *library)
    found = run_cli("search", "x", "--format", "paths0", *library)
    assert (found.returncode, found.stderr) == (0, "")
    # each path ended by a NUL, nothing else: what xargs -0 reads as two file names
    assert found.stdout.split("\0") == [item["path"] for item in json.loads(as_json.stdout)] + [""]
    assert sorted(found.stdout.split("\0")[:-1]) == sorted([str(first), str(second)])
    alike = run_cli("similar", str(second), "-f", "paths0", *library)
    assert (alike.returncode, alike.stdout) == (0, f"{first}\0")


def indexed_count(library: Path) -> int:
    try:
        with sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "terminate", "kill"]
)
def test_an_interrupted_run_keeps_its_work_and_the_next_one_finishes(
    stop: signal.Signals, tmp_path: Path, tiny_model: TinyModel
) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, 60, size=(1600, 1200), seed=2000)
    library = tmp_path / "lib"
    args = ["index", str(photos), "--library", str(library), "--batch-size", "1", "--workers", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pixsift", *args, *tiny_model.index_args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 120
    while indexed_count(library) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    done = indexed_count(library)
    assert 0 < done < 60, "the run ended before it could be interrupted"
    if stop in (signal.SIGINT, signal.SIGTERM):  # stopped cleanly, with the summary
        assert process.returncode == 130, stderr
        assert "interrupted after" in stderr and "run the same command again to continue" in stderr
    else:
        assert process.returncode == -signal.SIGKILL

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{60 - done} new" in again.stdout or f"{60 - done - 1} new" in again.stdout
    status = json.loads(run_cli("status", "-f", "json", "--library", str(library)).stdout)
    assert status["images"] == {"indexed": 60, "failed": 0, "pending": 0}
    assert status["index"]["state"] == "up to date"
    everything = run_cli("search", "x", "-k", "100", "-f", "paths", "--library", str(library))
    assert sorted(everything.stdout.splitlines()) == sorted(str(p) for p in photos.iterdir())


def test_ctrl_c_while_the_search_index_is_saved_stops_with_the_summary(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Every file was committed; Ctrl-C came in the run's last step, saving the search index.
    The command said only "Interrupted.", without what it had done (and Library.index raised a
    plain KeyboardInterrupt, not IndexInterrupted with its report)."""
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    write_photos(photos, 3, size=(96, 72), seed=2100)
    pause = tmp_path / "pause"
    pause.mkdir()
    process = subprocess.Popen(  # the real command, its rename of the new index file paused
        [sys.executable, crash_soak.__file__, "child", "index", *library],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PAUSE_ENV: str(pause)},
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 120
    while not (pause / "saving").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.startswith("15 images found: 3 new, 0 updated,") and "(interrupted after " in stderr
    assert "Traceback" not in stderr
    with Library.open(tmp_path / "lib") as opened:  # nothing lost: the index catches up
        assert opened.check().healthy
        assert len(opened.search("a photo", k=100)) == 15


def test_ctrl_c_once_forget_has_committed_reports_what_it_removed(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Ctrl-C once the real `pixsift forget` has committed its change (while it tidies up after
    it): it said only "Interrupted.", so the user could not tell whether the folder was
    forgotten. Now it prints what it removed, then that the change is kept (exit 130)."""
    library = ["--library", str(tmp_path / "lib")]
    other = tmp_path / "Other"
    write_photos(other, 3, size=(96, 72), seed=2200)
    assert run_cli("index", str(photos), str(other), *library, *tiny_model.index_args()).returncode == 0
    done = interrupted_at("pruning", tmp_path / "pause", "forget", str(other), *library)
    assert (done.returncode, done.stdout, done.stderr) == (
        130,
        f"Forgot {other}: 3 image(s) removed from the library; no file was touched.\n",
        "Interrupted once the change above was saved: it is kept.\n",
    )
    with Library.open(tmp_path / "lib") as opened:  # the search index catches up
        assert [root.path for root in opened.status().roots] == [str(photos)]
        assert opened.check().healthy
        assert len(opened.search("a photo", k=100)) == 12


def test_ctrl_c_part_way_through_a_repair_lists_the_repairs_kept(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Ctrl-C while `pixsift doctor --repair` rebuilds the search index, after it dropped the
    rows of files gone: it said only "Interrupted.". Now it lists what it did and kept."""
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, *tiny_model.index_args()).returncode == 0
    (photos / "photo_0100.jpg").unlink()
    done = interrupted_at("saving", tmp_path / "pause", "doctor", "--repair", *library)
    assert (done.returncode, done.stdout, done.stderr) == (
        130,
        "",
        "Interrupted part-way through the repair. Done and kept: dropped 1 row(s) of files gone "
        "from disk. To finish: pixsift doctor --repair\n",
    )
    again = run_cli("doctor", "--repair", *library)
    assert again.returncode == 0, again.stdout + again.stderr
    with Library.open(tmp_path / "lib") as opened:
        assert opened.status().counts.indexed == 11


def test_ctrl_c_while_the_model_loads_says_so(
    photos: Path, tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before an index run embeds anything (a download, an export, importing torch) Ctrl-C used
    to end the command with 130 and no message at all."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    library = ["--library", str(tmp_path / "library")]
    first = runner.invoke(app, ["index", str(photos), *library, *tiny_model.index_args()])
    assert first.exit_code == 0, first.stderr
    monkeypatch.setattr("pixsift.models.loading.load_embedder", interrupted)
    # --reembed loads the model before the run starts; a search loads it to embed its text
    for args in (["index", "--reembed"], ["search", "a rocket", "--engine", "torch"]):
        result = runner.invoke(app, [*args, *library])
        assert (result.exit_code, result.stdout, result.stderr) == (130, "", "Interrupted.\n"), args


def test_ctrl_c_while_a_first_run_loads_its_model_says_no_library_was_made(
    photos: Path, tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first index run into a new library, interrupted before it kept anything, removes
    the library again; its summary said "What was embedded so far is saved" all the same."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("pixsift.models.loading.load_embedder", interrupted)
    folder = tmp_path / "library"
    result = runner.invoke(app, ["index", str(photos), "--library", str(folder), *tiny_model.index_args()])
    assert result.exit_code == 130, result.stderr
    assert "(interrupted after " in result.stderr and "so far" not in result.stderr
    assert result.stderr.endswith(
        "Nothing was kept, and no library was made; run the same command again to start.\n"
    )
    assert not folder.exists()


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="sizing a pipe is Linux's")
def test_ctrl_c_while_the_output_waits_for_its_reader_says_so(tmp_path: Path) -> None:
    """Ctrl-C while a search's results wait for a slow reader (`pixsift search x | less`)
    ended the command with 130 and no word, where everywhere else it says "Interrupted."."""
    process, read_end = _search_into_a_small_pipe(tmp_path, 2200, preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while _bytes_waiting(read_end) < 4096 and time.monotonic() < deadline:  # it is blocked
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        time.sleep(0.2)  # into its write, which waits for room in the pipe
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(read_end)
    assert (process.returncode, stderr) == (130, "Interrupted.\n")


def _search_into_a_small_pipe(tmp_path: Path, seed: int, **popen: Any) -> tuple[subprocess.Popen[str], int]:
    """A search started with its 40 results (long paths) going into the smallest pipe, which
    they overflow, and the pipe's read end, left unread: its write waits for the reader."""
    photos = tmp_path / "photos with a name long enough to fill a small pipe in a few results"
    write_photos(photos, 40, size=(64, 48), seed=seed)
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, "--model", "synthetic-tiny").returncode == 0
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pixsift", "search", "a photo", "-k", "40", "-f", "json", *library],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return process, read_end


def _bytes_waiting(read_end: int) -> int:
    waiting = array.array("i", [0])
    fcntl.ioctl(read_end, termios.FIONREAD, waiting)
    return waiting[0]


@needs_permissions
def test_files_without_read_permission_are_user_errors_not_bad_usage(
    indexed: dict[str, Path], tmp_path: Path, tiny_model: TinyModel
) -> None:
    """typer refused them itself as bad usage (exit 2, a boxed "is not readable"), before the
    library could say what it cannot read and what it keeps."""
    image = tmp_path / "locked.jpg"
    shutil.copy(indexed["photos"] / "photo_0100.jpg", image)
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"query": "a dog", "relevant": ["locked.jpg"]}\n')
    folder = tmp_path / "locked-folder"
    folder.mkdir()
    for path in (image, queries, folder):
        path.chmod(0o000)
    library = ["--library", str(indexed["library"])]
    try:
        similar = run_cli("similar", str(image), *library, obey_permissions=True)
        evaluation = run_cli("eval", str(queries), *library, obey_permissions=True)
        index = run_cli(
            "index",
            str(folder),
            "--library",
            str(tmp_path / "lib"),
            *tiny_model.index_args(),
            obey_permissions=True,
        )
    finally:
        for path in (image, queries, folder):
            path.chmod(0o755)
    assert (similar.returncode, similar.stdout) == (1, "")
    assert similar.stderr == f"error: Cannot read image {image}: permission denied\n"
    assert (evaluation.returncode, evaluation.stdout) == (1, "")
    assert evaluation.stderr == f"error: Cannot read query file {queries}: permission denied.\n"
    assert (index.returncode, index.stderr) == (3, "")  # walked what it could, said what it could not
    assert f"warning: could not read folder {folder} (Permission denied)" in index.stdout


def test_exit_codes_of_the_real_command(tmp_path: Path) -> None:
    missing = run_cli("search", "x", "--library", str(tmp_path / "none"))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: No pixsift library at ") and "Traceback" not in missing.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "library.db").write_text("not a database")
    junk = run_cli("status", "--library", str(tmp_path / "junk"))
    assert junk.returncode == 1 and junk.stderr.startswith("error: Cannot use ")
    usage = run_cli("search", "x", "--format", "xml")
    assert usage.returncode == 2 and "Invalid value" in usage.stderr


def _pixsift_writing_to(
    stdout: int | IO[str], args: list[str], library: Path
) -> subprocess.CompletedProcess[str]:
    """`pixsift ARGS` (where "{library}" stands for the library's path) with its output to `stdout`."""
    return subprocess.run(
        [sys.executable, "-m", "pixsift", *(a.format(library=library) for a in args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["search", "x", "--format", "paths", "--library", "{library}"],
        ["search", "x", "-k", "100", "--library", "{library}"],
        ["status", "--library", "{library}"],
        ["--version"],
        ["--help"],  # printed by rich, which has its own way with a closed pipe
        ["search", "-h"],
    ],
)
def test_output_to_a_closed_pipe_ends_quietly_with_141(indexed: dict[str, Path], args: list[str]) -> None:
    """As `pixsift search x | head -1` once head has gone, deterministically: the pipe's read end
    is closed before pixsift starts, so its first write finds no reader."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _pixsift_writing_to(write_end, args, indexed["library"])
    finally:
        os.close(write_end)
    # 128 + SIGPIPE, as a shell shows for a Unix tool; not 1, kept for errors with a message,
    # and no "Exception ignored ... BrokenPipeError" from Python's exit
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="sizing a pipe is Linux's")
@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_reader_gone_in_the_middle_of_the_output_ends_it_with_141(tmp_path: Path, unbuffered: str) -> None:
    """As `pixsift search x -k 40 | head -1` where head leaves while the results are written:
    the write it cuts short must not pass for whole, also without Python's buffer
    (PYTHONUNBUFFERED, which many container images set), where the rest was dropped and the
    command ended with 0."""
    process, read_end = _search_into_a_small_pipe(
        tmp_path, 2201, env={**os.environ, "PYTHONUNBUFFERED": unbuffered}
    )
    try:
        while _bytes_waiting(read_end) < 4096 and process.poll() is None:
            time.sleep(0.01)  # until the pipe is full: the results' write is under way, and waits
    finally:
        os.close(read_end)  # the reader leaves
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr) == (141, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
@pytest.mark.parametrize(
    "args",
    [
        ["search", "x", "--format", "json", "--library", "{library}"],
        ["status", "--library", "{library}"],
        ["index", "--library", "{library}"],  # the run is done; only its summary cannot be written
        ["--version"],
        ["search", "-h"],  # printed by rich
    ],
)
def test_output_to_a_full_disk_is_an_error_in_one_line(indexed: dict[str, Path], args: list[str]) -> None:
    """`pixsift search x --format json > results.json` on a full disk: a traceback, before."""
    with open("/dev/full", "w") as full:
        result = _pixsift_writing_to(full, args, indexed["library"])
    assert (result.returncode, result.stderr) == (
        1,
        "error: Cannot write the output: No space left on device.\n",
    )


def close_stdout() -> None:
    os.close(1)


def test_a_closed_output_is_an_error_and_no_library_file_takes_its_place(
    indexed: dict[str, Path], tmp_path: Path
) -> None:
    """`pixsift search x >&-`: the results went nowhere, with exit 0. And with descriptor 1
    free, the next file opened (the search index, the lock) takes it, so whatever a library
    prints to stdout would land in that file."""
    library = tmp_path / "library"
    shutil.copytree(indexed["library"], library)
    (library / "vectors.faiss").unlink()  # the search saves a rebuilt one: a file opened for writing
    before = run_cli("search", "x", "--format", "paths", "--library", str(library)).stdout
    (library / "vectors.faiss").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "pixsift", "search", "x", "--format", "paths", "--library", str(library)],
        stderr=subprocess.PIPE,
        preexec_fn=close_stdout,
        text=True,
        timeout=180,
        check=False,
    )
    assert (result.returncode, result.stderr) == (1, "error: Cannot write the output: Bad file descriptor.\n")
    after = run_cli("search", "x", "--format", "paths", "--library", str(library))
    assert (after.returncode, after.stdout) == (0, before)
    assert run_cli("doctor", "--library", str(library)).returncode == 0


def close_stderr() -> None:
    os.close(2)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["search", "x", "--format", "paths"], 0),
        (["search", "x", "--under", "{library}"], 0),  # no match: its message goes nowhere
        (["status"], 0),
        (["index"], 3),  # the broken file of the fixture: its warning goes nowhere
    ],
)
def test_a_closed_stderr_drops_the_messages_not_the_command(
    indexed: dict[str, Path], args: list[str], code: int
) -> None:
    """`pixsift search x 2>&-` failed with exit 1 and printed nothing: the command asked the
    missing stderr whether it was a terminal."""
    command = [a.format(library=indexed["library"]) for a in args]
    expected = run_cli(*command, "--library", str(indexed["library"]))
    result = subprocess.run(
        [sys.executable, "-m", "pixsift", *command, "--library", str(indexed["library"])],
        stdout=subprocess.PIPE,
        preexec_fn=close_stderr,
        text=True,
        timeout=180,
        check=False,
    )
    assert expected.returncode == result.returncode == code
    if args[0] == "index":  # its summary holds the time it took
        assert result.stdout.startswith("14 images found: 0 new, 0 updated"), result.stdout
        assert "1 file(s) still failed from earlier runs" in result.stdout
    else:
        assert result.stdout == expected.stdout


runner = CliRunner()


NO_LIBRARY = (
    "error: No pixsift library at {tmp}/none. Create one by indexing a folder: pixsift index ~/Photos\n"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x", "--library", "{tmp}/none"], NO_LIBRARY),
        (["status", "--library", "{tmp}/none"], NO_LIBRARY),
        (
            ["index", "{tmp}/missing", "--library", "{tmp}/lib"],
            "error: Folder {tmp}/missing does not exist.\n",
        ),
        (
            ["index", "{tmp}", "--library", "{tmp}/lib", "--model", "NoSuchNet"],
            "error: Unknown model 'NoSuchNet'. Give an open_clip model name such as ViT-B-32, a bundled "
            "model (synthetic-tiny) or the path of a model-config JSON file.\n",
        ),
        (  # no folder named, no library yet: none is made (test_models: one with no folders)
            ["index", "--library", "{tmp}/lib"],
            NO_LIBRARY.replace("{tmp}/none", "{tmp}/lib"),
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_1(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert result.stderr == message.format(tmp=tmp_path)
    assert result.stdout == ""


def test_a_file_given_as_the_library_is_named_a_file(indexed: dict[str, Path], tmp_path: Path) -> None:
    photo = indexed["photos"] / "photo_0100.jpg"
    database = indexed["library"] / "library.db"
    for args in (["status"], ["search", "x"], ["index", str(indexed["photos"])]):
        result = runner.invoke(app, [*args, "--library", str(photo)])
        # not "No pixsift library ... create one by indexing": an index run there fails as well
        assert (result.exit_code, result.stdout) == (1, ""), args
        assert result.stderr == f"error: Library path {photo} is a file, not a library folder.\n"
    result = runner.invoke(app, ["status", "--library", str(database)])  # the library's own database
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: Library path {database} is a file, not a library folder; "
        f"give the folder that holds it, {indexed['library']}.\n"
    )


def test_the_photos_folder_given_as_its_own_library_is_refused_and_left_as_it_was(
    photos: Path, tiny_model: TinyModel
) -> None:
    """`pixsift index ~/Photos --library ~/Photos`: a run never walks its library's folder, so
    this said "0 images found" with exit 0, and left a library database among the photos."""
    before = sorted(p.name for p in photos.iterdir())
    result = run_cli("index", str(photos), "--library", str(photos), *tiny_model.index_args())
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == (
        f"error: {photos} is the library's own folder, which pixsift never indexes: "
        "keep the library in a folder of its own (--library DIR), or name another folder.\n"
    )
    assert sorted(p.name for p in photos.iterdir()) == before  # no library left among the photos


@pytest.mark.parametrize("spelling", ["itself", "inside", "through a link"])
def test_a_folder_of_the_library_itself_is_refused_as_a_folder_to_index(
    indexed: dict[str, Path], tmp_path: Path, spelling: str
) -> None:
    library = tmp_path / "library"
    shutil.copytree(indexed["library"], library)  # the module's library stays as it is
    (library / "thumbnails").mkdir(exist_ok=True)
    (tmp_path / "alias").symlink_to(library)
    named = {"itself": library, "inside": library / "thumbnails", "through a link": tmp_path / "alias"}
    folder = named[spelling]
    result = runner.invoke(app, ["index", str(folder), "--library", str(library)])
    assert (result.exit_code, result.stdout) == (1, "")
    what = (
        "is the library's own folder"
        if folder != library / "thumbnails"
        else f"lies in the library {library}"
    )
    assert result.stderr.startswith(f"error: {folder} {what}, which pixsift never indexes"), result.stderr
    with Library.open(library) as opened:  # nothing recorded: a plain `pixsift index` walks Photos alone
        assert [root.path for root in opened.status().roots] == [str(indexed["photos"])]
        with pytest.raises(InvalidPathError, match="never indexes"):
            opened.index(folder)


def test_index_refuses_an_empty_folder_path(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photos)  # where pixsift index "$UNSET" indexed the working directory
    result = runner.invoke(app, ["index", "", "--library", str(tmp_path / "lib")])
    assert (result.exit_code, result.stdout) == (1, "")
    assert (
        result.stderr
        == "error: A folder path to index is empty: name a folder, e.g. pixsift index ~/Photos\n"
    )
    assert not (tmp_path / "lib").exists()  # refused before a library is made
    with Library.open(tmp_path / "api-lib") as library, pytest.raises(InvalidPathError, match="is empty"):
        library.index(" ")


def test_searching_an_empty_library_says_what_to_do(tmp_path: Path) -> None:
    from pixsift import Library

    Library.open(tmp_path / "lib").close()
    result = runner.invoke(app, ["search", "x", "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: The library at {tmp_path / 'lib'} has no images indexed yet: "
        "run pixsift index FOLDER first.\n"
    )


@pytest.mark.parametrize(
    "args", [["search", "x", "-f", "xml"], ["search", "x", "-k", "0"], ["search"], ["nosuchcommand"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2


def test_wait_help_names_every_run_that_holds_the_library() -> None:
    """Not only indexing: a repair, a forget or a server's job holds the library too, and the
    busy message says "Another pixsift run is indexing or repairing..."."""
    import typer

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    helps = {
        name: next(param.help for param in command.params if param.name == "wait")
        for name, command in commands.items()
        if any(param.name == "wait" for param in command.params)
    }
    assert sorted(helps) == ["doctor", "forget", "index", "reindex", "relocate"]
    for name, text in helps.items():
        assert "another pixsift run is indexing or repairing this library" in text, name
        assert "process" not in text, name


def test_every_command_has_help() -> None:
    import typer

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert sorted(commands) == [
        "doctor",
        "eval",
        "forget",
        "index",
        "reindex",
        "relocate",
        "search",
        "serve",
        "similar",
        "status",
    ]
    for name, command in commands.items():
        assert command.help, f"{name} has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and f"Usage: pixsift {name}" in result.stdout
    assert runner.invoke(app, ["--version"]).stdout.startswith("pixsift ")
