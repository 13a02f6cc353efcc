"""Docs that cannot drift from the code."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_reference import reference
from conftest import CLOSED_PORT_URL

ROOT = Path(__file__).parent.parent


def test_cli_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), (
        "docs/cli.md is stale: run python tools/cli_reference.py > docs/cli.md"
    )


def test_readme_commands_exist() -> None:
    """The README's shell blocks show every `pixsift` command, and only real `make` targets."""
    import typer

    from pixsift.cli import app

    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL))
    used = set(re.findall(r"^pixsift ([a-z]+)", blocks, flags=re.MULTILINE))
    assert used == set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    targets = re.findall(r"^make ([a-z-]+)", blocks, flags=re.MULTILINE)
    assert "demo" in targets and "test" in targets
    for target in targets:
        assert f"\n{target}:" in (ROOT / "Makefile").read_text(), target


def test_readme_python_commands_exist() -> None:
    """`python -m` in the README runs a module of the package, which a wheel ships too (the
    offline demo among them); `python some/file.py` runs a file of a clone."""
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL))
    modules = re.findall(r"^python -m ([\w.]+)", blocks, flags=re.MULTILINE)
    assert "pixsift.demo" in modules
    for module in modules:
        assert module.split(".")[0] == "pixsift" and importlib.util.find_spec(module), module
    for script in re.findall(r"^python ([\w/.-]+\.py)", blocks, flags=re.MULTILINE):
        assert (ROOT / script).is_file(), script


def test_demo_refuses_to_replace_a_folder_it_did_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixsift import demo

    (tmp_path / "holiday.jpg").write_bytes(b"not a demo image")
    monkeypatch.setattr(sys, "argv", ["python -m pixsift.demo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        demo.main()
    assert exit_info.value.code == 2
    assert (tmp_path / "holiday.jpg").exists()


@pytest.mark.slow
def test_demo_run_again_in_its_folder_keeps_the_folder(tmp_path: Path) -> None:
    """`--out .` from inside an earlier demo's folder: the demo replaces what is in it, and
    the folder itself (the user's working directory) is not deleted and made anew."""
    from pixsift.synthetic import write_world

    out = tmp_path / "demo"
    write_world(out / "shapes", 2, seed=1)  # an earlier demo's images, and its library below
    (out / "library").mkdir()
    handle = os.open(out, os.O_RDONLY)
    try:
        env = {**os.environ, "HF_ENDPOINT": CLOSED_PORT_URL, "HF_HOME": str(tmp_path / "hf")}
        demo = [sys.executable, "-m", "pixsift.demo", "--out", ".", "--count", "3"]
        result = subprocess.run(
            demo, capture_output=True, text=True, env=env, cwd=out, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr
        assert os.fstat(handle).st_nlink > 0  # a deleted folder has no links left
    finally:
        os.close(handle)
    assert len(list((out / "shapes").glob("*.jpg"))) == 3


@pytest.mark.slow
def test_demo_runs_offline_and_finds_what_it_asks_for(tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": CLOSED_PORT_URL, "HF_HOME": str(tmp_path / "hf")}
    demo = [sys.executable, "-m", "pixsift.demo", "--out", str(tmp_path / "demo"), "--count", "96"]
    result = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith('try: pixsift search "two green triangles"')
    red_circles = result.stdout.split("$ pixsift search 'a red circle'")[1].splitlines()
    first_hit = next(line for line in red_circles if line.lstrip().startswith("1 "))
    assert "_red_circle.jpg" in first_hit
