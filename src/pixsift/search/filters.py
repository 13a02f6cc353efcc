"""Which images a search may return: one small record shared by every kind of query.

Filters are turned into the set of allowed image ids by one SQLite query, and FAISS searches
only among those ids (an ID selector), so a filter never truncates results: asking for `k`
images returns `k` whenever at least `k` images match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import numpy as np

from pixsift.errors import QueryError
from pixsift.image_formats import FILTER_NAMES, FORMAT_ALIASES

DateLike = date | datetime | str  # a datetime, a date (its midnight) or ISO text


class FilterError(QueryError):
    """A filter value refused. `str()` names each filter as the Python API (and the HTTP
    service) call it, "Filter under is empty..."; `worded()` names them as another face does,
    so that the command line says "--under is empty..." of what its user typed.

    `template` holds `{0}`, `{1}`... where the filters' names go, and `{value}`-style fields
    filled from `values`: a value is never part of the template, so its braces are kept as
    they are.
    """

    def __init__(self, template: str, *fields: str, **values: object) -> None:
        self.template = template
        self.fields = fields
        self.values = values
        super().__init__(self.worded({}, lead="Filter "))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (sent to another process) as made, not from its message: a value's braces
        # would be read as a template's.
        return (_filter_error, (self.template, self.fields, self.values))

    def worded(self, names: Mapping[str, str], lead: str = "") -> str:
        """The message with each filter called as `names` says (its own name when absent),
        and `lead` before the first word."""
        return lead + self.template.format(*(names.get(field, field) for field in self.fields), **self.values)


def _filter_error(template: str, fields: tuple[str, ...], values: dict[str, object]) -> FilterError:
    return FilterError(template, *fields, **values)


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions on the images a search returns; every field left empty allows everything.

    `under`: a folder (recursively), as a string or a path; `formats`: image formats such as
    "JPEG" or "png", a tuple or list (one name alone may be given as a string);
    `min_width`, `min_height`: the smallest size in pixels, as displayed; `after`, `before`:
    when the photo was taken (EXIF date, else the file's modification time), on or after
    `after` and strictly before `before`, in local time. Dates are a `date` (its midnight), a
    `datetime` or ISO text ("2024-05-01", "2024-05-01T18:30"); they are kept as ISO text, to
    the microsecond (a fraction of a second only when there is one).
    """

    # Typed as callers may give them; kept as plain text and a tuple (see __post_init__).
    under: str | os.PathLike[str] | None = None
    formats: str | Sequence[str] = field(default=())
    min_width: int | None = None
    min_height: int | None = None
    after: DateLike | None = None
    before: DateLike | None = None

    def __post_init__(self) -> None:
        if self.under is not None:
            object.__setattr__(self, "under", _folder(self.under))
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _iso_moment(name, value))
        if self.after is not None and self.before is not None and str(self.after) >= str(self.before):
            raise FilterError(
                "{0} ({after}) must be earlier than {1} ({before}).",
                "after",
                "before",
                after=self.after,
                before=self.before,
            )
        for name in ("min_width", "min_height"):
            object.__setattr__(self, name, _pixels(name, getattr(self, name)))
        object.__setattr__(self, "formats", _format_tuple(self.formats))
        for name in self.formats:
            # A typo ("jpge") would otherwise match nothing, and look like an empty library.
            if not isinstance(name, str) or name.strip().upper() not in FILTER_NAMES:
                known = ", ".join(sorted(FILTER_NAMES))
                raise FilterError(
                    "{0} {name!r} is not one pixsift indexes: {known}.", "format", name=name, known=known
                )

    @property
    def is_empty(self) -> bool:
        return (
            self.under is None
            and not self.formats
            and self.min_width is None
            and self.min_height is None
            and self.after is None
            and self.before is None
        )

    def taken_range(self) -> tuple[str | None, str | None]:
        """`after` and `before` as the catalog compares them: "YYYY-MM-DD HH:MM:SS[.ffffff]"."""
        return (
            None if self.after is None else str(self.after).replace("T", " "),
            None if self.before is None else str(self.before).replace("T", " "),
        )

    def format_names(self) -> tuple[str, ...]:
        """The formats as the catalog stores them (Pillow's upper-case names, aliases expanded)."""
        names: list[str] = []
        for name in self.formats:
            upper = name.strip().upper()
            names.extend(FORMAT_ALIASES.get(upper, (upper,)))
        return tuple(dict.fromkeys(names))

    def with_under(self, under: str | None) -> SearchFilters:
        return replace(self, under=under)


def checked_filters(filters: object) -> SearchFilters | None:
    """`filters` if it is a SearchFilters (or None); QueryError otherwise, rather than an
    AttributeError from deep in the search for a dict of filter values, say."""
    if filters is None or isinstance(filters, SearchFilters):
        return filters
    raise QueryError(
        f'filters must be a pixsift.SearchFilters, such as SearchFilters(after="2024-05-01"), '
        f"not {type(filters).__name__}."
    )


def _format_tuple(formats: object) -> tuple[object, ...]:
    """The formats as a tuple, each then checked: one name alone is one format (tuple("JPEG")
    would be four letters) and None is no format filter, as for every other field."""
    if formats is None:
        return ()
    if isinstance(formats, str):
        return (formats,)
    if not isinstance(formats, Iterable):
        raise FilterError("{0} must be format names, not {kind}.", "formats", kind=type(formats).__name__)
    return tuple(formats)


def _folder(under: object) -> str:
    """The folder to search under as text (a path object is one: records compare and print
    alike whichever was given); QueryError for an empty one or for what is no path."""
    if not isinstance(under, (str, os.PathLike)):
        raise FilterError("{0} must be a folder path, not {kind}.", "under", kind=type(under).__name__)
    folder = os.fspath(under)
    if not isinstance(folder, str):  # a bytes path: the catalog keeps paths as text
        raise FilterError("{0} must be a folder path as text, not bytes.", "under")
    # An empty folder would be read as the working directory: a script's unset variable
    # (--under "$DIR") would quietly search wherever it happens to run.
    if not folder.strip():
        raise FilterError("{0} is empty: name a folder, or leave it out.", "under")
    return folder


def _pixels(name: str, value: object) -> int | None:
    """A size filter as a Python int (a numpy integer, read from an array, is one: SQLite
    cannot bind it); QueryError unless it is a whole number of at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FilterError("{0} must be a whole number of pixels of at least 1.", name)
    return int(value)


def _iso_moment(name: str, value: DateLike) -> str:
    """A date filter's value as "YYYY-MM-DDTHH:MM:SS[.ffffff]" (naive local time, six digits of
    fraction when not zero: the form the catalog writes file times in, so that the two compare
    as text); QueryError if unreadable."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise FilterError(
                "{0} {value!r} is not a date such as 2024-05-01 or 2024-05-01T18:30.", name, value=value
            ) from None
    else:
        raise FilterError(
            "{0} must be a date, a datetime or ISO text, not {kind}.", name, kind=type(value).__name__
        )
    if moment.tzinfo is not None:  # an instant: compared as this machine's local time
        try:
            moment = moment.astimezone().replace(tzinfo=None)
        except OverflowError:  # 9999-12-31T23:59-14:00 is after the last local datetime
            raise FilterError(
                "{0} {value!r} is outside the range of dates.", name, value=str(value)
            ) from None
    # Not cut to the second: a bound of 10:00:00.5 would let in a file modified at 10:00:00.2.
    return moment.isoformat()
