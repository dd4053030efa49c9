"""The queue's SQL against a real PostgreSQL: claim, finish, cancel, rescue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobsvc import queue
from jobsvc.errors import Conflict, NotFound
from jobsvc.model import Status
from jobsvc.queue import NewResult, Outcome
from tests.helpers import advisory_locks, until_sync

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def other(database_url: str) -> Iterator[Conn]:
    """A second session, as a second worker or the rescuer would have."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as c:
        yield c


def new(file: str = "a.png", job_id: uuid.UUID | None = None, **kw: Any) -> NewResult:
    return NewResult(
        job_id=job_id or uuid.uuid4(),
        result_file=file,
        type=kw.pop("type", "ingest"),
        img_url=kw.pop("img_url", f"http://images.test/{file}"),
        **kw,
    )


def test_enqueue_identical_returns_existing_and_different_conflicts(conn: Conn) -> None:
    first, created = queue.enqueue(conn, new(job_id=(jid := uuid.uuid4())))
    assert created and first.status is Status.QUEUED
    again, created = queue.enqueue(conn, new(job_id=jid))
    assert not created and again.id == first.id
    with pytest.raises(Conflict):
        queue.enqueue(conn, new(job_id=jid, type="other"))
    _, created = queue.enqueue(conn, new("b.png", job_id=jid))
    assert created and [j.result_file for j in queue.get_job(conn, jid)] == ["a.png", "b.png"]


def test_claim_takes_at_most_limit_in_priority_order_and_locks_each(
    database_url: str, conn: Conn, other: Conn
) -> None:
    low = queue.enqueue(conn, new(priority=-5))[0]
    high = queue.enqueue(conn, new(priority=7))[0]
    mid = queue.enqueue(conn, new())[0]
    with conn.transaction():
        jobs, next_due = queue.claim(conn, "w1", 2)
    assert [j.id for j in jobs] == [high.id, mid.id]
    assert all(j.status is Status.PROCESSING and j.attempts == 1 and j.worker_id == "w1" for j in jobs)
    assert advisory_locks(database_url) == {high.id, mid.id}
    with other.transaction():
        rest, _ = queue.claim(other, "w2", 5)
    assert [j.id for j in rest] == [low.id]
    assert next_due is None


def test_claim_reports_next_due_for_delayed_rows(conn: Conn) -> None:
    conn.execute("SELECT 1")
    queue.enqueue(conn, new(run_at=conn.execute("SELECT now() + interval '30 s' AS t").fetchone()["t"]))
    jobs, next_due = queue.claim(conn, "w1", 4)
    assert jobs == [] and next_due is not None and 25 < next_due <= 30


def test_finish_records_outcomes_and_releases_locks(database_url: str, conn: Conn, other: Conn) -> None:
    for f in ("ok.png", "bad.png", "flaky.png", "back.png"):
        queue.enqueue(conn, new(f))
    with conn.transaction():
        jobs, _ = queue.claim(conn, "w1", 4)
    by_file = {j.result_file: j.id for j in jobs}
    with conn.transaction():
        done = queue.finish(
            conn,
            "w1",
            [
                Outcome(by_file["ok.png"], "completed"),
                Outcome(by_file["bad.png"], "failed", "not an image"),
                Outcome(by_file["flaky.png"], "retry", "the server answered 503"),
                Outcome(by_file["back.png"], "requeue"),
            ],
        )
    status = {j.result_file: (j.status, j.attempts, j.error) for j in done}
    assert status["ok.png"] == (Status.COMPLETED, 1, None)
    assert status["bad.png"] == (Status.FAILED, 1, "not an image")
    assert status["flaky.png"] == (Status.QUEUED, 1, "the server answered 503")
    assert status["back.png"] == (Status.QUEUED, 0, None)
    retried = next(j for j in done if j.result_file == "flaky.png")
    assert retried.started_at is not None and retried.run_at > retried.started_at  # backed off
    assert advisory_locks(database_url) == set()


def test_retry_after_last_attempt_fails_with_reason(conn: Conn) -> None:
    queue.enqueue(conn, new(max_attempts=1))
    with conn.transaction():
        (job,), _ = queue.claim(conn, "w1", 1)
        (done,) = queue.finish(conn, "w1", [Outcome(job.id, "retry", "timed out")])
    assert done.status is Status.FAILED and done.error == "timed out (gave up after 1 attempts)"


