"""Crash soak: kill `pixsift index` with SIGKILL at random moments; check nothing is lost.

    python tools/crash_soak.py --trials 200 --seed 1

Each trial changes a photo folder (adds, deletes, edits, renames and copies files), starts
`pixsift index` in a subprocess and kills it with SIGKILL, one of three ways in turn:

- delay:   after a random delay, anywhere from opening the database to the end of the run;
- batches: after a random number of committed batches (batch size 1 to 8);
- save:    while the search index file is being written. The child runs the real command, but
           its `os.replace` first waits, so the kill lands after the new index file was written
           to its temporary name and before it replaced the old one. That window is otherwise
           far too short to hit on purpose.

After each kill, in this process, the library must open and pass `Library.check()` (only rows
of files this trial deleted may be reported missing), a search over everything must return no
duplicate and no phantom (every path is on disk, or was deleted by this trial), and a resumed
`Library.index()` must end with exactly the images on disk indexed, each holding the vector of
its current content, with the check clean. Prints one line per trial and "N/N trials passed";
exits 1 if any trial failed. tests/test_crash.py runs 20 trials of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sample_photos import make_photo, save
from tiny_model import TINY_CONFIG, make_checkpoint

if TYPE_CHECKING:
    from pixsift.models.embedder import Embedder

KINDS = ("delay", "batches", "save")
PAUSE_ENV = "PIXSIFT_SOAK_PAUSE_DIR"  # read by the child: pause the index save, see below
CHILD_TIMEOUT_S = 120.0
FOLDER_SIZE = 40  # files kept in the folder before each trial adds 4 to 24


@dataclass
class TrialResult:
    number: int
    kind: str
    killed: bool  # False when the run ended before the kill came
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class Run(Protocol):
    def poll(self) -> int | None: ...
    def kill(self) -> None: ...
    def wait(self) -> tuple[int, str]: ...


class Launcher(Protocol):
    def start(self, argv: list[str], env: dict[str, str]) -> Run: ...


class FreshProcesses:
    """Each index run is a new `python` process: start-up (importing torch) included."""

    def start(self, argv: list[str], env: dict[str, str]) -> Run:
        return _Fresh(
            subprocess.Popen(
                [sys.executable, __file__, "child", *argv],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )


class _Fresh:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    def poll(self) -> int | None:
        return self._process.poll()

    def kill(self) -> None:
        self._process.send_signal(signal.SIGKILL)

    def wait(self) -> tuple[int, str]:
        _, stderr = self._process.communicate(timeout=60)
        return self._process.returncode, stderr.decode(errors="replace")


class Zygote:
    """Index runs forked from one process that imported torch, open_clip and pixsift once.

    Each run is still its own process, running the real command from opening the library on,
    and killed with a real SIGKILL; only the import of the libraries (seconds, and the same
    every time) is shared. Nothing has run in the zygote, so no threads are forked.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._process = subprocess.Popen(
            [sys.executable, __file__, "zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self._lines.get(timeout=CHILD_TIMEOUT_S) != "ready":
            raise RuntimeError("the zygote did not start")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.strip())

    def start(self, argv: list[str], env: dict[str, str]) -> Run:
        assert self._process.stdin is not None
        stderr = self._workdir / "child-stderr.txt"
        self._process.stdin.write(json.dumps({"argv": argv, "env": env, "stderr": str(stderr)}) + "\n")
        self._process.stdin.flush()
        pid = int(self._lines.get(timeout=60).split()[1])
        return _Forked(pid, self._lines, stderr)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)


class _Forked:
    def __init__(self, pid: int, lines: queue.Queue[str], stderr: Path) -> None:
        self._pid, self._lines, self._stderr = pid, lines, stderr
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            with contextlib.suppress(queue.Empty):
                self._code = int(self._lines.get_nowait().split()[2])
        return self._code

    def kill(self) -> None:
        os.kill(self._pid, signal.SIGKILL)

    def wait(self) -> tuple[int, str]:
        if self._code is None:
            self._code = int(self._lines.get(timeout=60).split()[2])
        return self._code, self._stderr.read_text(errors="replace")


