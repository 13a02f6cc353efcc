"""The Python API for applications: recommend, batch queries, filters, single images, reindex."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TinyModel
from pixsift import (
    AccessDeniedError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidPathError,
    Library,
    QueryError,
    QueryTerm,
    SearchFilters,
    search_once,
)
from pixsift.search.diversity import mmr_order
from pixsift.search.ranking import MMR_POOL_MAX
from pixsift.search.recommend import RocchioWeights, rocchio
from sample_photos import make_photo, save, write_photos
from serving import indexed_library


@pytest.fixture
def library(tmp_path: Path, photos: Path, tiny_model: TinyModel) -> Library:
    write_photos(photos / "small", 3, size=(320, 240), seed=500, suffix=".png")
    return indexed_library(tmp_path / "library", photos, tiny_model)


def id_of(library: Library, path: Path) -> int:
    known = library._catalog.known_file(str(path))
    assert known is not None
    return known.id


def unit(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)


def test_recommend_is_rocchio_over_stored_and_text_vectors(library: Library, photos: Path) -> None:
    liked = [id_of(library, photos / "photo_0100.jpg"), id_of(library, photos / "photo_0101.jpg")]
    disliked = id_of(library, photos / "photo_0102.jpg")
    stored = library._catalog.vectors([*liked, disliked])
    text = library._embedder_or_load().embed_texts(["a horse"])[0]
    expected_query = unit(
        np.mean([unit(stored[liked[0]]), unit(stored[liked[1]]), unit(text)], axis=0)
        - 0.25 * unit(stored[disliked])
    )
    got = library.recommend([*liked, "a horse"], [disliked], k=8, exclude=[5])
    expected = library.search_vector(expected_query, k=8, exclude_ids={*liked, disliked, 5})
    assert [hit.id for hit in got] == [hit.id for hit in expected]
    assert [hit.score for hit in got] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    assert not {*liked, disliked, 5} & {hit.id for hit in got}


def test_a_query_terms_weight_counts_in_rocchio(library: Library, photos: Path) -> None:
    liked = id_of(library, photos / "photo_0100.jpg")
    disliked = id_of(library, photos / "photo_0102.jpg")
    stored = library._catalog.vectors([liked, disliked])
    text = library._embedder_or_load().embed_texts(["a horse"])[0]
    expected_query = unit(
        np.mean([3.0 * unit(text), unit(stored[liked])], axis=0) - 0.25 * 0.5 * unit(stored[disliked])
    )
    got = library.recommend(
        [QueryTerm(text="a horse", weight=3.0), liked],
        [QueryTerm(image=str(photos / "photo_0102.jpg"), weight=0.5)],
        k=8,
    )
    expected = library.search_vector(expected_query, k=8, exclude_ids={liked, disliked})
    assert [hit.id for hit in got] == [hit.id for hit in expected]
    assert [hit.score for hit in got] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    for weight in (0.0, -1.0):  # a minus sign on a positive example must not be dropped
        with pytest.raises(QueryError, match="weight must be positive"):
            library.recommend([QueryTerm(text="a horse", weight=weight)])


def test_recommend_accepts_files_and_bytes(library: Library, photos: Path, tmp_path: Path) -> None:
    by_id = library.recommend([id_of(library, photos / "photo_0104.jpg")], k=5)
    by_path = library.recommend([photos / "photo_0104.jpg"], k=5)
    assert [hit.id for hit in by_path] == [hit.id for hit in by_id]
    outside = shutil.copy(photos / "photo_0104.jpg", tmp_path / "copy.jpg")
    by_bytes = library.recommend([Path(outside).read_bytes()], k=6)
    assert by_bytes[0].id == id_of(library, photos / "photo_0104.jpg")  # not an example: kept
    assert [hit.id for hit in by_bytes[1:]] == [hit.id for hit in by_id]


def test_image_bytes_in_a_buffer_are_one_image_not_ids(library: Library, photos: Path) -> None:
    """A bytearray or memoryview (an upload's buffer) is an image's bytes, as `bytes` is; one
    alone was read as a list of image ids, one per byte ("No image in the library has id 255")."""
    data = (photos / "photo_0104.jpg").read_bytes()
    expected = [(hit.id, hit.score) for hit in library.recommend(data, k=4)]
    expected_similar = [(hit.id, hit.score) for hit in library.similar(data, k=4)]
    for buffer in (bytearray(data), memoryview(data)):
        assert [(hit.id, hit.score) for hit in library.recommend(buffer, k=4)] == expected
        assert [(hit.id, hit.score) for hit in library.recommend([buffer], k=4)] == expected  # type: ignore[list-item]
        similar = library.similar(buffer, k=4)  # type: ignore[arg-type]
        assert [(hit.id, hit.score) for hit in similar] == expected_similar
        with pytest.raises(QueryError, match="takes a list of queries"):
            library.similar_many(buffer)


def test_exclude_takes_one_id_and_refuses_what_is_no_id(library: Library, photos: Path) -> None:
    """One id alone excludes that id; a float, a string or None is a QueryError, where int()
    had turned 2.7 into image 2, "a" into a ValueError and one id into a TypeError."""
    liked = id_of(library, photos / "photo_0104.jpg")
    top = library.recommend([liked], k=3)
    for one in (top[0].id, np.int64(top[0].id)):
        assert [hit.id for hit in library.recommend([liked], k=2, exclude=one)] == [h.id for h in top[1:]]
        vector = library._catalog.vector(liked)
        assert vector is not None
        kept = library.search_vector(vector, k=2, exclude_ids=[liked, one])
        assert [hit.id for hit in kept] == [h.id for h in top[1:]]
    for wrong in ([top[0].id + 0.7], ["a"], [None], "12", 2.0, [True]):
        with pytest.raises(QueryError, match="whole numbers"):
            library.recommend([liked], exclude=wrong)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="whole numbers"):
            library.search_vector(np.ones(64, dtype=np.float32), exclude_ids=wrong)  # type: ignore[arg-type]


def test_recommend_errors(library: Library) -> None:
    with pytest.raises(QueryError, match="at least one positive"):
        library.recommend([], ["a cat"])
    with pytest.raises(ImageNotFoundError):
        library.recommend([987654])
    for diversity in (1.5, float("nan"), "0.3", None, True):  # a form field passed on unread
        with pytest.raises(QueryError, match="diversity must be a number from 0 to 1"):
            library.recommend(["a cat"], diversity=diversity)  # type: ignore[arg-type]
    assert len(library.recommend(["a cat"], diversity=np.float32(0.5), k=3)) == 3  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="cancel"):
        rocchio(np.ones((1, 4)), np.ones((1, 4)), RocchioWeights(positive=1.0, negative=1.0))


def test_an_image_on_both_sides_is_refused(library: Library, photos: Path, tmp_path: Path) -> None:
    """The same image liked and disliked (by id, file, link, bytes, or its file on one side and
    its id on the other) is a contradiction Rocchio would quietly settle towards the positive
    side: refused, while different images, and texts, are fine on either side."""
    photo = photos / "photo_0104.jpg"
    photo_id = id_of(library, photo)
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    data = photo.read_bytes()
    both = "given both as a positive and as a negative example: give each image on one side only."
    cases = [
        (([photo_id, "a cat"], [photo_id]), f"Image {photo_id} is {both}"),
        (([data], [data]), f"The same image's bytes are {both}"),
        (
            ([QueryTerm(image=str(link), weight=2.0)], [photo]),
            f"Image {photo} is a negative example and also a positive one (as {link}): "
            "give each image on one side only.",
        ),
        (
            ([photo], [photo_id]),
            f"Image {photo_id} is given both as a positive and as a negative example (once by its id, "
            "once as its file): give each image on one side only.",
        ),
    ]
    for (positive, negative), message in cases:
        with pytest.raises(QueryError) as refused:
            library.recommend(positive, negative)  # type: ignore[arg-type]
        assert str(refused.value) == message
    other = id_of(library, photos / "photo_0101.jpg")
    assert [hit.id for hit in library.recommend([photo_id, "a cat"], [other, "a cat"], k=3)]


def test_rocchio_weights_that_would_mislead_are_refused(library: Library) -> None:
    """A NaN weight returned nothing without a word, a positive weight of 0 or less ranked the
    liked examples' opposite first, and a tuple was an AttributeError from the formula."""
    nan, inf = float("nan"), float("inf")
    for positive, negative in ((nan, 0.25), (0.0, 0.25), (-1.0, 0.0), (1.0, -0.5), (1.0, inf)):
        with pytest.raises(QueryError, match="The Rocchio weight"):
            RocchioWeights(positive=positive, negative=negative)
    with pytest.raises(QueryError, match="The Rocchio weight positive"):
        RocchioWeights(positive="1")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"weights must be a pixsift\.RocchioWeights"):
        library.recommend(["a cat"], weights=(1.0, 0.25))  # type: ignore[arg-type]
    hits = library.recommend(["a cat"], ["a dog"], k=3, weights=RocchioWeights(positive=2, negative=0))
    assert [hit.id for hit in hits] == [hit.id for hit in library.search("a cat", k=3)]


