"""Crash safety: `pixsift index` killed with SIGKILL at random moments loses and breaks nothing.

Twenty seeded trials of tools/crash_soak.py (which says what each trial checks); run the
longer soak with `python tools/crash_soak.py --trials 200 --seed 1`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TinyModel
from crash_soak import run_soak

pytestmark = pytest.mark.slow


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, tiny_model: TinyModel) -> None:
    lines: list[str] = []
    results = run_soak(20, 7, tmp_path, tiny_model.config, tiny_model.checkpoint, lines.append)
    print("\n".join(lines))
    assert [r.number for r in results if not r.passed] == [], "\n".join(lines)
    by_kind = {kind: [r.killed for r in results if r.kind == kind] for kind in ("delay", "batches", "save")}
    assert all(by_kind["save"]), "every save trial must die while the search index is written"
    assert any(by_kind["delay"]) and any(by_kind["batches"]), "\n".join(lines)
