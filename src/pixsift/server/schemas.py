"""The JSON the service reads and writes, as pydantic models (they make the OpenAPI schema).

Every field is bounded (lengths, counts, ranges), so a request can only ask for a bounded
amount of work, and anything outside the bounds is a 422 before any work starts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from pixsift.search import SearchFilters, SearchResult
from pixsift.server.settings import K_MAX
from pixsift.storage import Failure, ImageInfo
from pixsift.timestamps import iso_utc

ID_MAX = 2**63 - 1  # SQLite's and FAISS's id range
TEXT_MAX = 1000  # characters in a query text; CLIP reads 77 tokens of it anyway
PATH_MAX = 4096
EXAMPLES_MAX = 64

# Numbers are strict: in lax mode JSON `true` would pass as 1 (image 1, k=1, a score of 1.0).
ImageId = Annotated[int, Field(strict=True, ge=1, le=ID_MAX)]
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
K = Annotated[int, Field(strict=True, ge=1, le=K_MAX, description=f"How many results, 1 to {K_MAX}.")]
MinScore = Annotated[float | None, Field(strict=True, ge=-1.0, le=1.0, allow_inf_nan=False)]
PixelCount = Annotated[int | None, Field(strict=True, ge=1, le=1_000_000)]
FormatName = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")]
PathText = Annotated[str, Field(min_length=1, max_length=PATH_MAX)]
# A time the service tells: written as `pixsift status --format json` writes it (pydantic alone
# would drop the microseconds when they are 0, a width that changes, and the CLI wrote +00:00).
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    """Which images may be returned; every field left out allows everything."""

    under: PathText | None = Field(default=None, description="A folder inside the library's roots.")
    formats: list[FormatName] = Field(default_factory=list, max_length=16, examples=[["JPEG", "PNG"]])
    min_width: PixelCount = None
    min_height: PixelCount = None
    after: datetime | None = Field(
        default=None,
        description="Taken on or after this date or time (EXIF date, else file time; local time).",
        examples=["2024-05-01"],
    )
    before: datetime | None = Field(default=None, description="Taken strictly before this date or time.")

    def to_core(self) -> SearchFilters:
        """The core's filters, with `under` already checked to lie inside the roots by the caller."""
        return SearchFilters(
            under=self.under,
            formats=tuple(self.formats),
            min_width=self.min_width,
            min_height=self.min_height,
            after=self.after,
            before=self.before,
        )


class SearchBody(_Strict):
    q: Text = Field(examples=["a dog running on a beach"])
    k: K = 10
    plus: list[Text] = Field(default_factory=list, max_length=16, description="Texts to pull towards.")
    minus: list[Text] = Field(default_factory=list, max_length=16, description="Texts to push away from.")
    min_score: MinScore = None
    filters: Filters = Filters()


class BatchSearchBody(_Strict):
    queries: list[Text] = Field(min_length=1, max_length=64)
    k: K = 10
    min_score: MinScore = None
    filters: Filters = Filters()


class PathExample(_Strict):
    path: PathText = Field(description="An image file inside the library's roots.")


Example = ImageId | Text | PathExample


class RecommendBody(_Strict):
    positive: list[Example] = Field(
        min_length=1,
        max_length=EXAMPLES_MAX,
        description='What to find more of: image ids (numbers), texts (strings) or {"path": ...}.',
        examples=[[12, "red sneakers"]],
    )
    negative: list[Example] = Field(default_factory=list, max_length=EXAMPLES_MAX)
    exclude: list[ImageId] = Field(
        default_factory=list, max_length=10_000, description="Ids never to return (already seen)."
    )
    k: K = 10
    diversity: float = Field(
        0.0, strict=True, ge=0.0, le=1.0, allow_inf_nan=False, description="0: by relevance; up to 1: varied."
    )
    min_score: MinScore = None
    filters: Filters = Filters()


class SimilarUpload(_Strict):
    image_base64: str = Field(min_length=1, description="The image file's bytes, base64-encoded.")


class IndexBody(_Strict):
    paths: list[PathText] = Field(
        default_factory=list,
        max_length=256,
        description="Absolute paths of folders or files inside the roots; none: all roots.",
    )


