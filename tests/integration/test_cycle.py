"""The worker's cycle on PostgreSQL: the outcomes recorded and the next batch claimed in
one transaction (`queue.finish_and_claim`), all of it or none of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobsvc import queue
from jobsvc.model import Status
from jobsvc.queue import NewResult, Outcome
from tests.helpers import advisory_locks, until_sync

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def session(database_url: str) -> Iterator[Conn]:
    """The worker's owning session (a connection of its own, as `db.Session`)."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as c:
        yield c


def enqueue(conn: Conn, n: int) -> list[int]:
    return [
        queue.enqueue(conn, NewResult(uuid.uuid4(), f"{i}.png", "ingest", f"http://images.test/{i}.png"))[
            0
        ].id
        for i in range(n)
    ]


def rows(conn: Conn) -> dict[int, tuple[Status, int]]:
    found = conn.execute("SELECT id, status, attempts FROM jobsvc_results").fetchall()
    return {r["id"]: (Status(r["status"]), r["attempts"]) for r in found}


def test_finish_and_claim_records_frees_and_claims_in_one_commit(
    database_url: str, conn: Conn, session: Conn
) -> None:
    first, second = enqueue(conn, 2), enqueue(conn, 3)
    with session.transaction():
        claimed, _ = queue.claim(session, "w1", 2)
    assert {j.id for j in claimed} == set(first)
    with session.transaction():
        written, claimed, next_due = queue.finish_and_claim(
            session, "w1", [Outcome(first[0], "completed"), Outcome(first[1], "failed", "not an image")], 2
        )
        # nothing is visible to others before the one commit
        seen = {i: status for i, (status, _) in rows(conn).items() if i in first}
        assert seen == dict.fromkeys(first, Status.PROCESSING)
    assert {j.id: j.status for j in written} == {first[0]: Status.COMPLETED, first[1]: Status.FAILED}
    assert [j.id for j in claimed] == second[:2] and next_due is None
    assert all(j.status is Status.PROCESSING and j.worker_id == "w1" for j in claimed)
    # the finished rows' locks are released; the claimed rows' are taken, in the same transaction
    assert advisory_locks(database_url) == set(second[:2])
    # a short claim reports the next due row as the plain claim does
    with session.transaction():
        _, claimed, next_due = queue.finish_and_claim(session, "w1", [], 5)
    assert [j.id for j in claimed] == second[2:] and next_due is None


def test_finish_and_claim_can_claim_a_row_it_gave_back(conn: Conn, session: Conn) -> None:
    (row,) = enqueue(conn, 1)
    with session.transaction():
        queue.claim(session, "w1", 1)
    with session.transaction():
        written, claimed, _ = queue.finish_and_claim(session, "w1", [Outcome(row, "requeue")], 1)
    assert [(j.id, j.status, j.attempts) for j in written] == [(row, Status.QUEUED, 0)]
    assert [(j.id, j.status, j.attempts) for j in claimed] == [(row, Status.PROCESSING, 1)]


def test_finish_and_claim_rolled_back_records_nothing_and_claims_nothing(conn: Conn, session: Conn) -> None:
    first, second = enqueue(conn, 1), enqueue(conn, 1)
    with session.transaction():
        queue.claim(session, "w1", 1)
    with pytest.raises(RuntimeError), session.transaction():
        queue.finish_and_claim(session, "w1", [Outcome(first[0], "completed")], 1)
        raise RuntimeError("the cycle failed after its statements")
    assert rows(conn) == {first[0]: (Status.PROCESSING, 1), second[0]: (Status.QUEUED, 0)}


def test_session_killed_before_the_cycle_commits_loses_nothing(
    database_url: str, conn: Conn, session: Conn
) -> None:
    first, second = enqueue(conn, 2), enqueue(conn, 2)
    with session.transaction():
        queue.claim(session, "w1", 2)
    pid = session.info.backend_pid
    with pytest.raises(psycopg.OperationalError), session.transaction():
        queue.finish_and_claim(session, "w1", [Outcome(i, "completed") for i in first], 2)
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])  # the worker dies before COMMIT
    # Neither half happened: the outcomes are not recorded, the next batch is still Queued.
    expected = {**dict.fromkeys(first, (Status.PROCESSING, 1)), **dict.fromkeys(second, (Status.QUEUED, 0))}
    assert rows(conn) == expected
    until_sync(lambda: not advisory_locks(database_url), timeout=5, what="the dead session's locks to go")
    with conn.transaction():
        rescued = queue.rescue(conn)
    # The rescuer moves the orphaned rows on (a lost attempt); nothing is left Processing.
    assert {j.id: j.status for j in rescued} == dict.fromkeys(first, Status.QUEUED)
    assert {s for s, _ in rows(conn).values()} == {Status.QUEUED}


def test_a_claim_short_because_another_claim_holds_due_rows_says_look_again_now(
    conn: Conn, session: Conn, database_url: str
) -> None:
    enqueue(conn, 3)
    with psycopg.connect(database_url, row_factory=dict_row) as rival, rival.transaction():
        held, _ = queue.claim(rival, "w2", 2)  # not committed yet: its rows are locked, still Queued
        with session.transaction():
            mine, next_due = queue.claim(session, "w1", 5)
        assert len(held) == 2 and len(mine) == 1
        assert next_due == 0.0  # due rows left behind: not "nothing due" (None), which waits for a NOTIFY
    with session.transaction():
        assert queue.claim(session, "w1", 5) == ([], None)  # the rival committed: nothing left
