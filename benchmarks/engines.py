"""CPU inference engines for CLIP's image tower, side by side: speed and accuracy.

    python benchmarks/engines.py [--model ViT-B-32] [--batch-size 32] [--photos DIR] [--json FILE]

Candidates, each timed on the same batch in one run: torch eager fp32 (the reference), torch
dynamic int8 (the Linear layers), torch.compile, ONNX Runtime fp32 (pixsift's own export) in
one batched call, pixsift's int8 export as pixsift runs it (`--engine auto` / `onnx-int8`: one
image per call, the calls on parallel threads, so no vector depends on its batch; the file is
traced for one image, so it has no batched form), and
OpenVINO on the fp32 ONNX file when the `openvino` package is installed. Accuracy is the worst
cosine of each engine's embeddings to torch fp32's on real photos (the first --cosine-photos
files of --photos, by default made by ../shared/photos.py). --model synthetic-tiny checks int8
on trained weights; the default architecture has random weights (its speed does not depend on
them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import random_checkpoint  # noqa: E402

DEFAULT_PHOTOS_SCRIPT = HERE.parent.parent / "shared" / "photos.py"
Runner = Callable[[np.ndarray], np.ndarray]


def rate(run: Runner, batch: np.ndarray, seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def torch_runner(model: Any) -> Runner:
    import torch

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(model.encode_image(torch.from_numpy(pixels), normalize=True).numpy())

    return run


def onnx_runner(path: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda pixels: np.asarray(session.run(None, {"pixels": pixels})[0])


def openvino_runner(path: Path) -> Runner | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(str(path), "CPU")

    def run(pixels: np.ndarray) -> np.ndarray:
        vectors = np.asarray(compiled(pixels)[0], dtype=np.float32)
        return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))

    return run


def pixsift_runner(spec: Any, engine: str) -> Runner:
    from pixsift.models.loading import load_embedder

    embedder = load_embedder(spec, "cpu", engine)
    return lambda pixels: np.asarray(embedder.embed_images(list(pixels)))


def candidates(clip: Any, spec: Any, export_folder: Path, compile_too: bool) -> dict[str, Runner | None]:
    import torch

    model = clip.model
    found: dict[str, Runner | None] = {"torch eager fp32": torch_runner(model)}
    with warnings.catch_warnings():
        # torch.ao's quantisation is deprecated in favour of torchao; it is measured here as
        # the int8 that torch itself still ships, and its notices would bury the table.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(deprecated|torchao).*")
        quantised = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    found["torch dynamic int8 (Linear)"] = torch_runner(quantised)
    if compile_too:
        compiled = torch.compile(model.visual)

        def run_compiled(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                vectors = compiled(torch.from_numpy(pixels))  # type: ignore[no-untyped-call]
                return np.asarray(torch.nn.functional.normalize(vectors, dim=-1).numpy())

        found["torch.compile (inductor)"] = run_compiled
    found["ONNX Runtime fp32"] = onnx_runner(export_folder / "image-fp32.onnx")
    found["ONNX Runtime int8, one image per call (pixsift)"] = pixsift_runner(spec, "onnx-int8")
    found["OpenVINO fp32 (from the ONNX file)"] = openvino_runner(export_folder / "image-fp32.onnx")
    return found


def photo_batch(clip: Any, photos: list[Path]) -> np.ndarray:
    from PIL import Image

    from pixsift.models.pixels import PixelConfig, preprocess

    config = PixelConfig.from_open_clip(dict(clip.model.visual.preprocess_cfg))
    assert config is not None
    arrays = []
    for path in photos:
        with Image.open(path) as image:
            image.draft("RGB", (config.size, config.size))
            arrays.append(preprocess(image.convert("RGB"), config))
    return np.stack(arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="ViT-B-32", help="ViT-B-32 (random weights) or synthetic-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=12.0, help="timing per engine, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: 32 made here)")
    parser.add_argument("--cosine-photos", type=int, default=32)
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (slow to build)")
    parser.add_argument("--photos-script", type=Path, default=DEFAULT_PHOTOS_SCRIPT)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pixsift-engines-") as scratch:
        work = Path(scratch)
        os.environ["PIXSIFT_CACHE_DIR"] = str(work / "cache")
        from pixsift.models.clip import ClipEmbedder
        from pixsift.models.loading import load_embedder
        from pixsift.models.naming import resolve_model_spec
        from pixsift.models.onnx_export import export_folder

        if args.model == "synthetic-tiny":
            spec = resolve_model_spec("synthetic-tiny")
        else:
            spec = resolve_model_spec(args.model, str(random_checkpoint(args.model, work / "weights.pt")))
        load_embedder(spec, "cpu", "auto")  # makes pixsift's export
        clip = ClipEmbedder.load(spec, "cpu")
        photos = args.photos
        if photos is None:
            photos = work / "photos"
            command = [sys.executable, str(args.photos_script), str(photos), "--count", "32"]
            subprocess.run([*command, "--size", "4032x3024", "--seed", "3"], check=True, capture_output=True)
        real = photo_batch(clip, sorted(photos.iterdir())[: args.cosine_photos])
        batch = np.ascontiguousarray(np.resize(real, (args.batch_size, *real.shape[1:])))
        runners = candidates(clip, spec, export_folder(spec), compile_too=not args.no_compile)
        reference = runners["torch eager fp32"](real)  # type: ignore[misc]
        available = {name: run for name, run in runners.items() if run is not None}
        cosines = {}
        for name, run in available.items():
            cosines[name] = float(np.min(np.sum(run(real) * reference, axis=1)))
            run(batch)  # warm-up at the timed shape (and compilation, for torch.compile)
        # Round-robin, so that a change in the machine's background load falls on every engine
        # alike; each engine's median round is reported.
        rates: dict[str, list[float]] = {name: [] for name in available}
        for _ in range(args.rounds):
            for name, run in available.items():
                rates[name].append(rate(run, batch, args.seconds / args.rounds))
        rows: list[dict[str, Any]] = []
        for name in runners:
            if name not in available:
                rows.append({"engine": name, "rate": None, "cosine": None})
            else:
                median = float(np.median(rates[name]))
                rows.append({"engine": name, "rate": median, "rounds": rates[name], "cosine": cosines[name]})

    print(f"{args.model} image tower, batch {args.batch_size}, CPU ({os.cpu_count()} CPUs)")
    print(f"{'engine':<50} {'images/s':>9} {'worst cosine to fp32':>21}")
    for row in rows:
        if row["rate"] is None:
            print(f"{row['engine']:<50} {'not installed':>9}")
        else:
            print(f"{row['engine']:<50} {row['rate']:>9.1f} {row['cosine']:>21.5f}")
    if args.json:
        args.json.write_text(
            json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
        )


if __name__ == "__main__":
    main()
