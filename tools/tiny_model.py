"""A tiny, randomly initialised CLIP (tools/tiny-clip.json) for pipeline tests and the demo.

Its rankings mean nothing, but it runs every part of pixsift (open_clip model, tokenizer,
preprocessing, FAISS, SQLite) in a fraction of a second and needs no download:

    python tools/tiny_model.py OUT.pt --seed 0
    pixsift index PHOTOS --model tools/tiny-clip.json --pretrained OUT.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

TINY_CONFIG = Path(__file__).with_name("tiny-clip.json")


def make_checkpoint(path: Path, seed: int = 0, config: Path = TINY_CONFIG) -> Path:
    """Random weights for the architecture in `config` (the tiny one by default), the same for
    the same seed: also the chance-level baseline for a trained model of that architecture."""
    import open_clip
    import torch

    open_clip.add_model_config(config)  # registered under the file's stem, e.g. "tiny-clip"
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: that is the point
    try:
        model = open_clip.create_model(config.stem)
    finally:
        logging.disable(logging.NOTSET)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {make_checkpoint(args.out, args.seed)}")


if __name__ == "__main__":
    main()
