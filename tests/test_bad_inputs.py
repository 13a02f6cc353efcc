"""The bad-input corpus: every kind of awkward file, indexed in one run next to good photos.

Each case is made on the fly (nothing binary is committed) and says what must happen to it:
indexed, or recorded as failed with a clear reason. The run must go on past every bad file,
leave the good photos exactly as a clean run would, and say so in its summary and exit code.
Decoding details (16-bit contrast, EXIF rotation) are checked in test_decode.py; here each
case goes through the whole indexer.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import PERMISSION_PREFIX, TinyModel, needs_permissions, run_cli
from pixsift import IndexReport, Library
from sample_photos import make_photo, save
from test_decode import png_claiming

ROOT = os.name == "posix" and os.geteuid() == 0


@dataclass(frozen=True)
class Case:
    name: str  # the file's name in the corpus folder (bytes where it is not UTF-8)
    make: Callable[[Path], None]  # writes the file at this path
    error: str | None  # None: indexed; VANISHED: neither indexed nor failed; else a part of the reason


VANISHED = "(deleted during the run: left out, not a failure)"
BECOMES_A_PIPE = "becomes-a-pipe.jpg"


def photo_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    buffer = io.BytesIO()
    make_photo(seed, size).save(buffer, fmt)
    return buffer.getvalue()


def write(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data)

    return make


def save_image(image: Callable[[], Image.Image], **options: Any) -> Callable[[Path], None]:
    return lambda path: image().save(path, **options)


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def animated_gif(path: Path) -> None:
    frames = [make_photo(seed, (160, 120)).convert("P") for seed in (31, 32, 33)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


def huge_jpeg(path: Path) -> None:
    """9500x9500: above Pillow's warning threshold, below the pixel limit: a valid photo."""
    gradient = np.linspace(0, 255, 9500, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(gradient, (9500, 9500)).copy(), "L").save(path, quality=50)


def unreadable(path: Path) -> None:
    path.write_bytes(photo_bytes(40))
    path.chmod(0)


CASES = [
    Case("zero-byte.jpg", write(b""), "empty file"),
    Case("truncated.jpg", write(photo_bytes(41)[:3000]), "truncated"),
    Case("truncated.png", write(photo_bytes(42, "PNG")[:5000]), "truncated"),
    Case("text.jpg", write(b"Dear diary, today I renamed a text file.\n"), "not an image"),
    Case("bomb.png", write(png_claiming(100_000, 100_000)), "decompression bomb"),
    Case("huge.jpg", huge_jpeg, None),
    Case("cmyk.jpg", save_image(lambda: make_photo(43, (320, 240)).convert("CMYK")), None),
    Case(
        "16-bit.png",
        save_image(lambda: Image.fromarray(np.tile(np.arange(0, 65535, 128, dtype=np.uint16), (200, 1)))),
        None,
    ),
    Case(
        "palette.png",
        save_image(lambda: make_photo(44, (320, 240)).convert("P"), transparency=0),
        None,
    ),
    Case("animated.gif", animated_gif, None),
    Case("odd-orientation.jpg", save_image(lambda: make_photo(45), exif=exif_orientation(42)), None),
    Case("garbage-exif.jpg", save_image(lambda: make_photo(46), exif=b"Exif\x00\x00II*\x00garbage"), None),
    Case("name with spaces.jpg", write(photo_bytes(47)), None),
    Case("new\nline.jpg", write(photo_bytes(48)), None),
    Case(os.fsdecode(b"caf\xe9 latin-1.jpg"), write(photo_bytes(49)), None),
    Case("unreadable.jpg", unreadable, "permission denied"),
    # Made, then deleted by the run itself (see CorpusEvents): after the scan, before decoding.
    Case("vanishes.jpg", write(photo_bytes(50)), VANISHED),
    Case("vanishing-folder/inside.jpg", write(photo_bytes(51)), VANISHED),
    Case("becomes-a-folder.jpg", write(photo_bytes(53)), VANISHED),
    # Replaced by a named pipe by the run itself: opening it as a file would wait for a writer.
    Case(BECOMES_A_PIPE, write(photo_bytes(54)), "not a regular file (a named pipe is in its place)"),
]
GOOD = ["photo_0100.jpg", "photo_0101.jpg", "photo_0102.jpg", "photo_0103.jpg"]


def case_params() -> list[object]:
    return [
        pytest.param(
            case,
            id=case.name.encode("ascii", "backslashreplace").decode().replace("\n", "\\n"),
            marks=[pytest.mark.skipif(ROOT, reason="root reads every file")]
            if case.name == "unreadable.jpg"
            else [],
        )
        for case in CASES
    ]


