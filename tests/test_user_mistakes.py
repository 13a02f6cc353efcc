"""Mistakes a user or a calling program can make: each one is refused with a PixsiftError and a
one-line message (the command prints it, exit 1), never a traceback, a raw ValueError, or a
silently wrong answer."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TinyModel, run_cli
from pixsift import (
    AccessDeniedError,
    ImageError,
    ImageNotFoundError,
    InvalidOptionError,
    InvalidPathError,
    Library,
    LibraryFormatError,
    ModelError,
    PixsiftError,
    QueryError,
    QueryTerm,
    SearchFilters,
    SearchResult,
)
from pixsift.cli import app
from pixsift.search import parse_weighted_text
from pixsift.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from serving import indexed_library

runner = CliRunner()


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel
) -> Iterator[Library]:
    folder = tmp_path_factory.mktemp("mistakes")
    photos = Path(shutil.copytree(photo_set, folder / "Photos"))
    opened = indexed_library(folder / "library", photos, tiny_model)
    yield opened
    opened.close()


# ---- search_vector takes any length of vector: scores stay cosine similarities --------------


def test_search_vector_scores_are_cosine_similarities_whatever_the_length(library: Library) -> None:
    query = library._embedder_or_load().embed_texts(["a red square"])[0]
    unit = library.search_vector(query, k=5)
    long = library.search_vector(query * 2.18, k=5)
    assert [hit.id for hit in long] == [hit.id for hit in unit]
    assert [hit.score for hit in long] == pytest.approx([hit.score for hit in unit], abs=1e-5)
    assert all(-1.0 <= hit.score <= 1.0 + 1e-6 for hit in long)
    # min_score compares against the cosine, not against the raw dot product
    assert library.search_vector(query * 3.0, k=5, min_score=long[0].score + 1e-4) == []


@pytest.mark.parametrize(
    "scale",
    [
        np.float32(3e38),  # its length overflows float32 (all scores were 0.0)
        np.float32(1e-40),  # subnormal: its squares vanish
        1e300,  # float64: overflows float32 (and its length float64)
        1e-300,
    ],
)
def test_search_vector_takes_any_finite_nonzero_vector(library: Library, scale: float) -> None:
    """Scaled to length 1 without overflow or underflow: the same ranking and cosines as the
    vector of ordinary size, and no numpy warning."""
    query = library._embedder_or_load().embed_texts(["a red square"])[0]
    unit = library.search_vector(query, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        largest = (query / np.abs(query).max()).astype(type(scale))  # its largest value 1
        scaled = library.search_vector(largest * scale, k=5)
    assert [hit.id for hit in scaled] == [hit.id for hit in unit]
    assert [hit.score for hit in scaled] == pytest.approx([hit.score for hit in unit], abs=1e-5)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.zeros(64), "length zero"),
        (np.zeros(64, dtype=np.float32), "length zero"),
        (np.array([10**400] * 64, dtype=object), "too large"),
        (np.full(64, np.nan), "not finite"),
        (np.full(64, np.inf), "not finite"),
        (np.ones(512), "64-dimensional"),
        (np.ones((2, 64)), "one-dimensional"),
    ],
)
def test_vectors_without_a_direction_or_of_the_wrong_size_are_refused(
    library: Library, vector: np.ndarray, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        library.search_vector(vector, k=3)


# ---- bad arguments to the query methods are QueryErrors ---------------------------------------


@pytest.mark.parametrize("k", [0, -1, True, 2.5])
def test_a_result_count_below_one_is_a_query_error_everywhere(
    library: Library, k: int, tmp_path: Path
) -> None:
    from pixsift import search_once

    vector = np.ones(64, dtype=np.float32)
    calls: list[Callable[[], object]] = [
        lambda: library.search("a cat", k),
        lambda: library.similar(1, k),
        lambda: library.search_vector(vector, k),
        lambda: library.search_many(["a cat"], k),
        lambda: library.similar_many([1], k),
        lambda: library.search_terms([QueryTerm(text="a cat")], k),
        lambda: library.recommend(["a cat"], k=k),
        lambda: search_once("a cat", k, library=library.path),
    ]
    for call in calls:
        with pytest.raises(QueryError, match="k \\(how many results\\) must be"):
            call()


def test_a_min_score_that_is_no_number_is_refused_by_both_search_paths(library: Library) -> None:
    from pixsift import search_once

    with pytest.raises(QueryError, match=r"The minimum score must be a number, not '0\.1'"):
        library.search("a cat", min_score="0.1")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"The minimum score must be a number, not '0\.1'"):
        search_once("a cat", library=library.path, min_score="0.1")  # type: ignore[arg-type]


def test_empty_and_mistyped_examples_are_query_errors(library: Library) -> None:
    with pytest.raises(QueryError, match="at least one query term"):
        library.search_terms([])
    with pytest.raises(QueryError, match="at least one positive"):
        library.recommend([])
    with pytest.raises(QueryError, match="not float"):
        library.similar(3.5)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="not NoneType"):
        library.recommend([None])  # type: ignore[list-item]


@pytest.mark.parametrize("text", [5, b"a cat", ["a cat"], Path("a cat"), QueryTerm(text="a cat")])
def test_a_query_text_that_is_no_string_is_a_query_error(library: Library, text: object) -> None:
    from pixsift import search_once

    calls: list[Callable[[], object]] = [
        lambda: library.search(text),  # type: ignore[arg-type]
        lambda: library.search_many(["a cat", text]),  # type: ignore[list-item]
        lambda: library.search_terms([QueryTerm(text=text)]),  # type: ignore[arg-type]
        lambda: search_once(text, library=library.path),  # type: ignore[arg-type]
    ]
    if not isinstance(text, QueryTerm):  # plus and minus take terms as well as texts
        calls.append(lambda: library.search("a cat", plus=[text]))  # type: ignore[list-item]
    for call in calls:
        with pytest.raises(QueryError, match=f"A query text must be a string, not {type(text).__name__}"):
            call()


def test_a_query_image_or_weight_of_the_wrong_kind_is_a_query_error(library: Library) -> None:
    with pytest.raises(QueryError, match="A query image must be a file path, not int"):
        library.search_terms([QueryTerm(image=5)])  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="A query weight must be a number, not str"):
        library.search("a cat", plus=[QueryTerm(text="a dog", weight="2")])  # type: ignore[arg-type]
    photo = library.search("a cat", k=1)[0].path  # a Path and numpy weights are fine
    hits = library.search_terms([QueryTerm(image=photo), QueryTerm(text="a dog", weight=np.float32(0.5))])  # type: ignore[arg-type]
    assert hits


def test_one_example_given_alone_is_that_example_not_its_characters(library: Library) -> None:
    from pixsift import search_once

    def ids(hits: list[SearchResult]) -> list[int]:
        return [hit.id for hit in hits]

    as_list = ids(library.search("a cat", k=5, plus=["a dog"], minus=["snow"]))
    assert ids(library.search("a cat", k=5, plus="a dog", minus="snow")) == as_list
    assert ids(search_once("a cat", k=5, library=library.path, plus="a dog", minus="snow")) == as_list
    data = library.search("a cat", k=1)[0].path.read_bytes()  # its byte values are not image ids
    assert ids(library.recommend(data, k=5)) == ids(library.recommend([data], k=5))
    assert ids(library.recommend("a red square", "a cat", k=5)) == ids(
        library.recommend(["a red square"], ["a cat"], k=5)
    )
    with pytest.raises(QueryError, match=r"search_many takes a list of queries; for one, call search"):
        library.search_many("a cat")
    with pytest.raises(QueryError, match=r"similar_many takes a list of queries; for one, call similar"):
        library.similar_many(data)


def test_search_terms_refuses_what_is_no_list_of_query_terms(library: Library) -> None:
    """Plain texts or ids (as `recommend` takes) were embedded, then failed as an
    AttributeError ("'str' object has no attribute 'weight'"); one text was one term per
    character."""
    for terms in (["a cat", "snow"], [QueryTerm(text="a cat"), 3]):
        with pytest.raises(QueryError, match=r"search_terms takes QueryTerms, such as QueryTerm\(text="):
            library.search_terms(terms)  # type: ignore[arg-type]
    for single in ("a cat", QueryTerm(text="a cat"), None):
        with pytest.raises(QueryError, match="search_terms takes a list of queries"):
            library.search_terms(single)  # type: ignore[arg-type]
    from_generator = library.search_terms(term for term in [QueryTerm(text="a cat")])
    assert from_generator == library.search_terms([QueryTerm(text="a cat")])


def test_what_similar_cannot_take_is_refused_in_its_own_terms(library: Library) -> None:
    """A float, None or a bool given to `similar` was refused with `recommend`'s list of
    example kinds: "an image id, an image file, a text, image bytes or a QueryTerm", though
    to `similar` a text is a file's path."""
    refused = r"An image for similar is an image id, an image file \(a path\) or an image's bytes, not "
    for image in (3.5, None, True, ["photo.jpg"]):
        with pytest.raises(QueryError, match=refused + type(image).__name__):
            library.similar(image)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match=refused):
            library.similar_many([1, image])  # type: ignore[list-item]
    hit = library.search("a cat", k=1)[0]
    by_id = library.similar(hit.id, k=5)
    assert library.similar(np.int64(hit.id), k=5) == by_id == library.similar(str(hit.path), k=5)  # type: ignore[arg-type]
    upload = hit.path.read_bytes()
    assert library.similar(bytearray(upload), k=5) == library.similar(upload, k=5)  # type: ignore[arg-type]


