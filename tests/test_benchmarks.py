"""The benchmark scripts as someone measuring runs them: options it cannot measure are refused
at once, in one line, before minutes of photo making and model export."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

INDEX_THROUGHPUT = Path(__file__).resolve().parent.parent / "benchmarks" / "index_throughput.py"
SERVE_LOAD = INDEX_THROUGHPUT.with_name("serve_load.py")


def run_benchmark(*options: str, work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(INDEX_THROUGHPUT), "--work", str(work), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # these sources' pixsift
        check=False,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Once run as pixsift's own batch size, as if none was given.
        (["--engines", "torch", "--batch-size", "0"], "--batch-size must be from 1 to 4096, not 0"),
        (["--engines", "torch", "--workers", "65"], "--workers must be from 1 to 64, not 65"),
        # Once an empty table.
        (["--engines", ","], "--engines names no engine"),
        (["--engines", "torch", "--count", "0"], "--count must be at least 1, not 0"),
        (["--engines", "torch", "--photo-jobs", "0"], "--photo-jobs must be at least 1, not 0"),
        (["--engines", "torch", "--seconds", "0"], "--seconds must be more than 0"),
        (["--engines", "torch", "--size", "4032"], "--size must be WIDTHxHEIGHT"),
        # Once a traceback.
        (["--engines", "tensorrt"], "Unknown engine 'tensorrt'"),
        (["--engines", "torch", "--device", "gpu"], "Unknown device 'gpu'"),
        (["--engines", "torch", "--device", "cuda:99"], "Device 'cuda:99' is not available"),
    ],
)
def test_index_throughput_refuses_what_it_cannot_measure(
    tmp_path: Path, options: list[str], message: str
) -> None:
    result = run_benchmark("--only", "index", *options, work=tmp_path / "work")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("index_throughput.py: error: ") and message in last, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work" / "phone").exists()  # refused before any photo was made


@pytest.mark.parametrize(
    ("engines", "message"),
    [
        # Once found after the library was built and the engines before it measured: a
        # traceback ("pixsift serve exited"), their figures lost.
        ("auto,tensorrt", "Unknown engine 'tensorrt'"),
        (",", "--engines names no engine"),
    ],
)
def test_serve_load_refuses_an_engine_it_cannot_run(tmp_path: Path, engines: str, message: str) -> None:
    refused_by_serve_load(tmp_path, ["--images", "5", "--engines", engines], message)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Once a library built for nothing, then a table of nan requests/s.
        (["--images", "0"], "--images must be at least 1, not 0"),
        (["--images", "5", "--clients", "8", "0"], "--clients must be at least 1, not 0"),
        (["--images", "5", "--seconds", "0"], "--seconds must be more than 0, not 0.0"),
        (["--images", "5", "--max-requests", "0"], "--max-requests must be at least 1, not 0"),
        (["--images", "5", "--index-images", "-1"], "--index-images must be at least 0, not -1"),
    ],
)
def test_serve_load_refuses_counts_it_cannot_measure(
    tmp_path: Path, options: list[str], message: str
) -> None:
    refused_by_serve_load(tmp_path, options, message)


def refused_by_serve_load(tmp_path: Path, options: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SERVE_LOAD), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("serve_load.py: error: ") and message in last, result.stderr
    assert "Traceback" not in result.stderr and "library of" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # refused before the library was built


DECODE_COST = INDEX_THROUGHPUT.with_name("decode_cost.py")


def run_decode_cost(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DECODE_COST), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


def test_decode_cost_times_every_step_of_the_decode_path(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(6):
        Image.new("RGB", (1024, 768), (40 * number, 90, 200)).save(photos / f"{number}.jpg", quality=90)
    (photos / "notes.txt").write_text("not a photo")
    result = run_decode_cost(
        "--photos", str(photos), "--count", "6", "--rounds", "1", "--json", str(tmp_path / "t.json")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("6 photos, ")
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["photos"] == 6
    steps = table["core_ms"]
    assert {"read the file", "SHA-256 of its bytes", "whole load_image, as the indexer calls it"} <= set(
        steps
    )
    assert all(f"| {step} | {ms:.1f} |" in result.stdout for step, ms in steps.items())


def test_decode_cost_times_photos_tagged_with_a_profile(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(5):
        Image.new("RGB", (800, 600), (40 * number, 90, 200)).save(photos / f"{number}.jpg", quality=90)
    table = tmp_path / "t.json"
    result = run_decode_cost(
        *("--photos", str(photos), "--count", "5", "--rounds", "1"),
        *("--profile", "display-p3", "--json", str(table)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("5 photos tagged display-p3, ")
    assert json.loads(table.read_text())["profile"] == "display-p3"
    # The tagged copies were made elsewhere: the folder is left as it was
    assert sorted(path.name for path in photos.iterdir()) == [f"{n}.jpg" for n in range(5)]


def test_decode_cost_refuses_a_folder_without_jpegs(tmp_path: Path) -> None:
    result = run_decode_cost("--photos", str(tmp_path), "--count", "6")
    assert result.returncode == 1
    assert result.stderr.strip() == f"decode_cost.py: error: no JPEG in {tmp_path}"


def load_benchmark(path: Path) -> Any:
    """The benchmark script as a module, to call its option parsing without running it."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_throughput_takes_engines_and_device_in_any_case(tmp_path: Path) -> None:
    # As `pixsift --engine TORCH --device CPU` takes them. Once kept as given: `--engines TORCH`
    # then made the one-time ONNX export (half a minute) a torch-only run never needs, and
    # reported TORCH and torch as two engines.
    benchmark = load_benchmark(INDEX_THROUGHPUT)
    args, engines = benchmark.parse_options(
        ["--engines", "TORCH, Onnx,torch", "--device", "CPU", "--work", str(tmp_path)]
    )
    assert engines == ["torch", "onnx"]
    assert args.device == "cpu"


