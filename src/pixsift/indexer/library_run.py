"""An index run of a library: the `Indexer` over its roots, with the roots that look unmounted
left alone, then the search index and the thumbnail cache brought in line with what it changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pixsift.indexer.decode import default_max_pixels
from pixsift.indexer.progress import IndexProgress
from pixsift.indexer.report import IndexReport
from pixsift.indexer.run import Indexer, IndexSettings, RootRequest
from pixsift.indexer.scan import looks_unmounted
from pixsift.thumbnails import THUMBNAILS_DIR, prune_thumbnails

if TYPE_CHECKING:
    from pixsift.models import Embedder
    from pixsift.storage import Catalog
    from pixsift.storage.index_keeper import IndexKeeper


def index_library(
    catalog: Catalog,
    index: IndexKeeper,
    folder: Path,
    requests: Sequence[RootRequest],
    embedder: Callable[[], Embedder],
    batch_size: int,
    workers: int | None,
    progress: IndexProgress | None,
) -> IndexReport:
    """Index `requests` into the library in `folder` (never walked itself), whose catalog and
    search index are `catalog` and `index`; the caller holds the library's write lock."""
    # An unmounted drive must not look like a deleted folder: a known root that looks
    # unmounted is not walked, and no other root's walk drops what it held.
    unmounted = [r.path for r in catalog.roots() if looks_unmounted(r.path, catalog)]
    skipped = [r.path for r in requests if r.scope is None and r.path in unmounted]
    settings = IndexSettings(
        batch_size=batch_size,
        workers=workers or IndexSettings().workers,
        max_pixels=default_max_pixels(),
        exclude=(str(folder),),
        keep=tuple(unmounted),
    )
    walked = [r for r in requests if r.path not in skipped]
    try:
        report = Indexer(catalog, embedder, settings, progress).run(walked)
    finally:  # also after Ctrl-C: save what was committed into the FAISS index
        if (model := catalog.model()) is not None:
            index.refresh(model.embed_dim, save=True)
    if model is not None:
        index.rebuild_if_drifted(model.embed_dim)
    if report.removed:
        prune_thumbnails(folder / THUMBNAILS_DIR, catalog.images)
    report.skipped_roots = skipped
    return report
