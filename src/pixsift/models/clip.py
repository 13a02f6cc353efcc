"""CLIP models through open_clip: loading, identity, and embedding images and texts.

torch and open_clip take seconds to import, so this module imports them only when a model is
actually loaded; nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pixsift.colour import to_srgb
from pixsift.errors import ModelError
from pixsift.models.devices import check_device, check_device_present
from pixsift.models.embedder import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from pixsift.models.oom import MemoryBackOff
from pixsift.models.pixels import PixelConfig, long_and_thin, resize_and_crop
from pixsift.models.pixels import preprocess as preprocess_pixels
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.models.weights import resolve_weights

if TYPE_CHECKING:
    import torch
    from PIL.ImageCms import ImageCmsTransform

_FINGERPRINT_SAMPLES = 512  # values sampled per tensor: enough to tell any two trainings apart
_TAG_PREPROCESS_KEYS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


class ClipEmbedder:
    """An open_clip CLIP model in inference mode on one device."""

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        device: torch.device,
        record: ModelRecord,
        weights_path: Path | None = None,
    ) -> None:
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._device = device
        self._record = record
        self.weights_path = weights_path  # the checkpoint file it was loaded from
        size = model.visual.image_size
        self._image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        # On a GPU, decode workers only resize and crop (Pillow, outside the GIL) and the GPU
        # scales and normalises: torch's CPU ops in a dozen decode threads at once contend for
        # the GIL and its thread pool, and uint8 pixels are a quarter of the bytes to copy.
        # A model whose transform these steps cannot reproduce keeps open_clip's own.
        preprocess_cfg: dict[str, Any] = dict(getattr(model.visual, "preprocess_cfg", None) or {})
        on_gpu = device.type == "cuda" and bool(preprocess_cfg)
        self._gpu_pixels = PixelConfig.from_open_clip(preprocess_cfg) if on_gpu else None
        # open_clip's transform resizes the whole image before cropping its centre: for a long
        # thin one, gigabytes. Such images take these steps, which resize the centre alone.
        self._pixels = PixelConfig.from_open_clip(preprocess_cfg) if preprocess_cfg else None
        # A batch too large for the GPU's memory is split rather than ending the run (oom.py).
        self._image_backoff = MemoryBackOff(str(device), "image")
        self._text_backoff = MemoryBackOff(str(device), "text")

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "auto") -> ClipEmbedder:
        """Load `spec` (downloading tagged weights on first use) onto `device`."""
        weights = resolve_weights(spec)
        torch_device = resolve_device(device)
        import open_clip

        name = _registered_name(spec)
        overrides = {
            kwarg: weights.preprocess[key]
            for key, kwarg in _TAG_PREPROCESS_KEYS.items()
            if key in weights.preprocess
        }
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=str(weights.path), **overrides
            )
        except Exception as exc:  # a checkpoint that does not fit the architecture, a bad file
            raise _load_error(spec, weights.path, exc) from exc
        model.eval()
        record = ModelRecord(
            spec,
            embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
            fingerprint=weights_fingerprint(model),
        )
        tokenizer = open_clip.get_tokenizer(name)
        return cls(model.to(torch_device), preprocess, tokenizer, torch_device, record, weights.path)

    @property
    def record(self) -> ModelRecord:
        return self._record

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def model(self) -> Any:
        """The open_clip model itself (for exporting it to other engines)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return GPU_BATCH_SIZE if self._device.type == "cuda" else CPU_BATCH_SIZE

    def preprocess(self, image: Image.Image, colours: ImageCmsTransform | None = None) -> Any:
        """`image` (RGB) to the model's input; `colours`, when not None, converts it to sRGB."""
        if self._gpu_pixels is not None:
            return resize_and_crop(image, self._gpu_pixels, colours)
        if self._pixels is not None and (colours is not None or long_and_thin(image.size)):
            # open_clip's transform goes from the image to floats in one call, leaving no
            # point at which to convert colours on the resized pixels: these steps do.
            return preprocess_pixels(image, self._pixels, colours)
        if colours is not None:  # a transform these steps cannot reproduce: convert first
            image = to_srgb(image, colours)
        return self._preprocess(image)

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        if self._device.type == "cuda":
            return self._image_backoff.embed(self._embed_images, batch)
        return self._embed_images(batch)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._device.type == "cuda":
            return self._text_backoff.embed(self._embed_texts, texts)
        return self._embed_texts(texts)

    def _embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        if self._gpu_pixels is not None:
            pixels = torch.from_numpy(np.stack(batch))  # uint8 (n, size, size, 3)
        else:
            pixels = torch.stack([torch.as_tensor(item) for item in batch])
        if self._device.type == "cuda":
            # Page-locked memory lets the copy run asynchronously, overlapped with the GPU.
            pixels = pixels.pin_memory()
        pixels = pixels.to(self._device, non_blocking=True)
        with torch.inference_mode():
            if self._gpu_pixels is not None:
                pixels = normalised_on_device(pixels, self._gpu_pixels)
            with self._autocast():
                features = self._model.encode_image(pixels, normalize=True)
        return np.asarray(features.float().cpu().numpy(), dtype=np.float32)

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(list(texts)).to(self._device)
        with torch.inference_mode(), self._autocast():
            features = self._model.encode_text(tokens, normalize=True)
        return np.asarray(features.float().cpu().numpy(), dtype=np.float32)

    def _autocast(self) -> Any:
        """fp16 (bf16 where the GPU has it) on CUDA, where it is several times faster than
        fp32 and the vectors stay within rounding of it; nothing on the CPU."""
        import torch

        if self._device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)


