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
    """Every `pixsift` and `make` command in the README's shell blocks is a real one."""
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL))
    used = set(re.findall(r"^pixsift ([a-z]+)", blocks, flags=re.MULTILINE))
    assert used == {"doctor", "index", "search", "similar", "status"}
    targets = re.findall(r"^make ([a-z-]+)", blocks, flags=re.MULTILINE)
    assert "demo" in targets and "test" in targets
    for target in targets:
        assert f"\n{target}:" in (ROOT / "Makefile").read_text(), target