def test_arguments_of_the_wrong_kind_are_pixsift_errors(library: Library) -> None:
    """Each was a TypeError or ValueError from inside (a thumbnail size of 100.5 even blamed
    the image file: "Cannot read image ...: 'float' object cannot be interpreted as an
    integer"), and a negative failures limit listed every failure."""
    image_id = library.search("a cat", k=1)[0].id
    with pytest.raises(QueryError, match="search_many takes a list of queries, not int"):
        library.search_many(5)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="similar_many takes a list of queries, not NoneType"):
        library.similar_many(None)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="not NoneType"):
        library.recommend(None)  # type: ignore[arg-type]
    for size in (100.5, "64", None):
        with pytest.raises(ImageError, match="A thumbnail size must be from 16 to 1024 pixels"):
            library.thumbnail(image_id, size=size)  # type: ignore[arg-type]
    assert library.thumbnail(image_id, size=np.int64(64)).is_file()  # type: ignore[arg-type]
    for limit in (-1, "a", 2.5):
        with pytest.raises(InvalidOptionError, match="limit must be a whole number"):
            library.failures(limit)  # type: ignore[arg-type]
    assert library.failures(0) == []
    for after in (5, b"/photos", ["/photos"]):
        with pytest.raises(InvalidOptionError, match="after must be a path"):
            library.failures(after=after)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="after is not a path a file could have"):
        library.failures(after="/photos/\ud800")
    assert library.failures(1, after=Path("/")) == library.failures(1, after="") == library.failures(1)


def test_the_many_methods_take_generators_as_lists(library: Library) -> None:
    texts = ["a cat", "a red square"]
    ids = [hit.id for hit in library.search("a cat", k=2)]

    def ranked(batches: list[list[SearchResult]]) -> list[list[int]]:
        return [[hit.id for hit in hits] for hits in batches]

    from_generator = library.search_many(text for text in texts)
    assert ranked(from_generator) == ranked(library.search_many(texts))
    assert ranked(library.similar_many(i for i in ids)) == ranked(library.similar_many(ids))
    nothing: list[int] = []
    assert library.search_many(str(i) for i in nothing) == []
    assert library.similar_many(i for i in nothing) == []


def test_ids_from_numpy_arrays_are_ids(library: Library) -> None:
    hits = library.search("a cat", k=3)
    ids = np.array([hit.id for hit in hits])  # as an application keeps them
    expected = [hit.id for hit in library.similar(int(ids[0]), k=5)]
    assert [hit.id for hit in library.similar(ids[0], k=5)] == expected
    assert [hit.id for hit in library.recommend(list(ids[:2]), [ids[2]], k=5)] == [
        hit.id for hit in library.recommend([int(i) for i in ids[:2]], [int(ids[2])], k=5)
    ]
    assert [hit.id for hit in library.recommend(ids[0], k=5)] == [
        hit.id for hit in library.recommend([int(ids[0])], k=5)
    ]


