"""Search results as plain, immutable records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SearchResult:
    """One ranked image. `score` is the cosine similarity between query and image vectors."""

    rank: int
    score: float
    id: int
    path: Path
    width: int | None = None
    height: int | None = None
    format: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The stable machine-readable form of `--format json`: every field, as the HTTP
        service's results have them (width, height and format are null when not known)."""
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": str(self.path),
            "id": self.id,
            "width": self.width,
            "height": self.height,
            "format": self.format,
        }
