"""`pixsift eval` and `Library.evaluate`: metrics from real rankings, and clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TinyModel, _absolute_python_path, run_cli
from pixsift import Library, QueryError
from pixsift.cli import app
from pixsift.evaluation import MAX_QUERY_FILE_BYTES

runner = CliRunner()


@pytest.fixture
def indexed(open_library: Library, photos: Path, tiny_model: TinyModel) -> Library:
    shutil.copy(photos / "photo_0100.jpg", photos / "twin.jpg")  # the same pixels: cosine 1
    open_library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
    return open_library


def write_queries(path: Path, *lines: object) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_metrics_follow_the_ranking(indexed: Library, photos: Path, tmp_path: Path) -> None:
    queries = write_queries(
        tmp_path / "queries.jsonl",
        {"image": str(photos / "photo_0100.jpg"), "relevant": [str(photos / "twin.jpg")]},
        {"query": "anything at all", "relevant": ["Photos/*.jpg"]},  # relative to the query file
    )
    report = indexed.evaluate(queries, cutoffs=[1, 5, 10])

    twin, everything = report.per_query
    assert twin.ranks == (1,)  # an identical image is the nearest neighbour
    assert (twin.recall(1), twin.precision(5), twin.reciprocal_rank()) == (1.0, 0.2, 1.0)
    assert everything.relevant == 13 and everything.ranks == tuple(range(1, 11))
    assert everything.precision(5) == 1.0 and everything.recall(10) == pytest.approx(10 / 13)
    assert report.recall(1) == pytest.approx((1.0 + 1 / 13) / 2)
    assert report.mrr == 1.0 and report.images == 13 and report.median_latency_ms > 0
    assert report.recall(3) == pytest.approx((1.0 + 3 / 13) / 2)  # any rank the ranking reached
    with pytest.raises(ValueError, match="a cut-off of 11"):
        report.recall(11)  # the 11th result was never asked for: not a miss
    with pytest.raises(ValueError, match="known at 1 to 10"):
        report.precision(0)


def test_relevant_paths_may_go_through_a_linked_folder(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    (tmp_path / "alias").symlink_to(photos)  # the root was indexed under its real name
    queries = write_queries(
        tmp_path / "queries.jsonl",
        {"image": str(photos / "photo_0100.jpg"), "relevant": [str(tmp_path / "alias" / "twin.jpg")]},
        {"query": "anything at all", "relevant": ["alias/photo_01*.jpg"]},
    )
    twin, some = indexed.evaluate(queries, cutoffs=[1]).per_query
    assert twin.ranks == (1,)
    assert some.relevant == len(list(photos.glob("photo_01*.jpg")))


def test_a_query_file_saved_with_a_byte_order_mark_is_read(indexed: Library, tmp_path: Path) -> None:
    queries = tmp_path / "notepad.jsonl"
    queries.write_text('{"query": "anything at all", "relevant": ["Photos/*.jpg"]}\n', encoding="utf-8-sig")
    result = runner.invoke(app, ["eval", str(queries), "--library", str(indexed.path)])
    assert result.exit_code == 0, result.output
    assert "1 query on 13 images" in result.output


def test_a_relevant_file_named_with_brackets_is_found(indexed: Library, photos: Path, tmp_path: Path) -> None:
    """A name such as "beach [1].jpg" is a path, though [1] would also read as a glob's class."""
    shutil.copy(photos / "photo_0100.jpg", photos / "beach [1].jpg")
    indexed.index(photos)
    queries = write_queries(
        tmp_path / "q.jsonl", {"image": "Photos/photo_0100.jpg", "relevant": ["Photos/beach [1].jpg"]}
    )
    (outcome,) = indexed.evaluate(queries, cutoffs=[2]).per_query
    assert outcome.relevant == 1 and outcome.ranks in {(1,), (2,)}  # it ties with twin.jpg