class Hit(BaseModel):
    rank: int
    score: float
    id: int
    path: str
    width: int | None
    height: int | None
    format: str | None

    @classmethod
    def of(cls, result: SearchResult) -> Hit:
        return cls(
            rank=result.rank,
            score=round(result.score, 6),
            id=result.id,
            path=str(result.path),
            width=result.width,
            height=result.height,
            format=result.format,
        )


class Results(BaseModel):
    results: list[Hit]

    @classmethod
    def of(cls, results: list[SearchResult]) -> Results:
        return cls(results=[Hit.of(r) for r in results])


class BatchResults(BaseModel):
    results: list[list[Hit]]


class ImageMeta(BaseModel):
    id: int
    path: str
    file_size: int
    mtime_ns: int
    width: int | None
    height: int | None
    format: str | None
    indexed_at: Timestamp
    error: str | None = Field(
        description="Why the file could not be indexed (it is then never found by a search and "
        "has no similar images); null when it was indexed."
    )

    @classmethod
    def of(cls, info: ImageInfo) -> ImageMeta:
        return cls(
            id=info.id,
            path=info.path,
            file_size=info.size,
            mtime_ns=info.mtime_ns,
            width=info.width,
            height=info.height,
            format=info.format,
            indexed_at=info.indexed_at,
            error=info.error,
        )


class FailureView(BaseModel):
    """A file that could not be indexed, as `pixsift status --failed --format json` lists it."""

    path: str = Field(description="The file, as the library stores it")
    error: str = Field(
        description="Why it could not be indexed (not an image, truncated, too many pixels, ...); "
        "indexing its folder again retries it once the file has changed"
    )


class Failures(BaseModel):
    failures: list[FailureView] = Field(description="Failed files by path (their bytes' order)")
    next_after: str | None = Field(
        description="Where the next page starts: send it as `after` (the last path of this page); "
        "null when this page is the last"
    )

    @classmethod
    def of(cls, page: list[Failure], limit: int) -> Failures:
        """The first `limit` of `page`, which holds one more when there is a next page."""
        shown = page[:limit]
        more = len(page) > limit
        return cls(
            failures=[FailureView(path=f.path, error=f.error) for f in shown],
            next_after=shown[-1].path if more and shown else None,
        )


class Deleted(BaseModel):
    deleted: ImageMeta


class JobView(BaseModel):
    id: str
    paths: list[str]
    state: str = Field(description="queued, running, succeeded, failed or cancelled")
    phase: str | None = Field(
        description="What a running job is doing (Scanning, Embedding, ..., then Saving search "
        "index or Building search index once its files are done); null while it is queued and "
        "once it has ended"
    )
    done: int = Field(description="Steps of its phase done; once it has ended, of its files' last phase")
    total: int | None = Field(description="Steps in its phase, null while not known")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    report: dict[str, Any] | None = Field(
        description="What the index run did (an IndexReport): while it runs, what it has found "
        "and committed so far (`failed`: files that could not be read), growing batch by batch, "
        "with `elapsed_s` and `embed_s` (its embedding phase's time; (added + updated) / embed_s "
        "is its rate) growing while it works (`elapsed_s` also while it saves or builds the search "
        "index), never going back, the final report's no smaller; for a cancelled or failed "
        "job, what it committed before it stopped, which stays; null until its scan has ended, "
        "and for a job that ended before its run began"
    )
    error: str | None
    cancel_requested: bool = Field(
        description="A client cancelled it: it stops at its next step with the state cancelled, "
        "unless it had done its last one (see cancel_too_late)"
    )
    cancel_too_late: bool = Field(
        description="It was cancelled after its last step (while it saved the search index, "
        "say) and ended as it would have anyway: succeeded (its report is complete) or failed"
    )


class Health(BaseModel):
    status: str


class ModelView(BaseModel):
    name: str
    pretrained: str
    embed_dim: int
    fingerprint: str


class RootView(BaseModel):
    path: str
    include_hidden: bool = Field(
        description="Its hidden files and folders (dot names) are indexed: it was last indexed "
        "by name with `--include-hidden`; POST /index walks it so"
    )
    follow_symlinks: bool = Field(
        description="Symbolic links inside it are followed (`--follow-symlinks`); POST /index walks it so"
    )
    added_at: Timestamp = Field(description="When it was first indexed")
    last_indexed_at: Timestamp | None
    missing: bool = Field(
        description="The folder is not on disk now (unmounted, moved or deleted): index jobs keep "
        "its images, and searches return them, until `pixsift relocate` or `pixsift forget` says "
        "what became of it (as `pixsift status` marks it)"
    )


