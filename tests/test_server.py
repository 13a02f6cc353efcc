"""The HTTP service, started for real (uvicorn on a free loopback port) and called over HTTP.

Answers are checked against the Python API on the same library, so the service is held to
what the core computes, not to hard-coded results.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from filelock import FileLock
from PIL import Image

from conftest import TinyModel, run_cli
from pixsift import Library, SearchFilters
from pixsift.config import LOCK_WAIT_S
from pixsift.errors import BusyError, ImageError, InvalidOptionError, LibraryWriteError
from pixsift.formatting import status_as_json
from pixsift.indexer import decode, pipeline
from pixsift.indexer.progress import SilentProgress
from pixsift.indexer.report import IndexInterrupted
from pixsift.server import ServerSettings, check_bind
from pixsift.server.errors import status_of
from pixsift.server.jobs import Job, JobManager, _JobProgress
from pixsift.server.limits import MAX_JSON_BYTES
from pixsift.server.query_params import REPEATABLE
from pixsift.server.settings import UnsafeBindError
from pixsift.storage.index_choice import IndexThresholds
from pixsift.storage.vector_index import VectorIndex
from pixsift.thumbnails import MAX_VARIANTS, RENDERING
from sample_photos import make_photo, save, write_photos
from serving import (
    API_KEY,
    indexed_library,
    running_server,
    running_uvicorn,
    wait_until_answered,
    wait_until_arrived,
)
from test_decode import png_claiming

KEYED = ServerSettings(api_key=API_KEY)
AUTH = {"X-API-Key": API_KEY}


def make_photos(folder: Path, photo_set: Path) -> Path:
    """The 12 test JPEGs (1600x1200) and, in `small/`, three PNGs of 320x240."""
    shutil.copytree(photo_set, folder)
    write_photos(folder / "small", 3, size=(320, 240), seed=500, suffix=".png")
    return folder


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel
) -> Iterator[tuple[Library, Path, str]]:
    """One indexed library and its server, for the tests that only read."""
    base = tmp_path_factory.mktemp("served")
    photos = make_photos(base / "Photos", photo_set)
    library = indexed_library(base / "library", photos, tiny_model)
    with running_server(library, KEYED) as url:
        yield library, photos, url
    library.close()


@pytest.fixture
def client(shared: tuple[Library, Path, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared[2], timeout=60) as http:
        yield http


@pytest.fixture
def own(tmp_path: Path, photo_set: Path, tiny_model: TinyModel) -> Iterator[tuple[Library, Path]]:
    """A private indexed library, for the tests that change it."""
    photos = make_photos(tmp_path / "Photos", photo_set)
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    yield library, photos
    library.close()


def ids_of(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["message"]
    if code is not None:
        assert body["error"] == code
    return body


# ---- search ------------------------------------------------------------------------------------


def test_health_and_stats(client: httpx.Client, shared: tuple[Library, Path, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert (stats["images"], stats["indexed"], stats["failed"]) == (15, 15, 0)
    assert stats["model"]["embed_dim"] == 64
    assert stats["roots"][0]["path"] == str(shared[1])
    assert stats["running_job"] is None
    assert stats["roots"][0]["missing"] is False


def test_head_is_answered_as_get_without_a_body(
    client: httpx.Client, shared: tuple[Library, Path, str]
) -> None:
    """Uptime checkers, proxies and link checkers send HEAD: every GET endpoint answered it
    405. It is now answered as GET is, with the same status and headers, and no body."""
    hit = shared[0].search("x", k=1)[0]
    for path in (
        "/healthz",
        "/stats",
        "/search?q=red",
        f"/images/{hit.id}",
        f"/images/{hit.id}/thumbnail?size=64",
        f"/images/{hit.id}/similar?k=2",
        "/failures",
        "/openapi.json",
        "/images/999999",  # an error is the same error
    ):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        for header in ("content-type", "content-length", "etag", "cache-control"):
            assert head.headers.get(header) == got.headers.get(header), (path, header)
    assert client.head("/images/999999").status_code == 404
    etag = client.get(f"/images/{hit.id}/thumbnail?size=64").headers["etag"]
    revalidated = client.head(f"/images/{hit.id}/thumbnail?size=64", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304
    # A path with no GET has no HEAD either; the schema lists no HEAD operations.
    refused = client.head("/index")
    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")
    operations = client.get("/openapi.json").json()["paths"].values()
    assert not [path for path in operations if "head" in path]


def test_stats_marks_an_indexed_folder_that_is_gone_as_status_does(
    own: tuple[Library, Path], tmp_path: Path
) -> None:
    """`pixsift status` says `missing` beside a root folder that is not on disk, but /stats
    listed it like any other: a client could not tell why its photos stayed in results."""
    library, photos = own
    gone = tmp_path / "Unplugged"
    write_photos(gone, 2, size=(160, 120), seed=900)
    library.index(gone, workers=2)
    shutil.rmtree(gone)
    with running_server(library) as url, httpx.Client(base_url=url, timeout=60) as http:
        roots = http.get("/stats").json()["roots"]
        schema = http.get("/openapi.json").json()["components"]["schemas"]["RootView"]
    assert {(root["path"], root["missing"]) for root in roots} == {(str(photos), False), (str(gone), True)}
    status = library.status()  # the same rule as the command line's status
    assert [(r.path, r.path in status.missing_roots) for r in status.roots] == [
        (root["path"], root["missing"]) for root in roots
    ]
    assert "missing" in schema["required"] and schema["properties"]["missing"]["description"]


def test_stats_tells_how_each_root_is_walked_as_status_does(
    own: tuple[Library, Path], tmp_path: Path
) -> None:
    """/stats listed a root's path and times alone, where `pixsift status --format json` also
    says whether its hidden files are indexed and its links followed, which POST /index reuses:
    a client could not tell why photos in a dot folder were never found."""
    library, photos = own
    hidden = tmp_path / "Hidden"
    write_photos(hidden / ".trip", 2, size=(160, 120), seed=901)
    library.index(hidden, include_hidden=True, workers=2)
    stats, schemas = stats_and_schema(library)
    listed = json.loads(status_as_json(library.status(), None))["roots"]
    assert stats["roots"] == listed  # the times too, written the same way
    walked = {root["path"]: (root["include_hidden"], root["follow_symlinks"]) for root in stats["roots"]}
    assert walked == {str(photos): (False, False), str(hidden): (True, False)}
    view = schemas["RootView"]
    assert set(view["properties"]) == set(listed[0]) == set(view["required"])
    assert all(view["properties"][name]["description"] for name in ("include_hidden", "follow_symlinks"))


def test_times_are_written_one_way_by_the_service_and_the_command_line(own: tuple[Library, Path]) -> None:
    """/stats wrote a root's times with `Z`, `pixsift status --format json` with `+00:00`, and
    both left the microseconds out when they were 0: a client comparing them as text, or
    parsing them with a fixed pattern, went wrong. Every time is now ISO 8601 in UTC, to the
    microsecond, with `Z`, the instant the Python API gives as an aware datetime."""
    library = own[0]
    instant = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    root = library.status().roots[0]
    image = library.search("x", k=1)[0].id
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, timeout=60) as http:
        job = http.post("/index", json={"paths": []}, headers=AUTH).json()
        job = wait_for_job(http, job["id"])
        stats = http.get("/stats").json()
        indexed_at = http.get(f"/images/{image}").json()["indexed_at"]
    command = run_cli("status", "--format", "json", "--library", str(library.path))
    assert command.returncode == 0, command.stderr
    told = [*(job[name] for name in ("created_at", "started_at", "finished_at")), indexed_at]
    for face in (stats["roots"][0], json.loads(command.stdout)["roots"][0]):
        told += [face["added_at"], face["last_indexed_at"]]
        assert face["added_at"] == root.added_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert all(instant.fullmatch(text) for text in told), told
    assert root.added_at.utcoffset() == timedelta(0) and library.image(
        image
    ).indexed_at.utcoffset() == timedelta(0)
    assert datetime.fromisoformat(indexed_at) == library.image(image).indexed_at


def test_stats_says_why_the_index_file_is_damaged_as_status_does(own: tuple[Library, Path]) -> None:
    """/stats said "damaged" but not why, which `pixsift status` does: a client could not tell
    a cut-short copy from a file that is not a pixsift index at all."""
    library, _ = own
    index_file = library.path / "vectors.faiss"
    with running_server(library) as url, httpx.Client(base_url=url, timeout=60) as http:
        healthy = http.get("/stats").json()
        os.truncate(index_file, index_file.stat().st_size // 2)
        damaged = http.get("/stats").json()
        schema = http.get("/openapi.json").json()["components"]["schemas"]["Stats"]
    assert (healthy["index_file"], healthy["index_damage"]) == ("up to date", None)
    status = library.status().index_file  # the same words as the command line's status
    assert damaged["index_file"] == status.state == "damaged"
    assert damaged["index_damage"] == status.damage and "cut short" in damaged["index_damage"]
    assert "index_damage" in schema["required"] and schema["properties"]["index_damage"]["description"]


def stats_and_schema(library: Library) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET /stats of a server on `library`, and the OpenAPI schemas of its answer."""
    with running_server(library) as url, httpx.Client(base_url=url, timeout=60) as http:
        stats = http.get("/stats").json()
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
    return stats, schemas


def test_stats_tells_the_index_kind_and_tuning_as_status_does(own: tuple[Library, Path]) -> None:
    """/stats gave the index file's state alone: a client could not tell an exact (flat) index
    from an approximate one, its tuned parameter and recall, or how many changes loading it
    replays, which `pixsift status --format json` gives in its `index` object."""
    library, _ = own
    library.delete(library.search("a red bicycle", k=1)[0].id)  # one change for loading to replay
    stats, schemas = stats_and_schema(library)
    status = library.status()  # the same object, under the same names, as the command line's
    assert stats["index"] == json.loads(status_as_json(status, None))["index"]
    assert stats["index"]["kind"] == "flat" and stats["index"]["search_param"] is None
    assert (stats["index"]["state"], stats["index"]["changes"]) == ("caught up on load", 1)
    assert (stats["index_file"], stats["index_damage"]) == (stats["index"]["state"], None)  # kept
    assert stats["index"]["generation"] == stats["generation"] - 1
    assert "index" in schemas["Stats"]["required"] and schemas["Stats"]["properties"]["index"]["description"]
    view = schemas["IndexView"]
    assert set(view["properties"]) == set(stats["index"]) == set(view["required"])
    assert all(field["description"] for field in view["properties"].values())


def test_stats_tells_an_hnsw_index_its_tuned_ef_search_and_recall(
    tmp_path: Path, photo_set: Path, tiny_model: TinyModel
) -> None:
    """A library grown onto HNSW: /stats names the kind, its efSearch and the recall it was
    tuned to, as the index file's header records them and `Library.status()` reads them."""
    photos = make_photos(tmp_path / "Photos", photo_set)
    small = IndexThresholds(flat_max=5, exact_filter_max=2)  # 15 images: past flat
    with Library.open(tmp_path / "library", index_thresholds=small) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), workers=2)
        stats, _ = stats_and_schema(library)
        state = library.status().index_file
        summary = library.index_summary()
    assert stats["index"] == {
        "state": "up to date",
        "generation": stats["generation"],
        "changes": None,
        "kind": "hnsw",
        "search_param": state.search_param,
        "tuned_recall_at_10": state.recall,
        "damage": None,
    }
    assert (summary.kind, summary.search_param, summary.recall) == (
        "hnsw",
        stats["index"]["search_param"],
        stats["index"]["tuned_recall_at_10"],
    )
    assert stats["index"]["search_param"] > 0 and 0 < stats["index"]["tuned_recall_at_10"] <= 1
    assert stats["index_in_memory"] == summary.as_json()  # what reindex prints, as JSON


