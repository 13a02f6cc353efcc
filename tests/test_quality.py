"""Retrieval-quality gates through the real CLI: the bundled synthetic model must truly
understand colours and shapes on images it never saw, and a random model of the same
architecture must not (which is what shows these tests can fail).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CLOSED_PORT_URL, run_cli
from pixsift.models.bundled import BUNDLED_MODELS
from pixsift.synthetic import COLOURS, SHAPES, write_world
from tiny_model import make_checkpoint

pytestmark = pytest.mark.slow

HELD_OUT_SEED = 20_261_123  # training draws from seeds 0 and 1: these images are unseen
HELD_OUT_COUNT = 720  # about 15 images of each of the 48 colour-and-shape kinds
GATE = 0.9
CHANCE_CEILING = 0.3  # far below the gate; exact chance for colour and shape is 1/48


@dataclass(frozen=True)
class World:
    folder: Path
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        result = run_cli(*args, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def evaluate(self, library: Path, queries: Path) -> dict[str, Any]:
        report = json.loads(self.cli("eval", str(queries), "--library", str(library), "--format", "json"))
        assert isinstance(report, dict)
        return report


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("synthetic-world")
    folder = root / "held-out"
    write_world(folder, HELD_OUT_COUNT, HELD_OUT_SEED)
    (folder / "captions.jsonl").unlink()  # only images in the indexed folder
    return World(folder, {"HF_HOME": str(root / "hf-home"), "HF_ENDPOINT": CLOSED_PORT_URL})


@pytest.fixture(scope="module")
def trained_library(world: World) -> Path:
    library = world.folder.parent / "trained"
    world.cli("index", str(world.folder), "--library", str(library), "--model", "synthetic-tiny", "--quiet")
    return library


@pytest.fixture(scope="module")
def random_library(world: World) -> Path:
    checkpoint = make_checkpoint(
        world.folder.parent / "random.pt", seed=7, config=BUNDLED_MODELS["synthetic-tiny"].config
    )
    library = world.folder.parent / "random"
    world.cli(
        "index",
        str(world.folder),
        "--library",
        str(library),
        "--model",
        "synthetic-tiny",
        "--pretrained",
        str(checkpoint),
        "--quiet",
    )
    return library


@pytest.fixture(scope="module")
def text_queries(world: World) -> Path:
    """One query per colour and shape; relevant: every held-out image of that colour and shape."""
    lines = [
        {"query": f"a {colour} {shape}", "relevant": [f"held-out/*_{colour}_{shape}.jpg"]}
        for colour in COLOURS
        for shape in SHAPES
    ]
    return _write_jsonl(world.folder.parent / "text-queries.jsonl", lines)


@pytest.fixture(scope="module")
def image_queries(world: World) -> Path:
    """Every held-out image as a query; relevant: the other images of its colour and shape.

    All 720 rather than one per kind: the average over every image is what a user meets, and
    48 queries would make the estimate swing by a few points with the choice of query images.
    """
    lines = []
    for image in sorted(world.folder.glob("*.jpg")):
        colour, shape = _kind(str(image))
        lines.append({"image": str(image), "relevant": [f"held-out/*_{colour}_{shape}.jpg"]})
    return _write_jsonl(world.folder.parent / "image-queries.jsonl", lines)


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _kind(path: str) -> tuple[str, str]:
    """(colour, shape) from a held-out file name such as 00042_red_circle.jpg."""
    _, colour, shape = Path(path).stem.split("_")
    return colour, shape


def test_text_queries_find_the_named_colour_and_shape(
    world: World, trained_library: Path, text_queries: Path
) -> None:
    report = world.evaluate(trained_library, text_queries)
    assert report["queries"] == len(COLOURS) * len(SHAPES)
    assert report["precision"]["5"] >= GATE, report["precision"]


def test_similar_images_share_colour_and_shape(
    world: World, trained_library: Path, image_queries: Path
) -> None:
    report = world.evaluate(trained_library, image_queries)
    assert report["precision"]["5"] >= GATE, report["precision"]

    query = sorted(world.folder.glob("*_green_triangle.jpg"))[0]
    hits = json.loads(
        world.cli("similar", str(query), "-k", "5", "--library", str(trained_library), "-f", "json")
    )
    assert len(hits) == 5
    assert str(query) not in {hit["path"] for hit in hits}
    assert sum(_kind(hit["path"]) == ("green", "triangle") for hit in hits) >= 4


def test_combined_query_swaps_the_colour(world: World, trained_library: Path) -> None:
    query = ["red circle", "--minus", "red", "--plus", "blue", "-k", "5", "-f", "json"]
    hits = json.loads(world.cli("search", *query, "--library", str(trained_library)))
    kinds = [_kind(hit["path"]) for hit in hits]
    assert kinds[0] == ("blue", "circle"), kinds
    assert kinds.count(("blue", "circle")) >= 4, kinds


def test_a_random_model_of_the_same_architecture_is_near_chance(
    world: World, random_library: Path, text_queries: Path, image_queries: Path
) -> None:
    text = world.evaluate(random_library, text_queries)
    image = world.evaluate(random_library, image_queries)
    assert text["precision"]["5"] < CHANCE_CEILING, text["precision"]
    assert image["precision"]["5"] < CHANCE_CEILING, image["precision"]
