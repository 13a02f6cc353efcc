"""Choosing how a model runs (`--engine`) and loading it that way.

- `torch`: open_clip on torch, fp32 on the CPU, fp16/bf16 autocast on a CUDA GPU;
- `onnx`: ONNX Runtime, fp32, on the CPU;
- `onnx-int8`: ONNX Runtime with int8 weights, on the CPU;
- `auto` (the default): on the CPU, ONNX Runtime, per tower at the fastest precision allowed
  (`AUTO_PRECISIONS`: int8, else fp32) whose embeddings stayed within cosine
  0.99 of fp32 open_clip's when the model was exported; torch when none did, or when the model
  runs on a GPU.

The ONNX export is made automatically the first time a model is loaded (see `onnx_export`);
once it is cached, loading imports neither torch nor open_clip.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING

from pixsift.config import CACHE_ENV_VAR
from pixsift.errors import ExportCacheError, ModelError
from pixsift.models.devices import check_device, check_device_present
from pixsift.models.embedder import Embedder
from pixsift.models.onnx_export import (
    COSINE_BAR,
    TOWERS,
    DamagedExportError,
    Export,
    discard,
    export_model,
    onnx_runtime_missing,
    read_export,
    verify_files,
)
from pixsift.models.preparing import announce_preparing
from pixsift.models.spec import ModelSpec

if TYPE_CHECKING:
    from pixsift.models.clip import ClipEmbedder

ENGINES = ("auto", "torch", "onnx", "onnx-int8")
DEFAULT_ENGINE = "auto"

log = logging.getLogger(__name__)


def check_engine(engine: str) -> str:
    """The engine name in its canonical lower case ("ONNX" is "onnx"); ModelError for another."""
    if not isinstance(engine, str) or engine.lower() not in ENGINES:
        raise ModelError(f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)}.")
    return engine.lower()


def check_runs(device: str, engine: str) -> tuple[str, str]:
    """The device and engine in their canonical lower case, as everything after compares them.

    Refuses, before anything is opened or made, a device or engine the model could not run
    with here: an unknown name, a GPU this machine lacks, an ONNX engine on a GPU. Found only
    when the model loads, the mistake would come after a new library was made for it, or not
    at all (a run over unchanged files loads no model)."""
    engine = check_engine(engine)
    device = check_device(device)
    check_device_present(device)
    if device not in ("auto", "cpu") and engine in ("onnx", "onnx-int8"):
        lead = f"The {engine} engine runs on the CPU: use"
        raise ModelError(
            f"{lead} device='cpu' or engine='torch'.", command_line=f"{lead} --device cpu or --engine torch."
        )
    return device, engine


def load_embedder(spec: ModelSpec, device: str = "auto", engine: str = DEFAULT_ENGINE) -> Embedder:
    """Load `spec` to run with `engine` on `device`."""
    device, engine = check_runs(device, engine)
    if engine == "torch" or not _runs_on_cpu(device, engine):
        return _torch_embedder(spec, device)
    missing = onnx_runtime_missing()
    if missing is not None:
        return _without_onnx(spec, device, engine, missing)
    export = read_export(spec)
    loaded: ClipEmbedder | None = None
    try:
        if export is not None:
            export = _verified(export, engine)
        if export is None:  # first use of this model (or new weights, or a damaged export): export it
            announce_preparing(spec)  # the wait is long, once: say so where the user looks
            loaded = _torch_embedder(spec, "cpu")
            export = export_model(loaded)
    except ExportCacheError as exc:
        if engine != "auto":
            raise
        # The fast path is an optimisation: without a cache to keep it in, run on torch.
        log.warning("%s Running on torch meanwhile.", exc)
        return loaded if loaded is not None else _torch_embedder(spec, device)
    except ImportError as exc:  # onnx or onnxscript, which only the export needs
        if loaded is None:  # torch or open_clip itself: not ONNX's to explain
            raise
        return _without_onnx(spec, device, engine, str(exc) or type(exc).__name__, loaded)
    precisions = _precisions(export, engine)
    if not precisions:
        if engine != "auto":
            reason = f": {export.reason}" if export.reason else ""
            lead = f"{spec.describe()} cannot run on the {engine} engine{reason}."
            raise ModelError(
                f"{lead} Use engine='torch' or 'auto'.", command_line=f"{lead} Use --engine torch or auto."
            )
        return loaded if loaded is not None else _torch_embedder(spec, device)
    from pixsift.models.onnx_embedder import OnnxEmbedder

    if engine == "onnx-int8":
        _warn_below_bar(export)
    # Keep the torch model just loaded only if a tower needs it: it may be 600 MB.
    kept = loaded if len(precisions) < len(TOWERS) else None
    torch_model = functools.cache(lambda: kept if kept is not None else _torch_embedder(spec, "cpu"))
    return OnnxEmbedder(export, precisions, lambda: _remake(spec), fallback=torch_model)


def _verified(export: Export, engine: str) -> Export | None:
    """`export`, once the files `engine` runs are found to be the files exported; None, the
    export removed so that it is made again, when one is not. A file damaged in place may well
    still load, and would give every image and query another vector without a word.

    Raises ExportCacheError when a damaged export cannot be removed (a read-only cache): it
    cannot be made again there, and must not be used."""
    try:
        return verify_files(export, export.files_run(_precisions(export, engine)))
    except DamagedExportError as exc:
        damaged = (
            f"The cached ONNX export of {export.record.spec.describe()} in {export.folder} is damaged: {exc}."
        )
        failure = discard(export)
        if failure is not None:
            raise ExportCacheError(
                f"{damaged} It cannot be removed to export the model again "
                f"({failure.strerror or failure}): remove that folder, or point {CACHE_ENV_VAR} "
                "at a writable folder."
            ) from failure
        log.warning("%s Exporting the model again.", damaged)
        return None


def _without_onnx(
    spec: ModelSpec, device: str, engine: str, reason: str, loaded: ClipEmbedder | None = None
) -> Embedder:
    """The model on torch when `auto` cannot use ONNX Runtime; an error for an ONNX engine.
    Nothing is recorded in the export cache: the next run with a whole install exports."""
    message = (
        f"{spec.describe()} cannot run through ONNX Runtime: a module it needs cannot be imported "
        f"({reason}). Reinstall pixsift"
    )
    if engine != "auto":
        raise ModelError(
            f"{message}, or use engine='torch'.", command_line=f"{message}, or use --engine torch."
        )
    log.warning("%s; running on torch meanwhile, which is slower.", message)
    return loaded if loaded is not None else _torch_embedder(spec, device)


def _warn_below_bar(export: Export) -> None:
    """`onnx-int8` runs int8 towers whatever their accuracy: say so when one missed the bar
    that `auto` holds them to."""
    for tower in TOWERS:
        cosine = export.cosine.get(tower, {}).get("int8")
        if cosine is not None and cosine < COSINE_BAR:
            lead = (
                f"The int8 {tower} tower of {export.record.spec.describe()} stayed only within "
                f"cosine {cosine:.4f} of fp32 open_clip, below the {COSINE_BAR:.2f} that"
            )
            end = "asks of it; results may differ from fp32."
            # In the API's words for a program's log; the command prints `command_line` (cli.py).
            log.warning(
                "%s engine='auto' %s", lead, end, extra={"command_line": f"{lead} --engine auto {end}"}
            )


def text_precision(export: Export, engine: str) -> str | None:
    """The precision `load_embedder` runs the text tower of `export` at through ONNX Runtime
    on the CPU with `engine`, or None when it would not run it there (torch instead, or an
    error)."""
    if engine not in ENGINES or engine == "torch":
        return None
    return _precisions(export, engine).get("text")


def _precisions(export: Export, engine: str) -> dict[str, str]:
    """The precision of each tower the engine runs through ONNX; an explicit engine needs both."""
    chosen = {tower: export.precision_for(tower, engine) for tower in TOWERS}
    if engine != "auto" and None in chosen.values():
        return {}
    return {tower: precision for tower, precision in chosen.items() if precision is not None}


def _remake(spec: ModelSpec) -> Export:
    return export_model(_torch_embedder(spec, "cpu"))


def _torch_embedder(spec: ModelSpec, device: str) -> ClipEmbedder:
    from pixsift.models.clip import ClipEmbedder  # torch and open_clip: only when needed

    return ClipEmbedder.load(spec, device)


def surely_on_cpu(device: str, engine: str) -> bool:
    """Whether the model runs on the CPU, as far as is known without importing torch.

    `auto` means CUDA when torch sees a GPU; torch need only be asked where an NVIDIA driver
    is installed at all. ONNX engines named explicitly run on the CPU.
    """
    if device == "cpu":
        return True
    return device == "auto" and (engine != "auto" or not os.path.exists("/dev/nvidiactl"))


def _runs_on_cpu(device: str, engine: str) -> bool:
    """Whether the model runs on the CPU, without importing torch when that can be avoided."""
    if surely_on_cpu(device, engine):
        return True
    if device != "auto":
        return False  # a GPU: check_runs refused an ONNX engine there
    import torch

    return not torch.cuda.is_available()
