"""A synthetic world of captioned images: coloured shapes that a small CLIP can learn offline.

Deterministic from a seed, rendered with Pillow. It is what the shipped `synthetic-tiny` model is
trained on, and what the quality tests and the demo search:

    python -m pixsift.synthetic OUT_DIR --count 500 --seed 7
"""

from pixsift.synthetic.captions import caption_for, caption_variants
from pixsift.synthetic.render import render_scene
from pixsift.synthetic.scene import COLOURS, SHAPES, Scene
from pixsift.synthetic.world import sample_scene, sample_scenes, write_world

__all__ = [
    "COLOURS",
    "SHAPES",
    "Scene",
    "caption_for",
    "caption_variants",
    "render_scene",
    "sample_scene",
    "sample_scenes",
    "write_world",
]
