"""Docs that cannot drift from the code."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_reference import reference
from conftest import (
    CLOSED_PORT_URL,
    PERMISSION_PREFIX,
    ctrl_c_as_in_a_terminal,
    needs_permissions,
    run_cli,
)
from sample_photos import write_photos

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


@pytest.mark.parametrize("kept", ["library/library.db", "shapes/holiday.jpg"])
def test_demo_refuses_a_folder_of_the_users_named_like_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: str
) -> None:
    """A folder holding only the user's pixsift library (or photos in `shapes`) is no demo's."""
    from pixsift import demo

    (tmp_path / kept).parent.mkdir()
    (tmp_path / kept).write_bytes(b"the user's own")
    monkeypatch.setattr(sys, "argv", ["python -m pixsift.demo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        demo.main()
    assert exit_info.value.code == 2
    assert (tmp_path / kept).read_bytes() == b"the user's own"


def run_demo(
    *args: str, prefix: list[str] | None = None, max_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The demo in a subprocess, with writes past `max_bytes` failing as on a full disk."""

    def limit() -> None:
        if max_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "pixsift.demo", *args],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
        check=False,
    )


@needs_permissions
def test_demo_in_a_read_only_folder_says_so(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    (earlier / "shapes").mkdir(parents=True)
    (earlier / "shapes" / "captions.jsonl").write_text("")  # what an earlier demo leaves first
    tmp_path.chmod(0o555)
    earlier.chmod(0o555)
    try:
        fresh = run_demo("--out", str(tmp_path / "demo"), prefix=PERMISSION_PREFIX)
        again = run_demo("--out", str(earlier), prefix=PERMISSION_PREFIX)
        earlier.chmod(0o111)
        unlisted = run_demo("--out", str(earlier), prefix=PERMISSION_PREFIX)
    finally:
        tmp_path.chmod(0o755)
        earlier.chmod(0o755)
    for result, message in [
        (fresh, f"cannot write the demo's images into {tmp_path / 'demo' / 'shapes'}: Permission denied"),
        (again, f"cannot replace the earlier demo in {earlier}: Permission denied"),
        (unlisted, f"cannot look into {earlier}: Permission denied"),
    ]:
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"error: {message}" in result.stderr


def test_demo_on_a_full_disk_says_so(tmp_path: Path) -> None:
    result = run_demo("--out", str(tmp_path / "demo"), "--count", "3", max_bytes=8192)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: cannot write the demo's images into {tmp_path / 'demo' / 'shapes'}: File too large" in (
        result.stderr
    )


def test_demo_stopped_with_ctrl_c_says_so(tmp_path: Path) -> None:
    demo = [sys.executable, "-m", "pixsift.demo", "--out", str(tmp_path / "demo")]
    with subprocess.Popen(
        demo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    ) as process:
        assert process.stdout is not None and process.stdout.readline().startswith("Making 300")
        os.killpg(process.pid, signal.SIGINT)  # as the terminal does, while the images are made
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "The demo was interrupted" in stderr


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


def test_the_recall_ceiling_quoted_for_the_held_out_images() -> None:
    """The best recall@10 any model can reach on the quality tests' images, text and image
    queries alike (an image query's relevant images are the others of its kind)."""
    from collections import Counter

    from pixsift.synthetic import sample_scenes
    from test_quality import HELD_OUT_COUNT, HELD_OUT_SEED

    kinds = Counter((scene.colour, scene.shape) for scene in sample_scenes(HELD_OUT_COUNT, HELD_OUT_SEED))
    text = sum(min(10, n) / n for n in kinds.values()) / len(kinds)
    image = sum(n * min(10, n - 1) / (n - 1) for n in kinds.values()) / HELD_OUT_COUNT
    assert (min(kinds.values()), max(kinds.values())) == (5, 26)
    quoted = f"recall@10 cannot exceed {max(text, image):.2f}"
    assert quoted in (ROOT / "README.md").read_text()
    assert quoted in (ROOT / "docs" / "synthetic-model.md").read_text()


