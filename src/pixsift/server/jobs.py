"""Background index jobs: one at a time, each with an id and progress a client can poll.

A job runs `Library.reindex` in its own thread; the index's own progress protocol
(`IndexProgress`) feeds the job's phase and counts. Searches keep running meanwhile: the
catalog is read in WAL snapshots and the FAISS index catches up between searches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pixsift.errors import PixsiftError
from pixsift.library import Library
from pixsift.server.errors import ApiError

log = logging.getLogger("pixsift.server")
HISTORY = 100  # finished jobs remembered for GET /jobs/{id}
JOB_NICENESS = 10


@dataclass
class Job:
    id: str
    paths: list[str]
    state: str = "queued"  # queued, running, succeeded, failed
    phase: str | None = None
    done: int = 0
    total: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


class _JobProgress:
    """An IndexProgress that writes into a job, under the manager's lock."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock

    def start(self, phase: str, total: int | None = None) -> None:
        with self._lock:
            self._job.phase, self._job.total, self._job.done = phase, total, 0

    def advance(self, steps: int = 1) -> None:
        with self._lock:
            self._job.done += steps

    def stop(self) -> None:
        pass


class JobManager:
    """Runs index jobs for one library, one at a time, and remembers recent ones."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: Job | None = None

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
        threading.Thread(target=self._run, args=(job,), name=f"pixsift-job-{job.id}", daemon=True).start()
        return snapshot

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else dataclasses.replace(job)

    def running(self) -> Job | None:
        with self._lock:
            return None if self._running is None else dataclasses.replace(self._running)

    def _run(self, job: Job) -> None:
        _lower_priority()
        with self._lock:
            job.state, job.started_at = "running", datetime.now(UTC)
        try:
            # wait=None: a job queued behind a command-line index run starts when that one ends
            report = self._library.reindex(*job.paths, progress=_JobProgress(job, self._lock), wait=None)
        except PixsiftError as exc:
            self._finish(job, error=str(exc))
        except BaseException as exc:  # a bug: the job fails, the service goes on
            log.exception("index job %s failed", job.id)
            self._finish(job, error=f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self._finish(job, report=dataclasses.asdict(report))

    def _finish(self, job: Job, *, report: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self._lock:
            job.state = "failed" if error is not None else "succeeded"
            job.report, job.error = report, error
            job.finished_at = datetime.now(UTC)
            self._running = None


def _lower_priority() -> None:
    """Let searches come first: on Linux a thread's nice value is its own, and the threads it
    starts (decode workers, torch's compute threads) inherit it, so the whole job yields the
    CPU to request threads. Elsewhere, or without permission, the job runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICENESS)