def test_a_result_count_from_numpy_is_that_count(library: Library) -> None:
    from pixsift import search_once

    vector = np.ones(64, dtype=np.float32)
    under = SearchFilters(under=str(library.search("a cat", k=1)[0].path.parent))
    calls: list[Callable[[int], list[SearchResult]]] = [
        lambda k: library.search("a cat", k),
        lambda k: library.search("a cat", k, filters=under),
        lambda k: library.similar(1, k),
        lambda k: library.search_vector(vector, k),
        lambda k: library.search_many(["a cat"], k)[0],
        lambda k: library.similar_many([1], k)[0],
        lambda k: library.search_terms([QueryTerm(text="a cat")], k),
        lambda k: library.recommend(["a cat"], k=k),
        lambda k: library.recommend(["a cat"], k=k, diversity=0.5),
        lambda k: search_once("a cat", k, library=library.path),
    ]
    for call in calls:
        expected = [hit.id for hit in call(3)]
        assert len(expected) == 3
        for count in (np.int64(3), np.int32(3), np.uint8(3)):
            assert [hit.id for hit in call(count)] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("image_id", [2**63, 2**64, -(2**63) - 1])
def test_an_id_no_database_can_hold_is_an_image_not_found(library: Library, image_id: int) -> None:
    for call in (
        lambda: library.image(image_id),
        lambda: library.similar(image_id),
        lambda: library.recommend([image_id]),
        lambda: library.thumbnail(image_id),
    ):
        with pytest.raises(ImageNotFoundError, match=f"has id {image_id}"):
            call()


@pytest.mark.parametrize("min_score", [math.nan, math.inf, -math.inf])
def test_a_min_score_that_is_not_finite_is_refused(library: Library, min_score: float) -> None:
    from pixsift import search_once

    with pytest.raises(QueryError, match="The minimum score must be a finite number"):
        library.search("a cat", min_score=min_score)
    with pytest.raises(QueryError, match="The minimum score must be a finite number"):
        search_once("a cat", library=library.path, min_score=min_score)
    result = run_cli("search", "a cat", "--min-score", str(min_score), "--library", str(library.path))
    assert result.returncode == 1
    # worded for the option as for the argument: "min_score" is no name on the command line
    assert result.stderr == f"error: The minimum score must be a finite number, not {min_score}.\n"


def test_one_format_given_as_a_string_is_that_format(library: Library) -> None:
    assert SearchFilters(formats="JPEG").formats == ("JPEG",)
    hits = library.search("a cat", k=3, filters=SearchFilters(formats="jpg"))
    assert len(hits) == 3 and {hit.format for hit in hits} == {"JPEG"}


def test_filters_take_a_folder_as_a_path_and_formats_as_a_list(library: Library) -> None:
    """As typed for an application's type checker: kept as text and a tuple, so filters made
    either way are equal and hash alike."""
    root = library.status().roots[0].path
    from_path = SearchFilters(under=Path(root), formats=["jpg"])
    assert from_path == SearchFilters(under=root, formats=("jpg",))
    assert isinstance(from_path.under, str) and from_path.formats == ("jpg",)
    assert len(library.search("a cat", k=3, filters=from_path)) == 3
    for wrong in ({"under": 5}, {"under": b"/photos"}, {"formats": 5}):
        with pytest.raises(QueryError, match="Filter"):
            SearchFilters(**wrong)


@pytest.mark.parametrize("filters", [{"after": "2024-05-01"}, ["JPEG"], "JPEG"], ids=["dict", "list", "str"])
def test_filters_that_are_not_a_search_filters_are_refused_clearly(library: Library, filters: object) -> None:
    """A dict of filter values was an AttributeError from deep inside the search."""
    from pixsift import search_once

    wrong: Any = filters
    calls: list[Callable[[], object]] = [
        lambda: library.search("a cat", filters=wrong),
        lambda: library.search("a cat", under=library.path.parent, filters=wrong),
        lambda: library.similar(1, filters=wrong),
        lambda: library.search_many(["a cat"], filters=wrong),
        lambda: library.recommend(["a cat"], filters=wrong),
        lambda: search_once("a cat", library=library.path, filters=wrong),
    ]
    for call in calls:
        with pytest.raises(QueryError, match=r"filters must be a pixsift\.SearchFilters"):
            call()


def test_size_filters_from_numpy_and_no_formats_given_as_none(library: Library) -> None:
    """A numpy integer was refused as "not a whole number" (k takes one), and formats=None
    was a TypeError, where None means no restriction in every other field."""
    wide = library.search("a cat", k=20, filters=SearchFilters(min_width=2))
    assert len(wide) > 1
    for count in (np.int64(2), np.int32(2), np.uint16(2)):
        filters = SearchFilters(min_width=count, min_height=count)  # type: ignore[arg-type]
        assert type(filters.min_width) is int and type(filters.min_height) is int
        assert [hit.id for hit in library.search("a cat", k=20, filters=filters)] == [hit.id for hit in wide]
    for wrong in (np.float64(2), np.int64(0), np.bool_(True)):
        with pytest.raises(QueryError, match="Filter min_width must be a whole number"):
            SearchFilters(min_width=wrong)  # type: ignore[arg-type]
    assert SearchFilters(formats=None).is_empty  # type: ignore[arg-type]


def test_a_mistyped_format_is_refused_not_an_empty_result(library: Library) -> None:
    for name in ("jpge", "xyz", "no such!"):
        with pytest.raises(QueryError, match=f"Filter format '{re.escape(name)}' is not one pixsift indexes"):
            SearchFilters(formats=(name,))
    for name in ("jpg", "JPEG", "tif", "heic", "webp", "mpo", " png "):
        assert SearchFilters(formats=(name,)).formats == (name,)  # every alias a user may write
    result = runner.invoke(app, ["search", "a cat", "--image-format", "jpge", "--library", str(library.path)])
    assert result.exit_code == 1 and "is not one pixsift indexes: AVIF, BMP, DIB, GIF" in result.stderr


