"""A long-lived `Library` (an application, the HTTP service) while other processes change the
same library: every change shows in its next answer, without a restart and without rebuilding
the search index from every stored vector."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from pixsift import Library
from pixsift.storage import index_build
from sample_photos import make_photo, write_photos
from serving import running_server


def cli(library_dir: Path, *args: str) -> None:
    """Run `pixsift ARGS --library LIBRARY` in another process; it must succeed."""
    done = run_cli(*args, "--library", str(library_dir), timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many vectors each whole rebuild of a search index in this process read (a spy: the
    real build runs)."""
    counted: list[int] = []
    real: Callable[..., object] = index_build.build_index

    def build_index(*args: object, **kwargs: object) -> object:
        index = real(*args, **kwargs)
        counted.append(index.count)  # type: ignore[attr-defined]
        return index

    monkeypatch.setattr(index_build, "build_index", build_index)
    return counted


def test_a_long_lived_library_takes_up_the_index_another_process_saved(
    tmp_path: Path, photos: Path, builds: list[int]
) -> None:
    library_dir, more = tmp_path / "library", tmp_path / "More"
    write_photos(more, 3, size=(96, 72), seed=7100)
    cli(library_dir, "index", str(photos), "--model", "synthetic-tiny")
    with Library.open(library_dir, create=False) as library:
        assert len(library.search("a photo", k=100)) == 12
        cli(library_dir, "index", str(more))  # saves its index and trims the change log
        assert len(library.search("a photo", k=100)) == 15
        cli(library_dir, "reindex", "--index-type", "hnsw")  # the same vectors, another kind
        assert library.index_summary().kind == "hnsw"
        assert len(library.similar(library.search("a photo", k=1)[0].id, k=100)) == 14
        (more / "photo_7100.jpg").unlink()
        cli(library_dir, "index")
        assert len(library.search("a photo", k=100)) == 14
        cli(library_dir, "reindex", "--index-type", "flat")
        assert library.index_summary().kind == "flat"
    assert builds == []  # each time, the file the other process saved was read instead


def test_a_served_thumbnail_shows_a_file_changed_in_place(tmp_path: Path, photos: Path) -> None:
    """A client (a browser) keeps the thumbnails it got: it must ask again and get the new
    pixels once a file changed in place, and not download an unchanged one again."""
    library_dir = tmp_path / "library"
    cli(library_dir, "index", str(photos), "--model", "synthetic-tiny")
    with (
        Library.open(library_dir, create=False) as library,
        running_server(library) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        hit = library.search("a photo", k=1)[0]
        first = http.get(f"/images/{hit.id}/thumbnail", params={"size": 64})
        assert first.status_code == 200
        assert "max-age" not in first.headers["cache-control"]  # nothing kept unasked
        tag = first.headers["etag"]
        kept = http.get(f"/images/{hit.id}/thumbnail", params={"size": 64}, headers={"If-None-Match": tag})
        assert (kept.status_code, kept.content, kept.headers["etag"]) == (304, b"", tag)

        make_photo(7200, (400, 300)).save(hit.path, "JPEG")  # same path, new pixels
        cli(library_dir, "index")
        fresh = http.get(f"/images/{hit.id}/thumbnail", params={"size": 64}, headers={"If-None-Match": tag})
        assert fresh.status_code == 200 and fresh.headers["etag"] != tag
        expected = make_photo(7200, (400, 300)).resize((64, 48))
        assert Image.open(io.BytesIO(fresh.content)).size == (64, 48)
        difference = np.abs(
            np.asarray(Image.open(io.BytesIO(fresh.content)), float) - np.asarray(expected, float)
        )
        assert difference.mean() < 12  # the new picture, not the old one
        assert http.get(f"/images/{hit.id}").json()["height"] == 300
