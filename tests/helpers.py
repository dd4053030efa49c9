"""What the tests share that is not a fixture: the one enqueue, the one wait, row reads.

- `until` / `until_sync`: THE deadline-bounded wait on a predicate (async and blocking
  forms of the same loop); every polling wait in the suite goes through them, so each
  failure says what it waited for and for how long.
- `enqueue`: THE way a test puts a result in the queue, straight into PostgreSQL as the
  API does. Tests that go through HTTP build the body with `enqueue_body` (the
  in-process app: `Api.enqueue`; a real stack: `Stack.enqueue`).
- `connect`, `in_thread`, `row`, `wait_status`, `advisory_locks`, `statuses`,
  `unfinished`: reading the queue's rows from a test; `fill`, `remaining`,
  `counts_agree`: rows of a status and age, for the retention tests.
- `Gate`, `run_until_shutdown`: a blocking handler and a worker run, for the worker tests.
- `SEGMENTS`: a hypothesis strategy of hostile URL path segments.
- `metric_samples`: a Prometheus text exposition as a dict, for the /metrics tests.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import trio
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from jobsvc import queue
from jobsvc.db import Conn
from jobsvc.model import Job, Status
from jobsvc.queries import QUOTA_SQL
from jobsvc.queue import NewResult
from jobsvc.worker import Worker

T = TypeVar("T")

# --------------------------------------------------------------------------- waiting


def _timed_out(timeout: float, what: str) -> trio.TooSlowError:
    return trio.TooSlowError(f"timed out after {timeout} s waiting for {what}")


async def until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.02,
    thread: bool = False,
) -> T:
    """Poll ``predicate()`` until truthy and return its value; `trio.TooSlowError` after ``timeout``.

    ``predicate`` may be a coroutine function (an HTTP request on an async client).
    ``thread=True`` runs it in a worker thread: for predicates that block (a query, an
    HTTP request), so the event loop (and an in-process app) keeps running meanwhile.
    Trio's clock, so a test on a mock clock waits in virtual time.
    """
    deadline = trio.current_time() + timeout
    while True:
        value = await trio.to_thread.run_sync(predicate) if thread else predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if trio.current_time() >= deadline:
            raise _timed_out(timeout, what)
        await trio.sleep(interval)


def until_sync(
    predicate: Callable[[], T], *, timeout: float = 10.0, what: str = "the condition", interval: float = 0.02
) -> T:
    """`until` for synchronous tests (real processes, the browser): blocks between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)


# --------------------------------------------------------------------------- the queue's rows


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


async def in_thread(conn: psycopg.Connection[dict[str, Any]], fn: Callable[[Any], T]) -> T:
    """Run ``fn(conn)`` in one transaction, in a thread (as jobsvc's own hops do)."""

    def hop() -> T:
        with conn.transaction():
            return fn(conn)

    return await trio.to_thread.run_sync(hop)


