"""Search: combining query terms into one vector and ranking the library's images by it."""

from pixsift.search.engine import search_vector
from pixsift.search.query import QueryTerm, as_terms, combine, parse_weighted_text
from pixsift.search.results import SearchResult

__all__ = ["QueryTerm", "SearchResult", "as_terms", "combine", "parse_weighted_text", "search_vector"]
