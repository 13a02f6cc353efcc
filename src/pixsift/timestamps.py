"""Times as pixsift writes them as text: one format for the command line's JSON and the
server's, so that a client reading both compares them as text and parses one format."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC, always to the microsecond and with `Z`: "2024-05-01T18:30:00.000000Z".
    A fixed width sorts as text in time order; `Z` is what JavaScript's `Date.toISOString`
    writes, and Python (3.11+) and every ISO 8601 parser read it."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"
