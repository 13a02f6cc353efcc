"""Storage: the SQLite catalog (the source of truth) and the FAISS index rebuilt from it.

Names are imported on first use: the catalog brings in SQLAlchemy, which the read-only query
path (`catalog_reader`, `pixsift.search.quick`) and the FAISS modules do without.
"""

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Catalog": "pixsift.storage.catalog",
    "CatalogWriter": "pixsift.storage.catalog",
    "CatalogCounts": "pixsift.storage.records",
    "Failure": "pixsift.storage.records",
    "ImageInfo": "pixsift.storage.records",
    "KnownFile": "pixsift.storage.records",
    "RootInfo": "pixsift.storage.records",
    "VectorDelta": "pixsift.storage.records",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixsift.storage' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from pixsift.storage.catalog import Catalog, CatalogWriter
    from pixsift.storage.records import CatalogCounts, Failure, ImageInfo, KnownFile, RootInfo, VectorDelta

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