def _keys(value: object) -> set[str]:
    """Every key of the objects in `value`, however deep."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_cli_reference_names_every_key_of_the_json_outputs(tmp_path: Path) -> None:
    """Scripts read these keys: docs/cli.md names each one that `status`, `doctor` and `eval`
    print with --format json, and each kind of problem doctor can report."""
    photos = tmp_path / "photos"
    write_photos(photos, 3, size=(64, 48), seed=5)
    (photos / "broken.jpg").write_text("not a jpeg")  # so that --failed lists one
    library = ["--library", str(tmp_path / "lib")]
    assert run_cli("index", str(photos), *library, "--model", "synthetic-tiny").returncode == 3
    (tmp_path / "queries.jsonl").write_text('{"query": "a photo", "relevant": ["photos/*.jpg"]}\n')
    (photos / "photo_0005.jpg").unlink()  # a file gone: a problem for doctor to report
    outputs = {
        "status": run_cli("status", "--failed", "--format", "json", *library),
        "doctor": run_cli("doctor", "--format", "json", *library),
        "eval": run_cli("eval", str(tmp_path / "queries.jsonl"), "--format", "json", *library),
    }
    reference = (ROOT / "docs" / "cli.md").read_text()
    for command, result in outputs.items():
        keys = _keys(json.loads(result.stdout))
        assert keys, result.stderr
        # cut-offs ("1", "5") key recall and precision; mrr@10 is written mrr@N
        keys = {re.sub(r"^mrr@\d+$", "mrr@N", key) for key in keys if not key.isdigit()}
        undocumented = sorted(key for key in keys if f"`{key}`" not in reference)
        assert not undocumented, f"docs/cli.md does not name {command}'s JSON keys {undocumented}"
    doctor = json.loads(outputs["doctor"].stdout)
    assert [problem["kind"] for problem in doctor["problems"]] == ["missing-files"]
    source = (ROOT / "src" / "pixsift" / "doctor.py").read_text()
    kinds = set(re.findall(r'Problem\(\s*"([a-z-]+)"', source))
    assert len(kinds) >= 9 and not sorted(k for k in kinds if f"`{k}`" not in reference)


def _documented(name: str, text: str) -> bool:
    """`name` appears as code or a JSON key (`name`, `name: true`, "name")."""
    return re.search(rf"[`\"]{re.escape(name)}\b", text) is not None


def test_server_docs_name_every_endpoint_and_field(tmp_path: Path) -> None:
    """Clients read these: docs/server.md lists every operation of the service with each field
    of what it takes and answers, and the README's list names every path."""
    from pixsift import Library
    from pixsift.server import create_app

    with Library.open(tmp_path / "lib") as library:
        schema = create_app(library).openapi()
    server_doc = (ROOT / "docs" / "server.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for path, operations in schema["paths"].items():
        path = re.sub(r"\{\w+_id\}", "{id}", path)  # the docs write /images/{id}, /jobs/{id}
        assert f"{path}`" in readme, f"the README's list of endpoints lacks {path}"
        for method in operations:
            assert re.search(rf"\| `{method.upper()} {re.escape(path)}[`?]", server_doc), (
                f"docs/server.md's table of endpoints lacks {method.upper()} {path}"
            )
    undocumented = sorted(
        f"{name}.{field}"
        for name, model in schema["components"]["schemas"].items()
        for field in model.get("properties", {})
        if not _documented(field, server_doc)
    )
    assert not undocumented, f"docs/server.md does not name the fields {undocumented}"


def test_docs_name_only_files_that_exist() -> None:
    """A module or script the docs name (`storage/index_keeper.py`, `ann.py`) is still there
    under that name: in the repository, the package or the benchmarks."""
    places = [ROOT, ROOT / "src" / "pixsift", ROOT / "src", ROOT / "benchmarks"]
    gone = sorted(
        f"{doc.relative_to(ROOT)}: {name}"
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for name in set(re.findall(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.py)\b", doc.read_text()))
        if not any((place / name).is_file() for place in places)
    )
    assert not gone, f"the docs name files that are not there: {gone}"
