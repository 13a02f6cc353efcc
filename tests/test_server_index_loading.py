"""Searches that arrive while the service loads its search index: they wait on the event loop,
up to `load_wait_s`, then get 503 `index_loading`; the worker threads stay free for the rest."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import TinyModel
from pixsift import Library
from pixsift.errors import InvalidOptionError
from pixsift.server import ServerSettings, create_app
from pixsift.server.index_wait import RETRY_AFTER_S
from serving import indexed_library, running_server, running_uvicorn, wait_until_arrived

TEXT = "a cat on a sofa"
QUERY: dict[str, str | int] = {"q": TEXT, "k": 3}
# More than anyio's 40 worker threads, which sync routes run in.
MORE_SEARCHES_THAN_THREADS = 48
SEARCH_PATHS = ("/search", "/search/batch", "/images/{image_id}/similar", "/similar", "/recommend")


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel
) -> Iterator[Library]:
    """One indexed library: each test serves it from a Library of its own that has not loaded
    its search index yet, as a service just started."""
    library = indexed_library(tmp_path_factory.mktemp("loading") / "library", photo_set, tiny_model)
    yield library
    library.close()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def every_search(http: httpx.Client, image_id: int) -> dict[str, httpx.Response]:
    """Each route that needs the search index, called once."""
    return {
        "GET /search": http.get("/search", params=QUERY),
        "POST /search": http.post("/search", json={"q": "a cat", "plus": ["a sofa"], "k": 3}),
        "POST /search/batch": http.post("/search/batch", json={"queries": ["a cat", "a dog"], "k": 3}),
        "GET /images/{id}/similar": http.get(f"/images/{image_id}/similar", params={"k": 3}),
        "POST /similar": http.post("/similar", files={"file": ("q.png", png_bytes(), "image/png")}),
        "POST /recommend": http.post("/recommend", json={"positive": [image_id, "a cat"], "k": 3}),
    }


def wait_until_ready(http: httpx.Client) -> None:
    """Until GET /healthz says the index is in memory (the load ends in moments once let go)."""
    deadline = time.monotonic() + 60
    while http.get("/healthz").status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail("the search index was still loading a minute after it was let go")
        time.sleep(0.02)


def assert_index_loading(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message"} and body["error"] == "index_loading"
    assert "loading its search index" in body["message"] and "GET /healthz" in body["message"]
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)


@pytest.mark.parametrize("wait", [0.0, 0.3])
def test_a_search_while_the_index_loads_is_told_to_retry_once_its_wait_is_over(
    indexed: Library, wait: float
) -> None:
    """A search sent while the service loaded its index held a worker thread and gave the
    client no answer at all for as long as the load lasted (minutes for a large index). Now
    it waits up to `load_wait_s` (0: not at all), then gets 503 `index_loading` with
    Retry-After; once the index is in memory, the same search answers."""
    image_id = indexed.search("a cat", k=1)[0].id
    settings = ServerSettings(load_wait_s=wait)
    with (
        Library.open(indexed.path) as cold,
        running_server(cold, settings) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        with cold._index.in_memory():  # held, as a long load holds it
            cold.warm_up(index_in_background=True)
            refused = (
                every_search(http, image_id)
                if wait == 0
                else {"GET /search": http.get("/search", params=QUERY)}
            )
            stats = http.get("/stats")
        for route, response in refused.items():
            assert response.status_code == 503, route
            assert_index_loading(response)
        assert stats.status_code == 200 and stats.json()["index_loading"] is True
        wait_until_ready(http)
        answered = http.get("/search", params=QUERY)
        assert answered.status_code == 200 and len(answered.json()["results"]) == 3
        assert all(response.status_code == 200 for response in every_search(http, image_id).values())


def test_a_search_within_its_wait_answers_once_the_index_is_loaded(indexed: Library) -> None:
    """Waiting on the event loop, a search goes on as it did in a worker thread: it answers from
    the index once the load ends within its wait."""
    settings = ServerSettings(load_wait_s=60)
    with (
        Library.open(indexed.path) as cold,
        running_uvicorn(cold, settings) as (url, server),
        httpx.Client(base_url=url, timeout=90) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        with cold._index.in_memory():
            cold.warm_up(index_in_background=True)
            search = pool.submit(http.get, "/search", params=QUERY)
            wait_until_arrived(server, 1)
            assert not search.done()
        answer = search.result(timeout=90)
    assert answer.status_code == 200, answer.text
    assert [hit["id"] for hit in answer.json()["results"]] == [r.id for r in indexed.search(TEXT, k=3)]


def test_searches_waiting_for_the_index_leave_the_worker_threads_to_other_requests(indexed: Library) -> None:
    """Each search sent while the index loaded held one of the 40 worker threads, blocked on
    the index's lock: 40 of them held them all, and GET /stats, GET /images/{id}, thumbnails
    and job requests waited too, for as long as the load lasted. Now the searches wait on the
    event loop, and the other routes answer meanwhile."""
    image_id = indexed.search("a cat", k=1)[0].id
    settings = ServerSettings(load_wait_s=60)
    limits = httpx.Limits(max_connections=MORE_SEARCHES_THAN_THREADS + 4)
    with (
        Library.open(indexed.path) as cold,
        running_uvicorn(cold, settings) as (url, server),
        httpx.Client(base_url=url, timeout=90, limits=limits) as http,
        ThreadPoolExecutor(MORE_SEARCHES_THAN_THREADS) as pool,
    ):
        with cold._index.in_memory():
            cold.warm_up(index_in_background=True)
            searches = [
                pool.submit(http.get, "/search", params=QUERY) for _ in range(MORE_SEARCHES_THAN_THREADS)
            ]
            wait_until_arrived(server, MORE_SEARCHES_THAN_THREADS)
            # Well within the searches' wait: these time out if they wait for a worker thread.
            with httpx.Client(base_url=url, timeout=20) as other:
                stats, image = other.get("/stats"), other.get(f"/images/{image_id}")
            assert not any(search.done() for search in searches)
        answers = [search.result(timeout=90) for search in searches]
    assert stats.status_code == 200 and stats.json()["index_loading"] is True
    assert image.status_code == 200 and image.json()["id"] == image_id
    assert [answer.status_code for answer in answers] == [200] * MORE_SEARCHES_THAN_THREADS


@pytest.mark.parametrize("wait", [-1, -0.1, math.nan, math.inf, "5", True, None])
def test_a_load_wait_that_is_no_number_of_seconds_is_refused(wait: object) -> None:
    with pytest.raises(InvalidOptionError, match="load_wait_s must be a number of seconds of 0 or more"):
        ServerSettings(load_wait_s=wait)  # type: ignore[arg-type]


def test_the_schema_tells_searches_may_answer_503_index_loading(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        paths = create_app(library).openapi()["paths"]
    for path in SEARCH_PATHS:
        for method, operation in paths[path].items():
            answer = operation["responses"]["503"]
            assert "index_loading" in answer["description"], f"{method.upper()} {path}"
            assert answer["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    assert "busy" in paths["/similar"]["post"]["responses"]["503"]["description"]
    assert "index_loading" not in paths["/stats"]["get"]["responses"]["503"].get("description", "")
