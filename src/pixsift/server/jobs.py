"""Background index jobs: one at a time, each with an id and progress a client can poll.

A job runs `Library.reindex` in its own thread; the index's own progress protocol
(`IndexProgress`) feeds the job's phase and counts. Searches keep running meanwhile: the
catalog is read in WAL snapshots and the FAISS index catches up between searches.

A job is cancelled through its progress: the next step it reports raises JobCancelled, which
an index run takes as it takes Ctrl-C (what was committed stays, the FAISS index is saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pixsift.errors import LibraryBusyError, PixsiftError
from pixsift.indexer.progress import EMBEDDING_PHASE, SEARCH_INDEX_PHASES
from pixsift.indexer.report import IndexReport
from pixsift.library import Library
from pixsift.server.errors import ApiError

log = logging.getLogger("pixsift.server")
HISTORY = 100  # finished jobs remembered for GET /jobs/{id}
JOB_NICENESS = 10
# A job waits for another index run this long at a time, then looks whether it was cancelled
# and waits again: a run that never ends must not hold the service's jobs for ever.
WAIT_SLICE_S = 0.5
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Job:
    id: str
    paths: list[str]
    state: str = "queued"  # queued, running, succeeded, failed, cancelled
    phase: str | None = None  # what a running job is doing; None before it starts and once it ends
    done: int = 0
    total: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    # Cancelled after its last step (while it saved the search index, say): it ended as it
    # would have anyway, and says so, for the client that asked and expects `cancelled`.
    cancel_too_late: bool = False


class JobCancelled(KeyboardInterrupt):
    """Raised in a job's thread at its next step once a client cancelled it. A KeyboardInterrupt,
    so that the index run stops as on Ctrl-C: after committing the batch under way."""


class _JobProgress:
    """An IndexProgress (and CountsListener) that writes into a job, under the manager's lock,
    and stops the job once it is cancelled."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock
        # When the job's report was last counted, when its embedding phase began, and when
        # its last phase stopped (None while one goes on): the times of its live report.
        self._counted_at: float | None = None
        self._embedding_since: float | None = None
        self._stopped_at: float | None = None
        # `done` of `total` of the run's last phase over its files, as the search index's
        # phases (without steps) began: what the ended job keeps (a cancelled job's 2 of 4).
        self.last_steps: tuple[int, int | None] | None = None

    def start(self, phase: str, total: int | None = None) -> None:
        with self._lock:
            if phase in SEARCH_INDEX_PHASES and self.last_steps is None:
                self.last_steps = (self._job.done, self._job.total)
            self._job.phase, self._job.total, self._job.done = phase, total, 0
            self._embedding_since = time.monotonic() if phase == EMBEDDING_PHASE else None
            self._stopped_at = None

    def advance(self, steps: int = 1) -> None:
        with self._lock:
            self._job.done += steps
            if self._job.cancel_requested:
                raise JobCancelled

    def stop(self) -> None:
        with self._lock:
            self._stopped_at = time.monotonic()

    def counted(self, report: IndexReport) -> None:
        # A client polling a long job sees the files that failed (and the rest) batch by
        # batch, not only once it has ended.
        counts = dataclasses.asdict(report)
        with self._lock:
            self._job.report = counts
            self._counted_at = time.monotonic()

    def live_report(self) -> dict[str, Any] | None:
        """The job's report with its times up to now, under the manager's lock: the run gives
        them as of its last count (a batch of a slow model may take a minute, a model's first
        export longer), and a client polling the job wants them growing meanwhile.

        They grow while a phase goes on (the search index's save and build too: the run's
        own time counts them), `embed_s` only while images are left to embed: once the last
        phase stopped they wait for the run's own, a little larger, so a client never sees a
        time go back."""
        report, counted_at = self._job.report, self._counted_at
        if report is None or counted_at is None:
            return report
        until = time.monotonic() if self._stopped_at is None else self._stopped_at
        live = {**report, "elapsed_s": report["elapsed_s"] + max(0.0, until - counted_at)}
        if self._embedding_since is not None and self._job.done < (self._job.total or 0):
            # The run's embed_s went up to its last count (0 if that came before the phase).
            live["embed_s"] = report["embed_s"] + max(0.0, until - max(counted_at, self._embedding_since))
        return live


