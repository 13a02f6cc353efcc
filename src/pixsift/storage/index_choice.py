"""Which FAISS index suits a library: a pure function of its size and a memory budget.

Exact search is best while it is cheap: below `flat_max` vectors (default 20,000) a flat
index answers in about a millisecond and is never wrong. In the middle, HNSW (a graph over
the full vectors) is fast and accurate but keeps every float, so it is chosen only while it
fits the memory budget. Beyond, IVF-PQ with an OPQ rotation stores each vector as a few dozen
bytes; its losses are won back by re-ranking the candidates exactly from the stored vectors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from pixsift.errors import InvalidOptionError, QueryError

GIB = 1024**3
DEFAULT_MEMORY_BUDGET = 2 * GIB
DEFAULT_RECALL_TARGET = 0.95
HNSW_M = 32  # graph links per vector: the usual balance of recall, speed and memory
HNSW_EF_CONSTRUCTION = 64
PQ_BYTES_MAX = 64  # sub-quantizers of the PQ code: 64 bytes per vector at 8 bits each
MIN_TRAIN_PER_CENTROID = 39  # FAISS's k-means asks for at least this many points per centroid
TRAIN_SAMPLE_MAX = 100_000  # training on more barely helps and costs minutes
RERANK_FACTOR = 10  # PQ candidates per wanted result, re-ranked exactly


class IndexKind(StrEnum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


@dataclass(frozen=True)
class IndexThresholds:
    """Size limits between the index kinds; tests lower them to reach HNSW or IVF-PQ quickly."""

    flat_max: int = 20_000  # at most this many vectors: exact search
    hnsw_max: int = 500_000  # above this, IVF-PQ even when HNSW would fit the budget
    drift_factor: float = 2.0  # rebuild when the count has grown (or shrunk) this much
    exact_filter_max: int = 5_000  # a filter leaving at most this many images ranks them exactly
    # Change-log entries a catch-up applies per hold of the search lock (whole generations, so
    # more if one generation has more): about 0.3 s of additions to an HNSW graph of 512-d
    # vectors on two cores with searches going on, which is what a search may wait.
    catch_up_slice: int = 1_000

    def __post_init__(self) -> None:
        if self.catch_up_slice < 1:
            raise InvalidOptionError(f"catch_up_slice must be at least 1, not {self.catch_up_slice}.")


@dataclass(frozen=True)
class IndexPlan:
    """The index to build and its build parameters (search parameters are tuned later)."""

    kind: IndexKind
    hnsw_m: int = 0
    nlist: int = 0  # IVF cells
    pq_m: int = 0  # PQ sub-quantizers (bytes per code when pq_bits is 8)
    pq_bits: int = 0
    train_size: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "hnsw_m": self.hnsw_m,
            "nlist": self.nlist,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "train_size": self.train_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> IndexPlan:
        names = ("hnsw_m", "nlist", "pq_m", "pq_bits", "train_size")
        ints = {name: int(str(data.get(name, 0))) for name in names}
        return cls(IndexKind(str(data["kind"])), **ints)


def flat_bytes(count: int, dim: int) -> int:
    """Memory of a flat index: every float, plus its 8-byte id."""
    return count * (4 * dim + 8)


def hnsw_bytes(count: int, dim: int, m: int = HNSW_M) -> int:
    """Memory of HNSW over full vectors: the floats, ~2*M links of 4 bytes on level 0, ids."""
    return count * (4 * dim + 2 * m * 4 + 8 + 8)


def choose_index(
    count: int,
    dim: int,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    thresholds: IndexThresholds | None = None,
    forced: IndexKind | None = None,
) -> IndexPlan:
    """The index for `count` vectors of `dim` floats within `memory_budget` bytes.

    `forced` picks the kind regardless of size (its parameters still follow the size).
    """
    limits = thresholds or IndexThresholds()
    kind = forced or _auto_kind(count, dim, memory_budget, limits)
    if kind is IndexKind.flat:
        return IndexPlan(IndexKind.flat)
    if kind is IndexKind.hnsw:
        return IndexPlan(IndexKind.hnsw, hnsw_m=HNSW_M)
    return ivfpq_plan(count, dim)


def _auto_kind(count: int, dim: int, budget: int, limits: IndexThresholds) -> IndexKind:
    if count <= limits.flat_max and flat_bytes(count, dim) <= budget:
        return IndexKind.flat
    if count <= limits.hnsw_max and hnsw_bytes(count, dim) <= budget:
        return IndexKind.hnsw
    return IndexKind.ivfpq


def ivfpq_plan(count: int, dim: int) -> IndexPlan:
    """IVF with about 4*sqrt(n) cells and a PQ code of up to 64 bytes, sized to what the
    training sample can support (k-means wants ~39 points per centroid)."""
    train = max(1, min(count, TRAIN_SAMPLE_MAX))
    nlist = max(1, min(int(4 * math.sqrt(max(count, 1))), train // MIN_TRAIN_PER_CENTROID))
    pq_m = _largest_divisor_at_most(dim, min(PQ_BYTES_MAX, max(1, dim // 4)))
    bits = max(1, min(8, int(math.log2(max(2, train // MIN_TRAIN_PER_CENTROID)))))
    return IndexPlan(IndexKind.ivfpq, nlist=nlist, pq_m=pq_m, pq_bits=bits, train_size=train)


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return max(d for d in range(1, max(1, limit) + 1) if number % d == 0)


def drifted(trained_count: int, count: int, thresholds: IndexThresholds | None = None) -> bool:
    """Whether an index trained for `trained_count` vectors no longer suits `count`."""
    factor = (thresholds or IndexThresholds()).drift_factor
    base = max(trained_count, 1)
    return count > base * factor or count * factor < base


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory_budget(text: str) -> int:
    """Bytes for a size such as "2GB", "512M", "1.5GiB" or "1000000" (units are powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise QueryError(f"Memory budget {text!r} is not a size such as 2GB or 512MB.")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1024**2:
        raise QueryError(f"Memory budget {text!r} is too small: give at least 1MB.")
    return int(value)
