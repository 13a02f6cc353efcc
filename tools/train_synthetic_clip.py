"""Train the shipped `synthetic-tiny` CLIP on the synthetic world, on a CPU, in minutes.

It uses open_clip's own `CLIP` class (built from `synthetic-tiny.json`), open_clip's tokenizer,
preprocessing and contrastive loss (`ClipLoss`), so the checkpoint loads like any open_clip
model. Reproducible from a seed:

    python tools/train_synthetic_clip.py --seed 0        # writes src/pixsift/models/builtin/

Scenes for training come from seed S and for validation from seed S + 1; the quality tests
use seeds far from both, so they always measure unseen images.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN = Path(__file__).resolve().parents[1] / "src" / "pixsift" / "models" / "builtin"
CONFIG = BUILTIN / "synthetic-tiny.json"


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own batches and learning-rate schedule."""

    name: str
    steps: int
    per_kind: int  # a batch holds this many images of each of the 48 colour-and-shape kinds
    lr: float
    warmup: int


# Two phases: first learn every attribute (two images of a kind per batch differ in count, size,
# place and background, so the longer captions must be told apart), then focus on colour and
# shape with one image per kind, which is what most sharpens image-to-image similarity.
PHASES = (
    Phase("all attributes", steps=1500, per_kind=2, lr=1e-3, warmup=50),
    Phase("colour and shape", steps=4500, per_kind=1, lr=3e-4, warmup=20),
)


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    images: int = 20_000  # rendered once, then each step draws a batch and a fresh phrasing
    phases: tuple[Phase, ...] = PHASES
    weight_decay: float = 0.1


def build_model(seed: int) -> tuple[Any, Any, Any]:
    """A randomly initialised `synthetic-tiny` CLIP, its eval preprocessing and its tokenizer."""
    import open_clip
    import torch

    open_clip.add_model_config(CONFIG)  # registered under the file's stem, "synthetic-tiny"
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # "no pretrained weights loaded": we are about to train them
    try:
        model, _, preprocess = open_clip.create_model_and_transforms("synthetic-tiny")
    finally:
        logging.disable(logging.NOTSET)
    return model, preprocess, open_clip.get_tokenizer("synthetic-tiny")


def render_pool(count: int, seed: int, preprocess: Any, image_size: int) -> tuple[Any, list[Any]]:
    """`count` scenes rendered and preprocessed exactly as the indexer would see them.

    Scenes are drawn at twice the model's input size and reduced by open_clip's own transform,
    as a photo would be; pixels are kept in fp16 to halve the memory of the pool.
    """
    import torch

    from pixsift.synthetic import render_scene, sample_scenes

    scenes = list(sample_scenes(count, seed))
    pixels = torch.empty((count, 3, image_size, image_size), dtype=torch.float16)
    for i, scene in enumerate(scenes):
        pixels[i] = preprocess(render_scene(scene, 2 * image_size)).half()
    return pixels, scenes


def tokenize_captions(scenes: list[Any], tokenizer: Any) -> Any:
    """Every phrasing of every scene, tokenized once: shape (scenes, phrasings, context)."""
    import torch

    from pixsift.synthetic import caption_variants

    return torch.stack([tokenizer(caption_variants(scene)) for scene in scenes])


def kind_indices(scenes: list[Any]) -> list[Any]:
    """For each colour-and-shape kind, the pool indices of its scenes."""
    import torch

    kinds: dict[tuple[str, str], list[int]] = {}
    for i, scene in enumerate(scenes):
        kinds.setdefault((scene.colour, scene.shape), []).append(i)
    return [torch.tensor(indices) for _, indices in sorted(kinds.items())]


def balanced_batch(kinds: list[Any], per_kind: int, generator: Any) -> Any:
    """`per_kind` random images of every kind.

    With uniform sampling a batch of 256 holds about five images of each kind, and a caption such
    as "a red circle" then truly describes four images the contrastive loss counts as wrong.
    Balanced batches keep such false negatives to `per_kind - 1` per caption, while the images
    of one kind still differ in count, size, place and background for the longer captions.
    """
    import torch

    picks = [indices[torch.randint(len(indices), (per_kind,), generator=generator)] for indices in kinds]
    return torch.cat(picks)


