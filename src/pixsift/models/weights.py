"""Finding a model's weights on disk: a local checkpoint, the hub cache, or a download.

open_clip downloads a pretrained tag from the Hugging Face hub itself, but when the hub cannot
be reached it retries for most of a minute before failing with a long traceback. pixsift looks
in the hub cache first (no network at all when the weights are there), then checks that the
hub answers within a few seconds before downloading, and otherwise fails at once with a message
that names the model and says how to use a local checkpoint instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsift.errors import ModelError
from pixsift.models.bundled import bundled_checkpoint
from pixsift.models.spec import ModelSpec

HUB_PROBE_TIMEOUT_S = 5.0
_DEFAULT_HUB_FILENAME = "open_clip_pytorch_model.bin"


@dataclass(frozen=True)
class Weights:
    """A checkpoint file, plus the preprocessing its pretrained tag prescribes (mean, std, ...)."""

    path: Path
    preprocess: dict[str, Any] = field(default_factory=dict)


def resolve_weights(spec: ModelSpec) -> Weights:
    """A local checkpoint for `spec`, downloading a pretrained tag into the hub cache if needed."""
    if spec.is_bundled:
        return Weights(_bundled_weights(spec))
    if spec.weights_are_file:
        path = Path(spec.pretrained)
        if not path.is_file():
            lead = f"The checkpoint {path} for model {spec.name} is missing. Put it back, or re-embed"
            raise ModelError(
                f"{lead} the library with another model (index(model=..., reembed=True)).",
                command_line=f"{lead} the library with another model (pixsift index --reembed --model ...).",
            )
        return Weights(path)

    import open_clip

    tag_cfg: dict[str, Any] = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none"
        raise ModelError(
            f"Unknown pretrained tag {spec.pretrained!r} for model {spec.name} "
            f"(known tags: {tags}). Give a tag or the path of a checkpoint file."
        )
    return Weights(_fetch_tag(spec, tag_cfg), preprocess=tag_cfg)


def _bundled_weights(spec: ModelSpec) -> Path:
    path = bundled_checkpoint(spec.name)
    if path is None or not path.is_file():
        lead = (
            f"This pixsift installation has no bundled model {spec.name!r}: install the pixsift "
            "version the library was indexed with, or re-embed it"
        )
        raise ModelError(
            f"{lead} (index(model=..., reembed=True)).",
            command_line=f"{lead} (pixsift index --reembed --model ...).",
        )
    return path


def _fetch_tag(spec: ModelSpec, tag_cfg: dict[str, Any]) -> Path:
    hub_id = tag_cfg.get("hf_hub", "")
    if not hub_id:
        return _download_from_url(spec, tag_cfg)
    repo_id, filename = os.path.split(hub_id)
    filename = filename or _DEFAULT_HUB_FILENAME
    cached = _cached_hub_file(repo_id, filename)
    if cached is not None:
        return cached
    _check_hub_reachable(spec, repo_id, filename)
    import open_clip

    try:
        return Path(open_clip.download_pretrained(tag_cfg))
    except Exception as exc:  # network, disk or hub errors all end the same way for the user
        raise _unavailable(spec, f"download failed: {exc}") from exc


def _hub_candidates(filename: str) -> list[str]:
    """The file names open_clip would load for a hub entry, safetensors first as it prefers."""
    stem, suffix = os.path.splitext(filename)
    if suffix in (".bin", ".pth", ".pt"):
        safe = "open_clip_model.safetensors" if filename == _DEFAULT_HUB_FILENAME else f"{stem}.safetensors"
        return [safe, filename]
    return [filename]


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for candidate in _hub_candidates(filename):
        found = try_to_load_from_cache(repo_id, candidate)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _check_hub_reachable(spec: ModelSpec, repo_id: str, filename: str) -> None:
    """One request with a short timeout and no retries, so an offline machine fails at once."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if constants.is_offline_mode():
        raise _unavailable(spec, "HF_HUB_OFFLINE is set")
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # DNS, refused, timeout, proxy, HTTP error: the hub is not usable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _unavailable(spec, f"the hub did not answer: {reason}") from exc


def _download_from_url(spec: ModelSpec, tag_cfg: dict[str, Any]) -> Path:
    import open_clip

    try:
        return Path(open_clip.download_pretrained(tag_cfg, prefer_hf_hub=False))
    except Exception as exc:
        raise _unavailable(spec, f"download failed: {exc}") from exc


def _unavailable(spec: ModelSpec, reason: str) -> ModelError:
    lead = (
        f"Cannot get the weights of {spec.describe()}: they are not in the local cache and "
        f"{reason}. Connect to the internet once to download them, or use a local checkpoint:"
    )
    return ModelError(
        f"{lead} model={spec.name!r}, pretrained='/path/to/checkpoint.bin'",
        command_line=f"{lead} --model {spec.name} --pretrained /path/to/checkpoint.bin",
    )
