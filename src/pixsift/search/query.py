"""Combined queries: several texts or images, with weights and negatives, as one vector.

Each term is embedded and normalised, the terms are summed with their weights (negative for
what to avoid) and the sum is normalised again: late fusion on the query side, so a combined
query costs one index search, like a plain one.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pixsift.errors import InvalidPathError, QueryError
from pixsift.search.finite import is_finite, shown

# "W*TEXT": whatever stands before the first "*", when it is one word (no spaces), is a
# weight, and must be a positive number; "red car * 2" is text. A typo such as "abc*red" or
# "-0.5*red" is refused rather than searched for as text, which would look like it worked.
_WEIGHT_PREFIX = re.compile(r"^\s*([^\s*]+)\s*\*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class QueryTerm:
    """A text or an image (a file path) that pulls results towards it, with a weight.

    A negative weight pushes results away from it.
    """

    text: str | None = None
    image: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise QueryError("A query term is either a text or an image, not both or neither.")
        # A caller's number, bytes or list would otherwise fail deep inside as an AttributeError.
        if self.text is not None and not isinstance(self.text, str):
            raise QueryError(f"A query text must be a string, not {type(self.text).__name__}.")
        if self.image is not None and not isinstance(self.image, (str, os.PathLike)):
            raise QueryError(f"A query image must be a file path, not {type(self.image).__name__}.")
        if isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real):
            raise QueryError(f"A query weight must be a number, not {type(self.weight).__name__}.")
        if self.text is not None and is_blank_text(self.text):
            raise QueryError("A query text is empty.")
        if self.image is not None and not os.fspath(self.image).strip():  # not the working directory
            raise InvalidPathError("An image path is empty: name an image file.")
        if self.text is not None and not _encodable(self.text):
            raise QueryError("A query text holds characters that are not valid Unicode.")
        if not is_finite(self.weight):
            raise QueryError(f"A query weight must be a finite number, not {shown(self.weight)}.")

    def scaled(self, factor: float) -> QueryTerm:
        return QueryTerm(self.text, self.image, self.weight * factor)


def is_blank_text(text: str) -> bool:
    """Whether `text` holds nothing to search for: only white space, or only what CLIP's text
    cleaning drops (control characters, a byte-order mark). Searched for, such a text became
    the empty prompt, whose ranking means nothing, and looked like an answer."""
    if not text.strip():
        return True
    from pixsift.models.clip_tokenizer import clean  # imports ftfy only for unusual characters

    return not clean(text)


def _encodable(text: str) -> bool:
    """False for strings with lone surrogates (possible in JSON), which no tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_weighted_text(term: str) -> QueryTerm:
    """A text term, with an optional weight prefix: "sunset" or "0.5*sunset".

    The weight is a positive finite number (a negative one is what --minus is for) and text
    must follow it; QueryError otherwise.
    """
    match = _WEIGHT_PREFIX.match(term)
    if match is None:
        return QueryTerm(text=term)
    prefix, text = match.group(1), match.group(2).strip()
    try:
        weight = float(prefix)
    except ValueError:
        raise QueryError(
            f"{term!r}: {prefix!r} is not a weight. Write a weight as 0.5*text; to search for "
            f"this text as it is, weigh it: 1*{term.strip()}"
        ) from None
    if not (math.isfinite(weight) and weight > 0):
        raise QueryError(f"{term!r}: a weight must be a positive number, not {prefix}.")
    if not text:
        raise QueryError(f"{term!r}: the weight {prefix} is followed by no text.")
    return QueryTerm(text=text, weight=weight)


def as_terms(items: str | QueryTerm | Sequence[str | QueryTerm], sign: float) -> list[QueryTerm]:
    """Plain strings become text terms; every weight is multiplied by `sign` (+1 or -1).

    One term given alone (plus="sunset") is that term, not a term per character.
    """
    if isinstance(items, (str, QueryTerm)):
        items = [items]
    return [(item if isinstance(item, QueryTerm) else QueryTerm(text=item)).scaled(sign) for item in items]


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The normalised weighted sum of normalised vectors (one per row)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    total = (np.asarray(weights, dtype=np.float32)[:, None] * unit).sum(axis=0)
    length = float(np.linalg.norm(total))
    if length < 1e-6:
        raise QueryError("The query terms cancel each other out; change a weight or a term.")
    return np.asarray(total / length, dtype=np.float32)