def test_a_service_stopped_while_its_index_loads_closes_its_library_at_once(
    own: tuple[Library, Path],
) -> None:
    """Closing the library (as `pixsift serve` does once it stops) waited for the lock a load
    of the index holds: a service stopped during a load of minutes stopped only once it had
    ended, long after `docker stop` kills. The load in the background ends on its own."""
    library, _ = own
    served = Library.open(library.path)
    holding, release = threading.Event(), threading.Event()

    def load_of_minutes() -> None:  # holds the index's lock as a long load does
        with served._index.in_memory():
            holding.set()
            release.wait(60)

    loader = threading.Thread(target=load_of_minutes)
    loader.start()
    try:
        assert holding.wait(60)
        served.close()  # returns while the lock is held
        assert loader.is_alive() and not release.is_set()
    finally:
        release.set()
        loader.join(60)


def test_stats_tells_the_index_held_in_memory_without_loading_one(own: tuple[Library, Path]) -> None:
    """Nothing the service answered said what its search index takes in memory, or how many
    vectors and HNSW tombstones it holds (`Library.index_summary()`): /stats now does, for the
    index in memory, and loads none to say it."""
    library, _ = own
    with Library.open(library.path) as cold:  # a process that has not searched yet
        before, schemas = stats_and_schema(cold)
        assert before["index_in_memory"] is None and cold.loaded_index_summary() is None  # not loaded
        cold.search("a cat on a sofa", k=1)
        after, _ = stats_and_schema(cold)
        summary = cold.index_summary()
    assert after["index_in_memory"] == summary.as_json()
    assert (after["index_in_memory"]["kind"], after["index_in_memory"]["vectors"]) == ("flat", 15)
    assert after["index_in_memory"]["memory_bytes"] == summary.memory_bytes > 0
    assert before["index"] == after["index"]  # the file's state, told either way
    view = schemas["IndexMemoryView"]
    assert set(view["properties"]) == set(summary.as_json()) == set(view["required"])
    assert all(field["description"] for field in view["properties"].values())
    assert schemas["Stats"]["properties"]["index_in_memory"]["description"]