def test_cancel_queued_is_immediate_and_processing_is_requested(conn: Conn, other: Conn) -> None:
    jid = uuid.uuid4()
    queue.enqueue(conn, new("a.png", job_id=jid))
    with conn.transaction():
        (running,), _ = queue.claim(conn, "w1", 1)
    queue.enqueue(conn, new("b.png", job_id=jid))
    other.execute("LISTEN jobsvc_cancel")
    with conn.transaction():
        rows = queue.cancel(conn, jid)
    assert {r.result_file: r.status for r in rows} == {"a.png": Status.PROCESSING, "b.png": Status.CANCELED}
    assert [r.cancel_requested_at is not None for r in rows] == [True, True]
    assert [n.payload for n in other.notifies(timeout=1, stop_after=1)] == [str(running.id)]
    assert queue.cancel_requested(conn, [running.id]) == [running.id]
    # the worker's retry of a canceled row ends Canceled, not Queued
    with conn.transaction():
        (done,) = queue.finish(conn, "w1", [Outcome(running.id, "retry", "boom")])
    assert done.status is Status.CANCELED
    with pytest.raises(NotFound):
        queue.cancel(conn, uuid.uuid4())


def test_rescue_requeues_rows_whose_lock_holder_died(database_url: str, conn: Conn) -> None:
    for f in ("a.png", "b.png", "c.png"):
        queue.enqueue(conn, new(f, max_attempts=1 if f == "c.png" else 3))
    dying = psycopg.connect(database_url, row_factory=dict_row, autocommit=True)
    with dying.transaction():
        jobs, _ = queue.claim(dying, "dead-worker", 3)
    alive_ids = {j.id for j in jobs}
    # while the owner lives, nothing is rescued
    with conn.transaction():
        assert queue.rescue(conn) == []
    queue.cancel(conn, jobs[1].job_id)
    dying.close()
    # The server frees a closed session's locks a moment later (not synchronously).
    until_sync(
        lambda: not advisory_locks(database_url) & alive_ids, timeout=5, what="the dead session's locks to go"
    )
    with conn.transaction():
        rescued = {j.result_file: j for j in queue.rescue(conn)}
    assert {j.id for j in rescued.values()} == alive_ids
    assert rescued["a.png"].status is Status.QUEUED and "attempt 1 was lost" in (rescued["a.png"].error or "")
    # a lost attempt is a transient failure: backed off like any other (default base 1 s)
    assert rescued["a.png"].run_at - rescued["a.png"].updated_at >= timedelta(seconds=0.8)
    assert rescued["b.png"].status is Status.CANCELED
    assert rescued["c.png"].status is Status.FAILED and "dead-worker" in (rescued["c.png"].error or "")


def test_list_pages_by_keyset_with_filters(conn: Conn) -> None:
    ids = [queue.enqueue(conn, new(f"{i}.png"))[0].id for i in range(5)]
    page = queue.list_jobs(conn, queue.ListFilter(), after=None, limit=2)
    assert [j.id for j in page] == ids[:2]
    queued = queue.ListFilter(statuses=(Status.QUEUED,))
    page = queue.list_jobs(conn, queued, after=queue.ListCursor.of(page[-1]), limit=10)
    assert [j.id for j in page] == ids[2:]
    completed = queue.ListFilter(statuses=(Status.COMPLETED,))
    assert queue.list_jobs(conn, completed, after=None, limit=10) == []


@pytest.mark.parametrize("tenant", [None, "acme"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_list_of_every_status_pages_through_them_merged_in_keyset_order(
    conn: Conn, tenant: str | None, order: queue.ListOrder
) -> None:
    # Since schema version 4 a list without a status filter merges one index walk per
    # status: rows of every status, many sharing a created_at, must still come back in
    # (created_at, id) order, each exactly once, page after page.
    with conn.transaction():
        for i in range(40):
            queue.enqueue(conn, new(f"{i:02}.png", tenant="acme" if i % 3 == 0 else "default"))
        conn.execute(
            "UPDATE jobsvc_results SET status = (%s::text[])[1 + id %% 5],"
            " created_at = created_at + (id %% 4) * interval '1 second'",
            ([s.value for s in Status],),
        )
    rows = conn.execute(
        "SELECT id, status FROM jobsvc_results WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s"
        " ORDER BY created_at, id",
        {"tenant": tenant},
    ).fetchall()
    expected = [r["id"] for r in rows]
    assert {r["status"] for r in rows} == {s.value for s in Status}
    where = queue.ListFilter(tenant=tenant, order=order)
    seen: list[int] = []
    after = None
    while page := queue.list_jobs(conn, where, after=after, limit=7):
        seen += [j.id for j in page]
        after = queue.ListCursor.of(page[-1])
    assert seen == (expected if order == "asc" else expected[::-1])


def test_migrate_is_idempotent(conn: Conn) -> None:
    with conn.transaction():
        queue.migrate(conn, queue.load_schema())
    assert queue.schema_version(conn) == queue.SCHEMA_VERSION


def test_status_changes_are_announced_once_per_statement(conn: Conn, other: Conn) -> None:
    for f in ("a.png", "b.png"):
        queue.enqueue(conn, new(f))
    other.execute("LISTEN jobsvc_events")
    with conn.transaction():
        jobs, _ = queue.claim(conn, "w1", 2)
    payloads = [n.payload for n in other.notifies(timeout=1, stop_after=1)]
    assert sorted(int(i) for i in payloads[0].split(",")) == sorted(j.id for j in jobs)