def test_an_empty_folder_filter_is_refused_not_read_as_the_working_directory(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = library.path.parent / "Photos"
    monkeypatch.chdir(photos)  # where "" would otherwise point: every image is under it
    for under in ("", "  "):
        with pytest.raises(QueryError, match="Filter under is empty"):
            library.search("a cat", filters=SearchFilters(under=under))
    result = runner.invoke(app, ["search", "a cat", "--under", "", "--library", str(library.path)])
    assert result.exit_code == 1 and "--under is empty" in result.output


@pytest.mark.parametrize(
    ("options", "api_filters", "cli_message", "api_message"),
    [
        (
            ["--under", ""],
            {"under": ""},
            "--under is empty: name a folder, or leave it out.",
            "Filter under is empty: name a folder, or leave it out.",
        ),
        (
            ["--after", "garbage"],
            {"after": "garbage"},
            "--after 'garbage' is not a date such as 2024-05-01 or 2024-05-01T18:30.",
            "Filter after 'garbage' is not a date such as 2024-05-01 or 2024-05-01T18:30.",
        ),
        (
            ["--before", "{x}"],  # braces in a value are kept as typed
            {"before": "{x}"},
            "--before '{x}' is not a date such as 2024-05-01 or 2024-05-01T18:30.",
            "Filter before '{x}' is not a date such as 2024-05-01 or 2024-05-01T18:30.",
        ),
        (
            ["--after", "2024-05-01", "--before", "2024-01-01"],
            {"after": "2024-05-01", "before": "2024-01-01"},
            "--after (2024-05-01T00:00:00) must be earlier than --before (2024-01-01T00:00:00).",
            "Filter after (2024-05-01T00:00:00) must be earlier than before (2024-01-01T00:00:00).",
        ),
        (
            ["--image-format", "jpge"],
            {"formats": "jpge"},
            "--image-format 'jpge' is not one pixsift indexes: ",
            "Filter format 'jpge' is not one pixsift indexes: ",
        ),
    ],
    ids=["under", "after", "braces", "after-before", "format"],
)
@pytest.mark.parametrize("command", ["search", "similar"])
def test_a_bad_filter_on_the_command_line_names_the_option_typed(
    library: Library,
    options: list[str],
    api_filters: dict[str, str],
    cli_message: str,
    api_message: str,
    command: str,
) -> None:
    """The command line said "Filter under is empty" of `--under ''`: the Python API's name of
    the filter, which the user never typed. It names the option now; the API keeps its words."""
    with pytest.raises(QueryError) as raised:
        SearchFilters(**api_filters)  # type: ignore[arg-type]
    assert str(raised.value).startswith(api_message)
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)  # braces too
    query = "a cat" if command == "search" else str(library.search("a cat", 1)[0].path)
    result = runner.invoke(app, [command, query, *options, "--library", str(library.path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {cli_message}") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["search", ""],
            'The text to search for is empty: say what to look for, as in pixsift search "a dog".',
        ),
        (
            ["search", " \t"],
            'The text to search for is empty: say what to look for, as in pixsift search "a dog".',
        ),
        (  # a control character or a byte-order mark alone: nothing once CLIP's cleaning drops it
            ["search", "\x01"],
            'The text to search for is empty: say what to look for, as in pixsift search "a dog".',
        ),
        (
            ["search", "\ufeff \x7f"],
            'The text to search for is empty: say what to look for, as in pixsift search "a dog".',
        ),
        (
            ["search", "a cat", "--plus", ""],
            "--plus is given an empty text: give it one, or leave --plus out.",
        ),
        (
            ["search", "a cat", "--plus", "\x02"],
            "--plus is given an empty text: give it one, or leave --plus out.",
        ),
        (
            ["search", "a cat", "--minus", " "],
            "--minus is given an empty text: give it one, or leave --minus out.",
        ),
        (
            ["similar", "PHOTO", "--plus", ""],
            "--plus is given an empty text: give it one, or leave --plus out.",
        ),
    ],
)
def test_an_empty_text_on_the_command_line_is_named(library: Library, args: list[str], message: str) -> None:
    """`pixsift search dog --plus ''` said only "A query text is empty": of the texts typed,
    not which. The core keeps its words for API callers."""
    for blank in (" ", "\x01", "\ufeff"):
        with pytest.raises(QueryError, match=r"^A query text is empty\.$"):
            QueryTerm(text=blank)
    photo = str(library.search("a cat", 1)[0].path)
    typed = [photo if arg == "PHOTO" else arg for arg in args]
    result = runner.invoke(app, [*typed, "--library", str(library.path)])
    assert result.exit_code == 1
    assert result.stderr == f"error: {message}\n"


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_image_or_query_file_path_is_refused_not_read_as_the_working_directory(
    library: Library, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """It was read as the working directory: "Cannot read image /home/me: it is not a file",
    and for eval ". is a folder"."""
    monkeypatch.chdir(library.path.parent / "Photos")
    calls: list[Callable[[], object]] = [
        lambda: library.similar(path),
        lambda: library.similar(Path(path) if path else path, plus=["at night"]),
        lambda: library.recommend(QueryTerm(image=path)),
    ]
    for call in calls:
        with pytest.raises(InvalidPathError, match="An image path is empty: name an image file"):
            call()
    with pytest.raises(QueryError, match="The query file path is empty"):
        library.evaluate(path)
    for command, message in (
        (["similar", path], "error: An image path is empty: name an image file.\n"),
        (
            ["eval", path],
            "error: The query file path is empty: name a query file (JSONL, one query a line).\n",
        ),
    ):
        result = runner.invoke(app, [*command, "--library", str(library.path)])
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)


def test_a_file_as_the_folder_to_search_under_is_named_a_file(library: Library) -> None:
    """It was reported as a folder that "does not exist", next to the file the user could see."""
    image = next((library.path.parent / "Photos").glob("*.jpg"))
    for command in (["search", "a cat"], ["similar", str(image)]):
        result = run_cli(*command, "--under", str(image), "--library", str(library.path))
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"error: The folder to search under, {image}, is a file, not a folder; "
            "give the folder that holds it.\n"
        )


