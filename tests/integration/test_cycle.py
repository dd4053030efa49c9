"""The worker's cycle on PostgreSQL: the outcomes recorded and the next batch claimed in
one transaction (`queue.finish_and_claim`), all of it or none of it; and `queue.cycle`,
the same in one statement on an autocommit session when every outcome is final."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq
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


@contextmanager
def statements_sent(session: Conn, tmp_path: Path) -> Iterator[list[str]]:
    """The statements ``session`` sends inside the block, from libpq's protocol trace: one
    "Query" (simple protocol: BEGIN, COMMIT) or "Bind" (a parameterized statement) each."""
    sent: list[str] = []
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as f:
        session.pgconn.trace(f.fileno())
        session.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield sent
        finally:
            session.pgconn.untrace()
    for line in trace.read_text().splitlines():
        fields = line.split("\t")  # F, length, message, arguments
        if fields[0] == "F" and fields[2] == "Bind":
            sent.append("Bind")
        elif fields[0] == "F" and fields[2] == "Query":
            sent.append(fields[3].strip(' "') or "Query")  # a statement on several lines


def test_cycle_of_final_outcomes_is_one_statement_that_records_unlocks_and_claims(
    database_url: str, conn: Conn, session: Conn, tmp_path: Path
) -> None:
    first, second = enqueue(conn, 2), enqueue(conn, 3)
    _, claimed, _ = queue.cycle(session, "w1", [], 2)
    assert {j.id for j in claimed} == set(first) and advisory_locks(database_url) == set(first)
    outcomes = [Outcome(first[1], "failed", "not an image"), Outcome(first[0], "completed")]
    with statements_sent(session, tmp_path) as sent:
        written, claimed, next_due = queue.cycle(session, "w1", outcomes, 2)
    assert sent == ["Bind"]  # one statement: no BEGIN, locking read, unlock or COMMIT of its own
    assert session.info.transaction_status.name == "IDLE"  # committed by itself
    assert {(j.id, j.status, j.error, j.attempts) for j in written} == {
        (first[0], Status.COMPLETED, None, 1),
        (first[1], Status.FAILED, "not an image", 1),
    }
    assert all(j.finished_at is not None and j.worker_id is None for j in written)
    assert [j.id for j in claimed] == second[:2] and next_due is None
    assert all(j.status is Status.PROCESSING and j.worker_id == "w1" for j in claimed)
    # the finished rows' locks are released; the claimed rows' are taken, in one transaction
    assert advisory_locks(database_url) == set(second[:2])
    # outcomes only (no free slot): recorded, nothing claimed
    written, claimed, next_due = queue.cycle(session, "w1", [Outcome(i, "completed") for i in second[:2]], 0)
    assert {j.id for j in written} == set(second[:2]) and claimed == [] and next_due is None
    assert advisory_locks(database_url) == set()
    assert rows(conn)[second[2]] == (Status.QUEUED, 0)


def test_cycle_skips_and_unlocks_rows_that_are_no_longer_its_own(
    database_url: str, conn: Conn, session: Conn
) -> None:
    mine, theirs = enqueue(conn, 1), enqueue(conn, 1)
    queue.cycle(session, "w1", [], 1)
    conn.execute("UPDATE jobsvc_results SET worker_id = 'w2' WHERE id = %s", [mine[0]])  # not ours any more
    written, claimed, _ = queue.cycle(session, "w1", [Outcome(mine[0], "completed")], 1)
    assert written == [] and [j.id for j in claimed] == theirs
    assert rows(conn)[mine[0]] == (Status.PROCESSING, 1)  # left alone
    assert advisory_locks(database_url) == set(theirs)  # but this session's lock on it is gone


def test_cycle_with_an_outcome_that_needs_its_row_runs_the_transaction(
    conn: Conn, session: Conn, tmp_path: Path
) -> None:
    first, second = enqueue(conn, 2), enqueue(conn, 1)
    queue.cycle(session, "w1", [], 2)
    conn.execute("UPDATE jobsvc_results SET cancel_requested_at = now() WHERE id = %s", [first[1]])
    outcomes = [Outcome(first[0], "completed"), Outcome(first[1], "retry", "503")]
    with statements_sent(session, tmp_path) as sent:
        written, claimed, _ = queue.cycle(session, "w1", outcomes, 1)
    # BEGIN, the locking read, the write, the unlock, the claim, COMMIT: the policy saw the cancel
    assert sent == ["BEGIN", "Bind", "Bind", "Bind", "Bind", "COMMIT"]
    assert {j.id: j.status for j in written} == {first[0]: Status.COMPLETED, first[1]: Status.CANCELED}
    assert [j.id for j in claimed] == second
    assert session.info.transaction_status.name == "IDLE"


def test_cycle_killed_before_it_commits_loses_nothing(database_url: str, conn: Conn, session: Conn) -> None:
    first, second = enqueue(conn, 2), enqueue(conn, 2)
    queue.cycle(session, "w1", [], 2)
    # The statement blocks on a row lock held here; the session dies while it waits.
    with psycopg.connect(database_url, row_factory=dict_row) as holder, holder.transaction():
        holder.execute("SELECT 1 FROM jobsvc_results WHERE id = %s FOR UPDATE", [first[1]])
        pid = session.info.backend_pid
        killer = threading.Timer(0.3, lambda: conn.execute("SELECT pg_terminate_backend(%s)", [pid]))
        killer.start()
        with pytest.raises(psycopg.OperationalError):
            queue.cycle(session, "w1", [Outcome(i, "completed") for i in first], 2)
        killer.join()
    expected = {**dict.fromkeys(first, (Status.PROCESSING, 1)), **dict.fromkeys(second, (Status.QUEUED, 0))}
    assert rows(conn) == expected
    until_sync(lambda: not advisory_locks(database_url), timeout=5, what="the dead session's locks to go")