class JobManager:
    """Runs index jobs for one library, one at a time, and remembers recent ones."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: Job | None = None
        self._progress: _JobProgress | None = None  # the running job's, once its run began
        self._thread: threading.Thread | None = None

    def submit(self, paths: list[str]) -> Job:
        """Start indexing `paths` (all roots when empty); 409 while another job runs."""
        self._library.check_reindex(paths)  # bad paths are refused now, not in the job
        with self._lock:
            if self._running is not None:
                raise ApiError(
                    409, "job_running", f"Index job {self._running.id} is still running; try again later."
                )
            job = Job(id=uuid.uuid4().hex[:16], paths=list(paths))
            self._running = job
            self._jobs[job.id] = job
            while len(self._jobs) > HISTORY:
                self._jobs.popitem(last=False)
            snapshot = dataclasses.replace(job)
            self._thread = threading.Thread(
                target=self._run, args=(job,), name=f"pixsift-job-{job.id}", daemon=True
            )
            self._thread.start()
        return snapshot

    def cancel(self, job_id: str) -> Job | None:
        """Ask a queued or running job to stop (None: no such job; 409 once it has finished).
        It stops at its next step, keeping what it committed, with the state `cancelled`; one
        past its last step ends as it would have, with `cancel_too_late`."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state in FINISHED:
                raise ApiError(409, "job_finished", f"Index job {job.id} has already finished ({job.state}).")
            job.cancel_requested = True
            return self._snapshot(job)

    def stop(self, timeout: float) -> None:
        """Cancel the running job, if any, and wait up to `timeout` seconds for it to stop, so
        that a service stopping leaves the batch under way committed and the FAISS index saved."""
        with self._lock:
            job, thread = self._running, self._thread
            if job is None or thread is None:
                return
            job.cancel_requested = True
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "index job %s was still running when the service stopped; what it committed stays", job.id
            )
        elif job.cancel_too_late:
            log.warning("index job %s ended (%s) before the stop could cancel it", job.id, job.state)
        else:
            log.warning(
                "index job %s was cancelled by the stop; what it committed stays: the same POST /index "
                "after the restart does the rest",
                job.id,
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._snapshot(job)

    def running(self) -> Job | None:
        with self._lock:
            return None if self._running is None else self._snapshot(self._running)

    def _snapshot(self, job: Job) -> Job:
        """A copy of `job` as it is now (under the lock): a running one's times up to now."""
        progress = self._progress if job is self._running else None
        return dataclasses.replace(job, report=job.report if progress is None else progress.live_report())

    def _run(self, job: Job) -> None:
        _lower_priority()
        with self._lock:
            job.state, job.started_at = "running", datetime.now(UTC)
        try:
            report = self._reindex(job)
        except PixsiftError as exc:  # what a run it stopped part-way committed stays: its report
            self._finish(job, "failed", report=_as_dict(exc.report), error=str(exc))
        except KeyboardInterrupt as exc:  # only JobCancelled: Ctrl-C goes to the main thread
            cut_short: IndexReport | None = getattr(exc, "report", None)  # IndexInterrupted's
            self._finish(job, "cancelled", report=_as_dict(cut_short))
        except BaseException as exc:  # a bug: the job fails, the service goes on
            log.exception("index job %s failed", job.id)
            # What the run committed before the bug stays in the library: its counts so far say so.
            with self._lock:
                so_far = self._snapshot(job).report  # its times up to the bug
            self._finish(job, "failed", report=so_far, error=f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self._finish(job, "succeeded", report=dataclasses.asdict(report))

    def _reindex(self, job: Job) -> IndexReport:
        """The job's index run. A job queued behind another index run (a command-line one)
        starts when that one ends, however long it takes, unless it is cancelled meanwhile."""
        progress = _JobProgress(job, self._lock)
        with self._lock:
            self._progress = progress
        while True:
            with self._lock:
                if job.cancel_requested:  # before it started, or while it waited
                    raise JobCancelled
            try:
                return self._library.reindex(*job.paths, progress=progress, wait=WAIT_SLICE_S)
            except LibraryBusyError:
                continue  # another run still holds the library: look again, then wait on

    def _finish(
        self, job: Job, state: str, *, report: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        with self._lock:
            job.state, job.report, job.error = state, report, error
            job.cancel_too_late = job.cancel_requested and state != "cancelled"
            # Its last phase beside a final state read as still under way; `done` and `total`
            # keep how far its files got (a cancelled job's 2 of 4), not the search index's
            # save, which has no steps.
            job.phase = None
            if self._progress is not None and self._progress.last_steps is not None:
                job.done, job.total = self._progress.last_steps
            job.finished_at = datetime.now(UTC)
            self._running = None
            self._progress = None
            self._thread = None


def _as_dict(report: IndexReport | None) -> dict[str, Any] | None:
    return None if report is None else dataclasses.asdict(report)


def _lower_priority() -> None:
    """Let searches come first: on Linux a thread's nice value is its own, and the threads it
    starts (decode workers, torch's compute threads) inherit it, so the whole job yields the
    CPU to request threads. Elsewhere, or without permission, the job runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICENESS)