class IndexView(BaseModel):
    """The search index file, as `pixsift status --format json` gives its `index` object."""

    # A name the core's status adds and this model lacks would be dropped: the server tests
    # compare this with `status --format json`'s `index`, so they catch it, not a client's 500.

    state: str = Field(
        description='"up to date"; "caught up on load" (saved before a few changes such as deletes, '
        'which loading it replays from the database: normal); "stale" (rebuilt as it is next loaded); '
        '"missing"; "damaged" (rebuilt from the stored vectors by the next search or index run); or '
        '"unreadable" (it cannot be opened: searches answer from an index rebuilt in memory)'
    )
    generation: int | None = Field(
        description="The database generation it was saved at (the top-level `generation` is the "
        "database's now); null when it is missing, or its header cannot be read"
    )
    changes: int | None = Field(
        description='How many logged changes loading it replays, when "caught up on load"; else null'
    )
    kind: str | None = Field(
        description='"flat" (exact search), "hnsw" or "ivfpq" (approximate), as its header '
        "records it; null when not known"
    )
    search_param: int | None = Field(
        description="Its tuned efSearch (hnsw) or nprobe (ivfpq); null for flat, or when not known"
    )
    tuned_recall_at_10: float | None = Field(
        description="The recall@10 against exact search measured when it was tuned; null for "
        "flat, or when not known"
    )
    damage: str | None = Field(description="Why it is damaged or unreadable; null otherwise")


class IndexMemoryView(BaseModel):
    """The search index the service holds in memory, as `Library.index_summary()` describes it."""

    kind: str = Field(description='"flat" (exact search), "hnsw" or "ivfpq" (approximate)')
    vectors: int = Field(description="The vectors it holds, as of the last search or index job")
    memory_bytes: int = Field(description="What it takes in memory, counted from its parts")
    search_param: int | None = Field(description="Its tuned efSearch (hnsw) or nprobe (ivfpq); null for flat")
    tuned_recall_at_10: float | None = Field(
        description="The recall@10 against exact search measured when it was tuned; null for flat"
    )
    trained_count: int = Field(
        description="The vectors it was built for: an index job rebuilds it (hnsw, ivfpq) once the "
        "library has grown or shrunk a lot from this"
    )
    tombstones: int = Field(
        description="Places of removed images still in an HNSW graph (0 for the other kinds); "
        "an index job rebuilds the graph once they are many"
    )


class Stats(BaseModel):
    images: int
    indexed: int
    failed: int
    pending: int
    model: ModelView | None
    roots: list[RootView]
    generation: int
    index_file: str = Field(
        description='The search index file: "up to date", "caught up on load", "stale", "missing", '
        '"damaged" or "unreadable" (as `pixsift status` says it)'
    )
    index_damage: str | None = Field(
        description="What is wrong with a damaged or unreadable index file (null otherwise); "
        "searches answer from an index rebuilt from the stored vectors"
    )
    index: IndexView = Field(
        description="The search index file in detail: its state, kind, tuning and damage (as "
        "`pixsift status --format json` gives them); `index_file` and `index_damage` repeat its "
        "`state` and `damage`"
    )
    index_in_memory: IndexMemoryView | None = Field(
        description="The search index this service holds in memory (loaded at start, caught up "
        "by each search and index job): its kind, size and memory; null while none is loaded (a "
        "library with no images yet, or while it loads at start). Never loaded or built to answer "
        "this, nor waited for: it describes the index searches use now (during a rebuild, the old "
        "one until the new one is swapped in)"
    )
    index_loading: bool = Field(
        description="Whether the service is loading the search index into memory now (at start, "
        "the whole time GET /healthz answers 503 `loading`): searches wait until it is in memory"
    )
    disk_bytes: int
    running_job: str | None


class ErrorDetail(BaseModel):
    loc: list[str] = Field(description='Where: "body" or "query"/"path" and a parameter, then fields.')
    msg: str
    type: str


class ErrorBody(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] = Field(
        default_factory=list,
        description="Only with 422 invalid_request: each place the request does not match the API.",
    )
