"""Filters pushed into the search (folder, format, size, date taken), for every index kind,
checked against a brute-force reference computed here from the metadata written."""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import TinyModel, run_cli
from pixsift import Library, SearchFilters
from pixsift.errors import QueryError
from pixsift.indexer.decode import default_max_pixels, open_oriented
from pixsift.models.spec import ModelRecord, ModelSpec
from pixsift.search.allowed import filter_criteria
from pixsift.storage import Catalog
from pixsift.storage.index_choice import IndexKind, IndexThresholds
from pixsift.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from pixsift.storage.records import ImageCriteria
from pixsift.synthetic.vectors import clustered_vectors
from serving import indexed_library, running_server

DIM = 32
CLUSTERS = 40
THRESHOLDS = {
    IndexKind.flat: IndexThresholds(),
    IndexKind.hnsw: IndexThresholds(flat_max=500, exact_filter_max=100),
    IndexKind.ivfpq: IndexThresholds(flat_max=500, hnsw_max=1_000, exact_filter_max=100),
}


def local_ns(year: int, month: int, day: int) -> int:
    """Noon local time on that day, as a file mtime in nanoseconds."""
    return int(datetime(year, month, day, 12).timestamp()) * 1_000_000_000


@dataclass(frozen=True)
class Group:
    folder: str
    count: int
    format: str
    width: int
    height: int
    taken: datetime  # what the filter must see: EXIF date if set, else the mtime
    exif: bool


GROUPS = (
    Group("a", 600, "JPEG", 640, 480, datetime(2020, 1, 10, 12), exif=False),
    Group("a/sub", 500, "JPEG", 4000, 3000, datetime(2019, 5, 5, 10), exif=True),
    Group("b", 500, "PNG", 1920, 1080, datetime(2021, 6, 1, 12), exif=False),
    Group("c", 350, "WEBP", 100, 100, datetime(2022, 3, 3, 12), exif=False),
    Group("d", 50, "GIF", 300, 300, datetime(2018, 8, 8, 12), exif=False),  # few: ranked exactly
)


@dataclass
class FilteredLibrary:
    library: Library
    root: Path
    ids: np.ndarray
    vectors: np.ndarray
    group_of: dict[int, Group]


@pytest.fixture(scope="module", params=list(IndexKind), ids=lambda kind: kind.value)
def filtered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilteredLibrary]:
    """2,000 synthetic vectors in five folders with different formats, sizes and dates
    (shared by the tests of a kind: they only search)."""
    kind = IndexKind(request.param)
    tmp_path = tmp_path_factory.mktemp(f"filtered-{kind.value}")
    root = tmp_path / "photos"
    folder = tmp_path / "library"
    folder.mkdir()
    catalog = Catalog.open(folder / "library.db")
    with catalog.write() as batch:
        batch.set_model(ModelRecord(ModelSpec("synthetic", "none"), DIM, "0" * 64))
    vectors = next(clustered_vectors(sum(g.count for g in GROUPS), DIM, clusters=CLUSTERS, seed=5))
    ids: list[int] = []
    group_of: dict[int, Group] = {}
    start = 0
    for group in GROUPS:
        (root / group.folder).mkdir(parents=True)
        # an EXIF date wins over the file time, which is set far from it on purpose
        mtime = local_ns(2023, 7, 7) if group.exif else int(group.taken.timestamp()) * 1_000_000_000
        with catalog.write() as batch:
            added = batch.add_embedded_images(
                [str(root / group.folder / f"{i:04d}.img") for i in range(group.count)],
                vectors[start : start + group.count],
                width=group.width,
                height=group.height,
                format=group.format,
                mtime_ns=mtime,
                taken_at=group.taken.strftime("%Y-%m-%d %H:%M:%S") if group.exif else None,
            )
        ids += added
        group_of.update(dict.fromkeys(added, group))
        start += group.count
    # Images without a vector in folder d: failed ones, and ones found but never embedded (an
    # index run stopped early). Filters by folder or date take them in; searches must skip them.
    with catalog.write() as batch:
        mtime = local_ns(2018, 8, 8)
        unembedded = [(str(root / "d" / f"zz-{i:02d}.img"), 1, mtime) for i in range(40)]
        for image_id in batch.add_images(unembedded)[:30]:
            batch.record_failure(image_id, "damaged", size=1, mtime_ns=mtime, content_hash=None)
    catalog.close()
    with Library.open(folder, index_thresholds=THRESHOLDS[kind]) as library:
        assert library.index_summary().kind == kind.value
        yield FilteredLibrary(library, root, np.array(ids), vectors, group_of)


