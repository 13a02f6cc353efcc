"""What a model is, as stored in a library: a name, its weights and, once loaded, its identity.

Kept free of torch and open_clip imports so that reading a library's model stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
BUNDLED_TAG = "bundled"  # the `pretrained` of a model whose weights ship with pixsift


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user named it, resolved to something that can be loaded again later.

    `name` is an open_clip architecture name, the absolute path of a model-config JSON, or
    the name of a bundled model (`synthetic-tiny`, with its own weights or a checkpoint file);
    `pretrained` is an open_clip pretrained tag, the absolute path of a checkpoint file, or
    `bundled` for the weights of a model that ships with pixsift (`synthetic-tiny`).
    For config-file models `config_json` keeps the architecture itself, so the library does
    not depend on the config file staying where it was.
    """

    name: str
    pretrained: str
    config_json: str | None = None

    @property
    def weights_are_file(self) -> bool:
        return self.config_json is not None or Path(self.pretrained).is_absolute()

    @property
    def is_bundled(self) -> bool:
        return self.pretrained == BUNDLED_TAG and self.config_json is not None

    def describe(self) -> str:
        return f"{self.name} ({self.pretrained})"

    def same_model(self, other: ModelSpec) -> bool:
        """Whether `other` is this model: for one given by its config, the same architecture
        and weights whatever the config was called or wherever it was (libraries made before
        pixsift named a bundled architecture with other weights by name hold its path)."""
        if self.config_json is not None and other.config_json is not None:
            return (self.config_json, self.pretrained) == (other.config_json, other.pretrained)
        return self == other


@dataclass(frozen=True)
class ModelRecord:
    """A loaded model's identity: the spec plus what only loading tells (dimension, weights)."""

    spec: ModelSpec
    embed_dim: int
    fingerprint: str

    def describe(self) -> str:
        return f"{self.spec.describe()}, {self.embed_dim}-d, weights {self.fingerprint}"
