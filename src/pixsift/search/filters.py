"""Which images a search may return: one small record shared by every kind of query.

Filters are turned into the set of allowed image ids by one SQLite query, and FAISS searches
only among those ids (an ID selector), so a filter never truncates results: asking for `k`
images returns `k` whenever at least `k` images match.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pixsift.errors import QueryError

# Format names a user may write for Pillow's: "jpg" is a JPEG, and a phone's multi-picture
# JPEG (Pillow's "MPO") is a JPEG to anyone asking for JPEGs.
_FORMAT_ALIASES = {"JPG": ("JPEG", "MPO"), "JPEG": ("JPEG", "MPO"), "TIF": ("TIFF",), "HEIC": ("HEIF",)}


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions on the images a search returns; every field left empty allows everything.

    `under`: a folder (recursively); `formats`: image formats such as "JPEG" or "png";
    `min_width`, `min_height`: the smallest size in pixels, as displayed.
    """

    under: str | None = None
    formats: tuple[str, ...] = field(default=())
    min_width: int | None = None
    min_height: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise QueryError(f"Filter {name} must be a whole number of pixels of at least 1.")
        object.__setattr__(self, "formats", tuple(self.formats))
        for name in self.formats:
            if not isinstance(name, str) or not name.strip() or not name.strip().isalnum():
                raise QueryError(f"Filter format {name!r} is not an image format name such as JPEG.")

    @property
    def is_empty(self) -> bool:
        return self.under is None and not self.formats and self.min_width is None and self.min_height is None

    def format_names(self) -> tuple[str, ...]:
        """The formats as the catalog stores them (Pillow's upper-case names, aliases expanded)."""
        names: list[str] = []
        for name in self.formats:
            upper = name.strip().upper()
            names.extend(_FORMAT_ALIASES.get(upper, (upper,)))
        return tuple(dict.fromkeys(names))

    def with_under(self, under: str | None) -> SearchFilters:
        return replace(self, under=under)
