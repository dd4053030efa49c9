"""Crash and shutdown behaviour of real `jobsvc worker` processes (docs/ARCHITECTURE.md, "The worker").

Each test drives real processes against a real PostgreSQL and the local image
server, kills or signals them, and waits on row statuses with deadlines.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc.model import Status
from tests.fixtures.processes import JobsvcProcess, Spawn, service_env
from tests.helpers import advisory_locks, enqueue, row, until, wait_status

pytestmark = pytest.mark.slow


def worker(spawn: Spawn, database_url: str, results: Path, name: str, **env: str) -> JobsvcProcess:
    return spawn(
        "worker",
        env=service_env(
            database_url,
            f"file://{results}",
            JOBSVC_WORKER_ID=name,
            JOBSVC_RESCUE_INTERVAL=env.pop("rescue", "0.5"),
            JOBSVC_CONCURRENCY="4",
            **env,
        ),
    )


async def wait_owner(database_url: str, row_id: int, owner: str) -> None:
    await until(lambda: row(database_url, row_id).worker_id == owner, timeout=15, thread=True)


async def test_sigkilled_worker_job_is_rescued_and_completed_by_another(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    path = f"/stall-once/{key}/cat.png"
    job = enqueue(database_url, image_server.url(path))
    first = worker(spawn, database_url, tmp_path, "worker-a")
    await wait_owner(database_url, job.id, "worker-a")
    # the first (stalling) request must have reached the server, or the retry would stall
    await until(lambda: image_server.hits(path) == 1, thread=True)
    second = worker(spawn, database_url, tmp_path, "worker-b")
    first.kill()
    done = await wait_status(database_url, job.id, Status.COMPLETED, Status.FAILED, timeout=20)
    assert done.status is Status.COMPLETED, second.output()
    assert done.attempts == 2  # the lost attempt is counted
    assert (tmp_path / str(job.job_id) / "cat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image_server.hits(path) == 2
    assert advisory_locks(database_url) == set()


async def test_sigkilled_worker_with_cancel_requested_ends_canceled(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    from tests.helpers import connect

    job = enqueue(database_url, image_server.url(f"/slow/{uuid.uuid4().hex}/dog.png"))
    first = worker(spawn, database_url, tmp_path, "worker-a")
    await wait_owner(database_url, job.id, "worker-a")
    first.signal(signal.SIGSTOP)  # frozen: it cannot act on the cancel
    with connect(database_url) as conn:
        from jobsvc import queue

        queue.cancel(conn, job.job_id)
    first.kill()
    worker(spawn, database_url, tmp_path, "worker-b")
    done = await wait_status(database_url, job.id, Status.CANCELED, timeout=15)
    assert done.cancel_requested_at is not None and not (tmp_path / str(job.job_id)).exists()


async def test_sigkilled_worker_with_attempts_spent_fails_saying_so(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    job = enqueue(database_url, image_server.url(f"/slow/{uuid.uuid4().hex}/x.png"), max_attempts=1)
    first = worker(spawn, database_url, tmp_path, "worker-a")
    await wait_owner(database_url, job.id, "worker-a")
    first.kill()
    worker(spawn, database_url, tmp_path, "worker-b")
    failed = await wait_status(database_url, job.id, Status.FAILED, timeout=15)
    assert failed.error is not None and "worker-a" in failed.error and "lost" in failed.error


async def test_sigterm_returns_running_job_to_queued_and_exits_0(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    path = f"/slow/{key}/x.png"
    job = enqueue(database_url, image_server.url(path))
    proc = worker(spawn, database_url, tmp_path, "worker-a", JOBSVC_SHUTDOWN_GRACE="0.3")
    await wait_owner(database_url, job.id, "worker-a")
    await until(lambda: image_server.hits(path) == 1, thread=True)  # the download is under way
    proc.signal(signal.SIGTERM)
    code = await trio.to_thread.run_sync(proc.wait, 10)
    assert code == 0, proc.output()
    back = row(database_url, job.id)
    assert back.status is Status.QUEUED and back.attempts == 0 and back.worker_id is None
    assert advisory_locks(database_url) == set()
    assert image_server.wait_closed(key, 5)
    assert not (tmp_path / str(job.job_id)).exists() or not any((tmp_path / str(job.job_id)).iterdir())


async def test_sigterm_lets_a_short_job_finish_within_grace(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    proc = worker(spawn, database_url, tmp_path, "worker-a", JOBSVC_SHUTDOWN_GRACE="10")
    path = f"/drip/50/{uuid.uuid4().hex}.png"  # about one second to download
    job = enqueue(database_url, image_server.url(path))
    await until(lambda: image_server.hits(path) == 1, thread=True)  # under way when the signal comes
    proc.signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(proc.wait, 15) == 0, proc.output()
    assert row(database_url, job.id).status is Status.COMPLETED


async def test_migrate_four_at_once_and_again(spawn: Spawn, empty_database_url: str, tmp_path: Path) -> None:
    env = service_env(empty_database_url, f"file://{tmp_path}")
    procs = [spawn("migrate", env=env) for _ in range(4)]
    codes = [await trio.to_thread.run_sync(p.wait, 60) for p in procs]
    assert codes == [0, 0, 0, 0], [p.output() for p in procs]
    again = spawn("migrate", env=env)
    assert await trio.to_thread.run_sync(again.wait, 60) == 0
    job = enqueue(empty_database_url, "http://images.test/a.png")
    assert row(empty_database_url, job.id).status is Status.QUEUED


async def test_worker_serves_metrics_on_its_own_port(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    import socket

    import httpx

    with socket.socket() as probe:  # a free port, released for the worker to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = worker(spawn, database_url, tmp_path, "worker-m", JOBSVC_METRICS_PORT=str(port))
    job = enqueue(database_url, image_server.url("/img/metrics.png"))
    await wait_status(database_url, job.id, Status.COMPLETED, timeout=15)

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    text = await until(lambda: "jobsvc_claims_total 1.0" in scrape() and scrape(), timeout=15, thread=True)
    assert 'jobsvc_finished_total{status="Completed"} 1.0' in text, proc.output()
