"""Search: combining query terms into one vector and ranking the library's images by it."""

from pixsift.search.filters import SearchFilters
from pixsift.search.query import QueryTerm, as_terms, combine, parse_weighted_text
from pixsift.search.results import SearchResult

__all__ = ["QueryTerm", "SearchFilters", "SearchResult", "as_terms", "combine", "parse_weighted_text"]