def test_a_path_in_a_message_is_named_as_written_and_where_it_was_looked_for(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages named a path the user gave three ways: as typed ("./missing" by forget), cut
    down ("missing" by index and --under) or absolute (similar, the --under hint). Now as
    typed, with the absolute path it was read as when that differs; an absolute one as it is."""
    folder = library.path.parent
    monkeypatch.chdir(folder)
    photo = next(path.name for path in (folder / "Photos").glob("*.jpg"))
    (folder / "Elsewhere").mkdir(exist_ok=True)
    lib = ["--library", str(library.path)]
    not_indexed = f"is not an indexed folder (indexed folders: {folder / 'Photos'})."

    def said(where: str) -> str:
        return f"./{where} ({folder / where})"

    for command, message in (
        (["index", "./missing"], f"Folder {said('missing')} does not exist."),
        (
            ["index", f"./Photos/{photo}"],
            f"{said(f'Photos/{photo}')} is not a folder; give the folder that holds it.",
        ),
        (["forget", "./missing"], f"{said('missing')} {not_indexed}"),
        (["relocate", "./missing", "./Elsewhere"], f"{said('missing')} {not_indexed}"),
        (
            ["relocate", "./Photos", "./missing"],
            f"Folder {said('missing')} does not exist: move the folder there first.",
        ),
        (["similar", "./missing.jpg"], f"Image {said('missing.jpg')} not found."),
        (["similar", "./Elsewhere"], f"Cannot read image {said('Elsewhere')}: it is not a file."),
        (
            ["search", "a cat", "--under", "./missing"],
            f"The folder to search under, {said('missing')}, does not exist.",
        ),
        (["eval", "./missing.jsonl"], f"Query file {said('missing.jsonl')} not found."),
        (
            ["forget", "~/no-such-folder"],
            f"~/no-such-folder ({Path.home() / 'no-such-folder'}) {not_indexed}",
        ),
        (["index", str(folder / "missing")], f"Folder {folder / 'missing'} does not exist."),
        (["similar", str(folder / "missing.jpg")], f"Image {folder / 'missing.jpg'} not found."),
    ):
        result = runner.invoke(app, [*command, *lib])
        assert (result.exit_code, result.stderr) == (1, f"error: {message}\n"), command
    outside = runner.invoke(app, ["search", "a cat", "--under", "./Elsewhere", *lib])
    hint = f"{said('Elsewhere')} is not inside an indexed folder (indexed: {folder / 'Photos'})."
    assert outside.stderr == f"No matching images. {hint}\n"


# ---- weights on --plus and --minus -------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "text", "weight"),
    [
        ("sunset", "sunset", 1.0),
        ("0.5*sunset", "sunset", 0.5),
        (" 2 * red car", "red car", 2.0),
        ("1e-1*x*y", "x*y", 0.1),  # only the first * ends the weight
        ("red car * 2", "red car * 2", 1.0),  # more than one word before the *: all text
        ("*sparkle*", "*sparkle*", 1.0),
    ],
)
def test_weight_prefixes_that_are_read(term: str, text: str, weight: float) -> None:
    assert parse_weighted_text(term) == QueryTerm(text=text, weight=weight)


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("-0.5*red", "a weight must be a positive number, not -0.5"),
        ("0*red", "a weight must be a positive number, not 0"),
        ("nan*red", "a weight must be a positive number, not nan"),
        ("abc*red", "'abc' is not a weight"),
        ("0.5*", "the weight 0.5 is followed by no text"),
    ],
)
def test_bad_weights_are_refused_on_the_command_line(library: Library, term: str, message: str) -> None:
    for option in ("--plus", "--minus"):
        result = runner.invoke(app, ["search", "a cat", option, term, "--library", str(library.path)])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1


# ---- indexing arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"workers": 0}, "workers"),
        # Above what --batch-size and --workers take: 100,000 decoded images held at once.
        ({"batch_size": 100_000}, "batch_size"),
        ({"workers": 65}, "workers"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_batch_size_and_workers_out_of_range_are_refused(
    library: Library, options: dict[str, int], name: str
) -> None:
    folder = library.status().roots[0].path
    with pytest.raises(InvalidOptionError, match=f"{name} must be a whole number from 1 to "):
        library.index(folder, **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match=f"{name} must be a whole number from 1 to "):
        library.reindex(folder, **options)  # type: ignore[arg-type]


def test_the_command_line_and_the_api_take_the_same_batch_sizes(library: Library) -> None:
    folder = library.status().roots[0].path
    for option, most in (("--batch-size", 4096), ("--workers", 64)):
        refused = runner.invoke(app, ["index", folder, "--library", str(library.path), option, str(most + 1)])
        assert refused.exit_code == 2 and f"1<=x<={most}" in refused.output
        name = option.removeprefix("--").replace("-", "_")
        with pytest.raises(InvalidOptionError, match=f"{name} must be a whole number from 1 to {most}, "):
            library.index(folder, **{name: most + 1})  # type: ignore[arg-type]


def test_numpy_integers_are_taken_as_batch_sizes(library: Library) -> None:
    """As `k` is: a count computed with numpy is a whole number."""
    folder = library.status().roots[0].path
    assert library.index(folder, batch_size=np.int64(4), workers=np.int32(2)).complete  # type: ignore[arg-type]
    assert library.reindex(folder, batch_size=np.int64(4)).complete  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_library_path_is_refused_not_read_as_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from pixsift import search_once

    monkeypatch.chdir(tmp_path)
    for call in (
        lambda: Library.open(path),
        lambda: Library.open(path, create=False),
        lambda: search_once("a cat", library=path),
    ):
        with pytest.raises(InvalidPathError, match="The library path is empty"):
            call()
    assert os.listdir(tmp_path) == []  # no library.db made where the program runs


def test_image_ids_that_are_not_integers_are_refused(library: Library) -> None:
    """A string id is not looked up as though it were none: "3" would be "no image has id 3"
    while image 3 exists."""
    image_id = library.search("a cat", k=1)[0].id
    assert library.image(np.int64(image_id)).id == image_id  # type: ignore[arg-type]
    for wrong in (str(image_id), float(image_id), None):
        with pytest.raises(QueryError, match="Image ids are whole numbers"):
            library.image(wrong)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="Image ids are whole numbers"):
            library.thumbnail(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [["status"], ["search", "a cat"], ["index", "."]])
def test_an_empty_library_option_is_refused_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """`--library "$UNSET_VARIABLE"`: typer would read "" as ".", the working directory."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--library", ""])
    assert result.exit_code == 1, result.output
    assert "The library path is empty" in result.output
    assert os.listdir(tmp_path) == []


