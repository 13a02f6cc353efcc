"""An Embedder over ONNX Runtime sessions: numpy in, numpy out, no torch.

Each tower's session is created on first use, so a text query loads only the text tower, and
an index run only the image tower until something asks for a text. ONNX Runtime releases the
GIL while it computes, so the indexer's decode threads keep working meanwhile.

An int8 tower quantises its activations with scales computed over the whole call, so a call
holding several inputs would give each a vector that depends on the others. Such a tower gets
one input per call instead, the calls spread over the cores on threads (one ONNX Runtime thread
each): on ViT-B-32 that runs as fast as one batched call on two threads, and a photo's vector
depends on the photo alone.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixsift.errors import ModelError, ModelMismatchError
from pixsift.models.embedder import CPU_BATCH_SIZE
from pixsift.models.onnx_export import (
    KNOWN_WORDS,
    META,
    ONE_INPUT_PER_CALL,
    TOKENIZER,
    Export,
    discard,
    onnx_runtime_missing,
    read_export,
    trim_tokens,
)
from pixsift.models.pixels import preprocess
from pixsift.models.spec import ModelRecord

if TYPE_CHECKING:
    import onnxruntime
    from PIL import Image
    from PIL.ImageCms import ImageCmsTransform

    from pixsift.models.clip_tokenizer import ClipTokenizer


class OnnxEmbedder:
    """CLIP through ONNX Runtime on the CPU, at the precision chosen for each tower.

    `remake` is called when a cached file turns out damaged (it cannot be loaded): it must
    export the model again and return the new export, which is then used instead.

    `one_shot` is for a process that runs a tower once (a cold search): ONNX Runtime then
    does not repack an int8 tower's weights for its kernels when loading it, which saves
    ViT-B-32's text tower about 40 ms of its 100 ms load and costs each later call about
    6 ms. Only int8 towers: their integer products come out the same packed or not, where
    fp32 results would move in the last bits and differ from the library's.
    """

    def __init__(
        self,
        export: Export,
        precisions: dict[str, str],
        remake: Callable[[], Export],
        fallback: Callable[[], Any] | None = None,
        *,
        one_shot: bool = False,
    ) -> None:
        if export.pixels is None and "image" in precisions:
            raise ValueError("an image tower needs its pixel settings")
        self._export = export
        self._precisions = precisions
        self._remake = remake
        self._fallback = fallback  # the torch model, for a tower that has no ONNX export
        self._one_shot = one_shot
        self._sessions: dict[str, onnxruntime.InferenceSession] = {}
        self._tokenizer: ClipTokenizer | None = None
        self._lock = threading.Lock()
        # Threads for a tower run one input per call; idle ones end with the embedder.
        self._calls: ThreadPoolExecutor | None = None
        self._image_size = export.pixels.size if export.pixels else 224

    @property
    def record(self) -> ModelRecord:
        return self._export.record

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def batch_size(self) -> int:
        return CPU_BATCH_SIZE

    @property
    def precisions(self) -> dict[str, str]:
        """Tower ("image", "text") -> precision ("int8", "fp32") it runs at."""
        return dict(self._precisions)

    def describe(self) -> str:
        towers = ", ".join(f"{tower} {self._precisions[tower]}" for tower in sorted(self._precisions))
        return f"ONNX Runtime ({towers})"

    def preprocess(self, image: Image.Image, colours: ImageCmsTransform | None = None) -> Any:
        pixels = self._export.pixels
        if pixels is None:  # no image export: the torch model's own transform
            return self._torch().preprocess(image, colours)
        return preprocess(image, pixels, colours)

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        if "image" not in self._precisions:
            return np.asarray(self._torch().embed_images(batch), dtype=np.float32)
        pixels = np.stack([np.asarray(item, dtype=np.float32) for item in batch])
        if self._precisions["image"] in ONE_INPUT_PER_CALL and len(pixels) > 1:
            rows = [pixels[index : index + 1] for index in range(len(pixels))]
            return np.concatenate(list(self._parallel_calls().map(self._run_image, rows)))
        return self._run("image", "pixels", pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if "text" not in self._precisions:
            return np.asarray(self._torch().embed_texts(texts), dtype=np.float32)
        # One text at a time: a text's vector must not depend on the others in its call (int8
        # activation scales are per call, and the tokens are trimmed to the call's longest).
        tokens = self._tokenize(list(texts))
        rows = [trim_tokens(row[None, :]) if self._export.text_trim else row[None, :] for row in tokens]
        if not rows:
            return np.zeros((0, self.record.embed_dim), dtype=np.float32)
        return np.concatenate([self._run("text", "tokens", row) for row in rows])

    def _run_image(self, pixels: np.ndarray) -> np.ndarray:
        return self._run("image", "pixels", pixels)

    def _parallel_calls(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._calls is None:
                self._calls = ThreadPoolExecutor(_cores(), thread_name_prefix="pixsift-onnx")
            return self._calls

    def _run(self, tower: str, input_name: str, inputs: np.ndarray) -> np.ndarray:
        (vectors,) = self._session(tower).run(None, {input_name: inputs})
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _session(self, tower: str) -> onnxruntime.InferenceSession:
        with self._lock:
            if tower not in self._sessions:
                self._keep_own_export()
                self._sessions[tower] = self._load_or_remake(tower)
            return self._sessions[tower]

    def _keep_own_export(self) -> None:
        """Make sure the cached export a tower is about to be loaded from is of this model's
        weights. Another process may have replaced it with an export of other weights (the
        checkpoint changed on disk, perhaps only for a while) since this one was loaded, and a
        session opened from that would give vectors of those weights."""
        if _fingerprint_in(self._export.folder) == self.record.fingerprint:
            return
        own = self.record
        fresh = read_export(own.spec)
        if fresh is None or fresh.record.fingerprint != own.fingerprint:
            fresh = self._remake()  # from the checkpoint as it is now
        if fresh.record.fingerprint != own.fingerprint:
            raise ModelMismatchError(
                f"The weights of {own.spec.describe()} changed on disk while this program ran "
                f"(they were {own.fingerprint}, now {fresh.record.fingerprint}): restart it."
            )
        self._export = fresh
        self._tokenizer = None

    def _load_or_remake(self, tower: str) -> onnxruntime.InferenceSession:
        # Checked first: without ONNX Runtime no file would open, and a whole export must not
        # be taken for a damaged one and removed.
        missing = onnx_runtime_missing()
        if missing is not None:
            lead = (
                f"Cannot run the ONNX export of {self.record.spec.describe()}: ONNX Runtime cannot "
                f"be imported ({missing}). Reinstall pixsift, or use"
            )
            raise ModelError(f"{lead} engine='torch'.", command_line=f"{lead} --engine torch.")
        try:
            return self._open_session(tower)
        except Exception:  # a damaged cached file: export the model again, once
            discard(self._export)
            self._export = self._remake()
            self._tokenizer = None
            try:
                return self._open_session(tower)
            except Exception as exc:
                lead = f"Cannot run the ONNX export of {self.record.spec.describe()}: {exc}. Use"
                raise ModelError(f"{lead} engine='torch'.", command_line=f"{lead} --engine torch.") from exc

    def _open_session(self, tower: str) -> onnxruntime.InferenceSession:
        import onnxruntime as ort

        path = self._export.model_file(tower, self._precisions[tower])
        if path is None:
            raise FileNotFoundError(f"no {tower} tower at {self._precisions[tower]} in the export")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not for users
        if tower == "text":  # optimised when exported: loading it again costs a cold query time
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self._one_shot and self._precisions[tower] == "int8":
            options.add_session_config_entry("session.disable_prepacking", "1")
        if tower == "image" and self._precisions[tower] in ONE_INPUT_PER_CALL:
            options.intra_op_num_threads = 1  # its calls run side by side on their own threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _tokenize(self, texts: list[str]) -> np.ndarray:
        """Token ids; a damaged tokenizer file (it may be read only now, for the first text
        that is not all known words) makes the model export again, once."""
        from pixsift.models.clip_tokenizer import TokenizerFileError

        tokenizer = self._tokens()
        try:
            return tokenizer(texts)
        except TokenizerFileError:
            with self._lock:
                if self._tokenizer is tokenizer:  # not remade by another thread meanwhile
                    discard(self._export)
                    self._export = self._remake()
                    self._tokenizer = None
            return self._tokens()(texts)

    def _tokens(self) -> ClipTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._load_tokenizer()
            return self._tokenizer

    def _load_tokenizer(self) -> ClipTokenizer:
        try:
            return self._read_tokenizer()
        except Exception:
            discard(self._export)
            self._export = self._remake()
            return self._read_tokenizer()

    def _read_tokenizer(self) -> ClipTokenizer:
        from pixsift.models.clip_tokenizer import ClipTokenizer

        folder = self._export.folder
        known = folder / KNOWN_WORDS if KNOWN_WORDS in self._export.files else None  # older exports: none
        return ClipTokenizer.from_file(folder / TOKENIZER, self._export.context_length, known)

    def _torch(self) -> Any:
        if self._fallback is None:
            lead = f"{self.record.spec.describe()} has no ONNX export for this: use"
            raise ModelError(f"{lead} engine='torch'.", command_line=f"{lead} --engine torch.")
        return self._fallback()


def _fingerprint_in(folder: Path) -> str | None:
    """The weights fingerprint an export folder holds now, or None if it cannot be read."""
    try:
        return str(json.loads((folder / META).read_text(encoding="utf-8"))["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
