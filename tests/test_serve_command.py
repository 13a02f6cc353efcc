"""`pixsift serve` as a user runs it: a real process, refusing unsafe binds, answering HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from filelock import FileLock, Timeout

from conftest import TinyModel, run_cli
from sample_photos import write_photos
from serving import API_KEY

AUTH = {"X-API-Key": API_KEY}

pytestmark = pytest.mark.slow


def test_serve_refuses_an_open_bind_without_a_key(tmp_path: Path) -> None:
    result = run_cli("serve", "--library", str(tmp_path / "lib"), "--host", "0.0.0.0")
    assert result.returncode == 1
    assert "API key" in result.stderr and "Traceback" not in result.stderr
    short = run_cli("serve", "--host", "127.0.0.1", env={"PIXSIFT_API_KEY": "short"})
    assert short.returncode == 1 and "at least 16" in short.stderr
    accented = run_cli("serve", "--host", "127.0.0.1", "--api-key", "clé-secrète-0123456789")
    assert accented.returncode == 1 and "printable ASCII" in accented.stderr
    assert "Traceback" not in accented.stderr
    missing = run_cli("serve", "--library", str(tmp_path / "nothing-here"))
    assert missing.returncode == 1 and "No pixsift library" in missing.stderr


def test_serve_on_an_address_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    """uvicorn alone logs the bind error and exits with 3, pixsift's "finished, with trouble"."""
    from pixsift import Library

    Library.open(tmp_path / "lib").close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_cli("serve", "--library", str(tmp_path / "lib"), "--port", port)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"error: Cannot listen on 127.0.0.1 port {port}: another program is listening there: "
        "stop it, or choose another --port.\n"
    )


class Serving(NamedTuple):
    """A `pixsift serve` process, where it listens, and what it logged until it listened."""

    process: subprocess.Popen[str]
    port: int
    url: str
    started_log: str