def test_reindex_expands_the_home_folder(library: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(library.status().roots[0].path)
    monkeypatch.setenv("HOME", str(root.parent))
    report = library.reindex(f"~/{root.name}")
    assert report.scanned == 12 and report.added == 0
    # The server's check (which never expands ~) still refuses a path that is not absolute.
    with pytest.raises(InvalidPathError, match="must be absolute"):
        library.check_reindex([f"~/{root.name}"])


def test_reindex_reads_a_relative_path_as_index_does(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(library.status().roots[0].path)
    monkeypatch.chdir(root.parent)
    assert library.reindex(root.name).scanned == 12  # refused as "must be absolute" before
    assert library.reindex(f"{root.name}/photo_0100.jpg").scanned == 12  # a file: its folder
    monkeypatch.chdir(root)
    assert library.reindex(".").scanned == 12
    with pytest.raises(InvalidPathError, match="A path to re-index is empty"):  # not "."
        library.reindex("")
    with pytest.raises(InvalidPathError, match="must be absolute"):  # the server's check, still
        library.check_reindex(["."])


def test_reindex_names_a_path_as_written_and_where_it_was_looked_for(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As every message about a path the user gave does (`errors.given_path`), not as
    "/cwd/./x" (what the user did not write, with the "./" left in)."""
    root = Path(library.status().roots[0].path)
    monkeypatch.chdir(root)
    with pytest.raises(InvalidPathError, match=re.escape(f"./x ({root}/x) does not exist.")):
        library.reindex("./x")
    with pytest.raises(AccessDeniedError, match=re.escape(f"Path .. ({root.parent}) is outside")):
        library.reindex("..")
    (root / ".hidden").mkdir()
    try:
        with pytest.raises(InvalidPathError, match=re.escape(f".hidden ({root}/.hidden) lies in a hidden")):
            library.reindex(".hidden")
    finally:
        (root / ".hidden").rmdir()  # the library is shared by the module's tests
    with pytest.raises(InvalidPathError, match=f"^{re.escape(str(root))}/nope.jpg does not exist"):
        library.check_reindex([root / "nope.jpg"])  # absolute as written: named once


# ---- devices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", ""])
def test_an_unknown_device_is_refused_before_anything_runs(library: Library, device: str) -> None:
    with pytest.raises(ModelError, match=f"Unknown device {device!r}"):
        Library.open(library.path, device=device)
    # over an unchanged folder the model never loads: the device must be checked anyway
    result = runner.invoke(app, ["index", "--library", str(library.path), "--device", device])
    assert result.exit_code == 1
    assert result.stderr == f"error: Unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps.\n"


# ---- fixed choices, typed in any case -------------------------------------------------------------


def test_devices_and_engines_are_taken_in_any_case(library: Library) -> None:
    """CPU, ONNX, ONNX-INT8 as docs, blog posts and habit write them: once refused as unknown."""
    with Library.open(library.path, create=False, device="cpu", engine="onnx-int8") as lower:
        expected = lower.search("a dog", 3)
    with Library.open(library.path, create=False, device="CPU", engine="ONNX-INT8") as upper:
        assert upper.search("a dog", 3) == expected
    with pytest.raises(ModelError, match="Unknown engine 'TensorRT'"):
        Library.open(library.path, create=False, engine="TensorRT")
    # A GPU's name in capitals is checked as the GPU it names (here or not), not as unknown.
    with pytest.raises(ModelError, match=r"Device 'cuda' is not available|The onnx engine runs on the CPU"):
        Library.open(library.path, create=False, device="CUDA", engine="ONNX")


def test_every_fixed_choice_of_the_commands_is_taken_in_any_case(library: Library, tmp_path: Path) -> None:
    where = ["--library", str(library.path)]
    runs = ["--device", "CPU", "--engine", "ONNX"]
    image = str(library.image(1).path)
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query": "a dog", "relevant": [image]}) + "\n")
    for args in (
        ["search", "a dog", "-k", "3", "--format", "JSON", *runs],
        ["similar", image, "-k", "3", "-f", "Json", *runs],
        ["eval", str(queries), "-f", "JSON", *runs],
        ["status", "-f", "JSON"],
        ["doctor", "-f", "JSON"],
    ):
        result = runner.invoke(app, [*args, *where])
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout) is not None
    paths = runner.invoke(app, ["search", "a dog", "-k", "2", "-f", "PATHS0", *where])
    assert paths.exit_code == 0 and paths.stdout.count("\0") == 2, paths.output
    # Over an unchanged folder the model never loads; the names are checked (and taken) anyway.
    indexed = runner.invoke(app, ["index", "--quiet", "--device", "Cpu", "--engine", "TORCH", *where])
    assert indexed.exit_code == 0, indexed.output
    unknown = runner.invoke(app, ["search", "a dog", "--engine", "TensorRT", *where])
    assert unknown.exit_code == 2 and "'TensorRT' is not one of" in unknown.output


def test_index_types_are_taken_in_any_case_and_kept_in_lower_case(library: Library) -> None:
    """HNSW, IVFPQ and Flat, as FAISS's docs write them."""
    where = ["--library", str(library.path)]
    try:
        forced = runner.invoke(app, ["reindex", "--index-type", "HNSW", *where])
        assert forced.exit_code == 0, forced.output
        assert forced.stdout.startswith("Index    hnsw, 12 vectors"), forced.stdout
        status = json.loads(runner.invoke(app, ["status", "-f", "json", *where]).stdout)
        assert status["index"]["kind"] == "hnsw", status
        assert library.rebuild_index("Flat").kind == "flat"
        with pytest.raises(QueryError, match="Index type 'Annoy' is not one of auto, flat, hnsw, ivfpq"):
            library.rebuild_index("Annoy")
    finally:  # the module's library chooses its index by itself again
        assert library.rebuild_index("AUTO").kind == "flat"
    kept = runner.invoke(app, ["reindex", *where])  # the choice was stored as "auto"
    assert kept.exit_code == 0 and kept.stdout.startswith("Index    flat"), kept.output


def _devices_absent() -> list[str]:
    """Device names pixsift knows that this machine lacks: one past the last CUDA GPU always,
    Apple's GPU everywhere but a Mac, CUDA itself where torch sees none."""
    import torch

    absent = [f"cuda:{torch.cuda.device_count()}"]
    if not torch.cuda.is_available():
        absent.append("cuda")
    if not torch.backends.mps.is_available():
        absent.append("mps")
    return absent


def _devices_present() -> list[str]:
    import torch

    present = ["auto", "cpu"]
    if torch.cuda.is_available():
        present += ["cuda", "cuda:0"]
    if torch.backends.mps.is_available():
        present.append("mps")
    return present


@pytest.mark.parametrize("device", _devices_present())
def test_devices_this_machine_has_open_a_library(library: Library, device: str) -> None:
    Library.open(library.path, device=device).close()


def _absent_message(device: str) -> str:
    import torch

    if device == "mps":
        why = "torch sees no Apple GPU (MPS) here"
    elif not torch.cuda.is_available():
        why = "torch sees no CUDA GPU here"
    else:
        why = f"torch sees {torch.cuda.device_count()} CUDA GPU(s) here, numbered from 0"
    return f"Device {device!r} is not available: {why}. Use one of: "


def _files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir()}


@pytest.mark.parametrize("device", _devices_absent())
def test_a_device_this_machine_lacks_makes_no_library(
    tmp_path: Path, photo_set: Path, tiny_model: TinyModel, device: str
) -> None:
    """`pixsift index ~/Photos --device cuda` without a GPU failed when the model loaded, after
    the new library was made: the folder and an empty library.db stayed behind."""
    new = tmp_path / "new"
    with pytest.raises(ModelError, match=re.escape(_absent_message(device))):
        Library.open(new, device=device)
    assert not new.exists()
    model = ["--model", str(tiny_model.config), "--pretrained", str(tiny_model.checkpoint)]
    result = runner.invoke(app, ["index", str(photo_set), "--library", str(new), *model, "--device", device])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {_absent_message(device)}")
    assert result.stderr.count("\n") == 1 and "auto, cpu" in result.stderr
    assert not new.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["index"],  # over unchanged folders no model loads: the device must be checked anyway
        ["search", "a red square"],
        ["similar", "PHOTO"],  # an indexed image: its stored vector, no model either
        ["eval", "QUERIES"],
        ["serve", "--port", "8731"],
    ],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize("device", _devices_absent())
def test_every_command_refuses_a_device_this_machine_lacks(
    library: Library, tmp_path: Path, command: list[str], device: str
) -> None:
    """Each command that takes --device refuses one this machine lacks in one line, before it
    reads or changes anything: not a traceback, nor an answer that ignores the device."""
    photo = library.search("a red square", 1)[0].path
    queries = tmp_path / "queries.jsonl"
    queries.write_text(f'{{"query": "a red square", "relevant": ["{photo}"]}}\n')
    args = [{"PHOTO": str(photo), "QUERIES": str(queries)}.get(arg, arg) for arg in command]
    before = _files_of(library.path)
    result = runner.invoke(app, [*args, "--library", str(library.path), "--device", device])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {_absent_message(device)}")
    assert result.stderr.count("\n") == 1
    assert _files_of(library.path) == before


def test_an_onnx_engine_on_a_gpu_makes_no_library(tmp_path: Path) -> None:
    """The ONNX engines run on the CPU: asking for one on a GPU is refused before a library is made."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "mps"
    if device == "mps" and not torch.backends.mps.is_available():
        pytest.skip("needs a GPU: without one, the device itself is refused first")
    with pytest.raises(ModelError, match="The onnx engine runs on the CPU"):
        Library.open(tmp_path / "new", device=device, engine="onnx")
    assert not (tmp_path / "new").exists()


# ---- library folders and files ------------------------------------------------------------------


def test_a_library_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "somefile").write_text("not a folder")
    (tmp_path / "Photos").mkdir()
    for library, reason in ((tmp_path / "somefile" / "lib", "not a directory"), (Path("/proc/lib"), "")):
        with pytest.raises(PixsiftError, match=f"Cannot create the library folder {library}: {reason}"):
            Library.open(library)
        result = run_cli("index", str(tmp_path / "Photos"), "--library", str(library))
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"error: Cannot create the library folder {library}: ")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_file_that_is_not_a_database_gives_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "library.db").write_text("not a database")
    result = runner.invoke(app, ["status", "--library", str(tmp_path / "junk")])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: Cannot use {tmp_path / 'junk' / 'library.db'} as a pixsift library: "
        "file is not a database.\n"
    )


@pytest.mark.parametrize(
    "command", [["status"], ["search", "x"], ["index", "{photos}", "--model", "synthetic-tiny"]]
)
def test_a_named_pipe_in_place_of_the_database_is_refused_not_waited_on(
    tmp_path: Path, photos: Path, command: list[str]
) -> None:
    """SQLite opening a named pipe waits for a writer: an index run there hung for good, while
    status and search said there was no library."""
    (tmp_path / "lib").mkdir()
    os.mkfifo(tmp_path / "lib" / "library.db")
    args = [a.format(photos=photos) for a in command]
    result = run_cli(*args, "--library", str(tmp_path / "lib"), timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: Cannot use {tmp_path / 'lib' / 'library.db'} as a pixsift library: "
        "a named pipe is in its place, not a database file.\n"
    )
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["library.db"]


def test_another_programs_database_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    db_path = tmp_path / "other" / "library.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
        db.execute("INSERT INTO contacts VALUES ('Ada')")
    db.close()
    with pytest.raises(LibraryFormatError, match=r"not a pixsift library: .*\(contacts\)"):
        Library.open(tmp_path / "other")
    result = runner.invoke(app, ["status", "--library", str(tmp_path / "other")])
    assert result.exit_code == 1 and "not a pixsift library" in result.stderr
    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"contacts"}
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


def database_of_another_program(path: Path, script: str) -> bytes:
    """An SQLite database made by `script` at `path` (its folder made), and its bytes."""
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(script)
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("script", "why"),
    [
        # SQLite's user_version is set by many programs, not pixsift alone. Below pixsift's
        # schema version, such a database was migrated: a pixsift table written into it, its
        # version raised and its journal switched to WAL, then every command failed with
        # "lacks a table or column ... Run pixsift doctor".
        (
            "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi'); PRAGMA user_version = 3;",
            "it holds tables of another program (notes), none of pixsift's, under SQLite schema version 3",
        ),
        # At pixsift's own version: switched to WAL, then the same failures.
        (
            f"CREATE TABLE notes (body TEXT); PRAGMA user_version = {SCHEMA_VERSION};",
            "it holds tables of another program (notes), none of pixsift's, under SQLite schema version "
            f"{SCHEMA_VERSION}",
        ),
        # Above it: "newer than this pixsift understands. Upgrade pixsift to use it."
        (
            "CREATE TABLE notes (body TEXT); PRAGMA user_version = 70;",
            "it holds tables of another program (notes), none of pixsift's, under SQLite schema version 70",
        ),
        # A table named as pixsift's, at its version or above: opened (and switched to WAL),
        # then "lacks a table or column ... Run pixsift doctor", or called a newer library.
        (
            "CREATE TABLE images (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO images VALUES (1, 'a'); "
            f"PRAGMA user_version = {SCHEMA_VERSION};",
            "its tables named as pixsift's (images) do not hold pixsift's columns, under SQLite "
            f"schema version {SCHEMA_VERSION}",
        ),
        (
            "CREATE TABLE images (name TEXT); CREATE TABLE settings (key TEXT, value TEXT); "
            "PRAGMA user_version = 70;",
            "its tables named as pixsift's (images, settings) do not hold pixsift's columns, under "
            "SQLite schema version 70",
        ),
        # A version and nothing else: "Cannot use ... as a pixsift library: no such table: images."
        ("PRAGMA user_version = 2;", "it holds no tables under SQLite schema version 2"),
        # A view of another program's (no table): pixsift's tables were made beside it.
        ("CREATE VIEW answer AS SELECT 42;", "it already holds tables of another program (answer)"),
    ],
)
def test_another_programs_database_with_a_schema_version_is_not_taken_over(
    tmp_path: Path, script: str, why: str
) -> None:
    db_path = tmp_path / "other" / "library.db"
    before = database_of_another_program(db_path, script)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), "red").save(photos / "a.jpg")
    told = f"error: The database {db_path} is not a pixsift library: {why}. Use another --library folder."
    for command in (["status"], ["search", "cat"], ["index", str(photos), "--model", "synthetic-tiny"]):
        result = run_cli(*command, "--library", str(db_path.parent))
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == told
    assert db_path.read_bytes() == before  # nothing written into it
    assert sorted(path.name for path in db_path.parent.iterdir()) == ["library.db"]


def test_an_old_library_lacking_tables_is_not_migrated(tmp_path: Path) -> None:
    """Migrating writes into the database: a version-3 database with some of pixsift's tables
    but not the rest is told what it lacks, and left as it is."""
    db_path = tmp_path / "old" / "library.db"
    before = database_of_another_program(
        db_path, "CREATE TABLE settings (key TEXT, value TEXT); PRAGMA user_version = 3;"
    )
    result = run_cli("status", "--library", str(db_path.parent))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"error: The database {db_path} cannot be used as a pixsift library: it lacks the tables "
        "embeddings, images, model, roots, vector_changes of a pixsift library of schema version 3, "
        "so pixsift does not upgrade it. If it is a pixsift library, restore a backup of it, or "
        "index your folders into a new library."
    )
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("content", ["empty", "schema without settings"])
def test_an_empty_database_or_one_interrupted_before_its_settings_is_a_library(
    tmp_path: Path, content: str
) -> None:
    """A 0-byte library.db (nothing in it to lose) is made a library; so is one holding
    pixsift's schema but no settings yet, such as a creation that stopped there."""
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "library.db").touch()
    if content != "empty":
        with sqlite3.connect(folder / "library.db") as db:
            for migration in MIGRATIONS:
                for statement in migration.statements:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.close()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), "red").save(photos / "a.jpg")
    assert run_cli("status", "--library", str(folder)).returncode == 0
    indexed = run_cli("index", str(photos), "--library", str(folder), "--model", "synthetic-tiny")
    assert indexed.returncode == 0, indexed.stderr
    found = run_cli("search", "red", "--library", str(folder), "-k", "1")
    assert found.returncode == 0 and str(photos / "a.jpg") in found.stdout, found.stderr


