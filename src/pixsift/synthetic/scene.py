"""What a synthetic image shows, as data: the vocabulary of the world and one scene."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Base colours as RGB; rendering jitters them so a colour is a region, not one value.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 130, 20),
    "yellow": (240, 215, 30),
    "green": (40, 160, 60),
    "blue": (35, 75, 215),
    "purple": (130, 50, 180),
    "pink": (240, 120, 190),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
PLURALS: dict[str, str] = {"cross": "crosses"}
COUNTS: tuple[int, ...] = (1, 2, 3)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "middle")
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "cloudy")


@dataclass(frozen=True)
class Scene:
    """One image: `count` copies of one coloured shape of one size, placed in one region."""

    colour: str
    shape: str
    count: int
    size: str
    position: str
    background: str
    seed: int  # drives the exact placement, jitter and texture when rendering

    def attributes(self) -> dict[str, Any]:
        """The labels a caption or a relevance judgement can use (everything but the seed)."""
        labels = asdict(self)
        del labels["seed"]
        return labels


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else PLURALS.get(shape, shape + "s")
