"""Captions for a scene, in the several phrasings people use for the same picture.

Training draws a different phrasing each time it sees an image, so the model learns the
words (colour, shape, count, size, place, background) rather than one sentence pattern.
"""

from __future__ import annotations

import random

from pixsift.synthetic.scene import Scene, plural

_COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
_PLACES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}


def caption_variants(scene: Scene) -> list[str]:
    """Every phrasing of `scene`, from the shortest ("a red circle") to the fullest."""
    count = _COUNT_WORDS[scene.count]
    shape = plural(scene.shape, scene.count)
    place = _PLACES[scene.position]
    background = f"on a {scene.background} background"
    return [
        f"{count} {scene.colour} {shape}",
        f"{count} {scene.size} {scene.colour} {shape}",
        f"{count} {scene.colour} {shape} {place}",
        f"{count} {scene.size} {scene.colour} {shape} {place}",
        f"{count} {scene.colour} {shape} {background}",
        f"a picture of {count} {scene.size} {scene.colour} {shape} {place} {background}",
        f"{scene.colour} {shape}",
    ]


def caption_for(scene: Scene, rng: random.Random) -> str:
    """One phrasing of `scene`, drawn with `rng`."""
    return rng.choice(caption_variants(scene))
