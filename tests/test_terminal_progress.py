"""What `pixsift index` draws on a terminal while it runs: its phases, and the files that
failed so far, before the summary at the end."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from conftest import TerminalRun, TinyModel
from pixsift import Library
from pixsift.terminal_progress import TerminalProgress
from sample_photos import write_photos

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def corrupt(folder: Path, count: int) -> None:
    for number in range(count):
        (folder / f"broken_{number}.jpg").write_bytes(b"not a jpeg at all")


class Frames(TerminalProgress):
    """The display as it stands after each step of the embedding phase, as text."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.frames: list[str] = []
        self._phase = ""

    def start(self, phase: str, total: int | None = None) -> None:
        super().start(phase, total)
        self._phase = phase

    def advance(self, steps: int = 1) -> None:
        super().advance(steps)
        if self._phase == "Embedding":
            frame = Console(file=io.StringIO(), width=100)
            frame.print(*self._progress.get_renderables())
            self.frames.append(frame.file.getvalue())  # type: ignore[attr-defined]


def test_the_files_that_failed_show_while_the_run_goes(tmp_path: Path, tiny_model: TinyModel) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, 6, size=(160, 120))
    corrupt(photos, 6)  # more than one batch: some are committed before the last batch
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    progress = Frames(console)
    with Library.open(tmp_path / "lib") as library, progress:
        model, pretrained = str(tiny_model.config), str(tiny_model.checkpoint)
        report = library.index(photos, model=model, pretrained=pretrained, batch_size=2, progress=progress)
    assert report.failed == 6
    under_way = [frame for frame in progress.frames if "12/12" not in frame]
    assert any("file(s) failed so far" in frame for frame in under_way), progress.frames
    assert "6 file(s) failed so far" in progress.frames[-1]


def test_the_command_shows_failures_on_the_terminal_only_when_there_are_some(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    photos, library = tmp_path / "photos", str(tmp_path / "lib")
    write_photos(photos, 4, size=(160, 120))
    corrupt(photos, 3)
    run = TerminalRun("index", str(photos), "--library", library, *tiny_model.index_args())
    code, stdout, shown = run.finish()
    assert code == 3, (stdout, shown)  # not every file could be indexed
    assert "3 file(s) failed so far" in ESCAPES.sub("", shown)
    # The next run does not try the unchanged broken files again: nothing fails, nothing shows.
    run = TerminalRun("index", str(photos), "--library", library)
    code, stdout, shown = run.finish()
    assert "0 failed" in stdout, shown
    assert "Scanning" in shown
    assert "failed" not in ESCAPES.sub("", shown)
