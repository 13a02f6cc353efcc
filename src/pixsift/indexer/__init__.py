"""The indexer: walks folders, decodes images in parallel and embeds them incrementally."""

from pixsift.indexer.progress import CountsListener, IndexProgress, SilentProgress
from pixsift.indexer.report import CopiesOfMissingRoot, IndexInterrupted, IndexReport
from pixsift.indexer.run import Indexer, IndexSettings, RootRequest

__all__ = [
    "CopiesOfMissingRoot",
    "CountsListener",
    "IndexInterrupted",
    "IndexProgress",
    "IndexReport",
    "IndexSettings",
    "Indexer",
    "RootRequest",
    "SilentProgress",
]