def learning_rate(step: int, phase: Phase) -> float:
    """Linear warm-up, then cosine decay to zero, within one phase."""
    if step < phase.warmup:
        return phase.lr * (step + 1) / phase.warmup
    progress = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
    return phase.lr * 0.5 * (1 + math.cos(math.pi * progress))


def colour_shape_accuracy(model: Any, pixels: Any, scenes: list[Any], tokenizer: Any) -> float:
    """Zero-shot accuracy of naming each image's colour and shape (48 classes, chance 2%)."""
    import torch

    from pixsift.synthetic import COLOURS, SHAPES

    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    with torch.inference_mode():
        texts = model.encode_text(tokenizer([f"a {c} {s}" for c, s in classes]), normalize=True)
        images = model.encode_image(pixels.float(), normalize=True)
    predicted = (images @ texts.T).argmax(dim=1).tolist()
    hits: int = sum(classes[p] == (s.colour, s.shape) for p, s in zip(predicted, scenes, strict=True))
    return hits / len(scenes)


def train(settings: TrainSettings, out: Path) -> dict[str, Any]:
    """Train through every phase, report progress, save fp16 weights to `out`; returns a summary."""
    import torch
    from open_clip.loss import ClipLoss

    model, preprocess, tokenizer = build_model(settings.seed)
    size = int(model.visual.image_size[0])
    started = time.perf_counter()
    pixels, scenes = render_pool(settings.images, settings.seed, preprocess, size)
    tokens = tokenize_captions(scenes, tokenizer)
    val_pixels, val_scenes = render_pool(960, settings.seed + 1, preprocess, size)
    print(f"rendered {len(scenes)} + {len(val_scenes)} scenes in {time.perf_counter() - started:.0f} s")

    generator = torch.Generator().manual_seed(settings.seed)
    kinds = kind_indices(scenes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=settings.weight_decay)
    loss_fn = ClipLoss()
    for phase in settings.phases:
        print(f"phase: {phase.name}, {phase.steps} steps of {phase.per_kind * len(kinds)} images")
        for step in range(phase.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, phase)
            batch = balanced_batch(kinds, phase.per_kind, generator)
            phrasing = torch.randint(tokens.shape[1], (len(batch),), generator=generator)
            model.train()
            image_features, text_features, logit_scale = model(
                pixels[batch].float(), tokens[batch, phrasing]
            )[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP's clamp: a temperature above 100 makes training unstable
                model.logit_scale.clamp_(0, math.log(100))
            if step % 250 == 0 or step == phase.steps - 1:
                model.eval()
                accuracy = colour_shape_accuracy(model, val_pixels, val_scenes, tokenizer)
                elapsed = time.perf_counter() - started
                report = f"  step {step:4d}  loss {loss.item():.3f}  colour+shape accuracy {accuracy:.3f}"
                print(f"{report}  {elapsed:.0f} s", flush=True)
    model.eval()
    summary = {
        "seed": settings.seed,
        "images": settings.images,
        "phases": [vars(phase) for phase in settings.phases],
        "validation_colour_shape_accuracy": colour_shape_accuracy(model, val_pixels, val_scenes, tokenizer),
        "train_seconds": round(time.perf_counter() - started),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensor.half() for name, tensor in model.state_dict().items()}, out)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    defaults = TrainSettings()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--images", type=int, default=defaults.images)
    parser.add_argument("--out", type=Path, default=BUILTIN / "synthetic-tiny.pt")
    args = parser.parse_args()
    settings = TrainSettings(seed=args.seed, images=args.images)
    summary = train(settings, args.out)
    size_mb = args.out.stat().st_size / 1e6
    print(json.dumps({**summary, "checkpoint": str(args.out), "checkpoint_mb": round(size_mb, 2)}, indent=2))


if __name__ == "__main__":
    main()
