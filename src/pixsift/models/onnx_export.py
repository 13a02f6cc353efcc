"""Exporting an open_clip model's towers to ONNX, once, into the user's cache.

On a CPU, ONNX Runtime runs CLIP faster than torch eager, and with int8 weights (dynamic
quantisation of the matrix multiplications, `reduce_range` for accuracy on CPUs without VNNI)
faster still; it also starts in a fraction of a second, where importing torch and open_clip
takes seconds. So the first time a model is used, its image and text towers are exported
(fp32 and int8), together with a torch-free tokenizer and the preprocessing settings, and
checked against the torch model on calibration images and texts: a variant whose embeddings
are not within cosine `COSINE_BAR` of fp32 open_clip's is never chosen automatically.

An export lives in a folder named after the model's spec under `<cache>/onnx/`. It is made in
a temporary folder and renamed into place, so a crash never leaves half of one; it is used only
while the checkpoint file it came from is unchanged (its size and times, else its sha256: see
`_weights_unchanged`), and one that turns out damaged is removed and made again.

Its `meta.json` records each file's size and sha256. Every use checks the sizes (a `stat` per
file); a process that loads the model through a `Library` (an index run, the HTTP service, a
search the quick path leaves to the library) also checks the checksums of the files it will run
(`verify_files`), so bytes changed inside a file, which would still load and give wrong vectors,
are found there and the model exported again. The cold `pixsift search` cannot afford to read
its text tower through; it compares each file's `stat` with the one recorded when its checksum
was last found right, and reads through only the files whose `stat` changed
(`verify_unchanged_files`): see `verify_files` for what each costs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixsift.config import CACHE_ENV_VAR, cache_dir
from pixsift.errors import ExportCacheError
from pixsift.models.pixels import PixelConfig
from pixsift.models.spec import ModelRecord, ModelSpec

if TYPE_CHECKING:
    from pixsift.models.clip import ClipEmbedder

FORMAT = 4  # 4: int8 image towers traced for one input, patch convolution in fp32
COSINE_BAR = 0.99
PRECISIONS = ("int8", "fp32")  # fastest first
# Dynamic int8 quantises activations with one scale per call, so an input's vector would move
# (by about 1e-3) with the other inputs of its call: an index must give a photo the same vector
# whatever else is in its folder. Towers at these precisions therefore run one input per call
# (the accuracy check below measures them that way too).
ONE_INPUT_PER_CALL = frozenset({"int8"})
# What `auto` may choose, per tower, fastest first, when it holds COSINE_BAR.
AUTO_PRECISIONS = {"image": ("int8", "fp32"), "text": ("int8", "fp32")}
TOWERS = ("image", "text")
META = "meta.json"
CHECKSUMS = "sha256"  # meta.json's key: file name -> sha256 (hex) of the file as exported
# meta.json's key: file name -> its signature (size, mtime_ns, ctime_ns, inode) when its
# checksum was last found right. Writing to a file changes its ctime, which unlike its mtime
# cannot be set back (os.utime sets it to now): a file whose signature is unchanged holds the
# bytes that were checked.
SIGNATURES = "verified"
# A file changed less than this before it was checked is not given a signature yet: a change
# made after the check but within the same tick of the file system's clock (2 s on FAT, a few
# ms on ext4) would keep its times, so its signature, and the change would never be read.
SETTLED_NS = 2_000_000_000
ABANDONED_WORK_S = 3 * 3600  # a work folder untouched this long belongs to a killed export
TOKENIZER = "tokenizer.json"
KNOWN_WORDS = "known-words.json"  # lets a query of plain words skip building the BPE
_CALIBRATION_IMAGES = 12
_CALIBRATION_TEXTS = (
    "a photo of a dog",
    "two red circles on a striped background",
    "a mountain lake at sunset, with pine trees and snow",
    "Portrait of a smiling woman, 35mm film",
    "a plate of food: pasta & salad",
    "the city skyline at night from the river",
    "a cat sleeping on a sofa",
    "blue sky",
    "a very long caption " + "with many words that goes on and on " * 6,
)

log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


@dataclass(frozen=True)
class Export:
    """A cached export: where its files are and what was measured when it was made."""

    folder: Path
    record: ModelRecord
    pixels: PixelConfig | None  # None: open_clip's preprocessing cannot be reproduced without torch
    context_length: int
    files: dict[str, int]  # file name -> size in bytes
    cosine: dict[str, dict[str, float]]  # tower -> precision -> worst cosine to fp32 open_clip
    reason: str = ""  # why there is no fast path, when there is none
    text_trim: bool = False  # the text tower takes tokens up to the last END, not the full context
    # File name -> sha256 as exported; a file without one was exported by an older pixsift.
    checksums: dict[str, str] = field(default_factory=dict)
    # File name -> its signature (see SIGNATURES) when its checksum was last found right.
    signatures: dict[str, Signature] = field(default_factory=dict)

    def model_file(self, tower: str, precision: str) -> Path | None:
        name = f"{tower}-{precision}.onnx"
        return self.folder / name if name in self.files else None

    def precision_for(self, tower: str, engine: str) -> str | None:
        """The precision `engine` runs `tower` at: auto picks the fastest of AUTO_PRECISIONS that
        holds the bar."""
        if self.pixels is None and tower == "image":
            return None
        if engine == "onnx":
            wanted: tuple[str, ...] = ("fp32",)
        elif engine == "onnx-int8":
            wanted = ("int8",)
        else:
            allowed = AUTO_PRECISIONS.get(tower, ())
            wanted = tuple(p for p in allowed if self.cosine.get(tower, {}).get(p, 0.0) >= COSINE_BAR)
        return next((p for p in wanted if self.model_file(tower, p) is not None), None)

    def files_run(self, precisions: Mapping[str, str]) -> list[str]:
        """The files that running the towers at `precisions` reads: each tower's model file
        (with any external weight file beside it) and, for the text tower, the tokenizer's."""
        names: list[str] = []
        for tower, precision in precisions.items():
            model = f"{tower}-{precision}.onnx"
            names += [name for name in self.files if name.startswith(model)]
            if tower == "text":
                names += [name for name in (TOKENIZER, KNOWN_WORDS) if name in self.files]
        return names


