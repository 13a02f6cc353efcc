"""Two terminals at once: one index run at a time (a lock, with a clear message), and searches
that always succeed and stay consistent while an index run writes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from conftest import TerminalRun, TinyModel
from crash_soak import PAUSE_ENV, FreshProcesses
from pixsift import InvalidPathError, Library, LibraryBusyError, LibraryNotFoundError, ModelError
from pixsift.cli import app
from pixsift.storage import Catalog
from sample_photos import make_photo, save, write_photos


def index(library: Library, tiny_model: TinyModel, folder: Path, **options: object) -> object:
    return library.index(
        folder,
        model=str(tiny_model.config),
        pretrained=str(tiny_model.checkpoint),
        **options,  # type: ignore[arg-type]
    )


def lock_of(library_dir: Path) -> FileLock:
    """The lock another index run holds, taken here through its own file handle."""
    return FileLock(library_dir / "library.lock")


def test_a_second_index_run_refuses_with_a_clear_message(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        before = library.status()
    save(make_photo(900), photos / "new.jpg")
    with lock_of(library_dir), Library.open(library_dir) as library:
        with pytest.raises(LibraryBusyError) as busy:
            library.index(photos, wait=0)
        assert str(busy.value) == (
            f"Another pixsift run is indexing or repairing the library at {library_dir}; "
            "indexing needs the library to itself. Try again when it has finished."
        )
        with pytest.raises(LibraryBusyError, match=r"\(waited 0.2 s\)"):
            library.index(photos, wait=0.2)
        with pytest.raises(LibraryBusyError):
            library.check(wait=0)
        with pytest.raises(LibraryBusyError, match="deleting needs the library to itself"):
            library.delete(library.search("x", k=1)[0].id, wait=0)  # `wait`, as every method
        assert library.status().counts == before.counts  # nothing was written
        assert len(library.search("x", k=50)) == 12  # searching needs no lock
    with Library.open(library_dir) as library:
        assert library.index(photos, wait=0).added == 1


def test_relocating_a_folder_waits_for_an_index_run_and_refuses_when_it_goes_on(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
        ids = sorted(hit.id for hit in library.search("x", k=50))
    moved = photos.with_name("moved")
    photos.rename(moved)
    with lock_of(library_dir), Library.open(library_dir) as library:
        with pytest.raises(LibraryBusyError, match="relocating a folder needs the library to itself"):
            library.relocate(photos, moved, wait=0)
        assert {Path(hit.path).parent for hit in library.search("x", k=50)} == {photos}  # untouched
    with Library.open(library_dir) as library:
        assert library.relocate(photos, moved, wait=0) == len(ids)
        hits = library.search("x", k=50)
        assert sorted(hit.id for hit in hits) == ids and {Path(hit.path).parent for hit in hits} == {moved}


def test_the_short_write_commands_say_that_they_wait_as_index_does(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """relocate, forget, doctor and reindex waited for another run's lock (10 s by
    default) without a word, where `pixsift index` shows a line on the terminal: now each shows
    the same line, then does its work once the lock is let go."""
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
    moved = photos.with_name("moved")
    photos.rename(moved)
    commands = [
        ["relocate", str(photos), str(moved)],
        ["doctor", "--repair"],
        ["reindex"],
        ["doctor"],
        ["forget", str(moved)],
    ]
    for command in commands:
        with lock_of(library_dir):  # another run holds the library
            run = TerminalRun(*command, "--library", str(library_dir), "--wait", "60")
            run.wait_for("Waiting for another index run")
        code, stdout, shown = run.finish()
        assert code == 0, (command, stdout, shown)
        assert "error" not in shown.lower()
    assert "Forgot" in stdout
    with Library.open(library_dir) as library:
        assert library.status().roots == []


def test_the_command_refuses_in_one_line(library_dir: Path, photos: Path, tiny_model: TinyModel) -> None:
    with lock_of(library_dir):
        result = CliRunner().invoke(
            app,
            ["index", str(photos), "--library", str(library_dir), "--wait", "0", *tiny_model.index_args()],
        )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: Another pixsift run is indexing or repairing the library at {library_dir};"
    )
    assert result.stderr.endswith("To wait longer, use --wait SECONDS.\n")
    assert result.stderr.count("\n") == 1


def test_with_wait_a_second_run_goes_when_the_first_is_done(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    Library.open(library_dir).close()
    held = threading.Event()
    released: list[float] = []
    phases = PhaseRecorder()

    def first_run() -> None:
        with lock_of(library_dir):
            held.set()
            # Held until the second run says it waits: a fixed time could end before a slow
            # machine's second run even reached the lock, and then it would not have waited.
            phases.waiting.wait(120)
            released.append(time.monotonic())

    holder = threading.Thread(target=first_run)
    holder.start()
    assert held.wait(60)
    with Library.open(library_dir) as library:
        report = index(library, tiny_model, photos, wait=None, progress=phases)
        finished = time.monotonic()
    holder.join()
    assert report.added == 12  # type: ignore[attr-defined]
    assert released and released[0] <= finished  # it waited for the lock
    assert phases.started[0] == "Waiting for another index run"  # a wait never looks like a hang
    assert "Waiting for another index run" not in phases.started[1:]


class PhaseRecorder:
    """An IndexProgress that remembers which phases began."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.waiting = threading.Event()  # set once a waiting phase began

    def start(self, phase: str, total: int | None = None) -> None:
        self.started.append(phase)
        if phase == "Waiting for another index run":
            self.waiting.set()

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.mark.slow
def test_searches_during_an_index_run_succeed_and_are_consistent(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    photos, library_dir, pause = tmp_path / "photos", tmp_path / "library", tmp_path / "pause"
    files = {str(p) for p in write_photos(photos, 150, size=(96, 72), seed=3000)}
    pause.mkdir()
    Library.open(library_dir).close()
    argv = ["index", str(photos), "--library", str(library_dir), "--batch-size", "1", "--workers", "1"]
    run = FreshProcesses().start([*argv, *tiny_model.index_args()], {PAUSE_ENV: str(pause)})
    try:
        seen = []
        query = np.random.default_rng(0).standard_normal(64).astype(np.float32)
        while not (pause / "saving").exists():
            assert run.poll() is None, run.wait()[1]
            with Library.open(library_dir) as library:
                if library.status().model is None:
                    continue
                hits = library.search_vector(query, k=1000)
                assert len({h.id for h in hits}) == len(hits)
                assert {str(h.path) for h in hits} <= files
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                seen.append(len(hits))
        # The run is paused in its last step, writing the search index, lock held.
        with Library.open(library_dir) as library:
            assert len(library.search("a photo", k=1000)) == 150  # all committed, all found
            with pytest.raises(LibraryBusyError):
                library.index(photos, wait=0)
        (pause / "go").touch()
        code, stderr = run.wait()
    finally:
        if run.poll() is None:
            run.kill()
    assert code == 0, stderr
    assert seen == sorted(seen) and len(set(seen)) > 2, seen  # growing while we watched
    with Library.open(library_dir) as library:
        assert library.check().healthy
        assert library.status().index_file.state == "up to date"
    assert os.path.exists(library_dir / "vectors.faiss")


def test_forgetting_a_folder_not_indexed_is_refused_without_waiting(
    library_dir: Path, photos: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
    with lock_of(library_dir), Library.open(library_dir) as library:  # another index run holds it
        for folder in (tmp_path / "Elsewhere", ""):
            started = time.monotonic()
            with pytest.raises(InvalidPathError):  # not LibraryBusyError after the wait
                library.forget(folder, wait=120)
            # Far less than the wait, however loaded the machine: it did not wait at all.
            assert time.monotonic() - started < 60
        result = CliRunner().invoke(
            app, ["forget", str(tmp_path / "Elsewhere"), "--library", str(library_dir)]
        )
        assert (result.exit_code, result.stderr) == (
            1,
            f"error: {tmp_path / 'Elsewhere'} is not an indexed folder (indexed folders: {photos}).\n",
        )


def test_a_folder_forgotten_while_forget_waits_is_refused_once_locked(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    with Library.open(library_dir) as library:
        index(library, tiny_model, photos)
    outcome: list[BaseException | int] = []
    phases = PhaseRecorder()

    def forget() -> None:
        with Library.open(library_dir) as waiting:
            try:
                outcome.append(waiting.forget(photos, wait=None, progress=phases))
            except InvalidPathError as exc:
                outcome.append(exc)

    with lock_of(library_dir):  # the run waited for forgets the folder before it ends
        forgetter = threading.Thread(target=forget)
        forgetter.start()
        # Once it waits: before that, it would refuse the folder without having waited at all.
        assert phases.waiting.wait(120), phases.started
        catalog = Catalog.open(library_dir / "library.db")
        with catalog.write() as batch:
            batch.delete_root(str(photos))
        catalog.close()
    forgetter.join()
    assert [str(error) for error in outcome] == [
        f"{photos} is not an indexed folder (indexed folders: none yet)."
    ]


def test_one_library_shared_by_search_threads_while_another_thread_indexes(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """As an application (or the HTTP service) shares one `Library`: every kind of query runs in
    its own thread while another thread indexes new photos and removes some. Each answer is
    whole (no error, no duplicate, best first, nothing excluded), and all end in time."""
    photos, shared = tmp_path / "photos", tmp_path / "shared"
    known = {str(path) for path in write_photos(photos, 8, size=(96, 72), seed=4000)}
    library = Library.open(tmp_path / "library")
    index(library, tiny_model, photos)
    anchor = library.search("a photo", k=1)[0]
    upload = anchor.path.read_bytes()
    queries = {
        "search": lambda: library.search("a red square", k=50),
        "search_many": lambda: library.search_many(["a cat", "snow"], k=50)[1],
        "similar": lambda: library.similar(anchor.id, k=50),
        "similar_many": lambda: library.similar_many([upload, anchor.id], k=50)[1],
        "recommend": lambda: library.recommend([anchor.id, "a dog"], ["a car"], k=50),
        "diverse": lambda: library.recommend(anchor.id, k=10, diversity=0.5),
    }
    done = threading.Event()
    failures: list[str] = []
    answered = dict.fromkeys(queries, 0)

    def ask(name: str) -> None:
        while not done.is_set() and answered[name] < 200:  # bounded, however slow the machine
            try:
                hits = queries[name]()
                ids = [hit.id for hit in hits]
                assert len(set(ids)) == len(ids), ids
                assert anchor.id not in ids or name in ("search", "search_many"), ids
                assert {str(hit.path) for hit in hits} <= known, hits
                if name != "diverse":  # MMR reorders by design
                    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
                    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
            except Exception as error:  # any: the test reports them all below
                failures.append(f"{name}: {error!r}")
                return
            answered[name] += 1

    askers = [threading.Thread(target=ask, args=(name,), daemon=True) for name in queries]
    for asker in askers:
        asker.start()
    try:
        for batch in range(3):
            added = write_photos(shared / f"batch{batch}", 4, size=(96, 72), seed=4100 + 10 * batch)
            known |= {str(path) for path in added}
            if batch == 2:  # one photo gone: the next run drops it while the threads search
                (shared / "batch0" / "photo_4100.jpg").unlink()
            index(library, tiny_model, shared, batch_size=1, wait=None)
    finally:
        done.set()
        for asker in askers:
            asker.join(timeout=60)
    assert not [asker.name for asker in askers if asker.is_alive()], "a query thread hung"
    assert not failures, failures
    assert all(answered.values()), answered
    assert library.status().counts.indexed == 8 + 12 - 1
    assert len(library.search("a photo", k=100)) == 19
    library.close()


def test_a_failed_first_index_leaves_a_new_library_another_run_holds(library_dir: Path, photos: Path) -> None:
    """The first run into a new library fails while another run holds its lock: the library
    is that run's now, and stays."""
    with Library.open(library_dir) as library:
        with lock_of(library_dir), pytest.raises(LibraryBusyError):
            library.index(photos, wait=0)
        assert (library_dir / "library.db").is_file()
        assert library.status().model is None


def test_a_failed_first_index_leaves_a_new_library_another_run_indexed_into(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Two runs open the same new library; the one whose model cannot be had fails after the
    other indexed: nothing of the other's is taken back."""
    with Library.open(library_dir) as first, Library.open(library_dir) as second:
        index(second, tiny_model, photos)
        with pytest.raises(ModelError):
            first.index(photos, model="nosuch")
        assert len(second.search("a photo", k=20)) == 12
    with Library.open(library_dir, create=False) as reopened:
        assert reopened.status().counts.indexed == 12


def test_a_run_that_opened_a_new_library_taken_back_meanwhile_writes_nothing(
    library_dir: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """A second run opened the new library before the first run's failure took it back: it
    says the library is gone, rather than indexing into a database no longer on disk."""
    with Library.open(library_dir) as first, Library.open(library_dir) as second:
        with pytest.raises(ModelError):
            first.index(photos, model="nosuch")
        assert not library_dir.exists()
        with pytest.raises(LibraryNotFoundError, match="deleted, moved or replaced") as gone:
            index(second, tiny_model, photos)
        assert not library_dir.exists()
        # Advice for the face it reaches: a program opens it again, a command runs again.
        assert "Library.open" in str(gone.value) and "pixsift" not in str(gone.value)
        assert gone.value.for_command_line().endswith("Run the command again.")