def test_a_glob_stays_in_its_folder_unless_it_says_double_star(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    """As in the shell: `Photos/*.jpg` is the folder's own photos, not those of its subfolders
    (fnmatch's `*` also took `Photos/rejects/...`, which inflated the relevant count); `**`
    spans folders, none included."""
    (photos / "rejects" / "old").mkdir(parents=True)
    shutil.copy(photos / "photo_0100.jpg", photos / "rejects" / "x.jpg")
    shutil.copy(photos / "photo_0101.jpg", photos / "rejects" / "old" / "y.jpg")
    indexed.index(photos)
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"query": "anything", "relevant": ["Photos/*.jpg"]},
        {"query": "anything", "relevant": ["Photos/*/*.jpg"]},
        {"query": "anything", "relevant": ["Photos/**/*.jpg"]},
        {"query": "anything", "relevant": ["Photos/rejects/**"]},
        {"query": "anything", "relevant": ["Photos/photo_01?[0-3].jpg"]},
    )
    counts = [outcome.relevant for outcome in indexed.evaluate(queries, cutoffs=[1]).per_query]
    assert counts == [13, 1, 15, 2, 6]


def test_a_query_file_in_a_folder_named_with_brackets_finds_its_images(
    indexed: Library, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query file's folder (or the home folder of `~`) is a path the user did not write
    as a pattern: "Trip [2023]" in it is a name, not a class matching "Trip 2" ("no indexed
    image matches" every relevant glob)."""
    trip = photos / "Trip [2023]"
    trip.mkdir()
    for name in ("photo_0100.jpg", "photo_0101.jpg", "photo_0102.jpg"):
        shutil.copy(photos / name, trip / name)
    indexed.index(photos)
    monkeypatch.setenv("HOME", str(trip))
    queries = write_queries(
        trip / "q.jsonl",
        {"query": "anything", "relevant": ["photo_010[01].jpg"]},  # a class the user wrote
        {"query": "anything", "relevant": ["~/*.jpg"]},
        {"query": "anything", "relevant": [str(trip / "photo_0102.jpg")]},
        {"image": "photo_0101.jpg", "relevant": ["../Trip */photo_0100.jpg"]},
    )
    counts = [outcome.relevant for outcome in indexed.evaluate(queries, cutoffs=[1]).per_query]
    assert counts == [2, 3, 1, 1]


def test_a_query_text_may_hold_any_unicode_line_separator(indexed: Library, tmp_path: Path) -> None:
    """JSON Lines ends lines with \\n only; Python writes U+2028 and U+0085 unescaped with
    ensure_ascii=False, and Windows files end lines with \\r\\n."""
    text = "beach\u2028at dusk\x85and\x1cnight"
    line = json.dumps({"query": text, "relevant": ["Photos/*.jpg"]}, ensure_ascii=False)
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(f"{line}\r\n\r\n{line}\r\n".encode())
    report = indexed.evaluate(queries)
    assert [outcome.query for outcome in report.per_query] == [text, text]


def test_eval_command_prints_a_table_and_json(indexed: Library, photos: Path, tmp_path: Path) -> None:
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"image": str(photos / "twin.jpg"), "relevant": [str(photos / "photo_0100.jpg")]},
    )
    library = ["--library", str(indexed.path)]
    table = runner.invoke(app, ["eval", str(queries), *library])
    assert table.exit_code == 0, table.output
    assert "1 query on 13 images" in table.output
    assert "recall         1.000   1.000   1.000" in table.output

    as_json = runner.invoke(app, ["eval", str(queries), *library, "--format", "json", "--cutoffs", "2,1"])
    data = json.loads(as_json.output)
    assert data["recall"] == {"1": 1.0, "2": 1.0} and data["precision"]["2"] == 0.5
    assert data["mrr@2"] == 1.0 and data["per_query"][0]["ranks"] == [1]


