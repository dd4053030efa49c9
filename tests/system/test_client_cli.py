"""The client commands (`jobsvc enqueue|list|get|cancel|retry|download|watch`) as real processes against
a real stack: `jobsvc api` and `jobsvc worker` subprocesses (one pair for the module,
stopped with SIGTERM at its end) on a real PostgreSQL, file storage, and the local
image server. Each test uses its own job ids. Waits are on statuses, with deadlines.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.database import PgServer, migrated_database
from tests.fixtures.images import ImageServer
from tests.fixtures.processes import COMMAND_TIMEOUT, Background, Stack, client_env, open_stack, run_cli
from tests.helpers import until_sync


@pytest.fixture(scope="module")
def stack_database_url(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """One migrated database for the module's stack (tests use their own job ids)."""
    with migrated_database(pg_server, template_db, prefix="jobsvc_cli") as url:
        yield url


@pytest.fixture(scope="module")
def stack(stack_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`jobsvc api` and `jobsvc worker`, ready, shared by the module (`open_stack`)."""
    tmp = tmp_path_factory.mktemp("client-cli")
    env = {"JOBSVC_RESCUE_INTERVAL": "1", "JOBSVC_SHUTDOWN_GRACE": "2", "JOBSVC_CONCURRENCY": "4"}
    with open_stack(stack_database_url, tmp, **env) as started:
        yield started


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(stack: Stack, *args: str) -> Background:
        proc = stack.start(*args, tmp=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def job_id_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    job_id, status = done.stdout.split()
    assert status == "Queued"
    return str(uuid.UUID(job_id))


# --- enqueue and watch -----------------------------------------------------------------


def test_enqueue_then_watch_exits_0_once_completed(stack: Stack, image_server: ImageServer) -> None:
    job_id = job_id_of(stack.run("enqueue", image_server.url("/img/cli-cat.png")))
    watched = stack.run("watch", job_id, "--timeout", "20")
    assert watched.returncode == 0, watched.stderr
    last = watched.stdout.splitlines()[-1].split("  ")
    assert last[1:4] == [job_id, "cli-cat.png", "Completed"]
    assert (stack.results / job_id / "cli-cat.png").read_bytes()[:4] == b"\x89PNG"


def test_enqueue_json_options_and_identical_retry(stack: Stack, image_server: ImageServer) -> None:
    job_id = str(uuid.uuid4())
    url = image_server.url("/img/cli-opts.png")
    args = ["enqueue", url, "--job-id", job_id, "--type", "thumb", "--priority", "7", "--max-attempts", "2"]
    first = stack.run(*args, "--run-at", "2020-01-01T00:00:00Z", "--json")
    assert first.returncode == 0, first.stderr
    view = json.loads(first.stdout)
    assert (view["jobId"], view["type"], view["priority"], view["maxAttempts"]) == (job_id, "thumb", 7, 2)
    assert view["status"] == "Queued" and view["resultFile"] == "cli-opts.png"
    again = stack.run(*args, "--run-at", "2020-01-01T00:00:00Z")
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[0] == job_id
    assert "already enqueued" in again.stderr


def test_watch_json_prints_current_state_then_changes(stack: Stack, image_server: ImageServer) -> None:
    job_id = job_id_of(stack.run("enqueue", image_server.url("/img/cli-json.png")))
    watched = stack.run("watch", job_id, "--json", "--timeout", "20")
    assert watched.returncode == 0, watched.stderr
    views = [json.loads(line) for line in watched.stdout.splitlines()]
    assert views and all(v["jobId"] == job_id for v in views)
    assert views[-1]["status"] == "Completed"
    assert [v["updatedAt"] for v in views] == sorted({v["updatedAt"] for v in views})  # no repeats


def test_watch_exits_1_when_a_result_fails(stack: Stack, image_server: ImageServer) -> None:
    # The probe at enqueue refuses a 404; an endless download starts like a PNG, so
    # it passes the probe and fails in the worker, past JOBSVC_MAX_IMAGE_BYTES.
    url = image_server.url(f"/oversize/{uuid.uuid4().hex}/cli-big.png")
    job_id = job_id_of(stack.run("enqueue", url, "--max-attempts", "1"))
    watched = stack.run("watch", job_id, "--timeout", "25")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert watched.stdout.splitlines()[-1].split("  ")[3] == "Failed"
    assert "finished: 1 Failed" in watched.stderr


def test_enqueue_refused_by_the_api_exits_1_with_its_reason(stack: Stack, image_server: ImageServer) -> None:
    done = stack.run("enqueue", "ftp://images.test/a.png")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "http" in done.stderr and "(HTTP 400)" in done.stderr
    assert "Traceback" not in done.stderr
    missing = stack.run("enqueue", image_server.url("/404/cli-missing.png"))
    assert missing.returncode == 1 and "(HTTP 400)" in missing.stderr


# --- list ----------------------------------------------------------------------------


def test_list_json_table_and_pagination(stack: Stack, image_server: ImageServer) -> None:
    job_id = str(uuid.uuid4())
    for name in ("cli-a.png", "cli-b.png", "cli-c.png"):
        done = stack.run("enqueue", image_server.url(f"/img/{name}"), "--job-id", job_id)
        assert done.returncode == 0, done.stderr
    stack.wait_status(job_id, "Completed")

    listed = stack.run("list", "--job-id", job_id, "--json")
    assert listed.returncode == 0, listed.stderr
    views = json.loads(listed.stdout)
    assert [(v["resultFile"], v["status"]) for v in views] == [
        ("cli-a.png", "Completed"),
        ("cli-b.png", "Completed"),
        ("cli-c.png", "Completed"),
    ]

    page = stack.run("list", "--job-id", job_id, "--limit", "2", "--json")
    assert len(json.loads(page.stdout)) == 2 and "--all" in page.stderr
    every = stack.run("list", "--job-id", job_id, "--limit", "1", "--all", "--json")
    assert [v["resultFile"] for v in json.loads(every.stdout)] == ["cli-a.png", "cli-b.png", "cli-c.png"]

    table = stack.run("list", "--job-id", job_id, "--status", "completed")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["JOB", "ID"] and len(lines) == 4
    assert all(
        line.split()[:4] == [job_id, name, "Completed", "1/3"]
        for line, name in zip(lines[1:], ("cli-a.png", "cli-b.png", "cli-c.png"), strict=True)
    )
    none = stack.run("list", "--job-id", job_id, "--status", "Failed")
    assert none.returncode == 0 and none.stdout == "" and "no results" in none.stderr


# --- cancel -------------------------------------------------------------------------


def test_cancel_a_running_job_and_watch_exits_1_canceled(
    stack: Stack, image_server: ImageServer, background: Callable[..., Background]
) -> None:
    key = uuid.uuid4().hex
    job_id = job_id_of(stack.run("enqueue", image_server.url(f"/slow/{key}/cli-slow.png")))
    stack.wait_status(job_id, "Processing")

    timed_out = stack.run("watch", job_id, "--timeout", "0.5")
    assert timed_out.returncode == 1
    assert "timed out after 0.5s" in timed_out.stderr and "1 Processing" in timed_out.stderr

    watcher = background(stack, "watch", job_id)
    until_sync(lambda: "Processing" in watcher.out, timeout=10, what="watch to print the current state")
    canceled = stack.run("cancel", job_id)
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.split()[0] == job_id
    assert "cli-slow.png" in canceled.stdout

    assert watcher.wait(15) == 1, watcher.out + watcher.err
    assert watcher.out.splitlines()[-1].split("  ")[3] == "Canceled"
    assert "finished: 1 Canceled" in watcher.err
    assert image_server.wait_closed(key, 5)  # the worker hung up on the download

    again = stack.run("cancel", job_id, "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {
        "jobId": job_id,
        "status": "Canceled",
        "results": [{"resultFile": "cli-slow.png", "status": "Canceled"}],
    }


def test_retry_puts_a_canceled_job_back_to_work(stack: Stack, image_server: ImageServer) -> None:
    key = uuid.uuid4().hex
    job_id = job_id_of(stack.run("enqueue", image_server.url(f"/slow/{key}/cli-retry.png")))
    stack.wait_status(job_id, "Processing")
    assert stack.run("cancel", job_id).returncode == 0
    stack.wait_status(job_id, "Canceled")

    retried = stack.run("retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.split()[:2] == [job_id, "Queued"]
    assert "cli-retry.png  Queued" in retried.stdout
    (view,) = stack.wait_status(job_id, "Processing")  # the worker was woken, and took it
    assert view["attempts"] == 1 and view["error"] is None

    assert stack.run("cancel", job_id).returncode == 0
    stack.wait_status(job_id, "Canceled")
    unknown = stack.run("retry", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "does not exist (HTTP 404)" in unknown.stderr


def test_cancel_unknown_job_exits_1_malformed_exits_2(stack: Stack) -> None:
    unknown = stack.run("cancel", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "does not exist (HTTP 404)" in unknown.stderr
    malformed = stack.run("cancel", "not-a-uuid")
    assert malformed.returncode == 2 and "expected a job id" in malformed.stderr
    watch_unknown = stack.run("watch", str(uuid.uuid4()))
    assert watch_unknown.returncode == 1 and "(HTTP 404)" in watch_unknown.stderr
    get_unknown = stack.run("get", str(uuid.uuid4()))
    assert get_unknown.returncode == 1 and "does not exist (HTTP 404)" in get_unknown.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["get", "nope"],
        ["cancel", "nope"],
        ["retry", "00000000-0000-0000-0000-000000000000"],
        ["download", "nope", "a.png"],
        ["download", str(uuid.uuid4()), "../a.png"],
        ["watch", "nope"],
        ["list", "--job-id", "nope"],
        ["enqueue", "http://images.test/a.png", "--job-id", "nope"],
    ],
)
def test_malformed_job_id_exits_2_before_any_request(args: list[str], dead_url: str) -> None:
    # Against an address that refuses connections: any request would have exited 3.
    done = run_cli(*args, url=dead_url, timeout=20)
    assert done.returncode == 2, done.stderr
    assert "error: argument" in done.stderr and "cannot reach" not in done.stderr


# --- get and download ----------------------------------------------------------------


def test_get_prints_the_jobs_results_as_a_table_and_json(stack: Stack, image_server: ImageServer) -> None:
    job_id = str(uuid.uuid4())
    for name in ("cli-get-a.png", "cli-get-b.png"):
        assert stack.run("enqueue", image_server.url(f"/img/{name}"), "--job-id", job_id).returncode == 0
    stack.wait_status(job_id, "Completed")

    table = stack.run("get", job_id.upper())  # any spelling of the id
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["JOB", "ID", "RESULT", "FILE"] and len(lines) == 3
    assert [line.split()[:4] for line in lines[1:]] == [
        [job_id, "cli-get-a.png", "Completed", "1/3"],
        [job_id, "cli-get-b.png", "Completed", "1/3"],
    ]
    as_json = stack.run("get", job_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == stack.views(job_id)


def test_download_writes_the_image_to_cwd_a_path_a_directory_or_stdout(
    stack: Stack, image_server: ImageServer, tmp_path: Path
) -> None:
    job_id = job_id_of(stack.run("enqueue", image_server.url("/img/cli-dl.png")))
    stack.wait_status(job_id, "Completed")
    stored = (stack.results / job_id / "cli-dl.png").read_bytes()

    default = stack.run("download", job_id, "cli-dl.png", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "cli-dl.png").read_bytes() == stored
    assert default.stdout.split() == ["cli-dl.png", str(len(stored)), "bytes"]

    path = stack.run("download", job_id, "cli-dl.png", "-o", str(tmp_path / "renamed.png"), "--json")
    assert json.loads(path.stdout) == {
        "jobId": job_id,
        "resultFile": "cli-dl.png",
        "path": str(tmp_path / "renamed.png"),
        "bytes": len(stored),
    }
    assert (tmp_path / "renamed.png").read_bytes() == stored
    (tmp_path / "into").mkdir()
    assert stack.run("download", job_id, "cli-dl.png", "-o", str(tmp_path / "into")).returncode == 0
    assert (tmp_path / "into" / "cli-dl.png").read_bytes() == stored

    piped = subprocess.run(
        [sys.executable, "-m", "jobsvc.cli", "download", job_id, "cli-dl.png", "-o", "-", "--url", stack.url],
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        env=client_env(),
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == stored


def test_download_of_a_result_not_completed_exits_1_and_leaves_no_file(
    stack: Stack, image_server: ImageServer, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    job_id = job_id_of(stack.run("enqueue", image_server.url(f"/slow/{key}/cli-dl-slow.png")))
    stack.wait_status(job_id, "Processing")
    try:
        running = stack.run("download", job_id, "cli-dl-slow.png", cwd=tmp_path)
        assert running.returncode == 1 and "(HTTP 404)" in running.stderr
        other = stack.run("download", job_id, "no-such.png", cwd=tmp_path)
        assert other.returncode == 1 and "(HTTP 404)" in other.stderr
        assert list(tmp_path.iterdir()) == []
    finally:
        assert stack.run("cancel", job_id).returncode == 0


def test_jobsvc_url_is_the_default_api_url(stack: Stack, image_server: ImageServer) -> None:
    job_id = job_id_of(stack.run("enqueue", image_server.url("/img/cli-env.png")))
    done = subprocess.run(
        [sys.executable, "-m", "jobsvc.cli", "get", job_id, "--json"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env={**client_env(), "JOBSVC_URL": stack.url},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["jobId"] == job_id


# --- watch on a terminal ---------------------------------------------------------------


def test_watch_on_a_terminal_shows_elapsed_time_and_each_change(
    stack: Stack, image_server: ImageServer, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    job_id = job_id_of(stack.run("enqueue", image_server.url(f"/slow/{key}/cli-tty.png")))
    stack.wait_status(job_id, "Processing")
    primary, secondary = pty.openpty()
    err = (tmp_path / "watch.err").open("w")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "jobsvc.cli", "watch", job_id, "--url", stack.url],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=err,
        env=client_env(),
    )
    os.close(secondary)
    screen = b""

    def read_for(seconds: float) -> None:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([primary], [], [], left)[0]:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: the process closed the terminal
                    return
                if not chunk:
                    return
                screen += chunk

    def clocks() -> list[str]:
        return re.findall(r"\(1 Processing\), (\d+)s since started", screen.decode())

    try:
        deadline = time.monotonic() + 15
        while len(set(clocks())) < 3 and time.monotonic() < deadline:
            read_for(0.2)
        seconds = [int(s) for s in dict.fromkeys(clocks())]
        # Redrawn as time passes, with no change of state: the clock runs.
        assert len(seconds) >= 3 and seconds == sorted(seconds), screen
        assert stack.run("cancel", job_id).returncode == 0
        assert watcher.wait(15) == 1
        read_for(0.5)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
        os.close(primary)
        err.close()
    # One line per state change, above the live line; the live line erased at the end.
    lines = [part.rsplit("\x1b[K", 1)[-1] for part in screen.decode().split("\r\n")[:-1]]
    statuses = [line.split("  ")[3] for line in lines]
    assert statuses[0] == "Processing" and statuses[-1] == "Canceled", screen
    # Between them, at most the cancel request's own change (a separate event unless coalesced).
    assert all(line.endswith("cancel requested") for line in lines[1:-1]), screen
    assert screen.endswith(b"\r\x1b[K")


# --- watch every job -----------------------------------------------------------------


def test_watch_all_follows_new_jobs_and_ctrl_c_exits_0(
    stack: Stack, image_server: ImageServer, background: Callable[..., Background]
) -> None:
    watcher = background(stack, "watch", "--json")
    until_sync(lambda: "following every job" in watcher.err, timeout=15, what="watch to subscribe")
    job_id = job_id_of(stack.run("enqueue", image_server.url("/img/cli-all.png")))

    def statuses() -> list[str] | None:
        seen = [v["status"] for v in map(json.loads, watcher.out.splitlines()) if v["jobId"] == job_id]
        return seen if "Completed" in seen else None

    seen = until_sync(statuses, timeout=15, what="the Completed event")
    # Changes in quick succession may arrive as one event: in order, never repeated.
    order = ["Queued", "Processing", "Completed"]
    assert seen[-1] == "Completed" and seen == sorted(set(seen), key=order.index)
    watcher.popen.send_signal(signal.SIGINT)
    assert watcher.wait(10) == 0
    assert "Traceback" not in watcher.err


# --- an API that is not there ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "http://images.test/a.png"],
        ["list"],
        ["get", str(uuid.uuid4())],
        ["cancel", str(uuid.uuid4())],
        ["download", str(uuid.uuid4()), "a.png"],
        ["watch"],
        ["watch", str(uuid.uuid4())],
    ],
)
def test_unreachable_api_exits_3(args: list[str], dead_url: str) -> None:
    done = run_cli(*args, url=dead_url, timeout=20)
    assert done.returncode == 3, done.stderr
    assert f"cannot reach the API at {dead_url}" in done.stderr
    assert "Traceback" not in done.stderr