def test_health_and_stats_answer_at_once_while_the_index_loads(own: tuple[Library, Path]) -> None:
    """`pixsift serve` listened only once its search index was loaded (minutes for a large one
    far behind its file): a monitor got no answer at all meanwhile, and GET /stats waited on
    the index's lock for as long as a load or catch-up held it. Now the index loads while the
    service listens: /healthz says `loading` (503) and /stats answers from what is known, at
    once; a search waits for the index, then answers from it."""
    library, _ = own
    with (
        Library.open(library.path) as cold,
        running_server(cold) as url,
        httpx.Client(base_url=url, timeout=30) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        # This thread holds the index's lock as a long load does, until the block ends: the
        # load that warm_up starts in the background waits for it, as searches do.
        with cold._index.in_memory():
            cold.warm_up(index_in_background=True)
            search = pool.submit(http.get, "/search", params={"q": "a cat on a sofa", "k": 3})
            health, stats = http.get("/healthz"), http.get("/stats")
            assert not search.done()  # it waits for the index
        assert search.result().status_code == 200 and len(search.result().json()["results"]) == 3
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        assert stats.status_code == 200, stats.text
        assert (stats.json()["index_loading"], stats.json()["index_in_memory"]) == (True, None)
        assert stats.json()["indexed"] == 15 and stats.json()["index_file"] == "up to date"
        assert http.get("/healthz").json() == {"status": "ok"}
        after = http.get("/stats").json()
    assert after["index_loading"] is False and after["index_in_memory"]["vectors"] == 15


def test_searches_go_on_while_an_index_job_saves_and_swaps_in_a_rebuilt_index(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index job wrote the search index file at its end, and the index it rebuilt once the
    library had outgrown the old one, under the lock searches take: every search (and GET
    /stats) waited for the write, seconds for a large index. Now both go on meanwhile, from
    the index in memory: the old one until the rebuilt one is saved and swapped in."""
    library, photos = own  # 15 images under a flat index
    write_photos(photos / "new", 2, size=(320, 240), seed=990)
    save = VectorIndex.save
    held = [(threading.Event(), threading.Event()) for _ in range(2)]  # (writing, go on), a save each
    saves = iter(held)

    def held_while_writing(index: VectorIndex, path: Path) -> None:
        writing, go_on = next(saves, (threading.Event(), None))
        writing.set()
        if go_on is not None:
            go_on.wait(60)
        save(index, path)

    monkeypatch.setattr(VectorIndex, "save", held_while_writing)
    seen: list[tuple[str, int, str]] = []
    with (
        Library.open(library.path, index_thresholds=IndexThresholds(flat_max=16)) as served,
        running_server(served, KEYED) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=20) as http,
    ):
        served.warm_up()  # the flat index in memory: 17 images call for HNSW
        job_id = http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"]
        for writing, go_on in held:
            assert writing.wait(60)
            found = ids_of(http.get("/search", params={"q": "a cat on a sofa", "k": 20}))
            in_memory = http.get("/stats").json()["index_in_memory"]
            seen.append((http.get(f"/jobs/{job_id}").json()["phase"], len(found), in_memory["kind"]))
            go_on.set()  # answered before the save was let go on
        ended = wait_for_job(http, job_id)
        after = http.get("/stats").json()["index_in_memory"]
    assert seen == [("Saving search index", 17, "flat"), ("Building search index", 17, "flat")]
    assert ended["state"] == "succeeded", ended
    assert (after["kind"], after["vectors"]) == ("hnsw", 17)


def test_search_get_and_post_match_the_library(
    client: httpx.Client, shared: tuple[Library, Path, str]
) -> None:
    library = shared[0]
    expected = library.search("a cat on a sofa", k=5)
    got = client.get("/search", params={"q": "a cat on a sofa", "k": 5})
    assert ids_of(got) == [hit.id for hit in expected]
    hits = got.json()["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["score"] == pytest.approx(expected[0].score, abs=1e-5)
    assert hits[0]["path"] == str(expected[0].path)
    posted = client.post("/search", json={"q": "a cat on a sofa", "k": 5})
    assert ids_of(posted) == ids_of(got)

    combined = client.post(
        "/search", json={"q": "a rocket", "plus": ["the moon"], "minus": ["a clock"], "k": 4}
    )
    assert ids_of(combined) == [
        h.id for h in library.search("a rocket", 4, plus=["the moon"], minus=["a clock"])
    ]


def test_batch_search_equals_single_searches(client: httpx.Client, shared: tuple[Library, Path, str]) -> None:
    queries = ["a horse", "coins on a table", "a rocket"]
    batch = client.post("/search/batch", json={"queries": queries, "k": 3})
    assert batch.status_code == 200
    single = [[hit.id for hit in shared[0].search(q, k=3)] for q in queries]
    assert [[hit["id"] for hit in hits] for hits in batch.json()["results"]] == single


def test_filters_restrict_inside_faiss(client: httpx.Client, shared: tuple[Library, Path, str]) -> None:
    photos = shared[1]
    small = client.get("/search", params={"q": "x", "k": 50, "under": str(photos / "small")}).json()[
        "results"
    ]
    assert len(small) == 3 and all(Path(h["path"]).parent == photos / "small" for h in small)

    png = client.post("/search", json={"q": "x", "k": 50, "filters": {"formats": ["png"]}}).json()["results"]
    assert sorted(h["id"] for h in png) == sorted(h["id"] for h in small)

    # k=2 still fills up from the matching images, wherever they rank among all of them
    jpeg = client.get("/search", params={"q": "x", "k": 2, "format": ["jpg", "PNG"], "min_width": 1000})
    assert len(ids_of(jpeg)) == 2 and all(h["format"] == "JPEG" for h in jpeg.json()["results"])
    wide = client.get("/search", params={"q": "x", "k": 50, "min_width": 321}).json()["results"]
    assert len(wide) == 12 and all(h["width"] == 1600 for h in wide)
    tall = client.get("/search", params={"q": "x", "k": 50, "min_height": 240}).json()["results"]
    assert len(tall) == 15


def test_similar_to_an_indexed_image(client: httpx.Client, shared: tuple[Library, Path, str]) -> None:
    library = shared[0]
    image_id = library.search("anything", k=1)[0].id
    got = ids_of(client.get(f"/images/{image_id}/similar", params={"k": 14}))
    assert image_id not in got and len(got) == 14
    assert got == [hit.id for hit in library.similar(image_id, k=14)]
    png = client.get(f"/images/{image_id}/similar", params={"k": 10, "format": "png"})
    assert len(ids_of(png)) == 3


def test_similar_to_an_upload_multipart_and_base64(
    client: httpx.Client, shared: tuple[Library, Path, str]
) -> None:
    library, photos, _ = shared
    data = (photos / "photo_0103.jpg").read_bytes()
    expected = [hit.id for hit in library.similar(photos / "photo_0103.jpg", k=3)]
    upload = client.post("/similar", params={"k": 3}, files={"file": ("q.jpg", data, "image/jpeg")})
    hits = upload.json()["results"]
    # the uploaded bytes are the indexed file's: it comes first, as its own best match
    assert hits[0]["path"] == str(photos / "photo_0103.jpg")
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["id"] for h in hits[1:]] == expected[:2]
    as_json = client.post("/similar", params={"k": 3}, json={"image_base64": base64.b64encode(data).decode()})
    assert ids_of(as_json) == ids_of(upload)
    filtered = client.post("/similar", params={"k": 5, "under": str(photos / "small")}, files={"file": data})
    assert len(ids_of(filtered)) == 3


def test_recommend_combines_examples_and_excludes(
    client: httpx.Client, shared: tuple[Library, Path, str]
) -> None:
    library, photos, _ = shared
    first, second, third = (hit.id for hit in library.search("a horse", k=3))
    body = {"positive": [first, "a horse in a field"], "negative": [third], "exclude": [second], "k": 12}
    got = ids_of(client.post("/recommend", json=body))
    assert len(got) == 12 and not {first, second, third} & set(got)
    expected = library.recommend([first, "a horse in a field"], [third], 12, exclude=[second])
    assert got == [hit.id for hit in expected]

    by_path = {"positive": [{"path": str(photos / "photo_0100.jpg")}], "k": 3}
    path_id = library._catalog.known_file(str(photos / "photo_0100.jpg"))
    assert path_id is not None
    assert path_id.id not in ids_of(client.post("/recommend", json=by_path))

    contradiction = client.post("/recommend", json={"positive": [first], "negative": [first]})
    refused = assert_error(contradiction, 400, "bad_query")
    both = "given both as a positive and as a negative example: give each image on one side only."
    assert refused["message"] == f"Image {first} is {both}"

    varied = client.post("/recommend", json={**body, "diversity": 0.7})
    assert sorted(ids_of(varied)) == sorted(got)  # k covers every candidate: same set, new order
    few = ids_of(client.post("/recommend", json={**body, "k": 4, "diversity": 0.7}))
    assert len(few) == 4 and not {first, second, third} & set(few)
    assert few == [
        h.id
        for h in library.recommend([first, "a horse in a field"], [third], 4, exclude=[second], diversity=0.7)
    ]


# ---- images ------------------------------------------------------------------------------------


def test_image_metadata_and_thumbnail(client: httpx.Client, shared: tuple[Library, Path, str]) -> None:
    library = shared[0]
    hit = library.search("x", k=1, filters=SearchFilters(formats=("JPEG",)))[0]
    meta = client.get(f"/images/{hit.id}").json()
    assert meta["path"] == str(hit.path) and (meta["width"], meta["height"], meta["format"]) == (
        1600,
        1200,
        "JPEG",
    )
    assert meta["file_size"] == hit.path.stat().st_size

    thumb = client.get(f"/images/{hit.id}/thumbnail", params={"size": 128})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and image.size == (128, 96)
    cached = list((library.path / "thumbnails" / str(hit.id)).glob("128-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == thumb.content
    again = client.get(f"/images/{hit.id}/thumbnail", params={"size": 128})
    assert again.content == thumb.content


def test_a_file_that_failed_to_index_says_why(own: tuple[Library, Path]) -> None:
    library, photos = own
    (photos / "notes.jpg").write_text("this is a text file")
    library.index(photos)
    known = library._catalog.known_file(str(photos / "notes.jpg"))
    assert known is not None and known.error
    indexed = library.search("x", k=1)[0].id
    with running_server(library) as url, httpx.Client(base_url=url) as http:
        meta = http.get(f"/images/{known.id}").json()
        assert meta["path"] == str(photos / "notes.jpg") and meta["width"] is None
        assert "not an image" in meta["error"] and meta["error"] == library.image(known.id).error
        assert http.get(f"/images/{indexed}").json()["error"] is None
        assert_error(http.get(f"/images/{known.id}/similar"), 404, "image_not_found")


def make_failures(photos: Path) -> list[Path]:
    """Six files with image names that cannot be indexed, by path: two whose names are not
    UTF-8 (a client sends them back percent-encoded as bytes) and two in a subfolder."""
    good = (photos / "photo_0107.jpg").read_bytes()
    odd = [Path(os.fsdecode(bytes(photos) + b"/caf" + byte + b".jpg")) for byte in (b"\xe9", b"\xeb")]
    bad = [photos / "a_notes.jpg", *odd, photos / "m_broken.jpg"]
    bad += [photos / "small" / "empty.png", photos / "small" / "z_half.png"]
    for path in bad:
        path.write_text("this is a text file")
    bad[3].write_bytes(good[: len(good) // 3])  # a truncated JPEG
    bad[4].write_bytes(b"")
    return bad


def failures_page(http: httpx.Client, limit: int, after: str | None) -> dict[str, Any]:
    """One page of GET /failures, `after` percent-encoded as the bytes a file name is."""
    url = f"/failures?limit={limit}"
    if after is not None:
        url += "&after=" + quote(after, safe="", errors="surrogateescape")
    response = http.get(url)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def all_pages(http: httpx.Client, limit: int) -> list[list[dict[str, str]]]:
    pages, after = [], None
    while True:
        page = failures_page(http, limit, after)
        pages.append(page["failures"])
        after = page["next_after"]
        if after is None:
            return pages
        assert after == page["failures"][-1]["path"]


def test_the_files_that_failed_are_listed_as_status_lists_them(own: tuple[Library, Path]) -> None:
    """GET /stats counted the files an index run could not read (`failed`), but nothing said
    which they were or why: an application could not show its user the skipped photos."""
    library, photos = own
    bad = make_failures(photos)
    library.index(photos)
    expected = [{"path": f.path, "error": f.error} for f in library.failures()]
    assert len(expected) == len(bad) == library.status().counts.failed
    assert sorted(os.fsencode(e["path"]) for e in expected) == sorted(map(os.fsencode, bad))
    as_cli = json.loads(status_as_json(library.status(), library.failures()))["failures"]
    with running_server(library) as url, httpx.Client(base_url=url) as http:  # no key: read-only
        whole = http.get("/failures").json()
        assert whole == {"failures": expected, "next_after": None} and expected == as_cli
        for limit in (1, 2, 4, 6):
            pages = all_pages(http, limit)
            assert [f for page in pages for f in page] == expected  # each once, in path order
            assert all(len(page) == limit for page in pages[:-1]) and 1 <= len(pages[-1]) <= limit
        assert failures_page(http, 3, str(bad[-1])) == {"failures": [], "next_after": None}
        schema = http.get("/openapi.json").json()["components"]["schemas"]
        assert schema["Failures"]["properties"]["next_after"]["description"]
        assert schema["FailureView"]["properties"]["error"]["description"]
    empty = Library.open(photos.parent / "empty-library")
    with running_server(empty) as url, httpx.Client(base_url=url) as http:
        assert http.get("/failures").json() == {"failures": [], "next_after": None}
    empty.close()


def test_paging_failures_skips_or_repeats_none_while_an_index_job_changes_them(
    own: tuple[Library, Path],
) -> None:
    library, photos = own
    bad = make_failures(photos)
    library.index(photos)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url) as http:
        first = failures_page(http, 2, None)  # reads stay open on loopback
        assert [f["path"] for f in first["failures"]] == [str(bad[0]), str(bad[1])]
        # meanwhile: one listed is fixed, one not yet listed is fixed, a new one comes before
        # and one after the cursor
        save(make_photo(900), bad[0])
        save(make_photo(901), bad[4])
        (photos / "b_new.jpg").write_text("new and broken")
        (photos / "small" / "y_new.png").write_text("new and broken")
        job = wait_for_job(http, http.post("/index", json={}, headers=AUTH).json()["id"])
        assert job["state"] == "succeeded", job
        rest = failures_page(http, 2, first["next_after"])
        pages = [first["failures"], rest["failures"]]
        while rest["next_after"] is not None:
            rest = failures_page(http, 2, rest["next_after"])
            pages.append(rest["failures"])
    seen = [f["path"] for page in pages for f in page]
    after_cursor = [f.path for f in library.failures() if os.fsencode(f.path) > os.fsencode(str(bad[1]))]
    assert seen == [str(bad[0]), str(bad[1]), *after_cursor]
    assert str(bad[4]) not in seen and str(photos / "small" / "y_new.png") in seen
    assert str(bad[2]) in seen  # right after the cursor, a name that is not UTF-8 either
    assert str(photos / "b_new.jpg") not in seen  # before the cursor: for a fresh listing
    assert str(photos / "b_new.jpg") in {f.path for f in library.failures()}


def test_failures_paging_parameters_are_checked(own: tuple[Library, Path]) -> None:
    library, photos = own
    make_failures(photos)
    library.index(photos)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url) as http:
        for limit in ("0", "-1", "1001", "abc", "", "2.5", str(2**70)):
            refused = assert_error(http.get("/failures", params={"limit": limit}), 422, "invalid_request")
            assert [d["loc"] for d in refused["details"]] == [["query", "limit"]]
        for after in ("", "x" * 5000):
            refused = assert_error(http.get("/failures", params={"after": after}), 422, "invalid_request")
            assert [d["loc"] for d in refused["details"]] == [["query", "after"]]
        assert len(http.get("/failures", params={"limit": "1000"}).json()["failures"]) == 6
    settings = check_bind("0.0.0.0", API_KEY)  # beyond loopback: a read that needs the key
    with running_server(library, settings) as url, httpx.Client(base_url=url) as http:
        assert_error(http.get("/failures"), 401, "unauthorized")
        assert len(http.get("/failures", headers=AUTH).json()["failures"]) == 6


def test_the_thumbnail_cache_stays_bounded(own: tuple[Library, Path]) -> None:
    library = own[0]
    cache = library.path / "thumbnails"

    def cached() -> int:
        return len(list(cache.rglob("*.jpg")))

    small = library.search("x", k=1, filters=SearchFilters(formats=("PNG",)))[0]  # 320x240
    big = library.search("x", k=1, filters=SearchFilters(formats=("JPEG",)))[0]  # 1600x1200
    with running_server(library, KEYED) as url, httpx.Client(base_url=url) as http:
        # never enlarged: every size past the image's own is one file
        answers = [
            http.get(f"/images/{small.id}/thumbnail", params={"size": s}) for s in (320, 400, 777, 1024)
        ]
        assert {Image.open(io.BytesIO(a.content)).size for a in answers} == {(320, 240)}
        assert len({a.content for a in answers}) == 1 and cached() == 1
        assert [p.name.split("-")[0] for p in (cache / str(small.id)).iterdir()] == ["320"]
        assert library.thumbnail(small.id, 1024).name.startswith("320-")  # the Python API too

        # any number of sizes asked for: the last MAX_VARIANTS made are kept
        sizes = list(range(100, 100 + 10 * (MAX_VARIANTS + 4), 10))
        for size in sizes:
            thumb = http.get(f"/images/{big.id}/thumbnail", params={"size": size})
            assert max(Image.open(io.BytesIO(thumb.content)).size) == size
        assert cached() == 1 + MAX_VARIANTS
        kept = sorted(int(p.name.split("-")[0]) for p in (cache / str(big.id)).iterdir())
        assert kept == sizes[-MAX_VARIANTS:]

        # a changed file: the thumbnails of its earlier version go
        make_photo(42, (900, 600)).save(big.path, "JPEG")
        fresh = http.get(f"/images/{big.id}/thumbnail", params={"size": 300})
        assert Image.open(io.BytesIO(fresh.content)).size == (300, 200) and cached() == 2
        stat = big.path.stat()
        assert [p.name for p in (cache / str(big.id)).iterdir()] == [
            f"300-{stat.st_size}-{stat.st_mtime_ns}-r{RENDERING}.jpg"
        ]

        # a deleted image: its thumbnails go with it
        assert http.delete(f"/images/{small.id}", headers=AUTH).status_code == 200
        assert not (cache / str(small.id)).exists() and cached() == 1


def test_unknown_and_malformed_ids(client: httpx.Client) -> None:
    assert_error(client.get("/images/999999"), 404, "image_not_found")
    assert_error(client.get("/images/999999/thumbnail"), 404, "image_not_found")
    assert_error(client.get("/images/999999/similar"), 404, "image_not_found")
    assert_error(client.get("/images/0"), 422, "invalid_request")
    assert_error(client.get("/images/abc"), 422, "invalid_request")
    assert_error(client.get(f"/images/{2**64}"), 422, "invalid_request")
    assert_error(client.post("/recommend", json={"positive": [999999]}), 404, "image_not_found")


# ---- security ----------------------------------------------------------------------------------


def test_files_outside_the_roots_are_refused(
    client: httpx.Client, shared: tuple[Library, Path, str], tmp_path: Path
) -> None:
    photos = shared[1]
    outside = save(make_photo(7, (64, 48)), tmp_path / "outside.jpg")
    for path in (str(outside), f"{photos}/../{tmp_path.name}/outside.jpg", "/etc/passwd"):
        refused = client.post("/recommend", json={"positive": [{"path": path}]})
        assert_error(refused, 403, "access_denied")
    link = photos / "small" / "link.jpg"
    link.symlink_to(outside)
    try:
        assert_error(
            client.post("/recommend", json={"positive": [{"path": str(link)}]}), 403, "access_denied"
        )
    finally:
        link.unlink()
    assert_error(client.get("/search", params={"q": "x", "under": str(tmp_path)}), 403, "access_denied")
    assert_error(client.get("/search", params={"q": "x", "under": "relative/folder"}), 400, "invalid_path")
    assert_error(client.get("/search", params={"q": "x", "under": str(photos / "nope")}), 400, "invalid_path")
    assert_error(client.post("/recommend", json={"positive": [{"path": "/a\u0000b"}]}), 400, "invalid_path")


def test_a_folder_reached_through_a_followed_link_can_be_searched_under(
    photo_set: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(photo_set)  # the root is indexed with its links followed
    with Library.open(tmp_path / "library") as library:
        model, weights = str(tiny_model.config), str(tiny_model.checkpoint)
        library.index(root, model=model, pretrained=weights, follow_symlinks=True, workers=2)
        with running_server(library) as url, httpx.Client(base_url=url, timeout=60) as http:
            found = http.get("/search", params={"q": "x", "k": 50, "under": str(root / "linked")})
            assert found.status_code == 200, found.text
            paths = {hit["path"] for hit in found.json()["results"]}
            example = str(root / "linked" / "photo_0100.jpg")
            liked = http.post("/recommend", json={"positive": [{"path": example}], "k": 50})
            assert liked.status_code == 200, liked.text
            recommended = {hit["path"] for hit in liked.json()["results"]}
    assert paths == {str(root / "linked" / photo.name) for photo in photo_set.glob("*.jpg")}
    assert recommended == paths - {example}  # the example itself is left out


def test_an_indexed_file_replaced_by_a_link_out_is_not_served(
    own: tuple[Library, Path], tmp_path: Path
) -> None:
    library, photos = own
    secret = save(make_photo(9, (64, 48)), tmp_path / "secret.jpg")
    target = photos / "photo_0104.jpg"
    known = library._catalog.known_file(str(target))
    assert known is not None
    target.unlink()
    target.symlink_to(secret)
    with running_server(library) as url, httpx.Client(base_url=url) as http:
        assert_error(http.get(f"/images/{known.id}/thumbnail"), 403, "access_denied")
    assert not (library.path / "thumbnails").exists()


def bytes_read_by_this_process() -> int:
    """What every thread of this process (the served app's included) has read from files."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="counts reads through Linux's /proc")
def test_files_in_the_roots_that_are_no_images_are_refused_unread(own: tuple[Library, Path]) -> None:
    """A path example was read whole before anything else: a video in the photo folder cost
    its size in memory for every request naming it, and a named pipe held a request thread
    for ever (so did the thumbnail of an image replaced by one)."""
    library, photos = own
    video = photos / "clip.mp4"
    with open(video, "wb") as f:
        f.truncate(1 << 30)  # 1 GB, sparse: no disk used
    pipe = photos / "small" / "pipe.jpg"
    os.mkfifo(pipe)
    replaced = photos / "photo_0107.jpg"
    known = library._catalog.known_file(str(replaced))
    assert known is not None
    replaced.unlink()
    os.mkfifo(replaced)
    try:
        with running_server(library) as url, httpx.Client(base_url=url, timeout=30) as http:
            before = bytes_read_by_this_process()
            refused = http.post("/recommend", json={"positive": [{"path": str(video)}]})
            assert "not an image" in assert_error(refused, 422, "bad_image")["message"]
            assert bytes_read_by_this_process() - before < 16 << 20
            refused = http.post("/recommend", json={"positive": [{"path": str(pipe)}]})
            assert "not a file" in assert_error(refused, 422, "bad_image")["message"]
            refused = http.get(f"/images/{known.id}/thumbnail")
            assert "no longer a file" in assert_error(refused, 422, "bad_image")["message"]
            assert http.get("/search", params={"q": "x"}).status_code == 200
    finally:
        for fifo in (pipe, replaced):  # let go of a request still waiting to read it
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("replaced", ["thumbnails", "thumbnails/{id}"])
def test_a_thumbnail_folder_that_is_a_file_is_named_as_such(own: tuple[Library, Path], replaced: str) -> None:
    """With the thumbnail cache folder (or an image's folder in it) replaced by a plain file,
    thumbnails were refused with a question about a full disk or a read-only folder, which
    sent the operator the wrong way. The answer now names the file in the way, which is kept."""
    library = own[0]
    image_id = library.search("x", k=1)[0].id
    in_the_way = library.path / replaced.format(id=image_id)
    if in_the_way.parent != library.path:
        in_the_way.parent.mkdir()
    in_the_way.write_text("someone's notes")
    with running_server(library) as url, httpx.Client(base_url=url, timeout=30) as http:
        refused = assert_error(http.get(f"/images/{image_id}/thumbnail"), 503, "library_write_failed")
        assert refused["message"] == (
            f"Cannot make thumbnails in the library at {library.path}: {in_the_way} is not a "
            "folder, where pixsift keeps thumbnails. Move it away, and pixsift makes the folder "
            "anew; nothing else in the library is affected."
        )
        assert in_the_way.read_text() == "someone's notes"
        assert http.get("/search", params={"q": "x"}).status_code == 200
        in_the_way.unlink()
        assert http.get(f"/images/{image_id}/thumbnail").status_code == 200


def test_a_thumbnail_of_a_file_deleted_since_indexing_is_not_found(own: tuple[Library, Path]) -> None:
    library, photos = own
    target = photos / "photo_0105.jpg"
    known = library._catalog.known_file(str(target))
    assert known is not None
    target.unlink()
    with running_server(library) as url, httpx.Client(base_url=url) as http:
        missing = assert_error(http.get(f"/images/{known.id}/thumbnail"), 404, "image_file_missing")
        assert str(target) in missing["message"]
    with pytest.raises(ImageError, match="no longer there"):  # the Python API: still an ImageError
        library.thumbnail(known.id)


def test_a_thumbnail_of_a_decompression_bomb_is_refused_as_too_large(own: tuple[Library, Path]) -> None:
    """Pillow refuses such a header before pixsift's own pixel check: that refusal was told as
    422 bad_image, where the same limit checked by pixsift is 413 image_too_large."""
    library, photos = own
    target = photos / "photo_0105.jpg"
    known = library._catalog.known_file(str(target))
    assert known is not None
    target.write_bytes(png_claiming(100_000, 100_000))  # replaced since it was indexed
    with running_server(library) as url, httpx.Client(base_url=url) as http:
        refused = assert_error(http.get(f"/images/{known.id}/thumbnail"), 413, "image_too_large")
        assert "decompression bomb" in refused["message"] and str(target) in refused["message"]
    assert not (library.path / "thumbnails" / str(known.id)).exists()
    # a thumbnail that finds no room among the large images being decoded: the server's, for now
    assert status_of(BusyError("busy")) == (503, "busy")


def test_a_library_that_cannot_be_written_is_a_server_error(own: tuple[Library, Path]) -> None:
    library = own[0]
    image_id = library.search("x", k=1)[0].id
    (library.path / "thumbnails").write_text("in the way")  # the cache folder cannot be made
    with running_server(library) as url, httpx.Client(base_url=url) as http:
        failed = assert_error(http.get(f"/images/{image_id}/thumbnail"), 503, "library_write_failed")
        assert "thumbnails is not a folder" in failed["message"]  # the reason, not a full disk
        assert http.get(f"/images/{image_id}").status_code == 200  # reads go on
    assert sorted(p.name for p in library.path.iterdir() if ".tmp-" in p.name) == []
    # the same for a delete or an index write on a full disk: the server's failure, not the client's
    assert status_of(LibraryWriteError("disk full")) == (503, "library_write_failed")


def test_a_library_deleted_or_made_anew_while_served_is_a_server_error(
    own: tuple[Library, Path], tmp_path: Path, tiny_model: TinyModel
) -> None:
    """The service's open database outlives its folder: it went on answering from the deleted
    library and took deletes and index jobs that no restart would see, and its thumbnails and
    index saves made files in a folder of that name."""
    library, photos = own
    image_id = library.search("x", k=1)[0].id
    others = tmp_path / "Others"
    write_photos(others, 4, size=(320, 240), seed=600)

    def every_kind_of_request(http: httpx.Client) -> list[httpx.Response]:
        return [
            http.get("/search", params={"q": "x"}),
            http.get(f"/images/{image_id}"),
            http.get(f"/images/{image_id}/thumbnail"),
            http.post("/recommend", json={"positive": [image_id]}),
            http.delete(f"/images/{image_id}"),
            http.post("/index", json={"paths": [str(photos / "small")]}),
            http.get("/stats"),
        ]

    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        assert http.get(f"/images/{image_id}/thumbnail").status_code == 200
        shutil.rmtree(library.path)  # say, to index the photos again from scratch
        for answer in every_kind_of_request(http):
            assert "restart" in assert_error(answer, 503, "library_missing")["message"]
        assert not library.path.exists()  # nothing made anew there
        assert http.get("/healthz").status_code == 200

        with Library.open(library.path) as fresh:  # a new library in the same folder
            fresh.index(others, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
            expected = [(hit.path, hit.score) for hit in fresh.search("x", k=4)]
        index_file = (library.path / "vectors.faiss").read_bytes()
        for answer in every_kind_of_request(http):
            assert_error(answer, 503, "library_missing")
    assert (library.path / "vectors.faiss").read_bytes() == index_file
    with Library.open(library.path) as fresh:
        assert [(hit.path, hit.score) for hit in fresh.search("x", k=4)] == expected
        assert fresh.status().counts.total == 4


def test_write_endpoints_need_the_key(own: tuple[Library, Path]) -> None:
    library = own[0]
    image_id = library.search("x", k=1)[0].id
    with running_server(library) as url, httpx.Client(base_url=url) as http:  # no key: read-only
        assert_error(http.post("/index", json={}), 403, "writes_disabled")
        assert_error(http.delete(f"/images/{image_id}", headers=AUTH), 403, "writes_disabled")
        assert http.get("/search", params={"q": "x"}).status_code == 200
    with running_server(library, KEYED) as url, httpx.Client(base_url=url) as http:
        assert_error(http.delete(f"/images/{image_id}"), 401, "unauthorized")
        wrong = http.delete(f"/images/{image_id}", headers={"X-API-Key": API_KEY[:-1] + "x"})
        assert_error(wrong, 401, "unauthorized")
        assert wrong.headers["www-authenticate"] == "ApiKey"
        assert http.get(f"/images/{image_id}").status_code == 200  # nothing was deleted
        assert http.get("/search", params={"q": "x"}).status_code == 200  # reads stay open on loopback


def test_beyond_loopback_every_read_needs_the_key(own: tuple[Library, Path]) -> None:
    settings = check_bind("0.0.0.0", API_KEY)
    assert settings.require_key_for_reads
    with running_server(own[0], settings) as url, httpx.Client(base_url=url) as http:
        assert_error(http.get("/search", params={"q": "x"}), 401, "unauthorized")
        assert_error(http.get("/stats"), 401, "unauthorized")
        assert http.get("/stats", headers=AUTH).status_code == 200
        assert http.get("/healthz").status_code == 200


def test_bind_rules() -> None:
    with pytest.raises(UnsafeBindError, match="API key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UnsafeBindError, match="API key"):
        check_bind("my-host.example", None)
    with pytest.raises(UnsafeBindError, match="at least 16"):
        check_bind("127.0.0.1", "short")
    # a header cannot carry these: the service would start, then refuse every client
    for unusable in ("clé-secrète-0123456789", "key-with-newline\n0123456789", " padded-key-0123456789"):
        with pytest.raises(UnsafeBindError, match="printable ASCII"):
            check_bind("127.0.0.1", unusable)
        with pytest.raises(UnsafeBindError, match="printable ASCII"):
            ServerSettings(api_key=unusable)
    assert not check_bind("127.0.0.1", None).require_key_for_reads
    assert not check_bind("::1", API_KEY).require_key_for_reads
    assert not check_bind("localhost", None).require_key_for_reads


# ---- limits and errors ---------------------------------------------------------------------------


def test_limits(own: tuple[Library, Path], tmp_path: Path) -> None:
    library, photos = own
    big = (photos / "photo_0100.jpg").read_bytes()  # 1600x1200: 1.9 megapixels
    small = io.BytesIO()
    make_photo(3, (800, 600)).save(small, "JPEG", quality=70)  # 0.48 megapixels, a few kB
    settings = ServerSettings(max_upload_bytes=len(big) - 1, max_megapixels=0.4)
    with running_server(library, settings) as url, httpx.Client(base_url=url) as http:
        limit = f"({len(big) - 1:,} bytes)"  # the configured limit, not the cap on bodies
        refused = assert_error(http.post("/similar", files={"file": big}), 413, "upload_too_large")
        assert limit in refused["message"]
        encoded = base64.b64encode(big).decode()
        assert limit in assert_error(http.post("/similar", json={"image_base64": encoded}), 413)["message"]
        assert_error(http.post("/similar", files={"file": small.getvalue()}), 413, "image_too_large")
        assert_error(http.get("/search", params={"q": "x", "k": 201}), 422, "invalid_request")
        assert_error(http.get("/search", params={"q": "x", "k": 0}), 422, "invalid_request")
        assert_error(http.post("/search", json={"q": "x" * 1001}), 422, "invalid_request")
        assert_error(http.get("/images/1/thumbnail", params={"size": 4096}), 422, "invalid_request")


def test_json_bodies_have_a_cap_of_their_own(own: tuple[Library, Path]) -> None:
    """JSON is parsed on the event loop, before the key is checked: a body at the upload cap
    (27 MB by default) held every other request for 1.5 s. Only POST /similar takes that much."""
    library, photos = own
    json_type = {"content-type": "application/json"}
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, timeout=60) as http:
        ids = b"[" + b",".join([b"12345"] * (MAX_JSON_BYTES // 6 + 1)) + b"]"
        huge = b'{"positive": ["x"], "exclude": ' + ids + b"}"
        refused = assert_error(http.post("/recommend", content=huge, headers=json_type), 413)
        assert refused["error"] == "request_too_large" and f"{MAX_JSON_BYTES:,} bytes" in refused["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"paths": ['
            for _ in range(MAX_JSON_BYTES // 65536 + 1):
                yield b'"/x",' * (65536 // 5)
            yield b'"/x"]}'

        streamed = http.post("/index", content=chunks(), headers={**json_type, **AUTH})
        assert_error(streamed, 413, "request_too_large")
        # the largest real request: 256 paths of 4,080 bytes, non-ASCII escaped as \uXXXX
        path = "/" + "/".join(["é" * 127] * 16)
        largest = json.dumps({"paths": [f"{photos}{path}{n}" for n in range(256)]}).encode()
        assert 3_000_000 < len(largest) < MAX_JSON_BYTES
        assert_error(http.post("/index", content=largest, headers={**json_type, **AUTH}), 400, "invalid_path")
        # an image in base64 beyond the JSON cap, within the upload limit, is still read
        noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
        png = io.BytesIO()
        noise.save(png, "PNG")
        assert len(png.getvalue()) > MAX_JSON_BYTES
        upload = {"image_base64": base64.b64encode(png.getvalue()).decode()}
        assert http.post("/similar", json=upload).status_code == 200


def test_uploads_beyond_the_limit_at_once_are_refused_until_one_ends(own: tuple[Library, Path]) -> None:
    """Each upload under way holds its body and then its decoded pixels (eight 15 MB PNGs of
    49 megapixels at once took the service from 0.1 to 4.4 GB): past the limit, the next one is
    refused before its body is read, and taken again once one ends."""
    library, photos = own
    image = (photos / "photo_0100.jpg").read_bytes()
    with running_server(library, ServerSettings(max_concurrent_uploads=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        with httpx.Client(base_url=url, timeout=60) as http:
            slow, refused = slow_upload_holding_the_slot(
                port, lambda: http.post("/similar", files={"file": image})
            )
            with slow:
                body = assert_error(refused, 503, "busy")
                assert body["message"] == (
                    "The service is already handling 1 uploaded image, as many as it takes at once "
                    "(its max_concurrent_uploads setting, `pixsift serve --max-concurrent-uploads`); "
                    "try again shortly."
                )
                assert refused.headers["retry-after"] == "1"
                # other requests go on meanwhile
                assert http.get("/search", params={"q": "x"}).status_code == 200
            # the slow client gave up: its slot is free again
            assert until(lambda: http.post("/similar", files={"file": image}), 200).json()["results"]
    with pytest.raises(InvalidOptionError, match="at least 1 upload"):
        ServerSettings(max_concurrent_uploads=0)


def test_a_client_that_drops_its_upload_is_not_logged_as_a_server_error(
    own: tuple[Library, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """A client closing its connection in the middle of an upload (a cancelled page, a lost
    network) is no fault of the service: it was logged as an unexpected error, with a traceback."""
    library = own[0]
    with running_uvicorn(library) as (url, server):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                b"POST /similar HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000000\r\n\r\n{"image_base64": "AAAA'
            )
            wait_until_arrived(server, 1)  # the upload under way, not merely connected
        wait_until_answered(server)  # the service saw it end, and has logged what it logs
        assert httpx.get(f"{url}/healthz").status_code == 200
    logged = capfd.readouterr().err
    assert "Traceback" not in logged and "unexpected error" not in logged, logged


def test_an_upload_that_stalls_is_refused_and_frees_its_slot(own: tuple[Library, Path]) -> None:
    """A client whose upload stops sending (a phone that lost its network without closing the
    connection) held its upload slot for ever: with as many stalled as the service takes at
    once, every later upload was refused with 503 `busy` until a restart. A body that sends
    nothing for `upload_idle_timeout_s` is now answered 408 `upload_timeout`, its slot freed."""
    library, photos = own
    image = (photos / "photo_0100.jpg").read_bytes()
    settings = ServerSettings(max_concurrent_uploads=1, upload_idle_timeout_s=0.5)
    with running_server(library, settings) as url:
        with upload_begun(url, b"AAAA") as stalled:
            head, _, body = read_until_closed(stalled).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        answer = json.loads(body)
        assert answer["error"] == "upload_timeout"
        assert answer["message"] == (
            "The request body sent nothing for 0.5 seconds and was given up; send it again."
        )
        with httpx.Client(base_url=url, timeout=60) as http:
            assert ids_of(http.post("/similar", files={"file": image}))
    with pytest.raises(InvalidOptionError, match="upload_idle_timeout_s"):
        ServerSettings(upload_idle_timeout_s=0)


def test_an_upload_trickling_in_is_refused_at_its_deadline(own: tuple[Library, Path]) -> None:
    """A client sending a byte now and then never trips the idle timeout: it held its upload
    slot for as long as it liked. The whole body must now be in within `upload_deadline_s`
    seconds of its start, or it is answered 408 `upload_timeout`, naming that limit."""
    library, photos = own
    image = (photos / "photo_0100.jpg").read_bytes()
    # The idle timeout far above the 0.2 s between bytes: a client thread held up a moment on
    # a loaded machine must not trip it, as only the deadline is under test here.
    settings = ServerSettings(max_concurrent_uploads=1, upload_idle_timeout_s=5, upload_deadline_s=1.5)
    with running_server(library, settings) as url:
        with upload_begun(url, b"") as slow:
            head, _, body = trickled(slow).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        refused = json.loads(body)
        assert refused == {
            "error": "upload_timeout",
            "message": "The request body was not all sent within 1.5 seconds (the limit on a whole "
            "request body) and was given up; send it again.",
        }
        with httpx.Client(base_url=url, timeout=60) as http:  # its slot is free again
            assert ids_of(http.post("/similar", files={"file": image}))
    with pytest.raises(InvalidOptionError, match="upload_deadline_s"):
        ServerSettings(upload_deadline_s=float("inf"))


def test_a_json_body_that_stalls_or_trickles_is_refused(tmp_path: Path) -> None:
    """Only uploads had time limits: a client that sent the head of a JSON request and then
    nothing, or a byte now and then, held its connection and what it had sent for ever. Every
    body now has the upload's limits, and is answered 408 `upload_timeout` past them."""
    library = Library.open(tmp_path / "library")  # refused before the library has a say
    settings = ServerSettings(upload_idle_timeout_s=0.5, upload_deadline_s=1.5)
    idle = "The request body sent nothing for 0.5 seconds and was given up; send it again."
    with running_server(library, settings) as url:
        for request in ("POST /search", "POST /search/batch", "POST /recommend", "POST /index"):
            with body_begun(url, request, b'{"q') as stalled:
                head, _, body = read_until_closed(stalled).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), head
            assert json.loads(body) == {"error": "upload_timeout", "message": idle}
        with body_begun(url, "POST /recommend", b'{"positive": ["') as slow:
            head, _, body = trickled(slow).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert "within 1.5 seconds (the limit on a whole request body)" in json.loads(body)["message"]
        with httpx.Client(base_url=url, timeout=60) as http:  # a body sent at once is read
            whole = http.post("/search", json={"q": "x"})
            assert_error(whole, 409, "empty_library")
            assert whole.headers.get("connection") != "close"  # its connection is kept
    library.close()


def test_an_answer_sent_before_its_body_is_in_closes_the_connection(tmp_path: Path) -> None:
    """A route that reads no body (GET) answered and left the connection open to skip the
    rest of it: a byte now and then cancels uvicorn's keep-alive timer, so a client trickling
    held the connection for ever. So does a body refused by its declared size, here 1 GB of
    JSON, refused with 413 before any of it is read."""
    library = Library.open(tmp_path / "library")
    with running_server(library) as url:
        with body_begun(url, "GET /healthz", b"{", length=100) as unread:
            head, _, body = trickled(unread).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower(), head
        assert json.loads(body) == {"status": "ok"}
        with body_begun(url, "POST /recommend", b'{"positive": [', length=2**30) as huge:
            head, _, body = trickled(huge).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower(), head
        assert json.loads(body)["error"] == "request_too_large"
    library.close()


def test_a_client_sending_its_whole_body_before_reading_gets_the_early_answer(tmp_path: Path) -> None:
    """Most clients send a request's whole body before they read the answer. Answered 413 by
    its declared size, a body 4 times the JSON cap was left unread and the connection closed:
    such a close is a reset, and the client got "connection reset by peer" instead of its 413.
    The rest of the body is now read and dropped before the close."""
    library = Library.open(tmp_path / "library")
    body = b'{"positive": ["x"], "exclude": [' + b"1," * (2 * MAX_JSON_BYTES) + b"1]}"
    with running_server(library) as url:
        for _ in range(5):
            with body_begun(url, "POST /recommend", body, length=len(body)) as client:
                head, _, answer = read_until_closed(client, reset_allowed=False).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower(), head
            assert json.loads(answer)["error"] == "request_too_large"
    library.close()


def test_a_query_parameter_given_twice_is_refused(client: httpx.Client) -> None:
    """`/search?q=a&q=b` searched for "b" and `k=500&k=5` gave 5 results: the last value was
    taken without a word. Every single-valued query parameter of every operation given twice
    is now 422 `invalid_request` naming it; `format`, a list, may repeat."""
    schema = client.get("/openapi.json").json()
    lists, checked = set(), 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                name = parameter["name"]
                if "array" in json.dumps(parameter["schema"]):
                    lists.add(name)
                    continue
                url = re.sub(r"\{\w+\}", "1", path) + f"?{name}=1&{name}=2"
                refused = assert_error(client.request(method, url, headers=AUTH), 422, "invalid_request")
                assert refused["details"] == [
                    {
                        "loc": ["query", name],
                        "msg": "Given 2 times; this parameter takes one value.",
                        "type": "repeated_parameter",
                    }
                ], (method, url)
                checked += 1
    assert lists == REPEATABLE and checked >= 20  # each list parameter may repeat, by design
    both = client.get("/search", params=[("q", "photo"), ("format", "jpeg"), ("format", "png")])
    assert len(ids_of(both)) == 10
    named_twice = client.get("/search", params=[("q", "a"), ("k", "5"), ("q", "b"), ("k", "500")])
    assert [d["loc"] for d in assert_error(named_twice, 422)["details"]] == [["query", "q"], ["query", "k"]]
    # a parameter the operation does not take is ignored, once or twice, as before
    assert len(ids_of(client.get("/search", params=[("q", "photo"), ("x", "1"), ("x", "2")]))) == 10


def upload_begun(url: str, first_bytes: bytes) -> socket.socket:
    """A raw connection to the service at `url` that has sent the head of a 1 MB `POST /similar`
    and `first_bytes` of its image, and nothing more: the rest is the test's to send, or not."""
    return body_begun(url, "POST /similar", b'{"image_base64": "' + first_bytes)


def body_begun(url: str, request: str, first_bytes: bytes, length: int = 1_000_000) -> socket.socket:
    """A raw connection to the service at `url` that has sent the head of `request` ("POST
    /search") with a JSON body of `length` bytes, and `first_bytes` of it, and nothing more."""
    connection = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20)
    connection.sendall(
        f"{request} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {length}\r\n\r\n".encode()
        + first_bytes
    )
    return connection


def trickled(connection: socket.socket) -> bytes:
    """What the service answers on `connection` while it is sent a byte every 0.2 s (well
    within the idle timeouts of the tests), until it closes the connection."""
    started = time.monotonic()
    answer = b""
    while not answer and time.monotonic() - started < 10:
        with contextlib.suppress(OSError):  # the service may close first
            connection.sendall(b"A")
        connection.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            answer = connection.recv(65536)
    connection.settimeout(20)
    return answer + read_until_closed(connection)


def read_until_closed(connection: socket.socket, *, reset_allowed: bool = True) -> bytes:
    """Everything the service sends on `connection` until it closes it. A client that goes on
    sending after the service stopped reading (a trickle past the time the service reads and
    drops the rest of a body) may be reset after its answer: `reset_allowed`."""
    received = b""
    with contextlib.suppress(*((ConnectionResetError,) if reset_allowed else ())):
        while chunk := connection.recv(65536):
            received += chunk
    return received


def slow_upload_holding_the_slot(
    port: int, upload: Callable[[], httpx.Response], within_s: float = 20
) -> tuple[socket.socket, httpx.Response]:
    """An upload on a slow link (its body half sent) that holds the only upload slot, and the
    answer to `upload` made meanwhile. On a busy machine `upload` may reach the slot first, and
    the slow one is then refused: start a new slow one until the slow one holds it."""
    deadline = time.monotonic() + within_s
    while True:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(
            b"POST /similar HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000000\r\n\r\n{"image_base64": "AAAA'
        )
        time.sleep(0.05)
        if (response := upload()).status_code == 503:
            return slow, response
        slow.close()
        assert time.monotonic() < deadline, response.text


def until(request: Callable[[], httpx.Response], status: int, within_s: float = 20) -> httpx.Response:
    """The first answer of `request`, tried again and again, with `status`."""
    deadline = time.monotonic() + within_s
    while (response := request()).status_code != status:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    return response


def test_bad_requests_get_json_errors(client: httpx.Client) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/search"), 405, "method_not_allowed")
    assert_error(
        client.post("/search", content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    assert_error(client.post("/search", json={"q": "   "}), 400, "bad_query")
    assert_error(client.post("/search", json={"q": "x", "extra": 1}), 422, "invalid_request")
    # JSON that cannot be decoded at all was a 400 with a code of its own, not documented
    for undecodable in (b'{"q": "caf\xe9"}', b'{"q": "x", "plus": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        for path in ("/search", "/recommend", "/index"):
            refused = client.post(path, content=undecodable, headers={"content-type": "application/json"})
            assert assert_error(refused, 422, "invalid_request")["details"][0]["loc"] == ["body"]
    huge_number = b'{"q": "x", "k": ' + b"1" * 5000 + b"}"
    refused = client.post("/search", content=huge_number, headers={"content-type": "application/json"})
    assert assert_error(refused, 422, "invalid_request")["details"][0]["type"] == "json_invalid"
    lone_surrogate = b'{"q": "\\ud800"}'  # valid JSON, but not a valid string
    assert_error(
        client.post("/search", content=lone_surrogate, headers={"content-type": "application/json"}), 422
    )
    bad_format = assert_error(
        client.get("/search", params={"q": "x", "format": "p.ng"}), 422, "invalid_request"
    )
    assert [d["loc"] for d in bad_format["details"]] == [["query", "format", "0"]]
    bad_second = client.get("/images/1/similar", params={"format": ["png", "no such!"]})
    assert [d["loc"] for d in assert_error(bad_second, 422)["details"]] == [["query", "format", "1"]]
    assert_error(client.get("/search", params={"q": "x", "min_score": "nan"}), 422, "invalid_request")
    assert_error(client.post("/similar", files={"file": b"not an image"}), 422, "bad_image")
    assert_error(client.post("/similar", files={"other": b"x"}), 400, "missing_file")
    assert_error(client.post("/similar", json={"image_base64": "%%%"}), 400, "bad_base64")
    misnamed = assert_error(client.post("/similar", json={"image": "x"}), 422, "invalid_request")
    assert {tuple(d["loc"]) for d in misnamed["details"]} == {("body", "image"), ("body", "image_base64")}
    not_json = client.post("/similar", content=b"{", headers={"content-type": "application/json"})
    assert assert_error(not_json, 422, "invalid_request")["details"][0]["loc"][0] == "body"
    assert_error(client.post("/similar", content=b"raw", headers={"content-type": "image/jpeg"}), 415)
    assert_error(client.post("/recommend", json={"positive": []}), 422, "invalid_request")
    assert_error(client.post("/recommend", json={"positive": ["a"], "diversity": 1.5}), 422)
    assert_error(client.post("/recommend", json={"positive": ["   "]}), 400, "bad_query")
    assert_error(client.get("/jobs/none"), 404, "job_not_found")


def test_only_requests_that_are_not_http_get_a_plain_text_error(client: httpx.Client) -> None:
    """As docs/server.md says: the HTTP server refuses these before the app sees them; every
    body that is merely not JSON, or not the JSON asked for, is the service's own JSON 422."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        not_json = client.post("/index", content=b"paths=x", headers={"content-type": content_type, **AUTH})
        assert assert_error(not_json, 422, "invalid_request")["details"][0]["loc"] == ["body"]
    port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /index HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"Invalid HTTP request received."), answer


def test_json_booleans_are_not_numbers(client: httpx.Client) -> None:
    # lax parsing took `true` for 1: image 1, k=1, a width of 1
    for body in (
        {"positive": [True]},
        {"positive": ["a"], "negative": [False]},
        {"positive": ["a"], "exclude": [True]},
        {"positive": ["a"], "k": True},
        {"positive": ["a"], "diversity": True},
        {"positive": ["a"], "filters": {"min_width": True}},
        {"positive": ["a"], "filters": {"min_height": True}},
    ):
        assert_error(client.post("/recommend", json=body), 422, "invalid_request")
    assert_error(client.post("/search", json={"q": "x", "k": True}), 422, "invalid_request")
    assert_error(client.post("/search", json={"q": "x", "min_score": True}), 422, "invalid_request")
    assert_error(client.post("/search/batch", json={"queries": ["x"], "k": True}), 422, "invalid_request")
    assert client.post("/recommend", json={"positive": ["a"], "k": 3, "diversity": 1}).status_code == 200


def test_an_empty_library_answers_409(tmp_path: Path) -> None:
    with (
        Library.open(tmp_path / "empty") as library,
        running_server(library, KEYED) as url,
        httpx.Client(base_url=url) as http,
    ):
        assert_error(http.get("/search", params={"q": "x"}), 409, "empty_library")
        assert http.get("/stats").json()["model"] is None
        assert_error(http.post("/index", json={}, headers=AUTH), 400, "invalid_path")


# ---- writes: delete and index jobs -----------------------------------------------------------------


def test_delete_removes_from_database_and_index(own: tuple[Library, Path]) -> None:
    library = own[0]
    hit = library.search("a rocket", k=1)[0]
    with running_server(library, KEYED) as url, httpx.Client(base_url=url) as http:
        deleted = http.delete(f"/images/{hit.id}", headers=AUTH)
        assert deleted.status_code == 200 and deleted.json()["deleted"]["id"] == hit.id
        assert_error(http.get(f"/images/{hit.id}"), 404)
        assert hit.id not in ids_of(http.get("/search", params={"q": "a rocket", "k": 50}))
        assert http.get("/stats").json()["indexed"] == 14
        assert_error(http.delete(f"/images/{hit.id}", headers=AUTH), 404)
    assert hit.path.is_file()  # the file itself is left alone
    with Library.open(library.path) as reopened:  # the FAISS file, left as it was, is caught up
        assert reopened.status().index_file.state == "caught up on load"
        assert len(reopened.search("x", k=50)) == 14


def test_two_deletes_of_one_image_at_once_delete_it_once(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients (or a client's retry) deleted one image while an index run held the library:
    both waited for it, and both were told they had deleted the image."""
    library = own[0]
    hit = library.search("x", k=1)[0]
    answers: list[httpx.Response] = []
    lock = library._write_lock
    wait_for_lock, waiting = lock._wait, threading.Semaphore(0)

    def counted_wait(*args: Any, **kwargs: Any) -> None:
        waiting.release()  # this delete found the image, and now waits for the run
        wait_for_lock(*args, **kwargs)

    monkeypatch.setattr(lock, "_wait", counted_wait)

    def delete(url: str) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            answers.append(http.delete(f"/images/{hit.id}"))

    with running_server(library, KEYED) as url:
        with FileLock(library.path / "library.lock", thread_local=False):  # an index run elsewhere
            threads = [threading.Thread(target=delete, args=(url,)) for _ in range(2)]
            for thread in threads:
                thread.start()
            for _ in threads:  # both found the image, and wait for the run
                assert waiting.acquire(timeout=60)
        for thread in threads:
            thread.join(timeout=60)
    assert sorted(answer.status_code for answer in answers) == [200, 404], [a.text for a in answers]
    deleted = next(answer for answer in answers if answer.status_code == 200)
    assert deleted.json()["deleted"]["path"] == str(hit.path)
    assert_error(next(answer for answer in answers if answer.status_code == 404), 404, "image_not_found")


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_index_job_adds_new_files_under_a_root(own: tuple[Library, Path]) -> None:
    library, photos = own
    added = write_photos(photos / "new", 4, size=(640, 480), seed=700)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        roots_before = http.get("/stats").json()["roots"]
        started = http.post("/index", json={"paths": [str(photos / "new")]})
        assert started.status_code == 202 and started.json()["state"] in ("queued", "running")
        job = wait_for_job(http, started.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["report"]["added"] == 4 and job["report"]["removed"] == 0
        assert job["phase"] is None and job["done"] == job["total"] == 4  # ended: of its files' last phase
        found = http.get("/search", params={"q": "x", "k": 50, "under": str(photos / "new")}).json()[
            "results"
        ]
        assert sorted(h["path"] for h in found) == sorted(map(str, added))
        # a part of a root was indexed, not the root: its last full index time is unchanged
        assert http.get("/stats").json()["roots"] == roots_before
        # a single file re-indexes its folder; a removed file is dropped
        added[0].unlink()
        job = wait_for_job(http, http.post("/index", json={"paths": [str(added[1])]}).json()["id"])
        assert job["state"] == "succeeded" and job["report"]["removed"] == 1
        assert_error(http.post("/index", json={"paths": ["/etc"]}), 403, "access_denied")
        assert_error(http.post("/index", json={"paths": [str(photos / "gone")]}), 400, "invalid_path")


def test_an_index_job_over_files_of_one_folder_walks_the_folder_once(own: tuple[Library, Path]) -> None:
    """An application posted the new photos it had put in a folder, one path each: the job
    walked the whole folder once per path (200 paths in a folder of 2,000 photos took 4 s where
    one took 0.08 s), its report listed the folder once per path, and its scanning progress
    counted every file once per path."""
    library, photos = own
    added = write_photos(photos / "new", 4, size=(320, 240), seed=720)
    named = [*map(str, added), str(photos / "new"), f"{photos / 'new'}/", str(photos / "new" / ".")]
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job = wait_for_job(http, http.post("/index", json={"paths": named}).json()["id"])
    assert job["state"] == "succeeded" and job["report"]["added"] == 4, job
    assert job["report"]["roots"] == [str(photos / "new")]

    class Counted(SilentProgress):
        scanned = 0
        phase = ""

        def start(self, phase: str, total: int | None = None) -> None:
            self.phase = phase

        def advance(self, steps: int = 1) -> None:
            self.scanned += steps if self.phase == "Scanning" else 0

    progress = Counted()  # the whole root and a folder inside it: the folder is walked once
    report = library.reindex(photos, photos / "new", *added, progress=progress, workers=1)
    assert report.roots == [str(photos)] and progress.scanned == report.scanned == 19


def test_a_first_index_job_whose_model_cannot_be_had_leaves_the_library_as_it_was(
    tmp_path: Path, photo_set: Path
) -> None:
    """A library with a folder but no model yet (its folder was empty when indexed): the first
    job that has images to embed fails on the default model (the hub cannot be reached), with
    the reason; the library keeps its folder and stays without a model, for the next job."""
    import sqlite3

    photos = tmp_path / "Photos"
    photos.mkdir()
    with Library.open(tmp_path / "library") as library:
        library.index(photos)
    shutil.copytree(photo_set, photos, dirs_exist_ok=True)

    def content() -> list[str]:
        with contextlib.closing(sqlite3.connect(tmp_path / "library" / "library.db")) as db:
            return list(db.iterdump())

    before = content()
    with (
        Library.open(tmp_path / "library", create=False) as library,
        running_server(library, KEYED) as url,
        httpx.Client(base_url=url, headers=AUTH) as http,
    ):
        job = wait_for_job(http, http.post("/index", json={"paths": []}).json()["id"])
        assert job["state"] == "failed" and job["error"].startswith("Cannot get the weights of ViT-B-32")
        # The run had begun: its report says what it kept before the error (nothing, here).
        assert (job["report"]["roots"], job["report"]["added"]) == ([str(photos)], 0), job
        stats = http.get("/stats").json()
        assert (stats["model"], [root["path"] for root in stats["roots"]]) == (None, [str(photos)])
    assert content() == before


def test_a_photo_moved_between_two_index_jobs_keeps_its_id(own: tuple[Library, Path]) -> None:
    """A job over the folder a photo left, then one over the folder it went to: the photo keeps
    the id a client stored, with its vector (no embedding)."""
    library, photos = own
    small = sorted((photos / "small").iterdir())
    image_id = library._catalog.known_file(str(small[0])).id  # type: ignore[union-attr]
    (photos / "album").mkdir()
    small[0].rename(photos / "album" / small[0].name)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job = wait_for_job(http, http.post("/index", json={"paths": [str(photos / "small")]}).json()["id"])
        assert job["state"] == "succeeded" and job["report"]["removed"] == 1
        job = wait_for_job(http, http.post("/index", json={"paths": [str(photos / "album")]}).json()["id"])
        assert job["state"] == "succeeded", job
        assert (job["report"]["moved"], job["report"]["added"]) == (1, 0)
        assert http.get(f"/images/{image_id}").json()["path"] == str(photos / "album" / small[0].name)
        found = http.get("/search", params={"q": "x", "under": str(photos / "album")})
        assert ids_of(found) == [image_id]  # the search index has it back


def test_an_index_job_reports_copies_of_a_folder_that_went_missing(
    own: tuple[Library, Path], tmp_path: Path
) -> None:
    """An indexed folder moved into another one: a job over every root skips it as unmounted,
    finds its photos as copies, and its report says where the folder seems to have gone."""
    library, photos = own
    scans = tmp_path / "Scans"
    write_photos(scans, 2, size=(320, 240), seed=820)
    library.index(scans)
    scans.rename(photos / "Scans")
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job = wait_for_job(http, http.post("/index", json={"paths": []}).json()["id"])
        assert job["state"] == "succeeded", job
        assert (job["report"]["skipped_roots"], job["report"]["reused"]) == ([str(scans)], 2)
        moved = {"root": str(scans), "copies": 2, "moved_to": str(photos / "Scans")}
        assert job["report"]["copies_of_missing"] == [moved]


def test_an_index_job_refuses_paths_that_are_not_absolute(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's relative path or ~ would name what the server's own working directory or
    home holds: refused, though `Library.reindex` reads them for a Python caller."""
    library, photos = own
    monkeypatch.chdir(photos.parent)
    monkeypatch.setenv("HOME", str(photos.parent))
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        for path in (photos.name, f"~/{photos.name}", "."):
            body = assert_error(http.post("/index", json={"paths": [path]}), 400, "invalid_path")
            assert body["message"] == f"Path {path!r} must be absolute."


def test_one_job_at_a_time_and_a_busy_library(own: tuple[Library, Path]) -> None:
    library = own[0]
    image_id = library.search("x", k=1)[0].id
    other_process = FileLock(library.path / "library.lock", thread_local=False)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        with other_process:  # as if `pixsift index` ran in another process
            submitted = time.monotonic()
            first = http.post("/index", json={}).json()
            assert_error(http.post("/index", json={}), 409, "job_running")
            assert http.get("/stats").json()["running_job"] == first["id"]
            assert_error(http.delete(f"/images/{image_id}"), 409, "library_busy")
            assert http.get("/search", params={"q": "x"}).status_code == 200
            # past the command line's default wait, the job still waits, and says so: it began
            # to wait (a slow machine's job may take a while to), then that long went by
            wait_for_phase(http, first["id"], "Waiting for another index run", timeout=60)
            time.sleep(max(0.0, LOCK_WAIT_S + 1 - (time.monotonic() - submitted)))
            waiting = http.get(f"/jobs/{first['id']}").json()
            assert (waiting["state"], waiting["phase"]) == ("running", "Waiting for another index run")
        job = wait_for_job(http, first["id"])
        assert job["state"] == "succeeded", job  # it waited for the lock, then ran
        assert http.post("/index", json={}).status_code == 202


def wait_for_phase(http: httpx.Client, job_id: str, phase: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while http.get(f"/jobs/{job_id}").json()["phase"] != phase:
        assert time.monotonic() < deadline, f"job {job_id} never reached {phase}"
        time.sleep(0.05)


def test_a_job_that_waited_for_another_run_indexes_what_that_run_left(
    own: tuple[Library, Path], tmp_path: Path
) -> None:
    """A job read its roots and folders when it was submitted, then waited for the other
    process's run: a folder that run forgot was indexed again, roots and images back, and a
    folder deleted meanwhile was a job that succeeded without looking at anything."""
    library, photos = own
    extra = tmp_path / "Extra"
    write_photos(extra, 3, size=(320, 240), seed=900)
    library.index(extra)
    with (
        Library.open(library.path) as other_process,
        running_server(library, KEYED) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=60) as http,
    ):
        with other_process._write_lock.held(0, "indexing"):  # held as its own index run would
            everything = http.post("/index", json={}).json()["id"]
            wait_for_phase(http, everything, "Waiting for another index run")
            assert other_process.forget(extra, wait=0) == 3  # pixsift forget, in that process
        job = wait_for_job(http, everything)
        assert job["state"] == "succeeded" and job["report"]["roots"] == [str(photos)], job
        assert [root["path"] for root in http.get("/stats").json()["roots"]] == [str(photos)]
        assert http.get("/stats").json()["images"] == 15

        with other_process._write_lock.held(0, "indexing"):
            scoped = http.post("/index", json={"paths": [str(photos / "small")]}).json()["id"]
            wait_for_phase(http, scoped, "Waiting for another index run")
            shutil.rmtree(photos / "small")
        job = wait_for_job(http, scoped)
        assert job["state"] == "failed" and "does not exist" in job["error"], job


def test_a_client_cancels_a_job_that_waits_for_another_run(own: tuple[Library, Path]) -> None:
    """A job waited for another index run for as long as it took, and held the service's jobs
    meanwhile (409 job_running): nothing but a restart could end it."""
    library = own[0]
    other_process = FileLock(library.path / "library.lock", thread_local=False)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        with other_process:  # a `pixsift index` that takes its time
            waiting = http.post("/index", json={}).json()["id"]
            wait_for_phase(http, waiting, "Waiting for another index run")
            assert_error(http.delete(f"/jobs/{waiting}", headers={"X-API-Key": "wrong"}), 401)
            cancelling = http.delete(f"/jobs/{waiting}")
            assert cancelling.status_code == 202 and cancelling.json()["cancel_requested"] is True
            job = wait_for_job(http, waiting, timeout=60)
            assert (job["state"], job["report"], job["error"]) == ("cancelled", None, None), job
            assert http.get("/stats").json()["running_job"] is None
            assert_error(http.delete(f"/jobs/{waiting}"), 409, "job_finished")
            assert_error(http.delete("/jobs/none"), 404, "job_not_found")
            waiting = http.post("/index", json={}).json()["id"]  # no longer 409 job_running
            wait_for_phase(http, waiting, "Waiting for another index run")
        assert wait_for_job(http, waiting)["state"] == "succeeded"


def test_a_job_that_has_ended_reports_no_phase(own: tuple[Library, Path]) -> None:
    """A job that succeeded, was cancelled or failed kept the phase it was in last ("Embedding",
    "Waiting for another index run") beside its final state, as if still under way."""
    library, photos = own
    write_photos(photos / "new", 2, size=(320, 240), seed=960)
    other_process = FileLock(library.path / "library.lock", thread_local=False)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job = wait_for_job(http, http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"])
        assert (job["state"], job["phase"], job["done"], job["total"]) == ("succeeded", None, 2, 2)
        with other_process:  # a `pixsift index` in another process
            cancelled = http.post("/index", json={}).json()["id"]
            wait_for_phase(http, cancelled, "Waiting for another index run")
            assert http.delete(f"/jobs/{cancelled}").json()["phase"] == "Waiting for another index run"
            job = wait_for_job(http, cancelled, timeout=60)
            assert (job["state"], job["phase"]) == ("cancelled", None)
            failed = http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"]
            wait_for_phase(http, failed, "Waiting for another index run")
            shutil.rmtree(photos / "new")
        job = wait_for_job(http, failed)
        assert (job["state"], job["phase"]) == ("failed", None), job


def test_a_job_cancelled_while_it_embeds_keeps_what_it_committed(own: tuple[Library, Path]) -> None:
    """Cancelled at the first step after its first batch, a job stops as a Ctrl-C'd run does:
    that batch stays, and the search index is saved with it."""
    library, photos = own
    write_photos(photos / "new", 4, size=(320, 240), seed=950)
    job = Job(id="j", paths=[str(photos / "new")])

    class CancelledOnceEmbedding(_JobProgress):
        def start(self, phase: str, total: int | None = None) -> None:
            super().start(phase, total)
            job.cancel_requested = job.cancel_requested or phase == "Embedding"

    progress = CancelledOnceEmbedding(job, threading.Lock())
    with pytest.raises(IndexInterrupted) as stopped:
        library.reindex(photos / "new", batch_size=2, workers=1, progress=progress)
    assert stopped.value.report.added == 2 and stopped.value.report.interrupted
    with Library.open(library.path) as reopened:
        assert reopened.status().index_file.state == "up to date"
        assert len(reopened.search("x", k=50, filters=SearchFilters(under=str(photos / "new")))) == 2


def test_a_running_job_shows_the_files_that_failed_so_far(own: tuple[Library, Path]) -> None:
    """A client polling a long job saw no failed files (no report at all) until the job had
    ended: its view now carries the counts committed so far, batch by batch."""
    library, photos = own
    new = photos / "new"
    write_photos(new, 4, size=(320, 240), seed=970)
    (new / "0-broken.jpg").write_bytes(next(new.glob("*.jpg")).read_bytes()[:300])  # walked first
    (new / "0-notes.jpg").write_text("not an image")
    job = Job(id="j", paths=[str(new)])
    seen: list[tuple[int, dict[str, Any] | None]] = []

    class Polled(_JobProgress):  # what a GET /jobs/{id} after each step would show
        def advance(self, steps: int = 1) -> None:
            super().advance(steps)
            if job.phase == "Embedding":
                seen.append((job.done, job.report and dict(job.report)))

    library.reindex(new, batch_size=2, workers=1, progress=Polled(job, threading.Lock()))
    first_done, first = seen[0]
    assert first is not None and first_done == 2 < 6 and (first["failed"], first["added"]) == (2, 0)
    assert first["scanned"] == 6 and first["interrupted"] is False
    assert [(r or {}).get("added") for _, r in seen] == [0, 2, 4]
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        (new / "1-broken.jpg").write_bytes(b"\xff\xd8\xff")
        ended = wait_for_job(http, http.post("/index", json={"paths": [str(new)]}).json()["id"])
    assert ended["state"] == "succeeded" and ended["report"]["failed"] == 1, ended


def test_a_running_jobs_report_counts_its_time_while_it_goes(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client polling a job saw `elapsed_s` and `embed_s` at 0 until the job had ended, so
    it could tell neither how long the run had taken so far nor its rate. While the search
    index is saved, a phase of its own, its time goes on, and the final one is no smaller."""
    library, photos = own
    write_photos(photos / "new", 2, size=(320, 240), seed=975)
    (photos / "new" / "notes.jpg").write_text("not an image")
    decoding, decoded, saving, saved = (threading.Event() for _ in range(4))
    load_image, save_current = decode.load_image, library._index.save_current

    def held_while_decoding(*args: Any, **kwargs: Any) -> Any:
        decoding.set()
        decoded.wait(60)
        return load_image(*args, **kwargs)

    def held_while_saving(embed_dim: int) -> None:
        saving.set()
        saved.wait(60)
        save_current(embed_dim)

    monkeypatch.setattr(pipeline, "load_image", held_while_decoding)
    monkeypatch.setattr(library._index, "save_current", held_while_saving)

    def polled_twice(http: httpx.Client, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        first = http.get(f"/jobs/{job_id}").json()
        time.sleep(0.3)
        return first, http.get(f"/jobs/{job_id}").json()

    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job_id = http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"]
        assert decoding.wait(60)
        first, then = polled_twice(http, job_id)  # while it embeds
        decoded.set()
        assert saving.wait(60)
        last, later = polled_twice(http, job_id)  # saving the search index: its time goes on
        saved.set()
        ended = wait_for_job(http, job_id)
    assert first["state"] == then["state"] == "running" and first["phase"] == "Embedding", first
    report, grown = first["report"], then["report"]
    assert 0 <= report["embed_s"] < report["elapsed_s"] and report["scanned"] == 3
    assert grown["elapsed_s"] - report["elapsed_s"] >= 0.25 and grown["embed_s"] - report["embed_s"] >= 0.25
    assert (later["state"], later["report"]["added"], later["report"]["failed"]) == ("running", 2, 1), later
    assert last["phase"] == later["phase"] == "Saving search index", last
    assert later["report"]["elapsed_s"] - last["report"]["elapsed_s"] >= 0.25
    assert last["report"]["embed_s"] == later["report"]["embed_s"] >= grown["embed_s"]  # embedding is over
    assert ended["state"] == "succeeded", ended
    assert ended["report"]["elapsed_s"] >= later["report"]["elapsed_s"]  # never back: the save is in it
    assert ended["report"]["embed_s"] >= later["report"]["embed_s"]
    # ended: `done` of `total` of its files' last phase, not of the save's (no steps)
    assert (ended["phase"], ended["done"], ended["total"]) == (None, 3, 3), ended


def test_a_cancel_after_the_last_step_says_it_came_too_late(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that came while the job saved the search index (its last step done) was
    answered 202 "stops at its next step", and the job then ended `succeeded` with nothing
    to tell the client its cancel had not taken effect."""
    library, photos = own
    write_photos(photos / "new", 2, size=(320, 240), seed=980)
    answers: list[httpx.Response] = []
    save_current = library._index.save_current

    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:

        def cancelled_while_saving(embed_dim: int) -> None:
            answers.append(http.delete(f"/jobs/{job_id}"))  # the client's cancel, just now
            save_current(embed_dim)

        monkeypatch.setattr(library._index, "save_current", cancelled_while_saving)
        job_id = http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"]
        job = wait_for_job(http, job_id)
        assert answers[0].status_code == 202 and answers[0].json()["state"] == "running"
        assert (job["state"], job["cancel_requested"], job["cancel_too_late"]) == ("succeeded", True, True)
        assert job["report"]["added"] == 2 and job["report"]["interrupted"] is False, job
        assert_error(http.delete(f"/jobs/{job_id}"), 409, "job_finished")
        monkeypatch.undo()
        # a cancel in time stops the job: not too late
        other_process = FileLock(library.path / "library.lock", thread_local=False)
        with other_process:
            waiting = http.post("/index", json={}).json()["id"]
            assert http.delete(f"/jobs/{waiting}").json()["cancel_too_late"] is False
            job = wait_for_job(http, waiting, timeout=60)
        assert (job["state"], job["cancel_too_late"]) == ("cancelled", False), job


def test_a_job_stopped_by_a_bug_reports_what_it_committed(
    own: tuple[Library, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that an unexpected error stopped after it had indexed new photos (they stay in
    the library) answered `report: null`, as if it had done nothing."""
    library, photos = own
    write_photos(photos / "new", 2, size=(320, 240), seed=990)

    def broken(embed_dim: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(library._index, "save_current", broken)
    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        job = wait_for_job(http, http.post("/index", json={"paths": [str(photos / "new")]}).json()["id"])
        assert job["state"] == "failed" and job["error"] == "unexpected error: RuntimeError: a bug"
        assert job["report"] is not None and job["report"]["added"] == 2, job
    assert library.status().counts.total == 17


def test_stopping_the_service_cancels_its_job(own: tuple[Library, Path]) -> None:
    library = own[0]
    jobs = JobManager(library)
    with FileLock(library.path / "library.lock", thread_local=False):
        job = jobs.submit([])
        deadline = time.monotonic() + 60
        while (jobs.get(job.id) or job).phase != "Waiting for another index run":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        jobs.stop(timeout=60)
        # Stopped with the lock still held: the job ended by the cancel, not by getting the lock
        # (a bound on the stop's time would measure the machine's load as much as the stop).
        assert (jobs.get(job.id) or job).state == "cancelled"
        assert jobs.running() is None


def test_searches_run_while_an_index_job_runs(own: tuple[Library, Path]) -> None:
    library, photos = own
    write_photos(photos / "batch", 16, size=(1600, 1200), seed=900)
    errors: list[str] = []
    counts: list[int] = []
    stop = threading.Event()

    def searcher(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                response = http.get("/search", params={"q": "a clock", "k": 50})
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                ids = [hit["id"] for hit in response.json()["results"]]
                if len(ids) != len(set(ids)):
                    errors.append(f"duplicate ids: {ids}")
                counts.append(len(ids))

    with running_server(library, KEYED) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        threads = [threading.Thread(target=searcher, args=(url,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            job = wait_for_job(http, http.post("/index", json={}).json()["id"])
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert job["state"] == "succeeded" and job["report"]["added"] == 16
        assert not errors, errors[:3]
        # Searches under way when the job ended may have read the index before its last
        # commit: only one asked after the job has to see every new image.
        assert counts and min(counts) >= 15 and max(counts) <= 31
        final = ids_of(http.get("/search", params={"q": "a clock", "k": 50}))
        assert len(final) == len(set(final)) == 31


def test_openapi_docs_are_served(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/search", "/similar", "/recommend", "/images/{image_id}", "/index", "/jobs/{job_id}"} <= set(
        schema["paths"]
    )
    assert set(schema["paths"]["/similar"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data",
        "application/json",
    }
    similar = schema["paths"]["/similar"]["post"]["responses"]
    assert {"413", "415", "422", "503"} <= set(similar)
    assert client.get("/docs").status_code == 200

    # an error as sent has the fields the schema declares for it, 422's details included
    declared = schema["paths"]["/search"]["get"]["responses"]["422"]["content"]["application/json"]
    error_schema = schema["components"]["schemas"][declared["schema"]["$ref"].rsplit("/", 1)[-1]]
    refused = assert_error(client.get("/search", params={"q": "x", "k": 0}), 422, "invalid_request")
    assert set(refused) <= set(error_schema["properties"]) and set(error_schema["required"]) <= set(refused)
    detail_ref = error_schema["properties"]["details"]["items"]["$ref"].rsplit("/", 1)[-1]
    detail_schema = schema["components"]["schemas"][detail_ref]
    assert all(set(detail) == set(detail_schema["properties"]) for detail in refused["details"])