Case = tuple[Callable[[Path], SearchFilters], Callable[[Group], bool]]


def allowed(lib: FilteredLibrary, keep: Callable[[Group], bool]) -> set[int]:
    return {i for i, group in lib.group_of.items() if keep(group)}


CASES: dict[str, Case] = {
    "under a (with its subfolder)": (
        lambda root: SearchFilters(under=str(root / "a")),
        lambda g: g.folder.startswith("a"),
    ),
    "format png": (lambda root: SearchFilters(formats=("png",)), lambda g: g.format == "PNG"),
    "at least 1900 wide": (lambda root: SearchFilters(min_width=1900), lambda g: g.width >= 1900),
    "taken in 2021 or later": (
        lambda root: SearchFilters(after="2021-01-01"),
        lambda g: g.taken.year >= 2021,
    ),
    "taken before June 2020": (
        lambda root: SearchFilters(before=date(2020, 6, 1)),
        lambda g: g.taken < datetime(2020, 6, 1),
    ),
    "jpeg under a, taken in 2019": (
        lambda root: SearchFilters(
            under=str(root / "a"), formats=("jpg",), after="2019-01-01", before="2020-01-01"
        ),
        lambda g: g.folder == "a/sub",
    ),
    "few: gif only": (lambda root: SearchFilters(formats=("gif",)), lambda g: g.format == "GIF"),
    "few, beside files without vectors: under d": (
        lambda root: SearchFilters(under=str(root / "d")),
        lambda g: g.folder == "d",
    ),
    "beside files without vectors: taken in 2018": (
        lambda root: SearchFilters(after="2018-01-01", before="2019-01-01"),
        lambda g: g.taken.year == 2018,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_filters_match_a_brute_force_reference(filtered: FilteredLibrary, case: str) -> None:
    make, keep = CASES[case]
    filters = make(filtered.root)
    wanted = allowed(filtered, keep)
    mask = np.isin(filtered.ids, list(wanted))
    hits = 0
    queries = next(clustered_vectors(20, DIM, clusters=CLUSTERS, seed=77))
    for query in queries:
        results = filtered.library.search_vector(query, k=10, filters=filters)
        found = [r.id for r in results]
        assert set(found) <= wanted  # never an image outside the filter
        assert len(found) == min(10, len(wanted))  # never truncated by the filter
        order = np.argsort(-(filtered.vectors[mask] @ query), kind="stable")[:10]
        expected = filtered.ids[mask][order].tolist()
        if len(wanted) <= 100:  # few enough to be ranked exactly, whatever the index
            assert found == expected
        hits += len(set(found) & set(expected))
    assert hits / (10 * len(queries)) >= 0.9


def test_nothing_matching_gives_nothing(filtered: FilteredLibrary) -> None:
    query = filtered.vectors[0]
    assert filtered.library.search_vector(query, filters=SearchFilters(after="2030-01-01")) == []


@pytest.mark.parametrize("case", ["format png", "taken in 2021 or later", "under a (with its subfolder)"])
def test_a_filtered_search_finds_every_match_when_k_is_near_their_number(
    filtered: FilteredLibrary, case: str
) -> None:
    make, keep = CASES[case]
    filters = make(filtered.root)
    wanted = allowed(filtered, keep)
    unseen = set(sorted(wanted)[::50])  # what a shop's user has not been shown yet
    for query in next(clustered_vectors(5, DIM, clusters=CLUSTERS, seed=78)):
        every = filtered.library.search_vector(query, k=len(wanted), filters=filters)
        assert {r.id for r in every} == wanted
        rest = filtered.library.search_vector(
            query, k=len(unseen), filters=filters, exclude_ids=wanted - unseen
        )
        assert {r.id for r in rest} == unseen


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"after": "last tuesday"}, "is not a date"),
        ({"before": "2024-13-01"}, "is not a date"),
        ({"after": "2024-05-01", "before": "2024-05-01"}, "must be earlier than before"),
        ({"after": 20240501}, "must be a date"),
        # instants past either end of the calendar once moved into local time (any real zone)
        ({"after": "9999-12-31T23:59:59-14:00"}, "outside the range of dates"),
        ({"before": "0001-01-01T00:00:00+14:00"}, "outside the range of dates"),
    ],
)
def test_bad_dates_are_refused_clearly(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        SearchFilters(**arguments)  # type: ignore[arg-type]


def test_dates_are_kept_as_iso_text() -> None:
    filters = SearchFilters(after=date(2024, 5, 1), before="2024-05-02T18:30")
    assert (filters.after, filters.before) == ("2024-05-01T00:00:00", "2024-05-02T18:30:00")
    assert filters.taken_range() == ("2024-05-01 00:00:00", "2024-05-02 18:30:00")
    assert not filters.is_empty and SearchFilters().is_empty


# ---- the date taken: EXIF, the schema migration, the command line and the server ------------------


def with_exif_date(source: Path, target: Path, when: str) -> Path:
    with Image.open(source) as image:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = when
        image.save(target, exif=exif)
    return target


def exif_taken_at(path: Path) -> str | None:
    return open_oriented(path.read_bytes(), 224, default_max_pixels()).taken_at


def test_exif_date_taken_is_read_and_bad_dates_are_none(photo_set: Path, tmp_path: Path) -> None:
    source = sorted(photo_set.glob("*.jpg"))[0]
    dated = with_exif_date(source, tmp_path / "dated.jpg", "2019:05:05 10:00:00")
    assert exif_taken_at(dated) == "2019-05-05 10:00:00"
    early = with_exif_date(source, tmp_path / "early.jpg", "0999:05:05 10:00:00")  # a camera's junk
    assert exif_taken_at(early) == "0999-05-05 10:00:00"  # sorts before "1000-..."
    blank = with_exif_date(source, tmp_path / "blank.jpg", "0000:00:00 00:00:00")
    assert exif_taken_at(blank) is None
    assert exif_taken_at(source) is None  # no EXIF at all


@pytest.mark.parametrize("original", ["0000:00:00 00:00:00", "    :  :     :  :  ", "2023:13:45 10:00:00"])
def test_an_unreadable_date_taken_gives_way_to_the_exif_date_time(
    original: str, photo_set: Path, tmp_path: Path
) -> None:
    """Cameras that blank DateTimeOriginal still write DateTime: the documented fallback."""
    with Image.open(sorted(photo_set.glob("*.jpg"))[0]) as image:
        exif = Image.Exif()
        exif[0x0132] = "2022:01:02 03:04:05"  # DateTime, in IFD0
        exif.get_ifd(0x8769)[0x9003] = original
        image.save(tmp_path / "blanked.jpg", exif=exif)
    assert exif_taken_at(tmp_path / "blanked.jpg") == "2022-01-02 03:04:05"


def test_an_old_library_is_upgraded_and_its_rows_fall_back_to_file_time(tmp_path: Path) -> None:
    folder = tmp_path / "library"
    folder.mkdir()
    (tmp_path / "old").mkdir()
    with sqlite3.connect(folder / "library.db") as db:  # a library made before date taken existed
        for statement in MIGRATIONS[0].statements:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO images (path, size, mtime_ns, width, height, format, indexed_at) "
            "VALUES (?, 1, ?, 10, 10, 'PNG', '2024-01-01T00:00:00+00:00')",
            (os.fsencode(tmp_path / "old" / "a.png"), local_ns(2016, 2, 2)),
        )
        db.execute("INSERT INTO embeddings (image_id, vector) VALUES (1, ?)", (np.ones(4, "<f4").tobytes(),))
    catalog = Catalog.open(folder / "library.db")
    try:
        with catalog.write() as batch:
            batch.set_model(ModelRecord(ModelSpec("synthetic", "none"), 4, "0" * 64))
            batch.add_embedded_images([str(tmp_path / "old" / "b.png")], np.ones((1, 4), np.float32))
        assert catalog.schema_differences() == []
        criteria = ImageCriteria(taken_after="2016-02-01 00:00:00", taken_before="2016-03-01 00:00:00")
        assert catalog.ids_matching(criteria).tolist() == [1]
    finally:
        catalog.close()
    with sqlite3.connect(folder / "library.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT taken_at FROM images WHERE id = 1").fetchone()[0] is None


