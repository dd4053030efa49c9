"""The worker in-process against a real PostgreSQL, with handlers registered through
the library API (the image pipeline has its own end-to-end tests)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio

from jobsvc.config import Settings
from jobsvc.errors import PermanentError, TransientError
from jobsvc.model import Job, Status
from jobsvc.worker import Handler, Worker
from jobsvc.worker.pgstore import PostgresSession
from tests.fixtures.app import OpenApi
from tests.helpers import Gate, advisory_locks, connect, enqueue, row, run_until_shutdown, until, wait_status


def settings_for(url: str, **kw: Any) -> Settings:
    base = {
        "database_url": url,
        "concurrency": 4,
        "rescue_interval": 60.0,  # long: wake-ups must come from NOTIFY, not the sweep
        "retry_backoff": 0.01,
        "shutdown_grace": 5.0,
        "worker_id": "test-worker",
    }
    return Settings(**{**base, **kw})


@pytest.fixture
def worker_in_process(database_url: str, nursery: trio.Nursery) -> Callable[..., Any]:
    async def start(handler: Handler, **kw: Any) -> Worker:
        worker = Worker(settings_for(database_url, **kw), default_handler=handler)
        await nursery.start(worker.run)
        return worker

    return start


async def noop(job: Job) -> None:
    return None


async def test_enqueued_job_is_picked_up_by_notify(database_url: str, worker_in_process: Any) -> None:
    await worker_in_process(noop)
    job = enqueue(database_url)
    done = await wait_status(database_url, job.id, Status.COMPLETED, timeout=3)
    assert done.attempts == 1 and done.error is None and done.finished_at is not None


async def test_api_enqueues_wake_the_worker_inline_then_through_the_announcer(
    open_api: OpenApi, database_url: str, worker_in_process: Any
) -> None:
    # The first enqueue of a quiet window carries its wake-up in its own transaction (no
    # announcer round trip); the next one within the window (a long one here) goes
    # through the announcer. Either way the worker (rescue sweep off) runs the job.
    await worker_in_process(noop)
    async with open_api(app_options={"notify_window": 60.0}) as api:
        announcer = api.services.announcer
        for expected in ((1, 0), (1, 1)):
            body = {"jobId": str(uuid.uuid4()), "type": "noop", "imgUrl": "http://images.test/a.png"}
            response = await api.client.post("/results/enqueue", json=body)
            assert response.status_code == 202
            with connect(database_url) as conn:
                found = conn.execute("SELECT id FROM jobsvc_results WHERE job_id = %s", [body["jobId"]])
                (row_id,) = [r["id"] for r in found]
            done = await wait_status(database_url, row_id, Status.COMPLETED, timeout=3)
            assert done.attempts == 1
            await until(lambda: announcer.pending == 0, timeout=3)
            assert (announcer.inline, announcer.sent) == expected


async def test_worker_drains_queue_on_start_without_notify(database_url: str, worker_in_process: Any) -> None:
    jobs = [enqueue(database_url, f"http://images.test/{i}.png", wake=False) for i in range(5)]
    await worker_in_process(noop)
    for job in jobs:
        await wait_status(database_url, job.id, Status.COMPLETED)


async def test_concurrency_bounds_jobs_in_flight(database_url: str, worker_in_process: Any) -> None:
    gate = Gate()
    jobs = [enqueue(database_url, f"http://images.test/{i}.png") for i in range(7)]
    await worker_in_process(gate, concurrency=3)
    await gate.wait_started(3)
    with connect(database_url) as conn:
        n = conn.execute("SELECT count(*) AS n FROM jobsvc_results WHERE status = 'Processing'").fetchone()
    assert n is not None and n["n"] == 3 and len(gate.started) == 3
    gate.release.set()
    for job in jobs:
        await wait_status(database_url, job.id, Status.COMPLETED)
    assert gate.max_in_flight == 3  # never more handlers at once than the concurrency


async def test_cancel_running_job_cancels_its_scope_and_releases_lock(
    database_url: str, worker_in_process: Any
) -> None:
    gate = Gate()
    await worker_in_process(gate)
    job = enqueue(database_url)
    other = enqueue(database_url, "http://images.test/other.png")
    await gate.wait_started(2)
    assert job.id in advisory_locks(database_url)
    with connect(database_url) as conn:
        from jobsvc import queue

        queue.cancel(conn, job.job_id)
    canceled = await wait_status(database_url, job.id, Status.CANCELED)
    assert gate.cancelled == [job.id]
    assert canceled.cancel_requested_at is not None and canceled.finished_at is not None
    assert (canceled.finished_at - canceled.cancel_requested_at).total_seconds() < 1.0
    assert job.id not in advisory_locks(database_url)
    assert row(database_url, other.id).status is Status.PROCESSING  # the other job runs on
    gate.release.set()
    await wait_status(database_url, other.id, Status.COMPLETED)


async def test_transient_errors_retry_with_backoff_then_complete(
    database_url: str, worker_in_process: Any
) -> None:
    calls: list[int] = []

    async def flaky(job: Job) -> None:
        calls.append(job.attempts)
        if job.attempts < 3:
            raise TransientError("the server answered 503 Service Unavailable")

    await worker_in_process(flaky)
    job = enqueue(database_url)
    done = await wait_status(database_url, job.id, Status.COMPLETED)
    assert calls == [1, 2, 3] and done.attempts == 3 and done.error is None


async def test_transient_errors_fail_after_max_attempts(database_url: str, worker_in_process: Any) -> None:
    async def down(job: Job) -> None:
        raise TransientError("connection refused")

    await worker_in_process(down)
    job = enqueue(database_url, max_attempts=2)
    failed = await wait_status(database_url, job.id, Status.FAILED)
    assert failed.attempts == 2 and failed.error == "connection refused (gave up after 2 attempts)"


async def test_permanent_error_fails_at_once(database_url: str, worker_in_process: Any) -> None:
    async def bad(job: Job) -> None:
        raise PermanentError("the content is not an image")

    await worker_in_process(bad)
    job = enqueue(database_url)
    failed = await wait_status(database_url, job.id, Status.FAILED)
    assert failed.attempts == 1 and failed.error == "the content is not an image"


async def test_unexpected_handler_exception_is_retried_not_fatal(
    database_url: str, worker_in_process: Any
) -> None:
    async def buggy(job: Job) -> None:
        if job.attempts == 1:
            raise KeyError("oops")

    await worker_in_process(buggy)
    job = enqueue(database_url)
    done = await wait_status(database_url, job.id, Status.COMPLETED)
    assert done.attempts == 2


async def test_delayed_job_runs_at_its_time_not_before(database_url: str, worker_in_process: Any) -> None:
    seen: list[float] = []

    async def stamp(job: Job) -> None:
        seen.append(trio.current_time())

    await worker_in_process(stamp)
    with connect(database_url) as conn:
        run_at = conn.execute("SELECT now() + interval '700 ms' AS t").fetchone()
    assert run_at is not None
    start = trio.current_time()
    job = enqueue(database_url, run_at=run_at["t"])
    done = await wait_status(database_url, job.id, Status.COMPLETED, timeout=5)
    assert seen and 0.5 <= seen[0] - start < 2.5
    assert done.started_at is not None and done.started_at >= run_at["t"]


async def test_graceful_shutdown_requeues_unfinished_jobs_without_counting(
    database_url: str, nursery: trio.Nursery
) -> None:
    gate = Gate()
    worker = Worker(settings_for(database_url, shutdown_grace=0.2), default_handler=gate)
    finished = run_until_shutdown(worker, nursery)
    job = enqueue(database_url)
    await gate.wait_started(1)
    worker.shutdown()
    with trio.fail_after(5):
        await finished.wait()
    back = row(database_url, job.id)
    assert back.status is Status.QUEUED and back.attempts == 0 and back.error is None
    assert gate.cancelled == [job.id]
    assert advisory_locks(database_url) == set()


async def test_graceful_shutdown_lets_running_jobs_finish_within_grace(
    database_url: str, nursery: trio.Nursery
) -> None:
    gate = Gate()
    worker = Worker(settings_for(database_url, shutdown_grace=5), default_handler=gate)
    finished = run_until_shutdown(worker, nursery)
    job = enqueue(database_url)
    await gate.wait_started(1)
    worker.shutdown()
    late = enqueue(database_url, "http://images.test/late.png")  # must not be claimed any more
    gate.release.set()
    with trio.fail_after(5):
        await finished.wait()
    assert row(database_url, job.id).status is Status.COMPLETED
    assert row(database_url, late.id).status is Status.QUEUED
    assert gate.cancelled == []


async def test_connections_do_not_grow_with_concurrency(database_url: str, worker_in_process: Any) -> None:
    gate = Gate()
    for i in range(40):
        enqueue(database_url, f"http://images.test/{i}.png", wake=False)
    await worker_in_process(gate, concurrency=40)
    await gate.wait_started(40)

    def worker_connections() -> int:
        with connect(database_url) as conn:
            r = conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'jobsvc-%%'"
                " AND datname = current_database()"
            ).fetchone()
        return 0 if r is None else int(r["n"])

    assert worker_connections() <= 4
    gate.release.set()


async def test_lost_session_abandons_jobs_then_rescue_completes_them(
    database_url: str, worker_in_process: Any
) -> None:
    attempts: list[int] = []
    blocked = trio.Event()

    async def first_attempt_hangs(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            blocked.set()
            await trio.sleep(math.inf)

    await worker_in_process(first_attempt_hangs, rescue_interval=0.3)
    job = enqueue(database_url)
    with trio.fail_after(5):
        await blocked.wait()
    with connect(database_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'jobsvc-%%' AND datname = current_database()"
        )
    done = await wait_status(database_url, job.id, Status.COMPLETED, timeout=15)
    assert done.attempts == 2 and attempts == [1, 2]
    await until(lambda: advisory_locks(database_url) == set(), thread=True)


async def test_registered_handler_by_type(database_url: str, nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def special(job: Job) -> None:
        seen.append("special")

    async def default(job: Job) -> None:
        seen.append("default")

    worker = Worker(settings_for(database_url), handlers={"special": special}, default_handler=default)
    await nursery.start(worker.run)
    a = enqueue(database_url, type="special")
    await wait_status(database_url, a.id, Status.COMPLETED)
    b = enqueue(database_url, "http://images.test/b.png", type="ingest")
    await wait_status(database_url, b.id, Status.COMPLETED)
    assert seen == ["special", "default"]


async def test_session_killed_while_jobs_run_is_noticed_and_its_jobs_abandoned(
    database_url: str, worker_in_process: Any
) -> None:
    attempts: list[int] = []
    first = trio.Event()
    abandoned = trio.Event()

    async def first_attempt_hangs(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            first.set()
            try:
                await trio.sleep(math.inf)
            finally:
                abandoned.set()

    worker = await worker_in_process(first_attempt_hangs, rescue_interval=0.3)
    job = enqueue(database_url)
    with trio.fail_after(5):
        await first.wait()
    session = worker.session
    assert isinstance(session, PostgresSession)
    with connect(database_url) as conn:  # only the lock-holding session, nothing else
        conn.execute("SELECT pg_terminate_backend(%s)", (session.backend_pid,))
    with trio.fail_after(5):
        await abandoned.wait()  # the health check noticed: the job is no longer ours
    done = await wait_status(database_url, job.id, Status.COMPLETED, timeout=10)
    assert done.attempts == 2 and attempts == [1, 2]
