"""The GPU path through the CLI, as a user with an NVIDIA GPU runs it: `pixsift index --device
cuda` (torch with fp16/bf16 autocast, pinned memory, large batches) makes a library that answers
as one indexed on the CPU, and that any machine can search. CI has no GPU: these tests skip there
and run where one is (see docs/benchmarks.md for the GPU figures).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TinyModel, run_cli
from pixsift import Library
from pixsift.models.embedder import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from pixsift.models.loading import load_embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.storage import Catalog
from sample_photos import write_photos

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


def _vectors_by_path(library: Path) -> dict[str, np.ndarray]:
    catalog = Catalog.open(library / "library.db")
    try:
        paths = dict(catalog.image_paths())
        return {paths[image_id]: vector for image_id, vector in catalog.vectors(paths).items()}
    finally:
        catalog.close()


def test_a_batch_too_large_for_the_gpu_is_split_and_the_run_finishes(
    tmp_path: Path, tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    """A real out-of-memory error: this process may take only a few dozen MB more of the GPU
    than the loaded model holds, and a batch of 128 images (about 1.4 MB each on the GPU, as
    uint8, then float32 twice) needs more. The run backs off, says so once, and stores the
    vectors a run with small batches stores."""
    import torch

    photos, warm_up = tmp_path / "Photos", tmp_path / "WarmUp"
    write_photos(photos, 128, size=(320, 240), seed=300)
    write_photos(warm_up, 1, size=(320, 240), seed=900)
    model, pretrained = str(tiny_model.config), str(tiny_model.checkpoint)
    with Library.open(tmp_path / "small", device="cuda", engine="torch") as library:
        library.index(photos, model=model, pretrained=pretrained, batch_size=8)
    with Library.open(tmp_path / "large", device="cuda", engine="torch") as library:
        library.index(warm_up, model=model, pretrained=pretrained, batch_size=1)  # the model stays
        gc.collect()  # the first library's model and cached blocks: not counted in the headroom
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + (32 << 20)) / total)
        try:
            with caplog.at_level(logging.WARNING, logger="pixsift.models.oom"):
                report = library.index(photos, batch_size=128)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
    assert (report.added, report.failed) == (128, 0)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "ran out of memory at a batch of 128 images; going on with" in messages[0]
    small, large = _vectors_by_path(tmp_path / "small"), _vectors_by_path(tmp_path / "large")
    assert small.keys() <= large.keys() and len(small) == 128
    for path, vector in small.items():
        assert float(np.dot(vector, large[path])) >= 1 - SCORE_TOLERANCE