def test_index_save_memory_sets_the_baseline_beside_this_code(tmp_path: Path) -> None:
    script = INDEX_THROUGHPUT.with_name("index_save_memory.py")
    source = Path(__file__).resolve().parent.parent / "src"
    result = subprocess.run(
        [sys.executable, str(script), "--vectors", "2000", "--dim", "16", "--baseline-src", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split("|") for line in lines if line.startswith(("| baseline", "| this"))]
    assert [row[1].strip() for row in rows] == ["baseline", "this"]
    assert all(row[2].strip() == "2,000" and float(row[6]) > 0 for row in rows)
    assert list(tmp_path.iterdir()) == []  # the index files are gone
    refused = subprocess.run(
        [sys.executable, str(script), "--vectors", "0"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--vectors and --dim must be at least 1" in refused.stderr


def test_index_save_memory_makes_its_workdir(tmp_path: Path) -> None:
    """A --workdir not made yet is made, as the other benchmarks' are, not a traceback."""
    script = INDEX_THROUGHPUT.with_name("index_save_memory.py")
    workdir = tmp_path / "not" / "made"
    result = subprocess.run(
        [sys.executable, str(script), "--vectors", "500", "--dim", "8", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(workdir.iterdir()) == []  # the index files are gone, the folder stays


def test_busy_server_measures_every_phase_of_a_small_library(tmp_path: Path) -> None:
    """The service polled while it starts, indexes and rebuilds: a row per phase and endpoint."""
    script = INDEX_THROUGHPUT.with_name("busy_server.py")
    sizes = ["--trained", "30", "--vectors", "60", "--photos", "2"]
    result = subprocess.run(
        [sys.executable, str(script), *sizes, "--workdir", str(tmp_path), "--deadline", "120"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # these sources' pixsift
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "job: succeeded" in result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")][2:]
    phases = {row[0].lstrip("| ").split(" (")[0] for row in rows}
    assert {"start", "idle", "after"} <= phases and any(p.startswith("job: ") for p in phases), rows
    assert {row[1] for row in rows} == {"healthz", "stats", "search"}
