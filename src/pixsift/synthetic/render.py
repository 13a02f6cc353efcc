"""Drawing a `Scene` with Pillow, resolution-independently.

Every length is a fraction of the canvas and textures are drawn on a coarse grid and scaled
up, so a scene rendered at 128 px for training and at 512 px for a demo folder looks the same
once the model's preprocessing has resized it.
"""

from __future__ import annotations

import colorsys
import math
import random

from PIL import Image, ImageDraw, ImageFilter

from pixsift.synthetic.scene import COLOURS, Scene

_SIZE_RADIUS = {"small": (0.08, 0.10), "large": (0.13, 0.155)}  # fraction of the canvas side
_SUPERSAMPLE = 2  # shapes are drawn at twice the size and reduced: smooth edges at any size


def render_scene(scene: Scene, size: int = 512) -> Image.Image:
    """The RGB image of `scene`, `size` pixels square; the same scene always gives the same image."""
    rng = random.Random(scene.seed)
    canvas = size * _SUPERSAMPLE
    image = _background(scene.background, canvas, rng)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(*_SIZE_RADIUS[scene.size])
    for cx, cy in _centres(scene.position, scene.count, radius, rng):
        fill = _jittered(COLOURS[scene.colour], rng)
        points = _outline(scene.shape, cx, cy, radius, rng.uniform(-0.25, 0.25))
        draw.polygon([(x * canvas, y * canvas) for x, y in points], fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _jittered(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    """A nearby shade: hue, saturation and value moved a little, so colours are not single values."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-0.02, 0.02)) % 1.0
    s = min(1.0, max(0.0, s * rng.uniform(0.85, 1.1)))
    v = min(1.0, max(0.0, v * rng.uniform(0.85, 1.1)))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _muted(rng: random.Random) -> tuple[int, int, int]:
    """A pale, greyish background colour that no object colour can be mistaken for."""
    base = rng.uniform(175, 235)
    return tuple(round(base + rng.uniform(-12, 12)) for _ in range(3))  # type: ignore[return-value]


def _background(kind: str, canvas: int, rng: random.Random) -> Image.Image:
    paper, ink = _muted(rng), _muted(rng)
    image = Image.new("RGB", (canvas, canvas), paper)
    draw = ImageDraw.Draw(image)
    if kind == "striped":
        _stripes(draw, canvas, ink, rng)
    elif kind == "dotted":
        dot = canvas * rng.uniform(0.006, 0.01)
        for _ in range(rng.randint(150, 300)):
            x, y = rng.uniform(0, canvas), rng.uniform(0, canvas)
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=ink)
    elif kind == "cloudy":
        image = _clouds(paper, ink, canvas, rng)
    elif kind != "plain":
        raise ValueError(f"unknown background {kind!r}")
    return image


def _stripes(draw: ImageDraw.ImageDraw, canvas: int, ink: tuple[int, int, int], rng: random.Random) -> None:
    """Parallel bands at a random angle, drawn as polygons so their edges stay sharp at any size."""
    period = rng.uniform(0.06, 0.12)
    angle = rng.choice((0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4))
    dx, dy = math.cos(angle), math.sin(angle)  # across the stripes
    ux, uy = -dy, dx  # along them
    for k in range(-12, 13):
        offsets = (k * period, k * period + period / 2)
        corners = [
            (0.5 + o * dx + s * ux, 0.5 + o * dy + s * uy) for o, s in ((offsets[0], -1), (offsets[0], 1))
        ]
        corners += [
            (0.5 + o * dx + s * ux, 0.5 + o * dy + s * uy) for o, s in ((offsets[1], 1), (offsets[1], -1))
        ]
        draw.polygon([(x * canvas, y * canvas) for x, y in corners], fill=ink)


def _clouds(
    paper: tuple[int, int, int], ink: tuple[int, int, int], canvas: int, rng: random.Random
) -> Image.Image:
    """Soft blotches: noise on a coarse grid, blurred and scaled up, so it looks alike at any size."""
    grid = 16
    mask = Image.new("L", (grid, grid))
    mask.putdata([rng.randrange(256) for _ in range(grid * grid)])
    mask = mask.filter(ImageFilter.GaussianBlur(1.0)).resize((canvas, canvas), Image.Resampling.BICUBIC)
    return Image.composite(
        Image.new("RGB", (canvas, canvas), ink), Image.new("RGB", (canvas, canvas), paper), mask
    )


def _centres(position: str, count: int, radius: float, rng: random.Random) -> list[tuple[float, float]]:
    """Object centres in the named region, spread along it without overlapping."""
    margin = radius + 0.02
    near, far = margin, margin + 0.1  # the band a region occupies, measured from its edge
    along = [(i + 0.5) / count for i in range(count)]  # evenly along the region, then jittered
    spread = max(0.0, 0.5 / count - radius - 0.01)  # jitter that keeps neighbours apart
    points = []
    for t in along:
        a = min(1 - margin, max(margin, t + rng.uniform(-spread, spread)))
        b = rng.uniform(near, far)
        points.append(_place(position, a, b, rng))
    return points


def _place(position: str, along: float, across: float, rng: random.Random) -> tuple[float, float]:
    """(x, y) for a point `along` the region's long axis and `across` from its edge."""
    if position == "left":
        return across, along
    if position == "right":
        return 1 - across, along
    if position == "top":
        return along, across
    if position == "bottom":
        return along, 1 - across
    return along, 0.5 + rng.uniform(-0.05, 0.05)  # middle: a row across the centre


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The polygon of `shape` centred at (cx, cy) with radius `r`, turned by `angle` radians."""
    if shape == "circle":
        return _regular(cx, cy, r, 48, 0.0)
    if shape == "square":
        return _regular(cx, cy, r * 1.1, 4, angle + math.pi / 4)
    if shape == "triangle":
        return _regular(cx, cy, r * 1.2, 3, angle - math.pi / 2)
    if shape == "heart":
        return _heart(cx, cy, r, angle)
    if shape == "star":
        outer = _regular(cx, cy, r * 1.15, 5, angle - math.pi / 2)
        inner = _regular(cx, cy, r * 0.47, 5, angle - math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        arm = r * 0.36
        corners = [(arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r)]
        half = corners + [(-x, -y) for x, y in corners]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in half]
    raise ValueError(f"unknown shape {shape!r}")


def _regular(cx: float, cy: float, r: float, sides: int, start: float) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(start + 2 * math.pi * i / sides),
            cy + r * math.sin(start + 2 * math.pi * i / sides),
        )
        for i in range(sides)
    ]


def _heart(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The classic parametric heart, scaled to radius `r` and turned by `angle`."""
    points = []
    cos, sin = math.cos(angle), math.sin(angle)
    for i in range(48):
        t = 2 * math.pi * i / 48
        x = 16 * math.sin(t) ** 3 / 16
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) / 16
        x, y = x * r * 1.1, (y + 0.1) * r * 1.1
        points.append((cx + x * cos - y * sin, cy + x * sin + y * cos))
    return points
