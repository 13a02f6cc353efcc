"""Docs that cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from cli_reference import reference

ROOT = Path(__file__).parent.parent


def test_cli_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), (
        "docs/cli.md is stale: run python tools/cli_reference.py > docs/cli.md"
    )


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^\s*(?:\$ )?pixsift ([a-z]+)", readme, flags=re.MULTILINE))
    assert used <= {"index", "search", "similar", "status"}
    assert {"index", "search", "similar", "status"} <= used
    for target in re.findall(r"^\s*make ([a-z-]+)", readme, flags=re.MULTILINE):
        assert f"\n{target}:" in (ROOT / "Makefile").read_text(), target
