"""Models: naming them, finding their weights, and embedding images and texts with them."""

from pixsift.models.embedder import Embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelRecord, ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "Embedder",
    "ModelRecord",
    "ModelSpec",
    "resolve_model_spec",
]
