"""Advice in an error names what the face the user reached takes: the command line's options
(`--index-type auto`, `pixsift index --include-hidden`), the Python API's arguments
(`index_type='auto'`, `include_hidden=True`). The core's errors reached Python callers and
HTTP clients with the command line's flags, which mean nothing there."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from conftest import TinyModel, run_cli
from pixsift import Library, LibraryNotFoundError, QueryError
from pixsift.server import ServerSettings, check_bind
from pixsift.server.settings import UnsafeBindError
from serving import API_KEY, running_server


def test_python_callers_are_told_the_arguments_and_the_command_its_options(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    library = tmp_path / "lib"
    assert run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args()).returncode == 0
    with Library.open(library) as opened, pytest.raises(QueryError) as refused:
        opened.rebuild_index("ivfpq")
    lead = "An IVF-PQ index needs at least 256 images to train on; this library has 12. Use"
    assert str(refused.value) == f"{lead} index_type='auto', 'flat' or 'hnsw'."
    command = run_cli("reindex", "--index-type", "ivfpq", "--library", str(library))
    assert (command.returncode, command.stderr) == (1, f"error: {lead} --index-type auto, flat or hnsw.\n")

    missing = tmp_path / "none"
    with pytest.raises(LibraryNotFoundError) as not_found:
        Library.open(missing, create=False)
    assert str(not_found.value) == (
        f"No pixsift library at {missing}. Open it with create=True to make one, then index a folder into it."
    )
    command = run_cli("search", "a dog", "--library", str(missing))
    assert command.stderr == (
        f"error: No pixsift library at {missing}. Create one by indexing a folder: pixsift index ~/Photos\n"
    )


def test_http_clients_are_not_told_command_line_options(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    hidden = photos / ".drafts"
    hidden.mkdir()
    shutil.copy(next(photos.glob("*.jpg")), hidden / "draft.jpg")
    empty = Library.open(tmp_path / "empty")
    with Library.open(tmp_path / "lib") as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
        with running_server(library, ServerSettings(api_key=API_KEY)) as url:
            refused = httpx.post(
                f"{url}/index", json={"paths": [str(hidden)]}, headers={"X-API-Key": API_KEY}
            )
        assert refused.status_code == 400, refused.text
        assert refused.json()["message"] == (
            f"{hidden} lies in a hidden folder, which {photos} is indexed without; to index hidden "
            f"files there: index({str(photos)!r}, include_hidden=True)"
        )
    with empty, running_server(empty) as url:
        nothing = httpx.get(f"{url}/search", params={"q": "a dog"})
    assert nothing.json()["message"] == (
        f"The library at {tmp_path / 'empty'} has no images indexed yet: index a folder into it first."
    )


def test_an_open_bind_without_a_key_is_refused_in_the_words_of_each_face(tmp_path: Path) -> None:
    """From Python no `--api-key` nor `$PIXSIFT_API_KEY` is read: the key is an argument."""
    lead = "Listening on 0.0.0.0 lets other machines reach the library: give an API key"
    with pytest.raises(UnsafeBindError) as refused:
        check_bind("0.0.0.0", None)
    assert str(refused.value) == f"{lead} (api_key=...), or listen on 127.0.0.1."
    command = run_cli("serve", "--library", str(tmp_path / "lib"), "--host", "0.0.0.0")
    assert (command.returncode, command.stderr) == (
        1,
        f"error: {lead} with --api-key or $PIXSIFT_API_KEY, or listen on 127.0.0.1.\n",
    )


def test_an_empty_host_is_named_as_every_interface_it_binds() -> None:
    """uvicorn binds "" to every interface; the refusal said "Listening on  lets ..."."""
    expected = r'^Listening on every interface \(host ""\) lets other machines reach the library'
    with pytest.raises(UnsafeBindError, match=expected):
        check_bind("", None)
