"""Images an index run found gone from disk, kept a while so that a later run can give them back.

`mv ~/Inbox/a.jpg ~/Photos/; pixsift index ~/Inbox; pixsift index ~/Photos`: the first run
sees only that a.jpg left its folder, and drops its row. The second finds a "new" file. Without
a memory of the first, a.jpg would be embedded again under a new id, and an application that
kept its old id ("more like this") would lose it. So the first run keeps a departed record (id,
content hash, size, old path, vector and decoded metadata, when), and the second, finding a new
path with that content, inserts the image again under its old id with its old vector.

Only rows an index run (or `doctor --repair`) drops because their files are gone get a record:
what the user removes on purpose is not kept (`forget` drops the records of what left the
folder too; deleting an image by id keeps none), and a model change drops every record with
the vectors (`set_model`).

These functions run inside the caller's transaction (`CatalogWriter`, `Catalog._read`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.orm import Session

from pixsift.storage.catalog_reader import sql_chunks
from pixsift.storage.records import StoredEmbedding
from pixsift.storage.schema import Departed, Embedding, Image, UtcDateTime, utcnow

# How long a departed image waits to be found again, and how many wait at most. A move between
# two index runs is found by the next run of the destination: days, or weeks for a folder
# indexed now and then. Each record holds a vector (2 KB for a 512-d model, 3 KB for 768-d),
# so the cap keeps the table under about 60 MB whatever is deleted at once; past either bound a
# file that comes back is only embedded again under a new id, as it was before this existed.
RETENTION = timedelta(days=30)
MAX_RECORDS = 20_000


@dataclass(frozen=True)
class DepartedImage:
    """A departed image, enough to pair it with a file found again (its vector stays in SQL)."""

    id: int
    path: str
    content_hash: str
    size: int
    departed_at: datetime


def record(session: Session, ids: Sequence[int]) -> None:
    """Keep a record of each embedded image among `ids`, whose rows the caller then deletes.

    Images without a vector (failures, pending) or a content hash have nothing worth keeping.
    Copied in SQL, so the vectors never pass through Python. At most `MAX_RECORDS` of one call
    are kept: a larger deletion would only write pages that the purge at the end of the run
    frees again (which ones are kept does not matter: they all departed now).
    """
    now = literal(utcnow(), UtcDateTime())
    columns = ["image_id", "content_hash", "size", "path", "vector"]
    columns += ["width", "height", "format", "taken_at", "departed_at"]
    for chunk in sql_chunks(list(ids)[:MAX_RECORDS]):
        rows = (
            select(
                Image.id,
                Image.content_hash,
                Image.size,
                Image.path,
                Embedding.vector,
                Image.width,
                Image.height,
                Image.format,
                Image.taken_at,
                now,
            )
            .join(Embedding, Embedding.image_id == Image.id)
            .where(Image.id.in_(chunk), Image.content_hash.is_not(None))
        )
        session.execute(insert(Departed).from_select(columns, rows))


def with_hashes(session: Session, hashes: Iterable[str], now: datetime) -> dict[str, list[DepartedImage]]:
    """The departed images of each of these content hashes, the latest departed first; not
    those past `RETENTION`, which the end of the run purges."""
    found: dict[str, list[DepartedImage]] = {}
    columns = (Departed.image_id, Departed.path, Departed.content_hash, Departed.size, Departed.departed_at)
    live = select(Image.id).where(Image.id == Departed.image_id).exists()  # never, unless edited
    query = select(*columns).where(Departed.departed_at >= now - RETENTION, ~live)
    query = query.order_by(Departed.departed_at.desc(), Departed.image_id)
    for chunk in sql_chunks(sorted(set(hashes))):
        for row in session.execute(query.where(Departed.content_hash.in_(chunk))):
            found.setdefault(row.content_hash, []).append(DepartedImage(*row))
    return found


def embeddings_by_hash(session: Session, hashes: Iterable[str], now: datetime) -> dict[str, StoredEmbedding]:
    """For each of these content hashes that a departed image had, that image's vector and
    metadata (the latest departed); not those past `RETENTION`, as in `with_hashes`."""
    found: dict[str, StoredEmbedding] = {}
    columns = (Departed.content_hash, Departed.vector, Departed.width, Departed.height, Departed.format)
    query = select(*columns, Departed.taken_at).where(Departed.departed_at >= now - RETENTION)
    query = query.order_by(Departed.departed_at.desc(), Departed.image_id)
    for chunk in sql_chunks(sorted(set(hashes))):
        for content_hash, vector, width, height, image_format, taken in session.execute(
            query.where(Departed.content_hash.in_(chunk))
        ):
            found.setdefault(content_hash, StoredEmbedding(vector, width, height, image_format, taken))
    return found


def sizes(session: Session) -> set[int]:
    """File sizes of the departed images (from their index: the vectors are not read)."""
    return set(session.scalars(select(Departed.size).distinct()))


def restore(session: Session, departed: DepartedImage, path: str, *, size: int, mtime_ns: int) -> None:
    """Insert the image again under its old id at `path`, with its old vector and metadata."""
    kept = select(Departed).where(Departed.image_id == departed.id).subquery()
    image_columns = ["id", "path", "size", "mtime_ns", "content_hash", "width", "height", "format"]
    image_columns += ["taken_at", "error_retry", "indexed_at"]
    image = select(
        kept.c.image_id,
        literal(path, Image.path.type),
        literal(size),
        literal(mtime_ns),
        kept.c.content_hash,
        kept.c.width,
        kept.c.height,
        kept.c.format,
        kept.c.taken_at,
        literal(False),
        literal(utcnow(), UtcDateTime()),
    )
    session.execute(insert(Image).from_select(image_columns, image))
    vector = select(kept.c.image_id, kept.c.vector)
    session.execute(insert(Embedding).from_select(["image_id", "vector"], vector))
    session.execute(delete(Departed).where(Departed.image_id == departed.id))


def purge(session: Session, now: datetime) -> None:
    """Drop the records older than `RETENTION`, then the oldest beyond `MAX_RECORDS`."""
    session.execute(delete(Departed).where(Departed.departed_at < now - RETENTION))
    count = session.scalar(select(func.count()).select_from(Departed)) or 0
    if count <= MAX_RECORDS:
        return
    oldest = select(Departed.image_id).order_by(Departed.departed_at, Departed.image_id)
    doomed = list(session.scalars(oldest.limit(count - MAX_RECORDS)))
    for chunk in sql_chunks(doomed):
        session.execute(delete(Departed).where(Departed.image_id.in_(chunk)))


def forget_under(session: Session, low: bytes, high: bytes, keep: Sequence[str]) -> None:
    """Drop the records of images that were in the stored-path range [low, high) (a folder the
    user forgets), except those inside one of the folders `keep`."""
    query = select(Departed.image_id, Departed.path).where(Departed.path >= low, Departed.path < high)
    kept = tuple(os.path.join(folder, "") for folder in keep)
    doomed = [image_id for image_id, path in session.execute(query) if not path.startswith(kept)]
    for chunk in sql_chunks(doomed):
        session.execute(delete(Departed).where(Departed.image_id.in_(chunk)))


def forget_all(session: Session) -> None:
    """Drop every record: their vectors were made by a model the library no longer uses."""
    session.execute(delete(Departed))