@pytest.mark.parametrize(
    ("make_args", "error"),
    [
        (lambda tmp: [str(tmp / "missing")], "does not exist"),
        (lambda tmp: [str(tmp / "afile.txt")], "is not a folder"),
        (lambda tmp: [str(tmp / "Photos"), "--model", "NoSuchNet"], "Unknown model"),
        (lambda tmp: [], "No pixsift library"),  # no folder named: nothing to index again
    ],
)
def test_a_failed_first_index_run_leaves_no_library_behind(
    tmp_path: Path, make_args: object, error: str
) -> None:
    (tmp_path / "Photos").mkdir()
    (tmp_path / "afile.txt").write_text("x")
    args = make_args(tmp_path)  # type: ignore[operator]
    for library in (tmp_path / "new" / "deeper" / "lib", tmp_path / "Photos"):
        before = sorted(os.listdir(tmp_path))
        photos_before = sorted(os.listdir(tmp_path / "Photos"))
        result = runner.invoke(app, ["index", *args, "--library", str(library)])
        assert result.exit_code == 1 and error in result.stderr
        assert sorted(os.listdir(tmp_path)) == before  # no folder was made
        assert sorted(os.listdir(tmp_path / "Photos")) == photos_before  # what was there stays
        status = runner.invoke(app, ["status", "--library", str(library)])
        assert status.exit_code == 1 and "No pixsift library" in status.stderr


