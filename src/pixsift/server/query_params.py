"""Query parameters given once: a second value of one that takes a single value is refused.

FastAPI takes the last value of a parameter given twice, so `/search?q=a&q=b` searched for "b"
and `k=500&k=5` for 5 results, without a word about the other value: a client bug (a URL
built by appending to one that already had the parameter) went by unseen. It is now 422
`invalid_request`, located at the parameter.
"""

from __future__ import annotations

from collections import Counter

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

# Query parameters that are lists by design: the filters' `format=png&format=webp`.
REPEATABLE = frozenset({"format"})


def single_valued_query(request: Request) -> None:
    """Refuse a repeated query parameter of the route (one it does not take is ignored, as
    FastAPI ignores it given once)."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    repeated = [name for name, count in counts.items() if count > 1 and name not in REPEATABLE]
    if not repeated:
        return
    route = request.scope.get("route")
    taken = _query_names(route.dependant) if isinstance(route, APIRoute) else set()
    errors = [
        {
            "loc": ("query", name),
            "msg": f"Given {counts[name]} times; this parameter takes one value.",
            "type": "repeated_parameter",
        }
        for name in repeated
        if name in taken
    ]
    if errors:
        raise RequestValidationError(errors)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' (the filters') included."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names
