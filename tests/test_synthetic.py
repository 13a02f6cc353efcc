"""The synthetic world: deterministic from its seed, captions true to the pictures, a CLI."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pixsift.synthetic import COLOURS, caption_variants, render_scene, sample_scenes, write_world
from pixsift.synthetic.scene import Scene


def test_the_same_seed_writes_the_same_images(tmp_path: Path) -> None:
    first, second, other = (
        write_world(tmp_path / name, 6, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert first.read_text() == second.read_text()
    for line in first.read_text().splitlines():
        name = json.loads(line)["path"]
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert other.read_text() != first.read_text()


def test_manifest_names_each_image_and_its_attributes(tmp_path: Path) -> None:
    manifest = write_world(tmp_path, 20, seed=5, size=256)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 20
    for record in records:
        attributes = record["attributes"]
        with Image.open(tmp_path / record["path"]) as image:
            assert image.size == (256, 256)
        assert record["path"].endswith(f"_{attributes['colour']}_{attributes['shape']}.jpg")
        assert attributes["colour"] in record["caption"]
        assert record["caption"] in caption_variants(Scene(**attributes, seed=0))


def test_an_image_shows_its_colour() -> None:
    """Pixels close to the named colour cover a visible part of the picture: captions tell the truth."""
    for scene in sample_scenes(12, seed=9):
        pixels = np.asarray(render_scene(scene, 128), dtype=np.int16)
        distance = np.abs(pixels - np.array(COLOURS[scene.colour], dtype=np.int16)).sum(axis=2)
        assert (distance < 90).mean() > 0.003, scene


def test_command_line_writes_images_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = subprocess.run(
        [sys.executable, "-m", "pixsift.synthetic", str(out), "--count", "4", "--seed", "1", "--size", "96"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.jpg"))) == 4
    assert len((out / "captions.jsonl").read_text().splitlines()) == 4

    bad = subprocess.run(
        [sys.executable, "-m", "pixsift.synthetic", str(out), "--count", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "--count must be at least 1" in bad.stderr


def _file_size_limit(max_bytes: int) -> None:
    """In the child: writes past `max_bytes` fail with EFBIG, where a full disk fails with ENOSPC."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def test_a_full_disk_is_an_error_not_truncated_images(tmp_path: Path) -> None:
    """Each image (about 12 KB) outgrows the limit while the manifest stays under it."""
    out = tmp_path / "world"
    result = subprocess.run(
        [sys.executable, "-m", "pixsift.synthetic", str(out), "--count", "3", "--seed", "1"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: _file_size_limit(8192),
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert f"error: cannot write into {out}: File too large" in result.stderr
