"""Shared fixtures: an isolated environment, a tiny CLIP model made here, and test photos."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sample_photos import write_photos
from tiny_model import TINY_CONFIG, make_checkpoint

if TYPE_CHECKING:
    from pixsift import Library

CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once


@dataclass(frozen=True)
class TinyModel:
    config: Path
    checkpoint: Path

    def index_args(self) -> list[str]:
        return ["--model", str(self.config), "--pretrained", str(self.checkpoint)]


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Set before any fixture, module-wide ones included: nothing the tests run touches the
    user's library or caches, and nothing can download."""
    home = tmp_path_factory.mktemp("isolated-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXSIFT_LIBRARY", str(home / "default-library"))
        patch.setenv("HF_HOME", str(home / "hf-home"))
        patch.setenv("PIXSIFT_CACHE_DIR", str(home / "pixsift-cache"))
        patch.setenv("HF_ENDPOINT", CLOSED_PORT_URL)
        yield home


@pytest.fixture(scope="session")
def shared_cache(isolated_session: Path) -> Path:
    """One pixsift cache for the session: a model is exported to ONNX once, not per test."""
    return isolated_session / "pixsift-cache"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own default library and Hugging Face home."""
    monkeypatch.setenv("PIXSIFT_LIBRARY", str(tmp_path / "default-library"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    folder = tmp_path_factory.mktemp("tiny-model")
    return TinyModel(TINY_CONFIG, make_checkpoint(folder / "tiny.pt", seed=0))


@pytest.fixture(scope="session")
def other_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture with other weights: a different model to the library."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-model-2") / "tiny-other.pt", seed=1)


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve distinct 1600x1200 JPEG photos (copy them before changing anything)."""
    folder = tmp_path_factory.mktemp("photo-set")
    write_photos(folder, 12, seed=100)
    return folder


@pytest.fixture
def photos(photo_set: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the photo set."""
    folder = tmp_path / "Photos"
    shutil.copytree(photo_set, folder)
    return folder


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def open_library(library_dir: Path) -> Iterator[Library]:
    from pixsift import Library

    with Library.open(library_dir) as library:
        yield library


def _permission_prefix() -> list[str] | None:
    """How to run a command that obeys file permissions: as it is for a user; for root (CI runs
    as root), through setpriv without the capabilities that let root read every file; None when
    neither is possible."""
    if os.name != "posix":
        return None
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    powers = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={powers}", f"--inh-caps={powers}", "--"]


PERMISSION_PREFIX = _permission_prefix()
needs_permissions = pytest.mark.skipif(
    PERMISSION_PREFIX is None, reason="needs a user, or setpriv to drop root's powers over files"
)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    obey_permissions: bool = False,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `pixsift` command in a subprocess, as a user would (in the folder `cwd`,
    else this one); with `obey_permissions` as a user whose file permissions bite, even when
    the tests run as root."""
    prefix = (PERMISSION_PREFIX or []) if obey_permissions else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "pixsift", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_absolute_python_path({**os.environ, **(env or {})}),
        check=False,
        cwd=cwd,
    )


def _absolute_python_path(env: dict[str, str]) -> dict[str, str]:
    """`env` with PYTHONPATH's folders made absolute: run from another folder (`cwd`), a
    relative one (`PYTHONPATH=src`) would import another pixsift, or none."""
    if env.get("PYTHONPATH"):
        parts = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(part) if part else part for part in parts)
    return env


def ctrl_c_as_in_a_terminal() -> None:
    """In a child process (`preexec_fn`): Ctrl-C's default action, which a test run started in
    the background would otherwise pass on as ignored (so the command would rightly not stop)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TerminalRun:
    """The real `pixsift` command with its stderr on a terminal (a pseudo-terminal), where the
    command draws its progress and waiting lines as a user sees them; stdout is a pipe."""

    def __init__(self, *args: str) -> None:
        controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pixsift", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "160"},
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
        os.close(terminal)
        self._shown = bytearray()
        self._reader = threading.Thread(target=self._read, args=(controller,), daemon=True)
        self._reader.start()

    def _read(self, controller: int) -> None:
        """Drain the terminal (a full one would block the command) until the command is gone."""
        try:
            while chunk := os.read(controller, 4096):
                self._shown += chunk
        except OSError:  # EIO once no process holds the terminal any more
            pass
        finally:
            os.close(controller)

    def shown(self) -> str:
        return self._shown.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.shown():
            assert self.process.poll() is None, (self.process.returncode, self.shown())
            assert time.monotonic() < deadline, self.shown()
            time.sleep(0.02)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit code, stdout and what the terminal showed (escape codes and all)."""
        stdout, _ = self.process.communicate(timeout=timeout)
        self._reader.join(timeout)
        return self.process.returncode, stdout.decode(), self.shown()


def interrupted_at(marker: str, pause: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `pixsift ARGS` through tools/crash_soak.py's child, which pauses it at a
    point of its work (see `child` there: "moving" inside relocate's transaction, "saving"
    before the search index file replaces the old one); send Ctrl-C there, then let it go on."""
    import crash_soak

    pause.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, crash_soak.__file__, "child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, crash_soak.PAUSE_ENV: str(pause)},
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 120
    while not (pause / marker).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)  # delivered (to a handler that holds it back, inside a transaction)
    (pause / "go").touch()
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
