"""How long a search filter takes to become the list of allowed ids, on a large library.

    python benchmarks/filters.py [--size 200000] [--workdir /tmp/pixsift-ann-bench] [--rounds 3]

Every filtered search first asks the catalog for the ids its filters allow (one SQLite query),
then lets FAISS search among them; on a large library with a filter that keeps most images,
that query can cost more than the search itself. This fills (once, kept in --workdir) a
library of synthetic vectors as `ann.py` does, then times `Catalog.ids_matching` for a few
filters and prints the best of --rounds. Run it with PYTHONPATH pointing at another checkout's
`src` to compare two versions on the same library.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ann import library_for  # the benchmarks' folder is on the path when run as a script
from pixsift.storage import Catalog
from pixsift.storage.records import ImageCriteria

FILTERS: dict[str, dict[str, Any]] = {
    "format JPEG (every image)": {"formats": ("JPEG",)},
    "at least 100 wide (every image)": {"min_width": 100},
    "one folder of four": {"folder": "/synthetic/0001"},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=200_000, help="vectors in the library")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixsift-ann-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = library_for(args.workdir, args.size)
    catalog = Catalog.open(folder / "library.db")
    try:
        print(f"{args.size:,} images; best of {args.rounds} rounds")
        print(f"{'filter':34s} {'allowed ids':>12s} {'ms':>8s}")
        for label, arguments in FILTERS.items():
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                ids = catalog.ids_matching(ImageCriteria(**arguments))
                times.append(time.perf_counter() - started)
            print(f"{label:34s} {len(ids):12,d} {min(times) * 1000:8.1f}")
    finally:
        catalog.close()


if __name__ == "__main__":
    main()
