"""The Python API as an application sees it: what it can import, what type checkers see."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap
import typing
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

import pixsift
from pixsift import errors as pixsift_errors

SOURCE_ROOT = Path(pixsift.__file__).resolve().parent.parent  # the folder holding the package


@pytest.mark.slow
def test_type_checkers_see_the_hints_of_an_installed_pixsift(tmp_path: Path) -> None:
    """mypy reads an installed package's hints only when it ships a py.typed marker; without
    one, every pixsift name is Any in the application's code and no mistake is caught."""
    pytest.importorskip("mypy")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # As pip's editable install does: the package is found through a .pth file, as installed.
    (Path(site_packages) / "pixsift-src.pth").write_text(f"{SOURCE_ROOT}\n")
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            from pixsift import Library, SearchFilters

            def first_path(library: Library) -> int:
                return library.search("a dog", k=3)[0].path

            def documented_filters(library: Library) -> None:
                # As the README gives them: one format alone as a string, a folder as a path.
                library.search("a dog", filters=SearchFilters(under=Path("~/shop"), formats="JPEG"))
                library.search("a dog", filters=SearchFilters(formats=["JPEG", "PNG"]))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", python, app],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "MYPYPATH"},
        check=False,
    )
    assert "py.typed" not in result.stdout, result.stdout
    assert 'Incompatible return value type (got "Path", expected "int")' in result.stdout, result.stdout
    assert "Found 1 error" in result.stdout, result.stdout  # that one, not the documented calls


def _pixsift_classes(annotation: object) -> Iterator[type]:
    """The pixsift classes an annotation names, however nested (`list[SearchResult] | None`)."""
    if isinstance(annotation, type):
        if annotation.__module__.startswith("pixsift."):
            yield annotation
        return
    for argument in typing.get_args(annotation):
        yield from _pixsift_classes(argument)


def _hints(owner: object, module: str) -> dict[str, object]:
    names = {**vars(sys.modules[module]), **{name: getattr(pixsift, name) for name in pixsift.__all__}}
    return typing.get_type_hints(owner, globalns=names)


def test_every_type_the_library_takes_or_returns_is_exported() -> None:
    """An application annotates what it keeps (`info: ImageInfo = library.image(id)`), so
    every class in a public method's signature, and in the fields of those records, must be
    importable from `pixsift` itself, not from a private module."""
    from pixsift.library import Library

    found: set[type] = set()
    todo = [
        cls
        for name, method in inspect.getmembers(Library, callable)
        if not name.startswith("_")
        for annotation in _hints(method, "pixsift.library").values()
        for cls in _pixsift_classes(annotation)
    ]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.add(cls)
        if dataclasses.is_dataclass(cls):
            todo.extend(c for hint in _hints(cls, cls.__module__).values() for c in _pixsift_classes(hint))

    assert {"ImageInfo", "LibraryStatus", "CatalogCounts", "EvalReport"} <= {cls.__name__ for cls in found}
    for cls in found:
        assert cls.__name__ in pixsift.__all__, cls
        assert getattr(pixsift, cls.__name__) is cls


def test_every_error_is_exported_and_listed() -> None:
    errors = [
        cls
        for cls in vars(pixsift_errors).values()
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == pixsift_errors.__name__
    ]
    assert errors
    for cls in errors:
        assert cls.__name__ in pixsift.__all__, cls
        assert getattr(pixsift, cls.__name__) is cls


def test_an_interactive_shell_completes_the_exported_names() -> None:
    assert set(pixsift.__all__) <= set(dir(pixsift))
    for name in pixsift.__all__:
        assert getattr(pixsift, name) is not None