def zygote() -> None:
    """Import everything an index run needs, then fork one run per request read from stdin."""
    import faiss  # noqa: F401
    import open_clip  # noqa: F401
    import torch  # noqa: F401

    import pixsift.cli
    import pixsift.library
    import pixsift.models.clip  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_forked(request)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


def _run_forked(request: dict[str, Any]) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        err = os.open(str(request["stderr"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.environ.update(request["env"])
        child(list(request["argv"]))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os._exit(code)


class Soak:
    """A photo folder and a library that trials keep changing, crashing and resuming."""

    def __init__(self, workdir: Path, config: Path, checkpoint: Path, seed: int, launcher: Launcher) -> None:
        self.launcher = launcher
        self.photos = workdir / "photos"
        self.library = workdir / "library"
        self.pause_dir = workdir / "pause"
        self.config, self.checkpoint = config, checkpoint
        self.rng = random.Random(seed)
        self.next_photo = seed * 100_000
        self.typical_run_s = 5.0
        self._embedder: Embedder | None = None
        self._vectors: dict[str, np.ndarray] = {}  # by content hash
        self.photos.mkdir(parents=True)
        for _ in range(24):
            self._add_photo()

    # ---- one trial ------------------------------------------------------------------------

    def trial(self, number: int, kind: str) -> TrialResult:
        deleted, added = self._mutate()
        result = TrialResult(number, kind, killed=self._run_and_kill(kind, added, len(deleted)))
        result.problems += self._check_after_crash(deleted)
        if not result.problems:
            result.problems += self._check_after_resume()
        return result

    def _run_and_kill(self, kind: str, added: int, deleted: int) -> bool:
        """Start an index run and kill it the way `kind` says; True if the kill came first."""
        shutil.rmtree(self.pause_dir, ignore_errors=True)
        self.pause_dir.mkdir()
        argv = ["index", str(self.photos), "--library", str(self.library)]
        argv += ["--model", str(self.config), "--pretrained", str(self.checkpoint)]
        argv += [
            "--batch-size",
            str(self.rng.choice([1, 2, 4, 8])),
            "--workers",
            str(self.rng.choice([1, 2])),
        ]
        env = {PAUSE_ENV: str(self.pause_dir)} if kind == "save" else {}
        started = time.monotonic()
        run = self.launcher.start(argv, env)
        ready = self._kill_moment(kind, added, deleted)
        while not ready() and run.poll() is None and time.monotonic() - started < CHILD_TIMEOUT_S:
            time.sleep(0.002)
        killed = run.poll() is None
        if killed:
            run.kill()
        code, stderr = run.wait()
        if not killed and code != 0:
            raise RuntimeError(f"index run failed ({code}): {stderr[-2000:]}")
        if not killed:
            self.typical_run_s = time.monotonic() - started
        return killed

    def _kill_moment(self, kind: str, added: int, deleted: int) -> Callable[[], bool]:
        if kind == "delay":
            deadline = time.monotonic() + self.rng.uniform(0.0, self.typical_run_s)
            return lambda: time.monotonic() >= deadline
        if kind == "save":
            marker = self.pause_dir / "saving"
            return marker.exists
        # after some of the new files were embedded and committed (the batch size rounds it up);
        # the run first drops the rows of the deleted files
        target = _embedding_count(self.library) - deleted + self.rng.randint(1, max(1, added - 2))
        return lambda: _embedding_count(self.library) >= target

    # ---- the checks -------------------------------------------------------------------------

    def _check_after_crash(self, deleted: set[str]) -> list[str]:
        from pixsift import Library

        problems = []
        if not (self.library / "library.db").exists():
            return []  # killed before the database was made: nothing to check yet
        if _live_and_departed(self.library):
            problems.append("an image is both in the library and departed (two transactions)")
        with Library.open(self.library, create=False, device="cpu") as library:
            health = library.check(wait=0)
            for problem in health.problems:
                if problem.kind != "missing-files":
                    problems.append(f"check after the kill: {problem.kind}: {problem.message}")
            if library.status().model is None:
                return problems
            hits = library.search("anything", k=10_000)
        paths = [str(hit.path) for hit in hits]
        if len(set(paths)) != len(paths) or len({hit.id for hit in hits}) != len(hits):
            problems.append("a search returned the same image twice")
        phantoms = [p for p in paths if not os.path.isfile(p) and p not in deleted]
        if phantoms:
            problems.append(f"a search returned files that never existed: {phantoms[:3]}")
        return problems

    def _check_after_resume(self) -> list[str]:
        from pixsift import Library

        problems = []
        on_disk = sorted(self.photos.iterdir())
        with Library.open(self.library, device="cpu") as library:
            report = library.index(
                self.photos, model=str(self.config), pretrained=str(self.checkpoint), wait=0
            )
            if not report.complete:
                problems.append(f"the resumed run could not read some files: {report}")
            health = library.check(wait=0)
            problems += [f"check after resuming: {p.message}" for p in health.problems]
            problems += [f"check after resuming: {note}" for note in health.notes]
            found = {str(hit.path) for hit in library.search("anything", k=10_000)}
            if found != {str(p) for p in on_disk}:
                extra, lost = found - {str(p) for p in on_disk}, {str(p) for p in on_disk} - found
                problems.append(
                    f"indexed images differ from disk: extra {sorted(extra)[:3]}, lost {sorted(lost)[:3]}"
                )
            for path, vector in zip(on_disk, self._embed(on_disk), strict=True):
                same = library.search_vector(vector, k=50, min_score=0.9999)
                if str(path) not in {str(hit.path) for hit in same}:
                    problems.append(f"{path.name} holds a vector of other content")
        return problems

    def _embed(self, paths: list[Path]) -> list[np.ndarray]:
        """Vectors of the files' current content, computed here from scratch (once per content)."""
        from pixsift.indexer.decode import default_max_pixels, hash_file, load_image

        model = self._model()
        hashes = [hash_file(str(path)) for path in paths]
        new = {h: path for h, path in zip(hashes, paths, strict=True) if h not in self._vectors}
        if new:
            pixels = [
                load_image(
                    str(path),
                    preprocess=model.preprocess,
                    target_size=model.image_size,
                    max_pixels=default_max_pixels(),
                ).pixels
                for path in new.values()
            ]
            self._vectors.update(zip(new, model.embed_images(pixels), strict=True))
        return [self._vectors[h] for h in hashes]

    def _model(self) -> Embedder:
        if self._embedder is None:  # the engine the library indexes with (its default)
            from pixsift.models.loading import DEFAULT_ENGINE, load_embedder
            from pixsift.models.naming import resolve_model_spec

            spec = resolve_model_spec(str(self.config), str(self.checkpoint))
            self._embedder = load_embedder(spec, "cpu", DEFAULT_ENGINE)
        return self._embedder

    # ---- changing the folder ------------------------------------------------------------------

    def _mutate(self) -> tuple[set[str], int]:
        """Add, delete, edit, rename and copy a few files; returns the paths deleted and how
        many files were added."""
        rng = self.rng
        files = sorted(self.photos.iterdir())
        deleted = set()
        excess = max(0, len(files) - FOLDER_SIZE)  # keep the folder (and the checks) small
        for number, path in enumerate(rng.sample(files, k=min(len(files), excess + rng.randint(0, 3)))):
            action = "delete" if number < excess else rng.choice(["delete", "edit", "rename", "copy"])
            if action == "delete":
                path.unlink()
            elif action == "edit":
                self._add_photo(path.name)
            elif action == "rename":
                path.rename(path.with_name(f"renamed-{self.next_photo}-{path.name}"))
                self.next_photo += 1
            else:
                shutil.copy(path, path.with_name(f"copy-{self.next_photo}-{path.name}"))
                self.next_photo += 1
            if not path.exists():
                deleted.add(str(path))
        added = rng.randint(4, 24)
        for _ in range(added):
            self._add_photo()
        return deleted, added

    def _add_photo(self, name: str | None = None) -> None:
        self.next_photo += 1
        size = self.rng.choice([(96, 72), (120, 90), (72, 96)])
        save(make_photo(self.next_photo, size), self.photos / (name or f"p{self.next_photo}.jpg"))


def _live_and_departed(library: Path) -> int:
    """How many ids are both a live image's and a departed record's: the row's delete and the
    record are one transaction, so a kill must never leave any."""
    query = "SELECT count(*) FROM departed JOIN images ON images.id = departed.image_id"
    with sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True, timeout=5) as db:
        try:
            return int(db.execute(query).fetchone()[0])
        except sqlite3.OperationalError:  # killed before the schema was made
            return 0


def _embedding_count(library: Path) -> int:
    try:
        with sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_soak(
    trials: int,
    seed: int,
    workdir: Path,
    config: Path,
    checkpoint: Path,
    echo: Callable[[str], None],
    *,
    fresh: bool = False,
) -> list[TrialResult]:
    """Run the trials; `fresh` starts every index run as a new process instead of a fork."""
    launcher = FreshProcesses() if fresh else Zygote(workdir)
    soak = Soak(workdir, config, checkpoint, seed, launcher)
    results = []
    try:
        for number in range(1, trials + 1):
            result = soak.trial(number, KINDS[(number - 1) % len(KINDS)])
            results.append(result)
            outcome = "passed" if result.passed else "FAILED: " + "; ".join(result.problems)
            echo(f"trial {number:>3} {result.kind:<7} {'killed' if result.killed else 'finished'}  {outcome}")
    finally:
        if isinstance(launcher, Zygote):
            launcher.close()
    return results


# ---- the child: the real command, with the index save paused when asked --------------------


def child(argv: list[str]) -> None:
    """Run `pixsift ARGV`. With PAUSE_ENV set, renaming the new search index over the old one
    first waits for PAUSE_DIR/go (which the soak never creates: it kills the child there), and
    so does `relocate` once it has rewritten the paths, inside its transaction (PAUSE_DIR/moving
    says it is there; tests/test_relocate.py kills it there), and `forget` once its change is
    committed, before it prunes thumbnails (PAUSE_DIR/pruning)."""
    pause_dir = os.environ.get(PAUSE_ENV)
    if pause_dir:
        _pause_before(
            os, "replace", Path(pause_dir), "saving", lambda _src, dst: Path(dst).name == "vectors.faiss"
        )
        import pixsift.library
        from pixsift.storage.catalog import CatalogWriter

        _pause_after(CatalogWriter, "move_paths", Path(pause_dir), "moving")
        _pause_before(pixsift.library, "prune_thumbnails", Path(pause_dir), "pruning", lambda *_: True)
    from pixsift.cli import main

    sys.argv = ["pixsift", *argv]
    main()


def _wait_for_go(pause_dir: Path, marker: str) -> None:
    (pause_dir / marker).touch()
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not (pause_dir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _pause_before(owner: Any, name: str, pause_dir: Path, marker: str, when: Callable[..., bool]) -> None:
    """Make `owner.name` wait for PAUSE_DIR/go (after touching PAUSE_DIR/marker) before it runs,
    on the calls `when` picks."""
    real = getattr(owner, name)

    def paused(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            _wait_for_go(pause_dir, marker)
        return real(*args, **kwargs)

    setattr(owner, name, paused)


def _pause_after(owner: Any, name: str, pause_dir: Path, marker: str) -> None:
    """Make `owner.name` wait for PAUSE_DIR/go (after touching PAUSE_DIR/marker) once it has run."""
    real = getattr(owner, name)

    def paused(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        _wait_for_go(pause_dir, marker)
        return result

    setattr(owner, name, paused)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "zygote":
        zygote()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fresh", action="store_true", help="start every index run as a new process (slower)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pixsift-soak-") as tmp:
        workdir = Path(tmp)
        checkpoint = make_checkpoint(workdir / "tiny.pt", seed=0)
        results = run_soak(args.trials, args.seed, workdir, TINY_CONFIG, checkpoint, print, fresh=args.fresh)
    passed = sum(r.passed for r in results)
    killed = sum(r.killed for r in results)
    print(
        f"{passed}/{len(results)} trials passed ({killed} killed mid-run, "
        f"{len(results) - killed} finished first; seed {args.seed}; {time.monotonic() - started:.0f} s)"
    )
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
