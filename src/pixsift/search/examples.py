"""Turning what a user gives as a query example into vectors: image ids, image files, image
bytes, texts and weighted terms, each to the vector the library would give it.

An indexed image (given by id, or as a file that is indexed and unchanged) uses its stored
vector, so asking for images like one already in the library costs no model call; anything
else is embedded, texts together in one call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from stat import S_ISREG
from typing import TYPE_CHECKING, TypeVar, Union

import numpy as np
from PIL import Image

from pixsift.errors import (
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidPathError,
    QueryError,
    given_path,
)
from pixsift.indexer.decode import check_header, describe_error, open_oriented
from pixsift.regular_file import open_regular
from pixsift.search.query import QueryTerm

if TYPE_CHECKING:
    from pixsift.models import Embedder
    from pixsift.storage import Catalog

# An example for `recommend` and `similar`: an image id, an image file (a Path, or a str for
# `similar`), a text (a str for `recommend`), an image's encoded bytes, or a weighted term.
Example = Union[int, str, "os.PathLike[str]", bytes, QueryTerm]
T = TypeVar("T")


def example_list(examples: Example | Sequence[Example]) -> list[Example]:
    """`examples` as a list; one example given alone is a list of one, not its characters
    read as texts or its bytes read as image ids."""
    if isinstance(examples, (str, bytes, bytearray, memoryview, int, np.integer, os.PathLike, QueryTerm)):
        return [_plain(examples)]
    if not isinstance(examples, Iterable):  # None, a float: a caller's mistake, told as such
        raise QueryError(
            f"Examples are image ids, image files, texts, image bytes or QueryTerms (a list, or one "
            f"alone), not {type(examples).__name__}."
        )
    return [_plain(example) for example in examples]


def _plain(example: Example | bytearray | memoryview) -> Example:
    """A numpy integer (an id taken from an array or a data frame) is that id; a bytearray or
    memoryview (an upload's buffer) is the image's bytes, not a list of ids, one per byte."""
    if isinstance(example, np.integer):
        return int(example)
    if isinstance(example, (bytearray, memoryview)):
        return bytes(example)
    return example


def similar_example(image: object) -> Example:
    """An image to find images like, as `ExampleVectors` reads it: an id, image bytes, or a
    file (text here is a file's path, never a query text). What is none of them is refused as
    `similar`'s mistake: the message for `recommend`'s examples offered texts and QueryTerms."""
    if isinstance(image, (str, os.PathLike)):
        return QueryTerm(image=os.fspath(image))
    if isinstance(image, QueryTerm):  # one made by a caller is read as `recommend` reads it
        return image
    if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
        return int(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    raise QueryError(
        f"An image for similar is an image id, an image file (a path) or an image's bytes, "
        f"not {type(image).__name__}."
    )


def example_weights(examples: Sequence[Example]) -> list[float]:
    """How much each example counts: a QueryTerm's weight, else 1. A weight that is not
    positive is refused: what to move away from is a negative example, not a positive one
    with a minus sign (whose sign Rocchio's means would otherwise have to guess)."""
    weights = [example.weight if isinstance(example, QueryTerm) else 1.0 for example in examples]
    for weight in weights:
        if weight <= 0:
            raise QueryError(
                f"An example's weight must be positive, not {weight:g}: give what to avoid as a "
                "negative example."
            )
    return weights


def refuse_both_sides(positive: Sequence[Example], negative: Sequence[Example]) -> None:
    """Refuse an image given as a positive and as a negative example (the same id, the same
    file under any spelling or link, the same bytes): Rocchio's formula would quietly lean
    towards it anyway, as positives count four times what negatives do, which is no answer to
    a contradiction. Checked before anything is embedded. Texts are not compared: a text is
    a direction, and "dog" against "dogs" is no contradiction a rule could tell."""
    liked = {key: example for example in positive if (key := _image_key(example)) is not None}
    for example in negative:
        key = _image_key(example)
        same = liked.get(key) if key is not None else None
        if same is not None:
            raise _on_both_sides(example, same)


def refuse_same_ids(ids: Sequence[int | None], positives: int) -> None:
    """Refuse what `refuse_both_sides` cannot see before the examples are read: an indexed
    file on one side and its id on the other (`ids` as `ExampleVectors.of` returns them, the
    first `positives` of them positive)."""
    liked = {image_id for image_id in ids[:positives] if image_id is not None}
    for image_id in ids[positives:]:
        if image_id is not None and image_id in liked:
            raise QueryError(
                f"Image {image_id} is given both as a positive and as a negative example (once by "
                "its id, once as its file): give each image on one side only."
            )


def _image_key(example: Example) -> tuple[object, ...] | None:
    """What tells one image example from another: its id, its file (device and inode, so any
    spelling or link of it), or its bytes; None for a text, or for a path that is no file one
    can look at (missing, a folder), which `ExampleVectors.of` refuses with its own message."""
    if isinstance(example, bool):
        return None
    if isinstance(example, int):
        return ("id", example)
    if isinstance(example, bytes):
        return ("bytes", example)
    path = _example_path(example)
    if path is None or not path.strip():
        return None
    try:
        stat = os.stat(os.path.expanduser(path))
    except (OSError, ValueError):
        return None
    return ("file", stat.st_dev, stat.st_ino) if S_ISREG(stat.st_mode) else None


def _example_path(example: Example) -> str | None:
    """The file an example names (a path, or an image QueryTerm), or None."""
    if isinstance(example, os.PathLike):
        return os.fspath(example)
    if isinstance(example, QueryTerm) and example.image is not None:
        return os.fspath(example.image)
    return None


def _on_both_sides(negative: Example, positive: Example) -> QueryError:
    """The refusal of `negative`, the same image as the positive example `positive`, in the
    API's words (positive, negative) and the command's (an image to match, --unlike)."""
    both = "given both as a positive and as a negative example: give each image on one side only."
    if isinstance(negative, int):
        return QueryError(f"Image {negative} is {both}")
    if isinstance(negative, bytes):
        return QueryError(f"The same image's bytes are {both}")
    path, same = _example_path(negative) or "", _example_path(positive) or ""
    written = "" if same == path else f" (as {given_path(same)})"  # another spelling, or a link
    return QueryError(
        f"Image {given_path(path)} is a negative example and also a positive one{written}: "
        "give each image on one side only.",
        command_line=f"--unlike {path} is also given as an image to match{written}: "
        "give each file on one side only.",
    )


def refuse_single(items: object, method: str, one: str) -> None:
    """Refuse one text, file or image's bytes given to a `*_many` method, which takes a list
    and would otherwise run one query per character or byte."""
    if isinstance(items, (str, bytes, bytearray, memoryview, os.PathLike)):
        raise QueryError(f"{method} takes a list of queries; for one, call {one}.")


def query_list(items: Iterable[T], method: str, one: str) -> list[T]:
    """`items` as a list (a generator is read once), for a method that takes a list of
    queries: one query alone, or what is no list at all, is refused as `refuse_single` says."""
    refuse_single(items, method, one)
    if not isinstance(items, Iterable):  # None, a number, one QueryTerm
        what = type(items).__name__
        raise QueryError(f"{method} takes a list of queries, not {what}; for one, call {one}.")
    return list(items)


class ExampleVectors:
    """The vectors of query examples, from the `catalog`'s stored vectors or the model that
    `embedder()` loads (only when some example needs it)."""

    def __init__(self, catalog: Catalog, embedder: Callable[[], Embedder], max_pixels: int) -> None:
        self._catalog = catalog
        self._embedder = embedder
        self._max_pixels = max_pixels

    def of(self, examples: Sequence[Example]) -> tuple[np.ndarray, list[int | None]]:
        """One vector per example, in order; also the id of each that is an indexed image."""
        if not examples:
            raise QueryError("A query needs at least one example.")
        examples = [_plain(example) for example in examples]
        rows: list[np.ndarray | None] = [None] * len(examples)
        ids: list[int | None] = [None] * len(examples)
        wanted_ids = [e for e in examples if isinstance(e, int) and not isinstance(e, bool)]
        stored = self._catalog.vectors(wanted_ids) if wanted_ids else {}
        texts: list[tuple[int, str]] = []
        for position, example in enumerate(examples):
            if isinstance(example, bool):
                raise QueryError("An example is an image id, an image file, a text or image bytes.")
            if isinstance(example, int):
                if example not in stored:
                    raise self._no_vector(example)
                rows[position], ids[position] = stored[example], example
            elif isinstance(example, bytes):
                rows[position] = self.of_bytes(example)
            elif isinstance(example, os.PathLike):
                rows[position], ids[position] = self.of_file(os.fspath(example))
            elif isinstance(example, str):
                texts.append((position, QueryTerm(text=example).text or ""))
            elif not isinstance(example, QueryTerm):  # None, a float: a caller's mistake, told as such
                raise QueryError(
                    f"An example is an image id, an image file, a text, image bytes or a QueryTerm, "
                    f"not {type(example).__name__}."
                )
            elif example.image is not None:
                rows[position], ids[position] = self.of_file(example.image)
            else:
                texts.append((position, example.text or ""))
        if texts:
            embedded = self._embedder().embed_texts([text for _, text in texts])
            for (position, _), vector in zip(texts, embedded, strict=True):
                rows[position] = vector
        return np.stack([row for row in rows if row is not None]), ids

    def _no_vector(self, image_id: int) -> ImageNotFoundError:
        """Why image `image_id` has no stored vector to search with: the library holds no such
        image, its file could not be indexed, or it is not embedded yet (a re-embedding under
        way, or stopped). Not found as a query either way (the service's 404), but only the
        first is "no image": `image(id)` returns the others, so the message says why."""
        info = self._catalog.image(image_id)
        if info is None:
            return ImageNotFoundError(f"No image in the library has id {image_id}.")
        if info.error is not None:
            return ImageNotFoundError(
                f"Image {image_id} ({info.path}) could not be indexed, so it has no vector to "
                f"search with: {info.error}"
            )
        return ImageNotFoundError(
            f"Image {image_id} ({info.path}) has no vector yet: an index run embeds it (one that "
            "re-embeds the library may be under way, or was stopped before it). Try again once an "
            "index run has finished."
        )

    def of_file(self, image: str) -> tuple[np.ndarray, int | None]:
        """An image file's vector (the stored one if the file is indexed and unchanged), and
        its id if it is indexed."""
        image = os.fspath(image)  # a QueryTerm may hold a path object
        if not image.strip():  # abspath would make it the working directory
            raise InvalidPathError("An image path is empty: name an image file.")
        path = os.path.abspath(os.path.expanduser(image))
        named = given_path(image)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise InvalidPathError(f"Image {named} not found.") from None
        except (OSError, ValueError) as exc:
            raise InvalidPathError(f"Cannot read image {named}: {describe_error(exc)}") from None
        # Indexed paths start from a resolved root: a path given through a link may differ.
        known = self._catalog.known_file(path) or self._catalog.known_file(os.path.realpath(path))
        if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
            stored = self._catalog.vector(known.id) if known.has_vector else None
            if stored is not None:
                return stored, known.id
        if not S_ISREG(stat.st_mode):  # a folder, a named pipe (opening it waits for a writer)...
            raise ImageError(f"Cannot read image {named}: it is not a file.")
        try:
            with open_regular(path) as f:  # a named pipe put there since the stat is not waited on
                check_header(f, self._max_pixels)  # a large file that is no image (a video) is not read
                f.seek(0)
                data = f.read()
        except Image.DecompressionBombError:
            raise ImageTooLargeError(
                f"Cannot read image {named}: it has more pixels than the limit of {self._max_pixels:,}."
            ) from None
        except Exception as exc:  # unreadable, or no image: the file's fault, told as such
            raise ImageError(f"Cannot read image {named}: {describe_error(exc)}") from exc
        return self.of_bytes(data, name=named), known.id if known else None

    def of_bytes(self, data: bytes, *, name: str | None = None) -> np.ndarray:
        """The vector of an encoded image (JPEG, PNG...) given as bytes, read from file `name`."""
        embedder = self._embedder()
        label = f"image {name}" if name else "the image given"
        try:
            # As the indexer decodes it, so an indexed photo given as an example finds itself
            opened = open_oriented(data, embedder.image_size, self._max_pixels, defer_colours=True)
            pixels = embedder.preprocess(opened.image, opened.colours)
        except Image.DecompressionBombError:
            raise ImageTooLargeError(
                f"Cannot read {label}: it has more pixels than the limit of {self._max_pixels:,}."
            ) from None
        except Exception as exc:  # any decode failure is the image's fault, told as such
            raise ImageError(f"Cannot read {label}: {describe_error(exc)}") from exc
        return np.asarray(embedder.embed_images([pixels])[0], dtype=np.float32)