def enqueue_body(
    img_url: str = "http://images.test/a.png", job_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """The JSON body of ``POST /results/enqueue`` (a fresh job id unless given); ``fields`` add to it."""
    return {"jobId": job_id or str(uuid.uuid4()), "type": "ingest", "imgUrl": img_url, **fields}


def enqueue(url: str, img_url: str = "http://images.test/a.png", *, wake: bool = True, **kw: Any) -> Job:
    """Insert a result the way the API does (and announce it unless ``wake=False``).

    ``kw``: any `NewResult` field (``job_id``, ``type``, ``max_attempts``, ``run_at``…).
    """
    with connect(url) as conn:
        job, _ = queue.enqueue(
            conn,
            NewResult(
                job_id=kw.pop("job_id", None) or uuid.uuid4(),
                result_file=kw.pop("result_file", img_url.rsplit("/", 1)[-1]),
                type=kw.pop("type", "ingest"),
                img_url=img_url,
                **kw,
            ),
        )
        if wake:
            queue.announce(conn, [job.id], wakeup=True)
    return job


def row(url: str, row_id: int) -> Job:
    with connect(url) as conn:
        (job,) = queue.get_by_ids(conn, [row_id])
    return job


async def wait_status(url: str, row_id: int, *statuses: Status, timeout: float = 10.0) -> Job:
    """Wait (with a deadline) until the row reaches one of ``statuses``; returns it."""

    def reached() -> Job | None:
        job = row(url, row_id)
        return job if job.status in statuses else None

    return await until(reached, timeout=timeout, what=f"row {row_id} to be {statuses}", thread=True)


def advisory_locks(url: str) -> set[int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return {int(r["objid"]) for r in rows}


def statuses(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return queue.status_counts(conn)


def unfinished(url: str, tenant: str = "default") -> int:
    """How many of ``tenant``'s results are Queued or Processing (what its quota counts)."""
    with connect(url) as conn:
        found = conn.execute(
            "SELECT count(*) AS n FROM jobsvc_results"
            " WHERE tenant = %s AND status IN ('Queued', 'Processing')",
            (tenant,),
        ).fetchone()
        assert found is not None
        return int(found["n"])


#: `count` rows of one status, finished `age` ago (Queued/Processing rows: created then).
FILL_SQL = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url, status, created_at, finished_at)
SELECT gen_random_uuid(), 'r.png', 'ingest', 'http://images.test/r.png', %(status)s,
       now() - %(age)s::interval,
       CASE WHEN %(status)s IN ('Completed', 'Failed', 'Canceled') THEN now() - %(age)s::interval END
FROM generate_series(1, %(count)s)
RETURNING id
"""


def fill(url: str, status: str, age: str, count: int = 1) -> set[int]:
    with connect(url) as conn:
        return {r["id"] for r in conn.execute(FILL_SQL, {"status": status, "age": age, "count": count})}


def remaining(url: str) -> set[int]:
    with connect(url) as conn:
        return {r["id"] for r in conn.execute("SELECT id FROM jobsvc_results")}


def counts_agree(url: str) -> bool:
    with connect(url) as conn:
        return queue.status_counts(conn) == queue.status_counts_exact(conn)


# --------------------------------------------------------------------------- the worker


class Gate:
    """A worker handler that records the jobs it starts and blocks each until ``release`` is set."""

    def __init__(self) -> None:
        self.started: list[Job] = []
        self.release = trio.Event()
        self.cancelled: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._changed = trio.Event()

    async def __call__(self, job: Job) -> None:
        self.started.append(job)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.append(job.id)
            raise
        finally:
            self.in_flight -= 1

    async def wait_started(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` jobs have started (woken by each start, not polled)."""
        with trio.fail_after(timeout):
            while len(self.started) < n:
                self._changed = trio.Event()
                await self._changed.wait()


def run_until_shutdown(worker: Worker, nursery: trio.Nursery) -> trio.Event:
    """Start the worker; the event is set when `Worker.run` has returned."""
    finished = trio.Event()

    async def run() -> None:
        await worker.run()
        finished.set()

    nursery.start_soon(run)
    return finished


# --------------------------------------------------------------------------- hostile input

PIECES = st.sampled_from(
    [".", "..", "/", "\\", "%2F", "%2f", "%2E", "%2e", "%5C", "%5c", "%00", "%25", "%", "%252F", "%2E%2E",
     "%C3%A9", "%E6%97%A5", "%FF", "%0A", "%20", " ", "~", ":", "?", "#", ";", "@", "a", "x.png",
     "\u202e", "日本", "%E2%80%8B", "CON", "....", ".png", "b", "-", "_", "1", "é", "%41"]
)  # fmt: skip
#: A URL's last path segment as a hostile client might write it (raw or percent-encoded).
SEGMENTS = st.lists(st.one_of(PIECES, st.text(max_size=4)), min_size=1, max_size=8).map("".join)


# --------------------------------------------------------------------------- metrics

#: One sample: its name and its labels, sorted.
Sample = tuple[str, tuple[tuple[str, str], ...]]


def metric_samples(text: str) -> dict[Sample, float]:
    """Every sample of a ``/metrics`` answer, keyed by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@contextmanager
def held_quota_lock(url: str, tenant: str = "default") -> Iterator[Conn]:
    """Hold ``tenant``'s quota lock in an open transaction until the block ends."""
    with connect(url) as conn:
        conn.execute("BEGIN")
        # Any cap > 0 takes the lock (and counts: the count is not used here).
        conn.execute(QUOTA_SQL, {"space": queue.QUOTA_LOCK_SPACE, "tenant": tenant, "cap": 1})
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def blocked_backends(url: str) -> list[int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [r["pid"] for r in rows]


async def wait_blocked(url: str) -> int:
    pids: list[int] = await until(
        lambda: blocked_backends(url), thread=True, what="a group waiting on the quota lock"
    )
    return pids[0]