def test_a_failed_index_run_keeps_an_existing_library(library: Library, tmp_path: Path) -> None:
    files = sorted(os.listdir(library.path))
    result = runner.invoke(app, ["index", str(tmp_path / "missing"), "--library", str(library.path)])
    assert result.exit_code == 1
    assert sorted(os.listdir(library.path)) == files
    assert library.status().counts.indexed == 12


# ---- help and tools --------------------------------------------------------------------------------


def test_serve_help_names_the_extra_it_needs() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "Needs pixsift[server]." in " ".join(result.stdout.split())  # however rich wraps it


def test_the_synthetic_writer_refuses_a_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for target, message in (
        (tmp_path / "afile", "exists and is not a folder"),
        (tmp_path / "afile" / "w", ""),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "pixsift.synthetic", str(target), "--count", "1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode in (1, 2) and "Traceback" not in result.stderr
        assert message in result.stderr and str(target) in result.stderr


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["index", "--wait", "nan"], "Invalid value for '--wait': nan is not a number of 0 or more."),
        (
            ["serve", "--max-upload-mb", "nan"],
            "Invalid value for '--max-upload-mb': nan is not a number from 0.1 to 1024.",
        ),
        (
            ["serve", "--max-megapixels", "nan"],
            "Invalid value for '--max-megapixels': nan is not a number from 0.1 to 1000.",
        ),
        (
            ["serve", "--load-wait", "nan"],
            "Invalid value for '--load-wait': nan is not a number from 0 to 3600.",
        ),
        (
            ["serve", "--load-wait", "-1"],
            "Invalid value for '--load-wait': -1.0 is not in the range 0<=x<=3600.",
        ),
    ],
)
def test_nan_for_a_number_option_is_bad_usage(tmp_path: Path, command: list[str], refusal: str) -> None:
    """click's range check lets NaN through (it compares false with both ends): `serve
    --max-upload-mb nan` ended in a traceback, `--wait nan` meant "do not wait"."""
    library = tmp_path / "library"
    result = run_cli(*command, "--library", str(library))
    assert (result.returncode, result.stdout) == (2, "")
    assert refusal in " ".join(line.strip(" │") for line in result.stderr.splitlines())
    assert not library.exists()


@pytest.mark.parametrize("wait", [math.nan, -1, -0.5, "2", True])
def test_a_wait_that_is_no_number_of_seconds_is_refused(
    library: Library, photo_set: Path, wait: object
) -> None:
    """NaN and negatives meant "do not wait" without a word; -1 (filelock's "for ever") too."""
    with pytest.raises(InvalidOptionError, match="wait is the seconds to wait for another run"):
        library.index(photo_set, wait=wait)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="wait is the seconds"):
        library.rebuild_index(wait=wait)  # type: ignore[arg-type]
    assert library.index(wait=None).unchanged > 0  # None still waits as long as it takes
