"""Turning what the user typed (`--model`, `--pretrained`) into a `ModelSpec`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from pixsift.errors import ModelError, given_path
from pixsift.models.bundled import BUNDLED_MODELS, bundled_spec
from pixsift.models.spec import BUNDLED_TAG, DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelSpec

_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def resolve_model_spec(model: str | None = None, pretrained: str | None = None) -> ModelSpec:
    """Validate a model name or config path and its weights, without loading anything big.

    `model`: a model bundled with pixsift (`synthetic-tiny`), an open_clip architecture name
    (`ViT-B-32`) or the path of a model-config JSON in open_clip's format. `pretrained`: an
    open_clip pretrained tag, or a checkpoint file path.
    """
    refuse_empty_names(model, pretrained)
    model = model or DEFAULT_MODEL
    if model in BUNDLED_MODELS:
        if pretrained is None or pretrained == BUNDLED_TAG:
            return bundled_spec(model)
        # Its architecture with other weights: named as the user named it, not by the path of
        # its config inside the installed package (which `pixsift status` would show).
        return replace(_config_file_spec(BUNDLED_MODELS[model].config, pretrained), name=model)
    if _looks_like_path(model):
        return _config_file_spec(Path(model).expanduser(), pretrained, named=given_path(model))
    return _builtin_spec(model, pretrained)


def with_weights(spec: ModelSpec, pretrained: str) -> ModelSpec:
    """`spec`'s architecture with the weights `pretrained`: what weights named without a model
    mean to a library that has one. A user naming new weights means them for the library's own
    architecture; the default one (ViT-B-32) would swap the architecture behind their back.
    A model given by its config keeps that config, so the file it came from need not exist now."""
    refuse_empty_names(None, pretrained)
    if spec.name in BUNDLED_MODELS:
        return resolve_model_spec(spec.name, pretrained)
    if spec.config_json is not None:
        return ModelSpec(spec.name, str(_checkpoint_file(pretrained)), spec.config_json)
    return resolve_model_spec(spec.name, pretrained)


def refuse_empty_names(model: str | None, pretrained: str | None) -> None:
    """Refuse a model name or weights given empty (a script's unset "$MODEL"): read as left
    out, it would silently mean the default model, or "." as a checkpoint."""
    if isinstance(model, str) and not model.strip():
        rest = f"is empty: name one, e.g. {DEFAULT_MODEL} or synthetic-tiny, or leave"
        raise ModelError(
            f"The model name (model) {rest} it out for the default.",
            command_line=f"The model name (--model) {rest} the option out for the default.",
        )
    if isinstance(pretrained, str) and not pretrained.strip():
        rest = "are empty: give a pretrained tag or a checkpoint file, or leave"
        raise ModelError(
            f"The weights (pretrained) {rest} them out for the model's default.",
            command_line=f"The weights (--pretrained) {rest} the option out for the model's default.",
        )


def _exported_spec(model: str, pretrained: str | None) -> ModelSpec | None:
    """The spec `model`/`pretrained` names, if an ONNX export of it is cached.

    Such a spec was checked against open_clip when it was exported, and its checkpoint is
    unchanged since (`read_export` makes sure): checking it again would import open_clip and
    torch, seconds that an index run on the ONNX engine otherwise never pays.
    """
    from pixsift.models.onnx_export import read_export

    if pretrained is None:
        candidate = ModelSpec(model, DEFAULT_PRETRAINED)
    elif Path(pretrained).expanduser().is_file():
        candidate = ModelSpec(model, str(Path(pretrained).expanduser().resolve()))
    else:
        candidate = ModelSpec(model, pretrained)
    return candidate if read_export(candidate) is not None else None


def _looks_like_path(model: str) -> bool:
    return model.endswith(".json") or "/" in model or "\\" in model or Path(model).is_file()


def _config_file_spec(config_path: Path, pretrained: str | None, named: str | None = None) -> ModelSpec:
    """The spec of a model-config file; `named` is how messages name it (the path as the user
    wrote it, and where it was looked for: `given_path`), by default its path."""
    named = named or str(config_path)
    if not config_path.is_file():
        raise ModelError(f"Model config {named} not found.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"Model config {named} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not all(key in config for key in _CONFIG_KEYS):
        raise ModelError(
            f"Model config {named} is not an open_clip model config: it needs {', '.join(_CONFIG_KEYS)}."
        )
    if pretrained is None:
        lead = f"Model config {config_path.name} has no weights of its own: pass the checkpoint"
        raise ModelError(
            f"{lead} as pretrained='/path/to/checkpoint.pt'.",
            command_line=f"{lead} with --pretrained /path/to/checkpoint.pt",
        )
    return ModelSpec(
        name=str(config_path.resolve()),
        pretrained=str(_checkpoint_file(pretrained)),
        config_json=json.dumps(config, sort_keys=True),
    )


def _checkpoint_file(pretrained: str) -> Path:
    """The checkpoint file `pretrained` names, resolved: a model given by its config (a bundled
    one, a model-config JSON) takes its weights from a file, never by a tag."""
    checkpoint = Path(pretrained).expanduser()
    if checkpoint.is_dir():
        lead = f"Checkpoint {given_path(pretrained)} is a folder:"
        raise ModelError(
            f"{lead} pretrained takes a checkpoint file.",
            command_line=f"{lead} --pretrained takes a checkpoint file.",
        )
    if not checkpoint.is_file():
        lead = f"Checkpoint {given_path(pretrained)} not found. With a bundled model or a model-config file,"
        rest = (
            "takes the path of a checkpoint file (a tag such as "
            f"{DEFAULT_PRETRAINED} names weights of an open_clip model such as {DEFAULT_MODEL})."
        )
        raise ModelError(f"{lead} pretrained {rest}", command_line=f"{lead} --pretrained {rest}")
    return checkpoint.resolve()


def _builtin_spec(model: str, pretrained: str | None) -> ModelSpec:
    exported = _exported_spec(model, pretrained)
    if exported is not None:
        return exported
    import open_clip

    if model not in open_clip.list_models():
        raise ModelError(
            f"Unknown model {model!r}. Give an open_clip model name such as {DEFAULT_MODEL}, "
            f"a bundled model ({', '.join(BUNDLED_MODELS)}) or the path of a model-config JSON file."
        )
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        return ModelSpec(model, str(Path(pretrained).expanduser().resolve()))
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained is None:
        if not tags:
            lead = f"Model {model} has no published weights: pass a checkpoint"
            raise ModelError(f"{lead} as pretrained.", command_line=f"{lead} with --pretrained.")
        pretrained = DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in tags else tags[0]
    if not open_clip.get_pretrained_cfg(model, pretrained):
        raise ModelError(
            f"{pretrained!r} is neither a pretrained tag of {model} nor a checkpoint file. "
            f"Known tags: {', '.join(tags) or 'none'}."
        )
    return ModelSpec(model, pretrained)