class CorpusEvents:
    """A progress listener that changes the folder while the run goes, as users do.

    After the scan lists the top folder, `gone-during-scan/` disappears; when embedding starts,
    `vanishes.jpg` and the folder `vanishing-folder/` disappear, `becomes-a-folder.jpg` is
    replaced by a folder of that name and `becomes-a-pipe.jpg` by a named pipe. Should a
    decode thread wait on that pipe (a regression), a writer opened after 30 s releases it, so
    the run ends and the case fails instead of the tests hanging.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.phase = ""

    def start(self, phase: str, total: int | None = None) -> None:
        self.phase = phase
        if phase == "Embedding":
            (self.folder / "vanishes.jpg").unlink()
            shutil.rmtree(self.folder / "vanishing-folder")
            (self.folder / "becomes-a-folder.jpg").unlink()
            (self.folder / "becomes-a-folder.jpg").mkdir()
            pipe = self.folder / BECOMES_A_PIPE
            pipe.unlink()
            os.mkfifo(pipe)
            threading.Thread(target=release_after, args=(pipe, 30.0), daemon=True).start()

    def advance(self, steps: int = 1) -> None:
        if self.phase == "Scanning" and (self.folder / "gone-during-scan").exists():
            shutil.rmtree(self.folder / "gone-during-scan")

    def stop(self) -> None:
        pass


def release_after(pipe: Path, seconds: float) -> None:
    """Open `pipe` for writing (and close it) if a reader is waiting on it after `seconds`."""
    time.sleep(seconds)
    with contextlib.suppress(OSError):  # ENXIO: no reader waits, as it should be
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


def make_corpus(folder: Path, photo_set: Path, cases: list[Case]) -> None:
    folder.mkdir()
    for name in GOOD:
        shutil.copy(photo_set / name, folder / name)
    for case in cases:
        path = folder / case.name
        path.parent.mkdir(exist_ok=True)
        case.make(path)
    (folder / "loop").symlink_to(folder)  # followed: the walk must end, each file indexed once
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "gone-during-scan").mkdir()
    save(make_photo(52, (160, 120)), folder / "gone-during-scan" / "never-seen.jpg")


@dataclass(frozen=True)
class Indexed:
    folder: Path
    report: IndexReport
    failures: dict[str, str]
    indexed: dict[str, float]  # path -> score for one fixed query: every searchable image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, photo_set: Path, tiny_model: TinyModel) -> Indexed:
    folder = tmp_path_factory.mktemp("corpus") / "Photos"
    make_corpus(folder, photo_set, CASES)
    with Library.open(tmp_path_factory.mktemp("corpus-library")) as library:
        report = library.index(
            folder,
            model=str(tiny_model.config),
            pretrained=str(tiny_model.checkpoint),
            follow_symlinks=True,
            progress=CorpusEvents(folder),
        )
        failures = {f.path: f.error for f in library.failures()}
        hits = library.search("a photo", k=1000)
    (folder / "unreadable.jpg").chmod(0o644)
    return Indexed(folder, report, failures, {str(h.path): h.score for h in hits})


@pytest.mark.parametrize("case", case_params())
def test_each_bad_input_has_a_clear_outcome(case: Case, corpus: Indexed) -> None:
    path = str(corpus.folder / case.name)
    if case.error is None:
        assert path in corpus.indexed, corpus.failures.get(path)
        assert path not in corpus.failures
    elif case.error == VANISHED:
        assert path not in corpus.indexed and path not in corpus.failures
    else:
        assert case.error in corpus.failures[path], corpus.failures
        assert path not in corpus.indexed


def test_the_run_goes_on_and_its_report_says_what_failed(corpus: Indexed) -> None:
    vanished = [c for c in CASES if c.error == VANISHED]
    failing = [
        c for c in CASES if c.error not in (None, VANISHED) and not (ROOT and c.name == "unreadable.jpg")
    ]
    readable = [c for c in CASES if c.error is None or (ROOT and c.name == "unreadable.jpg")]
    assert corpus.report.failed == len(failing) == len(corpus.failures)
    assert (corpus.report.vanished, corpus.report.removed) == (len(vanished), 0)
    assert corpus.report.added == len(GOOD) + len(readable)
    assert not corpus.report.complete
    assert corpus.report.unreadable_dirs == [
        (str(corpus.folder / "gone-during-scan"), "No such file or directory")
    ]
    assert not any("/loop/" in path for path in [*corpus.indexed, *corpus.failures])
    assert str(corpus.folder / "dangling.jpg") not in [*corpus.indexed, *corpus.failures]
    assert len(corpus.indexed) == corpus.report.added


def test_good_photos_are_indexed_exactly_as_without_the_bad_ones(
    corpus: Indexed, photo_set: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in GOOD:
        shutil.copy(photo_set / name, clean / name)
    with Library.open(tmp_path / "clean-library") as library:
        library.index(clean, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
        alone = {Path(h.path).name: h.score for h in library.search("a photo", k=10)}
    in_corpus = {Path(p).name: s for p, s in corpus.indexed.items() if Path(p).name in GOOD}
    assert in_corpus == pytest.approx(alone, abs=1e-6)


@pytest.mark.slow
def test_the_command_says_so_in_its_summary_and_exit_code(
    tmp_path: Path, photo_set: Path, tiny_model: TinyModel
) -> None:
    changing = ("unreadable.jpg", BECOMES_A_PIPE)  # root reads the one; the other is a pipe only mid-run
    static = [c for c in CASES if c.error not in (None, VANISHED) and c.name not in changing]
    make_corpus(tmp_path / "Photos", photo_set, static)
    library = str(tmp_path / "library")
    result = run_cli("index", str(tmp_path / "Photos"), "--library", library, *tiny_model.index_args())
    assert result.returncode == 3, result.stderr
    assert f"{len(static)} failed" in result.stdout
    assert (
        f"{len(static)} file(s) could not be read; list them with: pixsift status --failed" in result.stdout
    )
    listed = run_cli("status", "--failed", "--library", library).stdout
    for case in static:
        assert f"  {tmp_path / 'Photos' / case.name}: " in listed
    again = run_cli("index", "--library", library)  # unchanged bad files are not retried...
    assert again.returncode == 3 and "0 failed" in again.stdout  # ...but are not taken for fixed
    assert f"{len(static)} file(s) still failed from earlier runs" in again.stdout


@pytest.mark.slow
def test_a_huge_valid_photo_is_indexed_without_pillow_warning_on_screen(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Pillow warns about images above 89 megapixels; pixsift sets its own limit and says
    nothing for a photo it accepts, so the warning must not interrupt the progress display."""
    photos = tmp_path / "Photos"
    photos.mkdir()
    huge_jpeg(photos / "huge.jpg")
    result = run_cli("index", str(photos), "--library", str(tmp_path / "library"), *tiny_model.index_args())
    assert result.returncode == 0, result.stderr
    assert "1 new" in result.stdout, result.stdout
    assert "decompression bomb" not in result.stderr.lower(), result.stderr
    assert "Warning" not in result.stderr, result.stderr