@pytest.fixture
def dated_photos(photos: Path) -> Path:
    """The photo set with one photo given an EXIF date in 2019 and the rest file times in 2022."""
    files = sorted(photos.glob("*.jpg"))
    for path in files[1:]:
        os.utime(path, ns=(local_ns(2022, 4, 4), local_ns(2022, 4, 4)))
    with_exif_date(files[0], files[0], "2019:05:05 10:00:00")
    os.utime(files[0], ns=(local_ns(2022, 4, 4), local_ns(2022, 4, 4)))  # EXIF must win over this
    return photos


def test_date_filters_through_the_library(dated_photos: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    first = sorted(dated_photos.glob("*.jpg"))[0]
    with indexed_library(tmp_path / "library", dated_photos, tiny_model) as library:
        old = library.search("x", k=20, filters=SearchFilters(before="2020-01-01"))
        assert [r.path.name for r in old] == [first.name]
        recent = library.search("x", k=20, filters=SearchFilters(after="2022-01-01"))
        assert len(recent) == 11 and first.name not in {r.path.name for r in recent}


NS = 1_000_000_000
# File times around 10:00:00 local time, in nanoseconds from that second: whole, a microsecond
# on, a fraction below a microsecond, either side of the half second, the last nanosecond.
SUB_SECOND_OFFSETS = (0, 999, 1_000, 250_000_000, 499_999_999, 500_000_000, 500_000_001, NS - 1, NS)


def taken_exactly(path: Path) -> tuple[datetime, int]:
    """When `path` was taken, exactly: the local second, and the nanoseconds past it; an EXIF
    date (to the second) wins over the file time."""
    exif = exif_taken_at(path)
    if exif is not None:
        return datetime.fromisoformat(exif), 0
    ns = path.stat().st_mtime_ns
    return datetime.fromtimestamp(ns // NS), ns % NS


def in_range(taken: tuple[datetime, int], after: datetime | None, before: datetime | None) -> bool:
    """The reference: on or after `after`, strictly before `before`, to the nanosecond."""

    def exact(bound: datetime) -> tuple[datetime, int]:
        return bound.replace(microsecond=0), bound.microsecond * 1000

    return (after is None or taken >= exact(after)) and (before is None or taken < exact(before))


def test_date_filters_compare_fractions_of_a_second(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A bound's fraction of a second was cut off: `after=10:00:00.5` let in a file modified at
    10:00:00.2, `before=10:00:00.5` left it out, and after 10:00:00.3 with before 10:00:00.6 was
    refused as empty. Checked against a reference on real files, EXIF-dated and from before
    1970 among them, for bounds either side of every file's time."""
    files = sorted(photos.glob("*.jpg"))
    second = int(datetime(2024, 5, 1, 10).timestamp()) * NS
    times = [second + offset for offset in SUB_SECOND_OFFSETS]
    times += [-NS // 4, -NS]  # a quarter of a second, and a whole one, before 1970 began
    for path, ns in zip(files, times, strict=False):
        os.utime(path, ns=(ns, ns))
    exif_dated = files[len(times)]  # to the second, with a file time far from it
    with_exif_date(exif_dated, exif_dated, "2024:05:01 10:00:01")
    os.utime(exif_dated, ns=(second + NS // 2, second + NS // 2))
    taken = {path.name: taken_exactly(path) for path in files}
    moments = {moment + timedelta(microseconds=ns // 1000) for moment, ns in taken.values()}
    bounds = sorted(
        {moment + timedelta(microseconds=shift) for moment in moments for shift in (-1, 0, 1, 300_000)}
    )
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:

        def found(after: datetime | None, before: datetime | None) -> list[str]:
            filters = SearchFilters(after=after, before=before)
            # as ISO text, as the command line and the server pass them: the same filters
            assert filters == SearchFilters(
                after=after and after.isoformat(), before=before and before.isoformat()
            )
            return sorted(result.path.name for result in library.search("x", k=50, filters=filters))

        for bound in bounds:
            for after, before in ((bound, None), (None, bound)):
                expected = sorted(name for name, when in taken.items() if in_range(when, after, before))
                assert found(after, before) == expected, (after, before)
        for after, before in itertools.pairwise(bounds):  # every narrow range
            expected = sorted(name for name, when in taken.items() if in_range(when, after, before))
            assert found(after, before) == expected, (after, before)


def test_under_a_folder_reached_through_links_finds_its_images(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "own").mkdir(parents=True)
    for photo in sorted(photos.glob("*.jpg"))[:3]:
        os.replace(photo, root / "own" / photo.name)
    (root / "linked").symlink_to(photos)  # a root indexed with links followed keeps the link's path
    alias = tmp_path / "alias"
    alias.symlink_to(root)  # a root given through a link is kept resolved
    with Library.open(tmp_path / "library") as library:
        model, weights = str(tiny_model.config), str(tiny_model.checkpoint)
        library.index(alias, model=model, pretrained=weights, follow_symlinks=True, workers=2)
        linked = library.search("x", k=20, filters=SearchFilters(under=str(root / "linked")))
        assert sorted(r.path.name for r in linked) == sorted(p.name for p in photos.glob("*.jpg"))
        own = library.search("x", k=20, filters=SearchFilters(under=str(alias / "own")))
        assert len(own) == 3 and all(r.path.parent == root / "own" for r in own)


def test_files_that_failed_to_index_never_fill_a_filtered_search(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Failed files match folder and date filters (they have a path and a file time) but have
    no vector: a filtered search returns every indexed image it should, and only those."""
    broken = photos / "broken"
    broken.mkdir()
    for number in range(5):
        (broken / f"damaged-{number}.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    only_broken = tmp_path / "only-broken"
    only_broken.mkdir()
    (only_broken / "damaged.png").write_bytes(b"\x89PNG but nothing after")
    good = sorted(path.name for path in photos.glob("*.jpg"))
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        library.index(only_broken)
        assert library.status().counts.failed == 6
        for filters in (SearchFilters(under=str(photos)), SearchFilters(after="2000-01-01")):
            found = library.search("x", k=100, filters=filters)
            assert sorted(result.path.name for result in found) == good
        assert library.search("x", k=10, filters=SearchFilters(under=str(only_broken))) == []


@pytest.mark.slow
def test_date_and_size_filters_on_the_command_line(
    dated_photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    library = str(tmp_path / "library")
    assert run_cli("index", str(dated_photos), "--library", library, *tiny_model.index_args()).returncode == 0
    first = sorted(dated_photos.glob("*.jpg"))[0]
    old = run_cli("search", "x", "--library", library, "--before", "2020-01-01", "-f", "paths")
    assert old.returncode == 0 and old.stdout.split() == [str(first.resolve())]
    wide = run_cli("search", "x", "--library", library, "--min-width", "1601", "--image-format", "jpeg")
    assert wide.returncode == 0 and "No matching images." in wide.stderr
    bad = run_cli("search", "x", "--library", library, "--after", "someday")
    assert bad.returncode == 1 and "error: --after 'someday' is not a date" in bad.stderr


def test_date_filters_through_the_server(dated_photos: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    first = sorted(dated_photos.glob("*.jpg"))[0]
    with (
        indexed_library(tmp_path / "library", dated_photos, tiny_model) as library,
        running_server(library) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        got = client.get("/search", params={"q": "x", "k": 20, "before": "2020-01-01"})
        assert got.status_code == 200
        assert [Path(r["path"]).name for r in got.json()["results"]] == [first.name]
        body = {"q": "x", "k": 20, "filters": {"after": "2022-01-01T00:00:00"}}
        posted = client.post("/search", json=body).json()["results"]
        assert len(posted) == 11
        bad = client.get("/search", params={"q": "x", "after": "someday"})
        assert bad.status_code == 422
        backwards = client.post(
            "/search", json={"q": "x", "filters": {"after": "2022-01-01", "before": "2021-01-01"}}
        )
        assert backwards.status_code == 400
        past_the_calendar = client.get("/search", params={"q": "x", "after": "9999-12-31T23:59:59-14:00"})
        assert past_the_calendar.status_code == 400
        assert "outside the range of dates" in past_the_calendar.json()["message"]


def test_a_size_filter_beyond_any_integer_sqlite_holds_matches_nothing(
    photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """A mistyped --min-width of 20 digits is a size no image has: no match, not a traceback
    from SQLite, which cannot bind an integer beyond 2**63 - 1."""
    huge = 10**20
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        first = library.search("x", k=1)[0]
        for filters in (SearchFilters(min_width=huge), SearchFilters(min_height=2**63)):
            assert library.search("x", filters=filters) == []
            assert library.similar(first.id, filters=filters) == []
            assert library.recommend([first.id], filters=filters, diversity=0.5) == []
        assert len(library.search("x", k=20, filters=SearchFilters(min_width=1, min_height=1))) == 12
    for command in (["search", "x"], ["similar", str(first.path)]):
        found = run_cli(*command, "--library", str(tmp_path / "library"), "--min-width", str(huge))
        assert found.returncode == 0, found.stderr
        assert "No matching images." in found.stderr and "Traceback" not in found.stderr


def test_an_image_moved_out_of_the_folder_while_a_search_ran_is_not_returned(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """A search under a folder picks the ids allowed, asks FAISS, then names the hits: an
    index run that moves an image out of the folder in between (a service searching while
    the command line indexes) must not make it a result under a folder it has left. The move
    is committed by a real index run between the two steps a search takes."""
    kept, leaving = photos / "a", photos / "b"
    for folder in (kept, leaving):
        folder.mkdir()
    files = sorted(photos.glob("*.jpg"))
    for position, file in enumerate(files[:6]):
        file.rename((kept if position % 2 else leaving) / file.name)
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    try:
        criteria = filter_criteria(SearchFilters(under=leaving))
        vector = library._catalog.vector(library.search("x", k=1)[0].id)
        assert vector is not None
        hits = library._ranker._hits(vector[None, :], 10, criteria, [set()], None)
        moved = hits[0][0][1]
        moved_from = Path(library.image(moved).path)
        moved_from.rename(kept / moved_from.name)
        assert library.index(photos, workers=1).moved == 1
        named = library._ranker._named(hits, criteria)[0]
        assert moved not in [hit.id for hit in named] and len(named) == len(hits[0]) - 1
        assert all(hit.path.parent == leaving for hit in named)
        unfiltered = library._ranker._named(hits, [])[0]  # the move kept its id
        assert [hit.path for hit in unfiltered if hit.id == moved] == [kept / moved_from.name]
    finally:
        library.close()
