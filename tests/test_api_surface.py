"""The Python API as an application sees it: what it can import, what type checkers see."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

import pixsift

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
            from pixsift import Library

            def first_path(library: Library) -> int:
                return library.search("a dog", k=3)[0].path
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
