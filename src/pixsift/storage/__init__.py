"""Storage: the SQLite catalog (the source of truth) and the FAISS index rebuilt from it."""

from pixsift.storage.catalog import Catalog, CatalogWriter, VectorDelta
from pixsift.storage.records import CatalogCounts, Failure, ImageInfo, KnownFile, RootInfo

__all__ = [
    "Catalog",
    "CatalogCounts",
    "CatalogWriter",
    "Failure",
    "ImageInfo",
    "KnownFile",
    "RootInfo",
    "VectorDelta",
]
