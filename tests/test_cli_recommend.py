"""`pixsift similar` with several images, --unlike and --diversity: the command line's face of
`Library.recommend`, run as a user runs it, on a real library made by the tiny model."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TinyModel, run_cli
from pixsift import Library, QueryTerm, SearchFilters, SearchResult
from pixsift.search.examples import Example
from sample_photos import write_photos

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Setup:
    library: Path
    photos: Path
    outside: Path  # an image file that is not indexed

    def args(self) -> list[str]:
        return ["--library", str(self.library)]

    def photo(self, name: str) -> Path:
        return self.photos / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel) -> Setup:
    """The photo set with three small PNGs beside it, indexed by the command; one more photo
    left outside the library."""
    root = tmp_path_factory.mktemp("cli-recommend")
    photos = root / "Photos"
    shutil.copytree(photo_set, photos)
    write_photos(photos / "small", 3, size=(320, 240), seed=500, suffix=".png")
    outside = write_photos(root / "outside", 1, seed=900)[0]
    library = root / "library"
    made = run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert made.returncode == 0, made.stderr
    return Setup(library, photos, outside)


@pytest.fixture
def library(setup: Setup) -> Iterator[Library]:
    with Library.open(setup.library, create=False) as opened:
        yield opened


def cli_hits(setup: Setup, *args: str) -> list[dict[str, object]]:
    result = run_cli("similar", *args, "-f", "json", *setup.args())
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    hits: list[dict[str, object]] = json.loads(result.stdout)
    return hits


def assert_same_ranking(cli: list[dict[str, object]], api: list[SearchResult]) -> None:
    """The command's JSON against the library's results: ids, paths, ranks and scores."""
    assert api, "a ranking to compare"
    assert [(hit["rank"], hit["id"], hit["path"]) for hit in cli] == [
        (hit.rank, hit.id, str(hit.path)) for hit in api
    ]
    assert [hit["score"] for hit in cli] == pytest.approx([hit.score for hit in api], abs=2e-6)


def test_several_images_rank_as_recommend(setup: Setup, library: Library) -> None:
    liked = [setup.photo("photo_0100.jpg"), setup.photo("photo_0101.jpg"), setup.outside]
    cli = cli_hits(setup, *map(str, liked), "-k", "8")
    api = library.recommend(list[Example](liked), k=8)
    assert_same_ranking(cli, api)
    ids = {library._catalog.known_file(str(path)).id for path in liked[:2]}  # type: ignore[union-attr]
    assert not ids & {hit["id"] for hit in cli}  # the indexed examples are left out, as by the API


def test_unlike_images_rank_as_recommends_negatives(setup: Setup, library: Library) -> None:
    liked = [setup.photo("photo_0100.jpg"), setup.photo("photo_0103.jpg")]
    disliked = [setup.photo("photo_0102.jpg"), setup.outside]
    cli = cli_hits(setup, *map(str, liked), "--unlike", str(disliked[0]), "--unlike", str(disliked[1]))
    api = library.recommend(list[Example](liked), list[Example](disliked))
    assert_same_ranking(cli, api)
    unliked = library._catalog.known_file(str(disliked[0]))
    assert unliked is not None and unliked.id not in {hit["id"] for hit in cli}
    # One image with --unlike goes through recommend too, and differs from it alone.
    one = cli_hits(setup, str(liked[0]), "--unlike", str(disliked[0]), "-k", "5")
    assert_same_ranking(one, library.recommend([liked[0]], [disliked[0]], k=5))
    alone = cli_hits(setup, str(liked[0]), "-k", "5")
    assert [hit["score"] for hit in alone] != [hit["score"] for hit in one]


def test_diversity_ranks_as_recommend(setup: Setup, library: Library) -> None:
    liked = setup.photo("photo_0104.jpg")
    cli = cli_hits(setup, str(liked), "--diversity", "0.7", "-k", "6")
    api = library.recommend([liked], k=6, diversity=0.7)
    assert_same_ranking(cli, api)
    assert [hit.id for hit in api] != [hit.id for hit in library.recommend([liked], k=6)]  # it varies


def test_filters_texts_and_min_score_rank_as_recommend(setup: Setup, library: Library) -> None:
    liked = [setup.photo("photo_0100.jpg"), setup.outside]
    disliked = setup.photo("small/photo_0500.png")
    cli = cli_hits(
        setup,
        *map(str, liked),
        "--unlike",
        str(disliked),
        "--plus",
        "0.5*a red circle",
        "--minus",
        "blue",
        "--diversity",
        "0.2",
        "--under",
        str(setup.photos),
        "--image-format",
        "png",
        "--min-width",
        "100",
        "--min-score",
        "-1",
    )
    api = library.recommend(
        [*liked, QueryTerm(text="a red circle", weight=0.5)],
        [disliked, "blue"],
        filters=SearchFilters(under=str(setup.photos), formats=("png",), min_width=100),
        diversity=0.2,
        min_score=-1,
    )
    assert_same_ranking(cli, api)
    assert len(cli) == 2  # the PNGs but the one given with --unlike
    assert all(str(hit["path"]).endswith(".png") for hit in cli)


def test_one_image_alone_is_still_similar(setup: Setup, library: Library) -> None:
    """Without --unlike or --diversity, one image is searched as before, --plus and --minus
    added in full (not recommend's mean and quarter)."""
    image = setup.photo("photo_0105.jpg")
    cli = cli_hits(setup, str(image), "--plus", "a red circle", "--minus", "0.5*blue", "-k", "5")
    api = library.similar(str(image), 5, plus=["a red circle"], minus=[QueryTerm(text="blue", weight=0.5)])
    assert_same_ranking(cli, api)


def fingerprint(folder: Path) -> dict[str, str]:
    """What each file of the library holds (SQLite's -wal and -shm files come and go)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


def test_bad_examples_are_one_line_and_change_nothing(setup: Setup, tmp_path: Path) -> None:
    photo = str(setup.photo("photo_0100.jpg"))
    other = str(setup.photo("photo_0101.jpg"))
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    before = fingerprint(setup.library)
    cases = {
        (photo, str(tmp_path / "gone.jpg")): f"error: Image {tmp_path / 'gone.jpg'} not found.",
        (photo, other, "--unlike", str(tmp_path / "gone.jpg")): (
            f"error: Image {tmp_path / 'gone.jpg'} not found."
        ),
        (photo, str(tmp_path)): f"error: Cannot read image {tmp_path}: it is not a file.",
        (photo, "--unlike", ""): (
            "error: --unlike is given an empty path: name an image file, or leave --unlike out."
        ),
        (photo, str(tmp_path), "--unlike", str(tmp_path)): (
            f"error: Cannot read image {tmp_path}: it is not a file."  # what is wrong first
        ),
        (photo, "--unlike", str(not_an_image)): (
            f"error: Cannot read image {not_an_image}: not an image format pixsift reads (or a damaged file)"
        ),
        (photo, other, "--unlike", other): (
            f"error: --unlike {other} is also given as an image to match: give each file on one side only."
        ),
        (str(link), "--unlike", photo): (
            f"error: --unlike {photo} is also given as an image to match (as {link}): "
            "give each file on one side only."
        ),
    }
    for args, message in cases.items():
        result = run_cli("similar", *args, *setup.args())
        assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n"), args
    assert fingerprint(setup.library) == before


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("1.5", "1.5 is not in the range 0.0<=x<=1.0."),
        ("-0.1", "-0.1 is not in the range 0.0<=x<=1.0."),
        ("nan", "nan is not a number from 0 to 1."),
        ("inf", "inf is not in the range 0.0<=x<=1.0."),
    ],
)
def test_a_diversity_out_of_range_is_bad_usage(setup: Setup, value: str, refusal: str) -> None:
    """As a -k out of its range: the parser refuses it (exit 2), NaN included (which click's
    range check lets through)."""
    result = run_cli("similar", str(setup.photo("photo_0100.jpg")), "--diversity", value, *setup.args())
    assert (result.returncode, result.stdout) == (2, "")
    assert f"Invalid value for '--diversity': {refusal}" in result.stderr
