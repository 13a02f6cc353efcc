"""Models that ship inside pixsift, usable offline by name (`--model synthetic-tiny`).

A bundled model is stored in a library as its name, the tag `bundled` and its architecture,
never as a path into the installed package, so a library keeps working when pixsift is
reinstalled elsewhere; the weights fingerprint still tells if the shipped weights change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pixsift.models.spec import BUNDLED_TAG, ModelSpec

_FOLDER = Path(__file__).with_name("builtin")


@dataclass(frozen=True)
class BundledModel:
    name: str
    summary: str

    @property
    def config(self) -> Path:
        return _FOLDER / f"{self.name}.json"

    @property
    def checkpoint(self) -> Path:
        return _FOLDER / f"{self.name}.pt"


BUNDLED_MODELS: dict[str, BundledModel] = {
    "synthetic-tiny": BundledModel(
        "synthetic-tiny",
        "a small CLIP trained on pixsift's synthetic world of coloured shapes (offline demo, tests)",
    ),
}


def bundled_spec(name: str) -> ModelSpec:
    """The spec of the bundled model `name` with its own weights."""
    config = json.loads(BUNDLED_MODELS[name].config.read_text(encoding="utf-8"))
    return ModelSpec(name, BUNDLED_TAG, config_json=json.dumps(config, sort_keys=True))


def bundled_checkpoint(name: str) -> Path | None:
    """Where the bundled model `name` keeps its weights, or None if there is no such model."""
    model = BUNDLED_MODELS.get(name)
    return model.checkpoint if model is not None else None