class DamagedExportError(Exception):
    """A file of a cached export is not the file exported: its checksum differs."""


def export_folder(spec: ModelSpec) -> Path:
    key = json.dumps([spec.name, spec.pretrained, spec.config_json], sort_keys=True)
    return cache_dir() / "onnx" / hashlib.sha256(key.encode()).hexdigest()[:20]


def read_export(spec: ModelSpec) -> Export | None:
    """The cached export of `spec`, if there is one that is whole and still fits its weights.

    Imports neither torch nor onnxruntime: this decides whether they are needed at all.
    """
    folder = export_folder(spec)
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or _spec_of(meta) != spec or not _weights_unchanged(folder, meta):
            return None
        files = {str(name): int(size) for name, size in meta["files"].items()}
        for name, size in files.items():
            if (folder / name).stat().st_size != size:
                return None
        return _export_of(folder, meta, files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, unreadable or damaged (JSON of another shape too): made again


def verify_files(export: Export, names: Iterable[str]) -> Export:
    """`export`, once each of its files `names` is found to be the file exported (the sha256
    recorded in its meta.json). Raises DamagedExportError naming the first that is not.

    The size of each file is checked by `read_export` on every use, for free; the checksum
    catches bytes changed in place, which load as well and give other vectors. It reads the
    files through, at 1.4 GB/s from the page cache on a shared 2-core VM (with SHA extensions):
    ViT-B-32's int8 towers and tokenizer, 161 MB, take 113 ms (text tower 43 ms, image tower
    71 ms), against 145 ms to load the embedder and 350 ms to open its two towers, and seconds
    to hours for the index run around it; its fp32 files (607 MB, verified only where an
    engine runs them) 416 ms; synthetic-tiny's int8 files 4 ms. Too slow for the cold
    `pixsift search` (0.45 to 0.55 s in all for ViT-B-32 there), which uses
    `verify_unchanged_files`: a `stat` per file, unless one changed.

    A file that has no checksum recorded (an export by a pixsift older than the checksums) is
    taken as it is, as that pixsift would take it, and its checksum recorded now, so that any
    later change to it is found. Each file found right gets its signature recorded, for
    `verify_unchanged_files`.
    """
    unrecorded: dict[str, str] = {}
    signed: dict[str, Signature] = {}
    for name in names:
        try:
            digest, signature = _sha256_and_signature(export.folder / name)
        except OSError as exc:  # removed or unreadable meanwhile: it cannot be run either
            raise DamagedExportError(f"{name} cannot be read ({exc.strerror or exc})") from exc
        recorded = export.checksums.get(name)
        if recorded is None:
            unrecorded[name] = digest
        elif digest != recorded:
            raise DamagedExportError(f"{name} is not the file exported (its content changed since)")
        if signature is not None and export.signatures.get(name) != signature:
            signed[name] = signature
    if not unrecorded and not signed:
        return export
    _record_verified(export, unrecorded, signed)
    return dataclasses.replace(
        export,
        checksums={**export.checksums, **unrecorded},
        signatures={**export.signatures, **signed},
    )


def verify_unchanged_files(export: Export, names: Iterable[str]) -> Export:
    """`verify_files` for a cold search: a file whose signature is the one recorded when its
    checksum was last found right is taken as verified, for the cost of a `stat`; the others
    (a file changed since, in place or not, or not checked yet, or copied) are read through.

    What this cannot see is a change that leaves the file's times alone: bytes changed on the
    disk under the file system, or by a program writing to the device. Loads through a
    `Library` read every file through, and find those.
    """
    changed = [name for name in names if not _unchanged_since_verified(export, name)]
    return verify_files(export, changed) if changed else export


def _unchanged_since_verified(export: Export, name: str) -> bool:
    recorded = export.signatures.get(name)
    if recorded is None or name not in export.checksums:
        return False
    try:
        return _signature(os.stat(export.folder / name)) == recorded
    except OSError:
        return False


def _signature(stat: os.stat_result) -> Signature:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def _sha256_and_signature(path: Path) -> tuple[str, Signature | None]:
    """The sha256 of the file at `path`, and its signature if the file stood still while it was
    read and had been still for SETTLED_NS before (None otherwise: not to be recorded)."""
    with open(path, "rb") as file:
        before = os.fstat(file.fileno())
        started_ns = time.time_ns()
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        after = os.fstat(file.fileno())
    still = _signature(before) == _signature(after)
    settled = started_ns - before.st_ctime_ns >= SETTLED_NS  # every change sets the ctime to now
    return digest, _signature(before) if still and settled else None


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _record_verified(export: Export, digests: dict[str, str], signatures: dict[str, Signature]) -> None:
    """Add `digests` and `signatures` to the meta.json of `export`, unless another process
    replaced that export meanwhile. Written to a temporary file and renamed over it, so a reader
    sees the old meta.json or the new one; of two processes recording at once, the last keeps
    its own only, and the files the other checked are read through once more by a later use. A
    cache that cannot be written stays as it is: its files are read through again by the next
    load, or cold search, and checked against the checksums it has."""
    meta_file = export.folder / META
    work = export.folder / f".{META}-{os.getpid()}"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("fingerprint") != export.record.fingerprint or meta.get("files") != export.files:
            return  # exported again meanwhile: the checksums are not of its files
        meta[CHECKSUMS] = {**_mapping(meta.get(CHECKSUMS)), **digests}
        meta[SIGNATURES] = {**_mapping(meta.get(SIGNATURES)), **{n: list(s) for n, s in signatures.items()}}
        work.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(work, meta_file)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.debug("Cannot record the checksums of %s: %s", export.folder, exc)
        with contextlib.suppress(OSError):
            work.unlink()


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def onnx_runtime_missing() -> str | None:
    """Why ONNX Runtime cannot be imported here (a broken or partial install), or None."""
    try:
        import onnxruntime  # noqa: F401 (imported to see whether it can be)
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def discard(export: Export) -> OSError | None:
    """Remove a damaged export, so the next use makes it again; the error when it cannot be
    removed (a read-only cache), where exporting again could not replace it either."""
    try:
        shutil.rmtree(export.folder)
    except FileNotFoundError:
        return None  # removed meanwhile (another process exporting again): as good
    except OSError as exc:
        return exc
    return None


def export_model(clip: ClipEmbedder) -> Export:
    """Export `clip` into the cache (replacing any earlier export of it) and return it.

    Raises ExportCacheError when the cache cannot be written, ImportError when a module the
    export needs (onnxruntime, onnx, onnxscript) cannot be imported."""
    spec = clip.record.spec
    final = export_folder(spec)
    try:
        meta = _export_into_place(clip, final)
    except OSError as exc:
        raise ExportCacheError(
            f"Cannot write the ONNX export of {spec.describe()} into {final.parent}: "
            f"{exc.strerror or exc}. {_cache_advice(exc)}"
        ) from exc
    export = read_export(spec)
    if export is None:  # the weights changed while exporting: use it this once, not again
        return _export_of(final, meta, meta["files"])
    return export


def _cache_advice(exc: OSError) -> str:
    """What to do about a cache that cannot be written. Room helps only where room ran out: a
    read-only disk, or a folder this user may not write, needs another place."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"Free some space there, or point {CACHE_ENV_VAR} at a folder with room."
    return f"Point {CACHE_ENV_VAR} at a writable folder."


def _export_into_place(clip: ClipEmbedder, final: Path) -> dict[str, Any]:
    """Export `clip` into a work folder beside `final`, then rename it to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_work(final)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        meta = _export_into(work, clip)
        (work / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        finished = read_export(clip.record.spec)
        # Another process that exported the same weights first keeps its export: replacing it
        # would make that process, if it is opening a tower right then, take it for damaged
        # and export the model once more.
        if finished is None or finished.record != clip.record:
            _move_into_place(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _remove_abandoned_work(final: Path) -> None:
    """Remove the work folders of exports of this model that a killed process left behind
    (hundreds of megabytes each for ViT-B-32). One untouched for hours is no export under way."""
    cutoff = time.time() - ABANDONED_WORK_S
    for work in final.parent.glob(f".{final.name}-*"):
        with contextlib.suppress(OSError):
            if work.is_dir() and work.stat().st_mtime < cutoff:
                shutil.rmtree(work, ignore_errors=True)


def _move_into_place(work: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(work, final)
    except OSError:  # another process put its own export there first: keep that one
        if not (final / META).is_file():
            raise


def _export_into(folder: Path, clip: ClipEmbedder) -> dict[str, Any]:
    record = clip.record
    pixels = PixelConfig.from_open_clip(dict(clip.model.visual.preprocess_cfg))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "spec": {"name": record.spec.name, "pretrained": record.spec.pretrained},
        "config_json": record.spec.config_json,
        "embed_dim": record.embed_dim,
        "fingerprint": record.fingerprint,
        "weights": _weights_stat(clip.weights_path),
        "pixels": pixels.to_json() if pixels else None,
        "context_length": 0,
        "files": {},
        "cosine": {},
        "reason": "",
        "text_trim": False,
    }
    reasons = []
    try:
        meta["context_length"] = _export_text(folder, clip, meta)
    # A full disk, or onnxruntime, onnx or onnxscript missing from this install: not the model.
    # Recorded, either would keep the tower off for good, here and in every other environment
    # that shares the cache.
    except (OSError, ImportError):
        raise
    except Exception as exc:  # any export failure means: this tower stays on torch, and why
        reasons.append(f"text tower: {_first_line(exc)}")
        _forget(meta, "text")
    try:
        if pixels is None:
            raise ValueError("its image preprocessing needs open_clip's own transform")
        _export_image(folder, clip, pixels, meta)
    except (OSError, ImportError):
        raise
    except Exception as exc:
        reasons.append(f"image tower: {_first_line(exc)}")
        _forget(meta, "image")
    if reasons:
        meta["reason"] = "; ".join(reasons)
        log.warning("Cannot export all of %s to ONNX: %s", record.spec.describe(), meta["reason"])
    # Every file the towers that worked left (an exporter may add external weight files).
    kept = set(meta["files"])
    meta["files"] = {
        path.name: path.stat().st_size
        for path in sorted(folder.iterdir())
        if path.name in kept or any(path.name.startswith(name) for name in kept)
    }
    meta[CHECKSUMS] = {name: _sha256(folder / name) for name in meta["files"]}
    return meta


def _forget(meta: dict[str, Any], tower: str) -> None:
    meta["cosine"].pop(tower, None)
    names = [f"{tower}-{precision}.onnx" for precision in PRECISIONS]
    if tower == "text":
        names += [TOKENIZER, KNOWN_WORDS]
    for name in names:
        meta["files"].pop(name, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _export_image(folder: Path, clip: ClipEmbedder, pixels: PixelConfig, meta: dict[str, Any]) -> None:
    import torch

    from pixsift.models.pixels import preprocess

    images = _calibration_images()
    reference = clip.embed_images([clip.preprocess(image) for image in images])
    inputs = np.stack([preprocess(image, pixels) for image in images])
    sample = torch.from_numpy(inputs[:2])
    _export_tower(folder, "image", _tower_module(clip.model, "image"), sample, "pixels", meta)
    for precision in PRECISIONS:  # saves about 0.5 s at every index run's start
        _optimise(folder / f"image-{precision}.onnx")
    rows = [inputs[index : index + 1] for index in range(len(inputs))]  # one per call, as run
    meta["cosine"]["image"] = _check(folder, "image", "pixels", rows, reference)


def _export_text(folder: Path, clip: ClipEmbedder, meta: dict[str, Any]) -> int:
    import torch

    from pixsift.models.clip_tokenizer import ClipTokenizer

    context_length = _simple_tokenizer_context(clip.tokenizer)
    if context_length is None:
        raise ValueError("its tokenizer is not CLIP's byte-level BPE")
    tokenizer = ClipTokenizer.from_open_clip(context_length)
    tokens = tokenizer(list(_CALIBRATION_TEXTS))
    if not np.array_equal(tokens, clip.tokenizer(list(_CALIBRATION_TEXTS)).numpy()):
        raise ValueError("the torch-free tokenizer does not give open_clip's token ids")
    tokenizer.save(folder / TOKENIZER)
    tokenizer.save_known_words(folder / KNOWN_WORDS)
    meta["files"][TOKENIZER] = meta["files"][KNOWN_WORDS] = 0
    reference = clip.embed_texts(list(_CALIBRATION_TEXTS))  # the full context, as open_clip runs it
    meta["text_trim"] = _trims_text(clip.model)
    if meta["text_trim"]:
        tokens = trim_tokens(tokens)
    sample = torch.from_numpy(tokens[:2])
    module = _tower_module(clip.model, "text")
    _export_tower(folder, "text", module, sample, "tokens", meta, sequence_axis=meta["text_trim"])
    for precision in PRECISIONS:  # a query loads the text tower: pay its graph optimisation now
        _optimise(folder / f"text-{precision}.onnx")
    # Each text on its own, so the check also covers the trimming of short ones.
    rows = [trim_tokens(row[None, :]) if meta["text_trim"] else row[None, :] for row in tokens]
    meta["cosine"]["text"] = _check(folder, "text", "tokens", rows, reference)
    return context_length


def trim_tokens(tokens: np.ndarray) -> np.ndarray:
    """The token ids up to the last END of any row (at least two columns: START and END)."""
    used = np.flatnonzero(np.any(tokens != 0, axis=0))
    return np.ascontiguousarray(tokens[:, : max(2, int(used[-1]) + 1 if used.size else 2)])


def _optimise(path: Path) -> None:
    """Rewrite `path` with ONNX Runtime's graph optimisations applied, so that loading it needs
    none (a few hundred milliseconds less at every cold start). The extended level only: the
    layout level would tie the file to this CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    optimised = path.with_suffix(".opt")
    options.optimized_model_filepath = str(optimised)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(optimised, path)


def _simple_tokenizer_context(tokenizer: Any) -> int | None:
    """The context length of open_clip's standard CLIP tokenizer; None for any other one."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    if type(tokenizer) is not SimpleTokenizer or tokenizer.reduction_fn is not None:
        return None
    if tokenizer.clean_fn is not _clean_lower or len(tokenizer.all_special_ids) != 2:
        return None
    return int(tokenizer.context_length)


def _tower_module(model: Any, tower: str) -> Any:
    """One tower of a CLIP model with its projection and normalisation, as ONNX sees it."""
    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's own spelling)

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if tower == "image":
                return self.model.encode_image(inputs, normalize=True)  # type: ignore[no-any-return]
            if not _trims_text(model):
                return self.model.encode_text(inputs, normalize=True)  # type: ignore[no-any-return]
            return F.normalize(_encode_text_prefix(self.model, inputs), dim=-1)

    return Tower().eval()


def _trims_text(model: Any) -> bool:
    """Whether the text tower may be run on the tokens up to the last END only.

    CLIP's text transformer is causal and pools the END token's features, so the padding after
    it changes nothing; running without it makes a short query several times cheaper than a
    full context. Only for open_clip's standard CLIP text tower, where that holds.
    """
    from open_clip.model import CLIP

    return (
        type(model) is CLIP
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def _encode_text_prefix(model: Any, tokens: Any) -> Any:
    """open_clip's CLIP.encode_text (unnormalised) for a token prefix of any length."""
    import torch
    from open_clip.transformer import text_global_pool

    # Positions 0..length-1 computed from the tokens rather than sliced by a Python int, so
    # the traced graph keeps the length dynamic instead of freezing the sample's.
    positions = torch.cumsum(torch.ones_like(tokens[0]), dim=0) - 1
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + torch.index_select(model.positional_embedding, 0, positions).to(cast_dtype)
    mask = torch.index_select(torch.index_select(model.attn_mask, 0, positions), 1, positions)
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _export_tower(
    folder: Path,
    tower: str,
    module: Any,
    sample: Any,
    input_name: str,
    meta: dict[str, Any],
    *,
    sequence_axis: bool = False,
) -> None:
    """`<tower>-fp32.onnx` and its int8 quantisation `<tower>-int8.onnx`.

    The fp32 file's batch is a dynamic axis; with `sequence_axis` the token count is too,
    which only torch.export's exporter gets right (the tracing one freezes the sample's length
    inside attention), so that case goes through it; the image tower keeps the tracing
    exporter, which is several times quicker, and its int8 file is traced for one image.
    """
    fp32, int8 = folder / f"{tower}-fp32.onnx", folder / f"{tower}-int8.onnx"
    _trace(module, sample, fp32, input_name, sequence_axis=sequence_axis)
    meta["files"][fp32.name] = 0
    if sequence_axis:
        _quantise(fp32, int8)
    else:
        # int8 runs one input per call (ONE_INPUT_PER_CALL), so it is quantised from a graph
        # traced for exactly one: its shape arithmetic folds away (ViT-B-32: 336 operators
        # instead of 938), which with the patch convolution kept in fp32 takes about 10% less
        # CPU per image.
        single = folder / f"{tower}-single.onnx"
        _trace(module, sample[:1], single, input_name, batch_axis=False)
        _quantise(single, int8)
        single.unlink()
    meta["files"][int8.name] = 0


def _trace(
    module: Any,
    sample: Any,
    path: Path,
    input_name: str,
    *,
    batch_axis: bool = True,
    sequence_axis: bool = False,
) -> None:
    """Export `module` to `path`, with a dynamic batch axis unless told otherwise."""
    import torch

    # Gradients on while tracing: with them off, torch swaps attention for a fused kernel
    # that ONNX has no operator for.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad(), _quiet_logs():
        warnings.simplefilter("ignore")  # exporter and deprecation chatter, not for users
        if sequence_axis:
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                input_names=[input_name],
                output_names=["vectors"],
                dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")},),
                dynamo=True,
                verbose=False,
            )
        else:
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                input_names=[input_name],
                output_names=["vectors"],
                dynamic_axes={input_name: {0: "batch"}, "vectors": {0: "batch"}} if batch_axis else None,
                opset_version=17,
                dynamo=False,
            )


def _quantise(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantisation: QInt8 weights, `reduce_range` (7-bit) for accuracy on CPUs
    without VNNI. A lookup table holding infinities (the causal attention mask) is left alone:
    quantising it would turn the mask into NaNs."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32))
    infinite = {
        init.name for init in model.graph.initializer if not np.all(np.isfinite(numpy_helper.to_array(init)))
    }
    keep = [node.name for node in model.graph.node if any(name in infinite for name in node.input)]
    # ONNX Runtime's ConvInteger is slower than fp32 Conv: a ViT-B-32 patch embedding took 14 ms
    # per image against 5 ms here.
    keep += [node.name for node in model.graph.node if node.op_type == "Conv"]
    del model
    with _quiet_logs():
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=keep)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """onnxruntime's quantiser and torch's exporter log advice for developers through the root
    logger; a user indexing photos needs none of it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                yield
    finally:
        root.setLevel(level)


def _check(
    folder: Path, tower: str, input_name: str, batches: list[np.ndarray], reference: np.ndarray
) -> dict[str, float]:
    """The worst cosine of each precision's embeddings to the torch model's."""
    import onnxruntime as ort

    worst: dict[str, float] = {}
    for precision in PRECISIONS:
        session = ort.InferenceSession(
            str(folder / f"{tower}-{precision}.onnx"), providers=["CPUExecutionProvider"]
        )
        vectors = np.concatenate([session.run(None, {input_name: batch})[0] for batch in batches])
        worst[precision] = float(np.min(np.sum(np.asarray(vectors) * reference, axis=1)))
    return worst


def _calibration_images() -> list[Any]:
    """Varied, photo-like pictures: pixsift's synthetic scenes (shapes, textures, colours)."""
    import random

    from pixsift.synthetic.render import render_scene
    from pixsift.synthetic.world import sample_scene

    rng = random.Random(0)
    sizes = [(320, 240), (240, 320), (300, 300)]
    images = []
    for index in range(_CALIBRATION_IMAGES):
        image = render_scene(sample_scene(rng), 320)
        images.append(image.resize(sizes[index % len(sizes)]))
    return images


def _weights_stat(path: Path | None) -> dict[str, Any] | None:
    """What tells the checkpoint the export was made from: its size and mtime, its sha256 for
    when those alone cannot tell, and its signature when the file had settled (see
    `_sha256_and_signature` and `_weights_unchanged`)."""
    if path is None:
        return None
    stat = path.stat()  # before the read: a file changed during it no longer matches these
    digest, signature = _sha256_and_signature(path)
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "signature": None if signature is None else list(signature),
        "sha256": digest,
    }


def _weights_unchanged(folder: Path, meta: dict[str, Any]) -> bool:
    """Whether the checkpoint is still the one exported. Another size or mtime: changed. The
    same signature (which has the ctime, set to now by every write and not to be set back):
    unchanged, for the cost of a `stat`. The same size and mtime with another ctime or inode
    is a file rewritten with its old mtime put back (`cp -p`, `rsync -t`, `touch -r`, a
    training script saving every epoch to one path within a tick of a coarse clock) or just
    moved, copied or chmod-ed: read through, and compared with the sha256 recorded."""
    weights = meta.get("weights")
    if weights is None:
        return False
    try:
        stat = os.stat(weights["path"])
    except OSError:
        return False
    if not (stat.st_size == weights["size"] and stat.st_mtime_ns == weights["mtime_ns"]):
        return False
    recorded = weights.get("sha256")
    if recorded is None:  # exported by an older pixsift, which kept size and mtime only
        return True
    if list(_signature(stat)) == weights.get("signature"):
        return True
    current = _weights_stat(Path(weights["path"]))
    if current is None or current["sha256"] != recorded:
        return False
    _record_weights(folder, meta, current)  # the same bytes: a `stat` is enough next time
    return True


def _record_weights(folder: Path, meta: dict[str, Any], weights: dict[str, Any]) -> None:
    """Keep `weights` as the export's checkpoint signature, if the cache can be written; a
    meta.json another process replaced meanwhile is left to it."""
    meta_file = folder / META
    work = folder / f".{META}-{os.getpid()}"
    try:
        current = json.loads(meta_file.read_text(encoding="utf-8"))
        if current.get("fingerprint") != meta.get("fingerprint") or current.get("weights") != meta["weights"]:
            return
        current["weights"] = weights
        work.write_text(json.dumps(current, indent=2), encoding="utf-8")
        os.replace(work, meta_file)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.debug("Cannot record the checkpoint of %s: %s", folder, exc)
        with contextlib.suppress(OSError):
            work.unlink()


def _spec_of(meta: dict[str, Any]) -> ModelSpec:
    return ModelSpec(meta["spec"]["name"], meta["spec"]["pretrained"], meta.get("config_json"))


def _export_of(folder: Path, meta: dict[str, Any], files: dict[str, int]) -> Export:
    pixels = meta.get("pixels")
    return Export(
        folder=folder,
        record=ModelRecord(_spec_of(meta), int(meta["embed_dim"]), str(meta["fingerprint"])),
        pixels=PixelConfig.from_json(pixels) if pixels else None,
        context_length=int(meta["context_length"]),
        files=files,
        cosine={tower: {p: float(c) for p, c in values.items()} for tower, values in meta["cosine"].items()},
        reason=str(meta.get("reason", "")),
        text_trim=bool(meta.get("text_trim", False)),
        checksums={str(name): str(digest) for name, digest in (meta.get(CHECKSUMS) or {}).items()},
        signatures=_signatures_of(meta),
    )


def _signatures_of(meta: dict[str, Any]) -> dict[str, Signature]:
    """The signatures recorded in `meta`; one of another shape is left out (its file is then
    read through, and signed again), rather than the whole export taken for damaged."""
    signatures: dict[str, Signature] = {}
    for name, value in _mapping(meta.get(SIGNATURES)).items():
        if isinstance(value, list) and len(value) == 4 and all(type(part) is int for part in value):
            signatures[str(name)] = (value[0], value[1], value[2], value[3])
    return signatures
