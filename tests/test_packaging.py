"""What a user installing pixsift from a wheel gets: its package data, its metadata."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

from pixsift.models.bundled import BUNDLED_MODELS

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "pixsift"


def test_package_data_is_found_as_a_resource() -> None:
    """The data files pixsift reads at run time are inside the package, not beside the repo."""
    assert files("pixsift").joinpath("py.typed").is_file()  # mypy reads the API's types
    for name, model in BUNDLED_MODELS.items():
        builtin = files("pixsift.models").joinpath("builtin")
        assert builtin.joinpath(f"{name}.json").read_bytes() == model.config.read_bytes()
        assert builtin.joinpath(f"{name}.pt").is_file() and model.checkpoint.is_file()


def test_make_install_pins_releases_the_dependencies_admit() -> None:
    """`make install` pins torch and torchvision: pyproject.toml must accept those releases."""
    from packaging.requirements import Requirement

    pins = dict(re.findall(r"(torch|torchvision)==([\w.]+)", (ROOT / "Makefile").read_text()))
    assert set(pins) == {"torch", "torchvision"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(line).name: Requirement(line) for line in project["dependencies"]}
    for name, version in pins.items():
        assert requirements[name].specifier.contains(version), (name, version)


@pytest.mark.slow
def test_wheel_holds_the_package_and_nothing_else(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pixsift-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = {name for name in names if not name.split("/")[0].endswith(".dist-info")}
    source = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == source
    assert "pixsift/py.typed" in shipped and "pixsift/models/builtin/synthetic-tiny.pt" in shipped
    assert "pixsift = pixsift.cli:main" in scripts
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the MIT licence text ships"
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, flags=re.MULTILINE))
    assert {"server", "heif", "dev"} <= extras