def test_whole_numbers_too_large_for_a_float_are_refused_as_query_errors(library: Library) -> None:
    """A threshold or weight of 10**400 (a Python int, say from a form field read with int())
    is no finite number: it was an OverflowError from math.isfinite or float(), which a caller
    catching PixsiftError does not expect, and it named no argument."""
    huge = 10**400
    image_id = library.search("a cat", k=1)[0].id
    refused = "minimum score must be a finite number, not a whole number of about 401 digits"
    with pytest.raises(QueryError, match=refused):
        library.search("a cat", min_score=huge)
    with pytest.raises(QueryError, match=refused):
        search_once("a cat", library=library.path, min_score=-huge)
    with pytest.raises(QueryError, match=refused):
        library.similar(image_id, min_score=huge)
    with pytest.raises(QueryError, match=refused):
        library.recommend([image_id], min_score=huge, diversity=0.5)
    with pytest.raises(QueryError, match="query weight must be a finite number"):
        QueryTerm(text="a cat", weight=huge)
    with pytest.raises(QueryError, match="The Rocchio weight positive must be a number above 0"):
        RocchioWeights(positive=huge)
    with pytest.raises(QueryError, match="The Rocchio weight negative must be a number 0 or more"):
        RocchioWeights(negative=-huge)
    assert RocchioWeights(positive=10**30, negative=3).positive == 10**30  # large, but a float