def test_eval_table_keeps_its_columns_apart_at_large_cutoffs(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"image": str(photos / "twin.jpg"), "relevant": [str(photos / "photo_0100.jpg")]},
    )
    library = ["--library", str(indexed.path)]
    table = runner.invoke(app, ["eval", str(queries), *library, "--cutoffs", "1,100000000"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    header = next(line for line in lines if "@1" in line)
    assert header.split() == ["@1", "@100000000"]
    recall = next(line for line in lines if line.startswith("recall"))
    assert recall.split() == ["recall", "1.000", "1.000"]
    assert next(line for line in lines if line.startswith("MRR")).split() == ["MRR@100000000", "1.000"]


def test_eval_json_names_each_query_as_the_file_does(indexed: Library, photos: Path, tmp_path: Path) -> None:
    twin = str(photos / "twin.jpg")
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"image": twin, "relevant": [str(photos / "photo_0100.jpg")]},
        "",
        {"query": f"image {twin}", "relevant": ["Photos/*.jpg"]},  # the words an image query shows as
    )
    for cutoffs in ("1,5,10", "3"):
        result = runner.invoke(
            app, ["eval", str(queries), "--library", str(indexed.path), "-f", "json", "--cutoffs", cutoffs]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        depth = max(int(k) for k in cutoffs.split(","))
        # the same keys whatever the cut-offs, the older mrr@DEPTH beside them
        assert (data["mrr"], data["mrr_depth"]) == (data[f"mrr@{depth}"], depth)
        image, text = data["per_query"]
        assert image["query"] == text["query"] == f"image {twin}"
        assert (image["image"], image["text"], image["line"]) == (twin, None, 1)
        assert (text["image"], text["text"], text["line"]) == (None, f"image {twin}", 3)
    outcome = indexed.evaluate(queries).per_query[1]  # the Python API carries them too
    assert (outcome.text, outcome.image, outcome.line) == (f"image {twin}", None, 3)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "Line 1: not valid JSON"),
        ([{"query": "x"}], "Line 1: 'relevant' must be a non-empty list"),
        (
            [{"query": "x", "image": "y.jpg", "relevant": ["a"]}],
            "Line 1: give either a 'query' text or an 'image'",
        ),
        (["", {"query": "x", "relevant": ["nowhere/*.png"]}], "Line 2: no indexed image matches"),
        ([{"query": " \t ", "relevant": ["Photos/*.jpg"]}], "Line 1: A query text is empty"),
        ([], "has no queries"),
    ],
)
def test_bad_query_files_are_refused_by_line(
    indexed: Library, tmp_path: Path, lines: list[object], message: str
) -> None:
    queries = write_queries(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(QueryError, match=message):
        indexed.evaluate(queries)
    result = runner.invoke(app, ["eval", str(queries), "--library", str(indexed.path)])
    assert result.exit_code == 1 and message in result.output


def test_each_relevant_path_must_name_an_indexed_image(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    """A typo among several relevant paths was dropped in silence: the query counted one
    relevant image fewer than its line names, and its recall came out higher than it is."""
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"query": "anything", "relevant": ["Photos/photo_0100.jpg"]},
        {"query": "anything", "relevant": ["Photos/photo_0101.jpg", "Photos/photo_1010.jpg", "Photos/*.png"]},
    )
    expected = f"Line 2: no indexed image matches {photos / 'photo_1010.jpg'} (a mistyped path"
    with pytest.raises(QueryError, match=re.escape(expected)):
        indexed.evaluate(queries)
    result = runner.invoke(app, ["eval", str(queries), "--library", str(indexed.path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1
    queries.write_text(queries.read_text().replace("photo_1010.jpg", "photo_0102.jpg"))
    with pytest.raises(QueryError, match=re.escape(f"Line 2: no indexed image matches {photos / '*.png'}")):
        indexed.evaluate(queries)  # a glob that matches nothing is as likely a mistake
    queries.write_text(queries.read_text().replace("*.png", "photo_01*.jpg"))
    assert [o.relevant for o in indexed.evaluate(queries).per_query] == [1, 12]  # each image once


def test_an_image_query_that_names_only_itself_as_relevant_is_told_so(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    """It was told "no indexed image matches" the path of an image that is indexed."""
    image = photos / "photo_0100.jpg"
    queries = write_queries(tmp_path / "q.jsonl", {"image": str(image), "relevant": ["Photos/photo_0100.*"]})
    result = runner.invoke(app, ["eval", str(queries), "--library", str(indexed.path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: Line 1: its relevant paths name only the query image {image}, which is never "
        "among its own results: name the other images that answer it.\n"
    )


def test_a_query_image_that_cannot_be_read_is_named_by_line(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    """The search's own message, with the line: among hundreds of queries it says which."""
    queries = write_queries(
        tmp_path / "q.jsonl",
        {"query": "anything", "relevant": ["Photos/*.jpg"]},
        {"image": "Photos/gone.jpg", "relevant": ["Photos/*.jpg"]},
        {"image": "Photos", "relevant": ["Photos/*.jpg"]},
    )
    with pytest.raises(QueryError, match=r"^Line 2: Image .*gone\.jpg not found"):
        indexed.evaluate(queries)
    queries.write_text(queries.read_text().replace("Photos/gone.jpg", "Photos/twin.jpg"))
    result = runner.invoke(app, ["eval", str(queries), "--library", str(indexed.path)])
    assert result.exit_code == 1
    assert f"Line 3: Cannot read image {photos}: it is not a file." in result.output


def test_a_folder_or_an_image_given_as_the_query_file_is_named_so(
    indexed: Library, photos: Path, tmp_path: Path
) -> None:
    """Python's own texts came through: "[Errno 21] Is a directory: '...'", and a UTF-8
    decoding error for an image given by mistake."""
    library = ["--library", str(indexed.path)]
    folder = runner.invoke(app, ["eval", str(photos), *library])
    assert (folder.exit_code, folder.stdout) == (1, "")
    assert folder.stderr == f"error: {photos} is a folder; give a query file (JSONL, one query a line).\n"
    image = photos / "photo_0100.jpg"
    binary = runner.invoke(app, ["eval", str(image), *library])
    assert (binary.exit_code, binary.stdout) == (1, "")
    assert binary.stderr == (
        f"error: {image} is not a query file: not UTF-8 text (JSONL, one query a line).\n"
    )


def test_eval_usage_errors(indexed: Library, tmp_path: Path) -> None:
    library = ["--library", str(indexed.path)]
    missing = runner.invoke(app, ["eval", str(tmp_path / "none.jsonl"), *library])
    assert missing.exit_code == 1 and "not found" in missing.output
    queries = write_queries(tmp_path / "q.jsonl", {"query": "x", "relevant": ["Photos/*"]})
    bad = runner.invoke(app, ["eval", str(queries), *library, "--cutoffs", "one"])
    assert bad.exit_code == 2
    assert "Invalid value for '--cutoffs'" in bad.output and "expected whole numbers" in bad.output
    for cutoffs, message in (
        ("0", "Cut-offs must be whole numbers of at least 1, e.g. 1,5,10, not 0."),
        ("5,-1", "Cut-offs must be whole numbers of at least 1, e.g. 1,5,10, not -1."),
        (",", "No cut-offs given: name the ranks to measure at, e.g. 1,5,10."),
    ):
        # Bad usage as any bad option value (exit 2, the option named), where it was exit 1.
        refused = runner.invoke(app, ["eval", str(queries), *library, "--cutoffs", cutoffs])
        assert refused.exit_code == 2, refused.output
        assert "Invalid value for '--cutoffs'" in refused.output
        assert message in " ".join(line.strip("│ ") for line in refused.output.splitlines()), refused.output
    with pytest.raises(
        QueryError, match=r"^Cut-offs must be whole numbers of at least 1, e\.g\. 1,5,10, not 0\.$"
    ):
        indexed.evaluate(queries, cutoffs=[5, 0])


def test_a_device_given_as_the_query_file_is_refused_and_a_huge_file_too(
    indexed: Library, tmp_path: Path
) -> None:
    """`pixsift eval /dev/zero` read until memory ran out: a device is refused at once, and a
    file past 64 MiB once that much is read."""
    library = ["--library", str(indexed.path)]
    refused = run_cli("eval", "/dev/zero", *library, timeout=60)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "error: /dev/zero is a device; give a query file (JSONL, one query a line).\n"

    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as file:  # sparse: no disk spent on it
        file.truncate(MAX_QUERY_FILE_BYTES + 1)
    refused = run_cli("eval", str(huge), *library, timeout=60)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"error: {huge} holds more than 64 MiB: too large for a query file (JSONL, one query a line).\n"
    )


def test_queries_may_come_through_a_pipe(indexed: Library, photos: Path, tmp_path: Path) -> None:
    """`pixsift eval <(make-queries)` and a named pipe are read as they come; their relative
    paths are taken from the working folder, as a pipe has no folder of its own."""
    query = {"query": "anything at all", "relevant": [f"{photos.name}/*.jpg"]}
    (tmp_path / "kept").mkdir()
    source = write_queries(tmp_path / "kept" / "queries.jsonl", query)  # not beside the photos
    command = f"{sys.executable} -m pixsift eval <(cat {source}) --library {indexed.path} --format json"
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=photos.parent,
        env=_absolute_python_path(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["per_query"][0]["ranks"] == list(range(1, 11))

    fifo = tmp_path / "queries.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(json.dumps(query) + "\n"))
    writer.start()
    result = run_cli("eval", str(fifo), "--library", str(indexed.path), "--format", "json", cwd=photos.parent)
    writer.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["per_query"][0]["ranks"] == list(range(1, 11))