def normalised_on_device(pixels: torch.Tensor, config: PixelConfig) -> torch.Tensor:
    """uint8 (n, h, w, 3), as `resize_and_crop` makes them, to the model's float input on the
    tensor's own device: the steps `pixels.preprocess` takes after the resize, in fp32."""
    import torch

    mean = torch.tensor(config.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=pixels.device).view(1, 3, 1, 1)
    scaled = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    return scaled.sub_(mean).div_(std).contiguous()


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when torch sees a GPU, else the CPU; anything else is taken as asked."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_present(check_device(device))
    return torch.device(device)


def weights_fingerprint(model: Any) -> str:
    """A short hash of the weights, from an evenly spaced sample of every tensor.

    Sampling keeps it to milliseconds for a 600 MB model, and it depends on the values only,
    not on the checkpoint's file name, format or location.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
        sample = flat[::step].to(device="cpu", dtype=torch.float32).numpy()
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def _registered_name(spec: ModelSpec) -> str:
    """The open_clip registry name for `spec`, registering a config-file architecture first.

    The architecture is registered under a name derived from its content, so two configs can
    never collide with each other or with open_clip's own names. open_clip reads the file once
    into its registry, so the temporary copy is removed straight away.
    """
    if spec.config_json is None:
        return spec.name
    import open_clip

    name = "pixsift-" + hashlib.sha256(spec.config_json.encode()).hexdigest()[:16]
    if name not in open_clip.list_models():
        with tempfile.TemporaryDirectory(prefix="pixsift-model-") as folder:
            config_file = Path(folder) / f"{name}.json"
            config_file.write_text(spec.config_json, encoding="utf-8")
            open_clip.add_model_config(config_file)
    return name


_ANOTHER_MODEL = "they were made for another model."


def _load_error(spec: ModelSpec, checkpoint: Path, exc: Exception) -> ModelError:
    """The error for a checkpoint open_clip could not load; weights of another architecture
    are told which argument names the architecture, as the face the user reached calls it."""
    lead = f"Cannot load {spec.describe()}: {_load_failure(checkpoint, exc)}"
    if not lead.endswith(_ANOTHER_MODEL):
        return ModelError(lead)
    return ModelError(
        f"{lead} Give model the architecture they were trained as.",
        command_line=f"{lead} Give --model the architecture they were trained as.",
    )


def _load_failure(checkpoint: Path, exc: Exception) -> str:
    """Why open_clip could not load `checkpoint`, in words a user can act on.

    open_clip reads the file and fits it to the architecture in one call, and either step fails
    in many ways (a bare EOFError for an empty file, a KeyError's number for a text file, a list
    of hundreds of keys, or an assertion about position embeddings, for another model's
    weights): on failure only, the file is read again on its own to tell which step it was.
    """
    from open_clip.factory import load_state_dict

    if isinstance(exc, (MemoryError, OSError)):  # the machine, not the file
        return _first_line(exc)
    try:
        empty = checkpoint.stat().st_size == 0
        load_state_dict(str(checkpoint))
    except Exception as unreadable:
        what = "the file is empty" if empty else _shortened(_first_line(unreadable))
        return (
            f"the checkpoint cannot be read ({what}): it may be cut short or damaged, or be no "
            "PyTorch or safetensors file."
        )
    return (
        f"the checkpoint's weights do not fit the model's architecture ({_shortened(_mismatch(exc))}): "
        f"{_ANOTHER_MODEL}"
    )


def _mismatch(exc: Exception) -> str:
    """The first particular of torch's "Error(s) in loading state_dict" (its first line is a
    heading), or the first line of any other error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return lines[1]
    return lines[0] if lines else type(exc).__name__


def _shortened(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip(" ,") + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