@needs_permissions
def test_a_file_that_could_not_be_read_is_retried_by_the_next_run(
    tmp_path: Path, photo_set: Path, tiny_model: TinyModel
) -> None:
    """Permission denied (or an I/O error) is about the moment, not the file's content: the
    next run tries again, even though the file's size and mtime have not changed since."""
    photos = tmp_path / "Photos"
    shutil.copytree(photo_set, photos)
    edited = sorted(photos.glob("*.jpg"))[0]
    args = ["--library", str(tmp_path / "library")]
    assert run_cli("index", str(photos), *args, *tiny_model.index_args()).returncode == 0
    edited.write_bytes(photo_bytes(60, size=(640, 480)))  # new content, unreadable at first
    edited.chmod(0o000)
    try:
        locked = [run_cli("index", *args, obey_permissions=True) for _ in range(2)]
        phases = phases_of_an_index_run(tmp_path / "library")
    finally:
        edited.chmod(0o644)
    for run in locked:  # still unreadable: tried, and reported, every time
        assert run.returncode == 3 and "1 failed" in run.stdout, run.stdout
    assert "Loading model" not in phases  # tried with a cheap read: no model loaded for it
    assert "permission denied" in run_cli("status", "--failed", *args).stdout
    fixed = run_cli("index", *args, obey_permissions=True)
    assert fixed.returncode == 0 and "1 updated" in fixed.stdout and "0 failed" in fixed.stdout, fixed.stdout
    assert "No failed files." in run_cli("status", "--failed", *args).stdout
    with Library.open(tmp_path / "library") as library:
        assert str(edited) in {str(hit.path) for hit in library.search("a photo", k=20)}


PHASES = """
import sys
from pixsift import Library
phases = []
class Recorder:
    def start(self, phase, total=None): phases.append(phase)
    def advance(self, steps=1): pass
    def stop(self): pass
with Library.open(sys.argv[1]) as library:
    library.index(progress=Recorder())
print(",".join(phases))
"""


def phases_of_an_index_run(library: Path) -> list[str]:
    """The progress phases of `Library.index()` run as a user whose file permissions bite."""
    done = subprocess.run(
        [*(PERMISSION_PREFIX or []), sys.executable, "-c", PHASES, str(library)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return done.stdout.strip().split(",")
