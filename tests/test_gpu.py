"""The GPU path through the CLI, as a user with an NVIDIA GPU runs it: `pixsift index --device
cuda` (torch with fp16/bf16 autocast, pinned memory, large batches) makes a library that answers
as one indexed on the CPU, and that any machine can search. CI has no GPU: these tests skip there
and run where one is (see docs/benchmarks.md for the GPU figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TinyModel, run_cli
from pixsift.models.embedder import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from pixsift.models.loading import load_embedder
from pixsift.models.naming import resolve_model_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (CI is CPU-only)"
    ),
]

SCORE_TOLERANCE = 0.02  # bf16 autocast against fp32: vectors within cosine 0.99 of each other
QUERIES = ["a dog on the beach", "a red car"]


def _index(photos: Path, library: Path, tiny_model: TinyModel, *options: str) -> str:
    model = ["--model", str(tiny_model.config), "--pretrained", str(tiny_model.checkpoint)]
    result = run_cli("index", str(photos), "--library", str(library), *model, *options)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _scores(library: Path, query: str, *options: str) -> dict[str, float]:
    result = run_cli("search", query, "--library", str(library), "-k", "50", "--format", "json", *options)
    assert result.returncode == 0, result.stderr
    return {hit["path"]: hit["score"] for hit in json.loads(result.stdout)}


def test_a_library_indexed_on_the_gpu_answers_as_one_indexed_on_the_cpu(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    on_gpu, on_cpu = tmp_path / "gpu", tmp_path / "cpu"
    summary = _index(photos, on_gpu, tiny_model, "--device", "cuda", "--batch-size", "512")
    assert summary.startswith("12 images found: 12 new")
    _index(photos, on_cpu, tiny_model, "--device", "cpu", "--engine", "torch")
    for query in QUERIES:
        reference = _scores(on_cpu, query, "--device", "cpu", "--engine", "torch")
        assert len(reference) == 12
        # Searched on the GPU, and on a machine without one.
        for device in ("cuda", "cpu"):
            found = _scores(on_gpu, query, "--device", device, "--engine", "torch")
            assert found.keys() == reference.keys()
            assert all(abs(found[path] - reference[path]) <= SCORE_TOLERANCE for path in reference)
        assert _scores(on_gpu, query, "--device", "cpu").keys() == reference.keys()  # the default engine


def test_a_gpu_run_resumes_a_library_begun_on_the_cpu(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """The model record is the weights', not the device's: a library moves between machines."""
    library = tmp_path / "library"
    first = sorted(photos.iterdir())[:5]
    later = photos.parent / "later"
    later.mkdir()
    for photo in sorted(photos.iterdir())[5:]:
        photo.rename(later / photo.name)
    _index(photos, library, tiny_model, "--device", "cpu")
    for photo in sorted(later.iterdir()):
        photo.rename(photos / photo.name)
    summary = _index(photos, library, tiny_model, "--device", "cuda")
    assert summary.startswith("12 images found: 7 new, 0 updated, 0 moved, 0 copies, 0 removed, 5 unchanged")
    assert len(_scores(library, QUERIES[0], "--device", "cuda")) == 12
    assert all(str(photo) in _scores(library, QUERIES[0]) for photo in first)


def test_a_gpu_embeds_large_batches_of_uint8_pixels(tiny_model: TinyModel, photo_set: Path) -> None:
    """On a GPU the decode workers hand over uint8 pixels (a quarter of the bytes of float32)
    and the model takes 256 images a call unless told otherwise; on the CPU, 32 floats."""
    spec = resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))
    gpu, cpu = load_embedder(spec, "cuda", "auto"), load_embedder(spec, "cpu", "torch")
    assert (gpu.batch_size, cpu.batch_size) == (GPU_BATCH_SIZE, CPU_BATCH_SIZE)
    with Image.open(sorted(photo_set.iterdir())[0]) as photo:
        rgb = photo.convert("RGB")
    assert np.asarray(gpu.preprocess(rgb)).dtype == np.uint8
    assert np.asarray(cpu.preprocess(rgb)).dtype == np.float32