def start_serve(library: Path, *, api_key: str | None = API_KEY) -> Serving:
    """`pixsift serve` for `library` on a port the system picks (`--port 0`), read from the
    line the service logs as it starts listening: a port found free here and passed on could be
    taken by another program before the service binds it. Returns once /healthz says ready."""
    env = {key: value for key, value in os.environ.items() if key != "PIXSIFT_API_KEY"}
    if api_key is not None:
        env["PIXSIFT_API_KEY"] = api_key
    process = subprocess.Popen(
        [sys.executable, "-m", "pixsift", "serve", "--library", str(library), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        logged = _log_until(process, "Uvicorn running on", timeout=120)
        listening = re.search(r"Uvicorn running on (http://127\.0\.0\.1:(\d+)) ", logged)
        assert listening is not None, logged
        url, port = listening[1], int(listening[2])
        wait_until_up(process, url)
    except BaseException:
        process.kill()
        process.communicate(timeout=60)
        raise
    return Serving(process, port, url, logged)


def wait_until_up(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "pixsift serve did not come up"
        time.sleep(0.2)


def test_a_client_that_never_finishes_its_request_does_not_keep_serve_running(tmp_path: Path) -> None:
    """SIGTERM waits for requests under way only so long: a client that keeps sending its body
    a byte at a time (or stalls) kept the service up until it gave up, or for ever. Such a
    request, cut short, got a plain-text 500, and the log a 60-line traceback of a cancel; it
    is answered 503 `shutting_down` in the service's JSON shape, and the log says it in a line."""
    from pixsift import Library
    from pixsift.server.run import SHUTDOWN_GRACE_S

    Library.open(tmp_path / "lib").close()
    process, port, _, output = start_serve(tmp_path / "lib", api_key=None)
    try:
        with upload_under_way(port) as slow_client:  # its body far from complete
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SHUTDOWN_GRACE_S + 30)
            except subprocess.TimeoutExpired:
                pytest.fail("pixsift serve kept running after SIGTERM while a request was left unfinished")
            took = time.monotonic() - stopped_at
            slow_client.settimeout(10)
            head, _, body = read_all(slow_client).partition(b"\r\n\r\n")
    finally:
        if process.poll() is None:
            process.kill()
        output += process.communicate(timeout=60)[0]
    assert took < SHUTDOWN_GRACE_S + 10, output
    assert process.returncode == 0, output
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 5\r\n" in head.lower(), head
    assert json.loads(body) == {
        "error": "shutting_down",
        "message": "The service is stopping and could not finish this request; send it again once it "
        "is back.",
    }
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output
    assert "Cancel 1 running task(s)" in output and '"POST /similar HTTP/1.1" 503' in output, output


def upload_under_way(port: int) -> socket.socket:
    """A connection to the service on `port` with a `POST /similar` the service has begun to
    read (it asked for the body: `100 Continue` to the client's `Expect`), and the first bytes
    of its 100 kB body sent. A time slept instead would not tell, on a loaded machine, whether
    the service had even accepted the connection."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    connection.sendall(
        b"POST /similar HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    received = b""
    while b"\r\n\r\n" not in received and (chunk := connection.recv(4096)):
        received += chunk
    assert received == b"HTTP/1.1 100 Continue\r\n\r\n", received
    connection.sendall(b'{"image_base64": "AAAA')
    return connection


def read_all(connection: socket.socket) -> bytes:
    """Everything the service sends on `connection` until it closes it."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_serve_stopped_by_sigterm_exits_with_0(tmp_path: Path, photos: Path, tiny_model: TinyModel) -> None:
    """SIGTERM is how systemd, `docker stop` or `kill` stop a service: a clean stop, as Ctrl-C's,
    exits with 0. uvicorn sent SIGTERM again once it had stopped, which killed pixsift with the
    signal's default action: status 143 to a shell, a failed unit to systemd."""
    library = tmp_path / "lib"
    assert run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args()).returncode == 0
    process, _, url, output = start_serve(library)
    try:
        assert httpx.get(f"{url}/search", params={"q": "a rocket"}).status_code == 200
        process.send_signal(signal.SIGTERM)
        output += process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output and "Shutting down" in output, output


class WaitingJob(NamedTuple):
    library: Path
    port: int
    url: str
    process: subprocess.Popen[str]
    job: dict[str, Any]


@contextmanager
def job_waiting_for_another_run(tmp_path: Path, photos: Path, tiny_model: TinyModel) -> Iterator[WaitingJob]:
    """`pixsift serve` on an indexed library, with a POST /index job for 3 new photos under
    way: it waits for the library's lock, held here meanwhile as by another index run. The
    service is killed on the way out if it still runs; its log is the caller's to read."""
    library = tmp_path / "lib"
    indexed = run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    write_photos(photos / "new", 3, size=(320, 240), seed=800)
    process, port, url, _ = start_serve(library)
    try:
        with FileLock(library / "library.lock", thread_local=False):
            posted = httpx.post(f"{url}/index", json={"paths": [str(photos / "new")]}, headers=AUTH)
            job = posted.json()
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/jobs/{job['id']}").json()["phase"] != "Waiting for another index run":
                assert time.monotonic() < deadline, "the job did not start waiting"
                time.sleep(0.1)
            yield WaitingJob(library, port, url, process, job)
    finally:
        if process.poll() is None:
            process.kill()


def test_an_index_job_cut_short_by_a_stop_is_done_again_after_the_restart(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Jobs live in the service's memory: after a restart the old id is job_not_found, nothing
    the job committed is lost, and the same POST /index does the rest."""
    with job_waiting_for_another_run(tmp_path, photos, tiny_model) as (library, _, url, process, job):
        process.send_signal(signal.SIGTERM)  # the job is under way: the stop cancels it
        process.wait(timeout=60)
    logged = process.communicate(timeout=60)[0]
    assert process.returncode == 0, logged
    assert f"index job {job['id']} was cancelled by the stop" in logged, logged
    process, _, url, _ = start_serve(library)  # on a port of its own: the old one may be taken
    try:
        gone = httpx.get(f"{url}/jobs/{job['id']}")
        assert gone.status_code == 404 and gone.json()["error"] == "job_not_found"
        assert "restart" in gone.json()["message"]
        again = httpx.post(f"{url}/index", json={"paths": [str(photos / "new")]}, headers=AUTH).json()
        deadline = time.monotonic() + 120
        while (done := httpx.get(f"{url}/jobs/{again['id']}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
        assert done["state"] == "succeeded" and done["report"]["added"] == 3, done
        assert httpx.get(f"{url}/stats").json()["indexed"] == 15
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_a_second_ctrl_c_still_cancels_the_job_and_logs_no_traceback(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """Ctrl-C twice (the second while requests under way are let finish) skipped the stop of the
    index job: the library was closed under the job still running, and the log showed a
    CancelledError traceback from the app's shutdown. The job is now cancelled all the same."""
    with (
        job_waiting_for_another_run(tmp_path, photos, tiny_model) as (library, port, _, process, job),
        upload_under_way(port),  # keeps the first stop waiting
    ):
        process.send_signal(signal.SIGINT)
        logged = _log_until(process, "Waiting for connections to close")  # the first is under way
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    logged += process.communicate(timeout=60)[0]
    assert process.returncode == 0, logged
    # the stalled request is cut short by uvicorn, which logs that itself; the stop is no error
    assert "lifespan" not in logged, logged
    assert f"index job {job['id']} was cancelled by the stop" in logged, logged
    doctor = run_cli("doctor", "--library", str(library))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_a_delete_cut_short_by_the_stop_is_not_kept(
    tmp_path: Path, photos: Path, tiny_model: TinyModel
) -> None:
    """A plain `def` route runs in a worker thread, which a stop's cancel does not end: a delete
    waiting for SQLite's lock, held by another program past the stop's grace, was answered 503
    "could not finish", then committed into the closed library once the lock came free. Its
    write is now rolled back, and the log says why the process has not exited yet."""
    library = tmp_path / "lib"
    assert run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args()).returncode == 0
    process, _, url, started_log = start_serve(library)
    answers: list[httpx.Response] = []
    other_program = sqlite3.connect(library / "library.db", isolation_level=None)
    try:
        other_program.execute("BEGIN IMMEDIATE")  # SQLite's write lock: the delete waits for it
        delete = threading.Thread(
            target=lambda: answers.append(httpx.delete(f"{url}/images/1", headers=AUTH, timeout=60))
        )
        delete.start()
        _wait_until_held(library / "library.lock", delete)  # the delete waits for SQLite's lock
        process.send_signal(signal.SIGTERM)
        delete.join(timeout=60)
        logged = _log_until(process, "still run")
        other_program.execute("COMMIT")  # the delete's thread goes on, into a closed library
        output = started_log + logged + process.communicate(timeout=60)[0]
    finally:
        other_program.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert [answer.status_code for answer in answers] == [503], output
    assert answers[0].json()["error"] == "shutting_down"
    assert "warning: 1 request(s) cut short by the stop still run" in output, output
    assert "Traceback" not in output, output
    from pixsift import Library

    with Library.open(library, create=False) as reopened:
        assert reopened.image(1).id == 1  # not deleted: the answer said so
    assert run_cli("doctor", "--library", str(library)).returncode == 0


def _wait_until_held(lock_file: Path, request: threading.Thread) -> None:
    """Until the service holds the library's write lock `lock_file`, as a delete does from
    before its write to after it: nothing else in the service takes it here, so the delete has
    reached the service and goes on to wait for SQLite's lock, which the stop cannot shorten.
    Each try holds the lock for a moment only; the delete waits for it as for an index run."""
    probe = FileLock(lock_file, thread_local=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return
        probe.release()
        assert request.is_alive(), "the request ended before it took the library's lock"
        assert time.monotonic() < deadline, "the request did not take the library's lock"
        time.sleep(0.01)


def _log_until(process: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    """What `process` logs until a line holds `text` (within `timeout` seconds); the rest is
    left in its pipe for `communicate`."""
    assert process.stdout is not None
    logged = ""
    deadline = time.monotonic() + timeout
    while text not in logged:
        assert time.monotonic() < deadline and process.poll() is None, logged
        logged += process.stdout.readline()
    return logged


def test_serve_answers_over_http(tmp_path: Path, photos: Path, tiny_model: TinyModel) -> None:
    library = tmp_path / "lib"
    indexed = run_cli("index", str(photos), "--library", str(library), *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    process, _, url, output = start_serve(library)
    try:
        hits = httpx.get(f"{url}/search", params={"q": "a rocket", "k": 3}).json()["results"]
        assert len(hits) == 3 and all(Path(hit["path"]).parent == photos for hit in hits)
        # the key came from the environment: writes are enabled with it
        assert httpx.delete(f"{url}/images/{hits[0]['id']}").status_code == 401
        assert (
            httpx.delete(f"{url}/images/{hits[0]['id']}", headers={"X-API-Key": API_KEY}).status_code == 200
        )
    finally:
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