def test_an_image_that_failed_to_index_is_named_with_its_reason_as_a_query(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Its id is in the library (`image(id)` returns it, with `.error`): searching with it is
    refused, but not as an id the library does not hold."""
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    broken = library.image(id_of(library, photos / "broken.jpg"))
    assert broken.error is not None
    with pytest.raises(ImageNotFoundError) as from_similar:
        library.similar(broken.id)
    with pytest.raises(ImageNotFoundError) as from_recommend:
        library.recommend([broken.id, "a cat"])
    for raised in (from_similar, from_recommend):
        message = str(raised.value)
        assert "could not be indexed" in message and broken.path in message and broken.error in message
        assert "No image in the library" not in message
    with pytest.raises(ImageNotFoundError, match="No image in the library has id 987654"):
        library.similar(987654)


class StopBeforeEmbedding:
    def start(self, phase: str, total: int | None = None) -> None:
        if phase == "Embedding":
            raise RuntimeError("stopped by the test")

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass


def test_an_image_not_embedded_again_yet_is_named_as_such_as_a_query(library: Library, photos: Path) -> None:
    """A re-embedding stopped before its embedding step leaves the images without vectors until
    the next run: they are still in the library, which the message must not deny."""
    image_id = id_of(library, photos / "photo_0100.jpg")
    with pytest.raises(RuntimeError, match="stopped by the test"):
        library.index(reembed=True, progress=StopBeforeEmbedding())
    assert library.image(image_id).error is None
    with pytest.raises(ImageNotFoundError, match=f"Image {image_id} .* has no vector yet"):
        library.similar(image_id)


def test_mmr_demotes_near_duplicates() -> None:
    a = unit(np.array([1.0, 0.0, 0.0]))
    a_twin = unit(np.array([1.0, 0.05, 0.0]))
    b = unit(np.array([0.0, 1.0, 0.0]))
    vectors = np.stack([a, a_twin, b])
    relevance = np.array([0.9, 0.89, 0.7], dtype=np.float32)
    assert mmr_order(relevance, vectors, 3, 0.0) == [0, 1, 2]
    assert mmr_order(relevance, vectors, 3, 0.5) == [0, 2, 1]
    assert mmr_order(relevance, vectors, 2, 0.5) == [0, 2]
    assert mmr_order(relevance[:0], vectors[:0], 3, 0.5) == []


def test_mmr_memory_grows_with_the_pool_not_its_square() -> None:
    """A pool of 4,000 candidates would need a 64 MB similarity table; MMR keeps one row."""
    generator = np.random.default_rng(3)
    vectors = generator.normal(size=(4000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = generator.uniform(size=4000).astype(np.float32)
    tracemalloc.start()
    try:
        order = mmr_order(relevance, vectors, 50, 0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(order) == len(set(order)) == 50
    assert peak < 4 * vectors.nbytes  # the square table alone is 64 MB; the vectors 1 MB


def test_diversity_spreads_the_results(library: Library, photos: Path) -> None:
    seed = [id_of(library, photos / "photo_0100.jpg")]
    plain = library.recommend(seed, k=4)
    varied = library.recommend(seed, k=4, diversity=0.9)
    assert varied[0].id == plain[0].id  # the best match always comes first
    assert [hit.rank for hit in varied] == [1, 2, 3, 4]

    def spread(ids: list[int]) -> float:
        vectors = library._catalog.vectors(ids)
        matrix = np.stack([vectors[i] for i in ids])
        similarity = matrix @ matrix.T
        return float(similarity[np.triu_indices(len(ids), 1)].mean())

    assert spread([hit.id for hit in varied]) <= spread([hit.id for hit in plain]) + 1e-6


def test_diversity_returns_k_results_beyond_its_candidate_pool(tmp_path: Path, tiny_model: TinyModel) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(7)
    count = MMR_POOL_MAX + 10
    for number in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:04d}.png")
    library = indexed_library(tmp_path / "library", folder, tiny_model)
    example = id_of(library, folder / "0000.png")
    k = count - 1  # every image but the example
    plain = library.recommend([example], k=k)
    assert len(plain) == k
    varied = library.recommend([example], k=k, diversity=0.3)
    assert len(varied) == k and len({hit.id for hit in varied}) == k
    # MMR reorders the best MMR_POOL_MAX; the results after those follow by score, as without it.
    assert {hit.id for hit in varied[:MMR_POOL_MAX]} == {hit.id for hit in plain[:MMR_POOL_MAX]}
    assert [hit.id for hit in varied[:MMR_POOL_MAX]] != [hit.id for hit in plain[:MMR_POOL_MAX]]
    assert [hit.id for hit in varied[MMR_POOL_MAX:]] == [hit.id for hit in plain[MMR_POOL_MAX:]]
    assert [hit.rank for hit in varied] == list(range(1, k + 1))


def test_batch_queries_equal_single_ones(library: Library, photos: Path, tmp_path: Path) -> None:
    texts = ["a rocket", "coins", "the moon"]
    assert [[h.id for h in hits] for hits in library.search_many(texts, k=4)] == [
        [h.id for h in library.search(text, k=4)] for text in texts
    ]
    file = photos / "photo_0103.jpg"
    outside = save(make_photo(77, (300, 200)), tmp_path / "q.jpg")
    images: list[int | str | os.PathLike[str] | bytes] = [
        id_of(library, file),
        file,
        outside.read_bytes(),
        str(outside),
    ]
    batches = library.similar_many(images, k=3)
    assert (
        [h.id for h in batches[0]] == [h.id for h in batches[1]] == [h.id for h in library.similar(file, k=3)]
    )
    assert id_of(library, file) not in {h.id for h in batches[0]}
    assert [h.id for h in batches[2]] == [h.id for h in batches[3]]
    assert library.search_many([], k=3) == [] and library.similar_many([], k=3) == []


def test_filters(library: Library, photos: Path) -> None:
    everything = len(library.search("x", k=50))
    assert everything == 15
    pngs = library.search("x", k=50, filters=SearchFilters(formats=("png",)))
    assert {hit.format for hit in pngs} == {"PNG"} and len(pngs) == 3
    assert len(library.search("x", k=50, filters=SearchFilters(formats=("jpg",)))) == 12
    big = library.search("x", k=2, filters=SearchFilters(min_width=1600, min_height=1200))
    assert len(big) == 2 and all(hit.width == 1600 for hit in big)
    assert library.search("x", k=5, filters=SearchFilters(min_width=5000)) == []
    inside = library.search("x", k=50, filters=SearchFilters(under=str(photos / "small"), formats=("PNG",)))
    assert len(inside) == 3
    with pytest.raises(QueryError):
        SearchFilters(min_width=0)
    with pytest.raises(QueryError):
        SearchFilters(formats=("no such!",))
    with pytest.raises(QueryError, match="once"):
        library.search("x", under=photos, filters=SearchFilters(under=str(photos)))


def test_image_delete_and_thumbnail(library: Library, photos: Path) -> None:
    image_id = id_of(library, photos / "photo_0105.jpg")
    info = library.image(image_id)
    assert (info.width, info.height, info.format) == (1600, 1200, "JPEG")
    thumb = library.thumbnail(image_id, 64)
    assert thumb.is_file() and thumb.parent == library.path / "thumbnails" / str(image_id)
    assert library.thumbnail(image_id, 64) == thumb  # cached
    save(make_photo(1, (800, 600)), photos / "photo_0105.jpg")  # the file changes: a new one
    fresh = library.thumbnail(image_id, 64)
    assert fresh != thumb and not thumb.exists()  # and the stale one goes

    deleted = library.delete(image_id)
    assert deleted.id == image_id and not fresh.exists()
    with pytest.raises(ImageNotFoundError):
        library.image(image_id)
    assert image_id not in {hit.id for hit in library.search("x", k=50)}
    assert (photos / "photo_0105.jpg").is_file()
    with pytest.raises(ImageNotFoundError):
        library.delete(image_id)


def test_image_file_refuses_links_out_of_the_roots(library: Library, photos: Path, tmp_path: Path) -> None:
    image_id = id_of(library, photos / "photo_0106.jpg")
    assert library.image_file(image_id) == str(photos / "photo_0106.jpg")
    (photos / "photo_0106.jpg").unlink()
    (photos / "photo_0106.jpg").symlink_to(save(make_photo(2, (64, 48)), tmp_path / "elsewhere.jpg"))
    with pytest.raises(AccessDeniedError):
        library.thumbnail(image_id)
    with pytest.raises(AccessDeniedError):
        library.resolve_inside_roots(photos / ".." / "elsewhere.jpg")


def test_reindex_touches_only_the_part_asked_for(library: Library, photos: Path) -> None:
    (photos / "photo_0100.jpg").unlink()  # outside the part re-indexed: still in the library
    new = write_photos(photos / "small", 1, size=(320, 240), seed=600, suffix=".png")[0]
    report = library.reindex(photos / "small")
    assert (report.added, report.removed, report.roots) == (1, 0, [str(photos / "small")])
    paths = {str(hit.path) for hit in library.search("x", k=50)}
    assert str(new) in paths and str(photos / "photo_0100.jpg") in paths
    assert library.reindex(photos).removed == 1
    with pytest.raises(AccessDeniedError):
        library.reindex(photos.parent)


def test_reindex_refuses_a_hidden_folder_its_root_does_not_index(library: Library, photos: Path) -> None:
    """Re-indexing `R/.hidden` (POST /index) added its images, which the next run over R, a
    root indexed without hidden files, removed again: every time, embedding them anew."""
    write_photos(photos / ".hidden" / "sub", 2, seed=610)
    for asked in (photos / ".hidden", photos / ".hidden" / "sub"):
        with pytest.raises(InvalidPathError, match="hidden folder"):
            library.check_reindex([asked])
        with pytest.raises(InvalidPathError, match="hidden folder"):
            library.reindex(asked)
    assert library.index().removed == 0
    library.index(photos, include_hidden=True)  # a root that takes hidden files takes them there
    assert library.reindex(photos / ".hidden").unchanged == 2


def test_query_images_above_the_pixel_limit_are_refused(library: Library, photos: Path) -> None:
    library.max_pixels = 1000 * 1000
    with pytest.raises(ImageTooLargeError, match="1,000,000"):
        library.similar((photos / "photo_0100.jpg").read_bytes())
