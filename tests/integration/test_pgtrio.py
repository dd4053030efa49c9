"""Statements sent from the trio thread (`jobsvc.pgtrio`, `db.Session.run_plan`) against a
real PostgreSQL: the same rows, types and errors as the thread path; a lost backend is
`DatabaseUnavailable`; a cancelled caller never leaves the connection mid-statement."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio
from psycopg.rows import dict_row, tuple_row

from jobsvc import db, pgtrio, queue
from jobsvc.errors import DatabaseUnavailable
from jobsvc.model import Status
from jobsvc.queue import NewResult, Outcome
from jobsvc.retry import RetryPolicy
from jobsvc.worker.pgstore import PostgresSession
from tests.helpers import advisory_locks, until

Conn = psycopg.Connection[dict[str, Any]]

TYPES_SQL = """
SELECT %(n)s::bigint AS n, %(text)s::text AS text, %(ids)s::bigint[] AS ids,
       %(id)s::uuid AS id, 1.5::numeric AS num, 2.5::float8 AS f,
       '2026-11-30 12:00:00+00'::timestamptz AS at, NULL::text AS nothing,
       '{"a": [1, 2]}'::jsonb AS doc, 'Queued'::text = %(text)s AS same
"""


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[db.Session]:
    session = await db.Session.connect(database_url, application_name="jobsvc-pgtrio-test")
    try:
        yield session
    finally:
        await session.close()


def one(statement: pgtrio.Statement) -> pgtrio.Plan[list[Any]]:
    rows = yield statement
    return rows


def types_statement(binary: bool) -> pgtrio.Statement:
    params = {"n": 2**40, "text": "Queued", "ids": [1, 2, 3], "id": uuid.UUID(int=7)}
    return pgtrio.Statement(TYPES_SQL, params, dict_row, binary=binary)


@pytest.mark.parametrize("binary", [True, False])
async def test_rows_and_types_equal_the_thread_path(session: db.Session, binary: bool) -> None:
    from_trio = await session.run_plan(one(types_statement(binary)))
    from_thread = await session.run_statements(lambda c: pgtrio.run_sync(c, one(types_statement(binary))))
    assert from_trio == from_thread
    assert [{k: type(v) for k, v in row.items()} for row in from_trio] == [
        {k: type(v) for k, v in row.items()} for row in from_thread
    ]
    row = from_trio[0]
    assert row["n"] == 2**40 and row["ids"] == [1, 2, 3] and row["id"] == uuid.UUID(int=7)
    assert row["num"] == decimal.Decimal("1.5") and row["f"] == 2.5 and row["doc"] == {"a": [1, 2]}
    assert row["at"] == datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
    assert row["nothing"] is None and row["same"] is True


async def test_repeated_statements_are_prepared_and_still_answer(session: db.Session) -> None:
    # psycopg prepares a statement after a few executions (its prepare_threshold): the
    # trio path goes through the same cache, prepared and unprepared answers alike.
    answers = [await session.run_plan(one(types_statement(True))) for _ in range(8)]
    assert all(a == answers[0] for a in answers)


async def test_a_plan_of_several_statements_gets_each_ones_rows(session: db.Session) -> None:
    def plan() -> pgtrio.Plan[tuple[int, int]]:
        first = yield pgtrio.Statement("SELECT 40 + %(n)s AS n", {"n": 1}, tuple_row)
        second = yield pgtrio.Statement("SELECT %(n)s::int + 1 AS n", {"n": first[0][0]}, tuple_row)
        return first[0][0], second[0][0]

    assert await session.run_plan(plan()) == (41, 42)


async def test_a_command_gives_no_rows_on_either_path(session: db.Session) -> None:
    command = pgtrio.Statement("DO $$ BEGIN END $$", None, tuple_row, binary=False)
    assert await session.run_plan(one(command)) == []
    assert await session.run_statements(lambda c: pgtrio.run_sync(c, one(command))) == []


async def test_a_large_parameter_is_sent_whole(session: db.Session) -> None:
    # More than the socket's buffer: psycopg waits for writable-or-readable meanwhile.
    text = "x" * 20_000_000
    rows = await session.run_plan(one(pgtrio.Statement("SELECT length(%(t)s) AS n", {"t": text}, dict_row)))
    assert rows == [{"n": 20_000_000}]


async def test_an_sql_error_is_raised_as_the_thread_path_raises_it_and_the_session_goes_on(
    session: db.Session,
) -> None:
    bad = pgtrio.Statement("SELECT 1 / %(zero)s AS n", {"zero": 0}, dict_row)
    with pytest.raises(psycopg.errors.DivisionByZero) as from_thread:
        await session.run_statements(lambda c: pgtrio.run_sync(c, one(bad)))
    with pytest.raises(psycopg.errors.DivisionByZero) as from_trio:
        await session.run_plan(one(bad))
    assert from_trio.value.sqlstate == from_thread.value.sqlstate == "22012"
    assert not session.broken
    assert await session.run_plan(one(pgtrio.Statement("SELECT 1 AS n", None, dict_row))) == [{"n": 1}]


async def test_a_terminated_backend_is_database_unavailable_and_breaks_the_session(
    session: db.Session, conn: Conn
) -> None:
    pid = session.backend_pid
    assert conn.execute("SELECT pg_terminate_backend(%s) AS done", [pid]).fetchone() == {"done": True}
    await until(
        lambda: (
            conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            == {"n": 0}
        ),
        thread=True,
    )
    with pytest.raises(DatabaseUnavailable, match="lost the worker's session"):
        await session.run_plan(one(pgtrio.Statement("SELECT 1 AS n", None, dict_row)))
    assert session.broken
    with pytest.raises(DatabaseUnavailable, match="broken"):
        await session.run_plan(one(pgtrio.Statement("SELECT 1 AS n", None, dict_row)))


async def test_a_cancelled_caller_waits_for_its_statement_whose_effect_stays(
    session: db.Session, conn: Conn
) -> None:
    conn.execute("CREATE TABLE pgtrio_probe (n int)")
    slow = pgtrio.Statement(
        "INSERT INTO pgtrio_probe SELECT %(n)s FROM pg_sleep(0.3) RETURNING n", {"n": 1}, tuple_row
    )
    started = trio.current_time()
    answer = None
    with trio.move_on_after(0.05) as scope:
        answer = await session.run_plan(one(slow))
        await trio.lowlevel.checkpoint()  # where the cancellation is seen
    # The cancel came mid-statement: the statement still ran to its end and its answer
    # came back, as from a thread hop, and the connection is not left mid-protocol.
    assert scope.cancelled_caught and answer == [(1,)]
    assert trio.current_time() - started >= 0.3
    assert conn.execute("SELECT n FROM pgtrio_probe").fetchall() == [{"n": 1}]
    assert not session.broken
    assert await session.run_plan(one(pgtrio.Statement("SELECT 2 AS n", None, dict_row))) == [{"n": 2}]


async def test_a_caller_cancelled_before_it_starts_sends_nothing(session: db.Session, conn: Conn) -> None:
    conn.execute("CREATE TABLE pgtrio_probe (n int)")
    insert = pgtrio.Statement("INSERT INTO pgtrio_probe VALUES (%(n)s) RETURNING n", {"n": 1}, tuple_row)
    with trio.CancelScope() as scope:
        scope.cancel()
        await session.run_plan(one(insert))
    assert scope.cancelled_caught
    assert conn.execute("SELECT n FROM pgtrio_probe").fetchall() == []
    assert await session.run_plan(one(insert)) == [(1,)]


async def test_the_workers_cycle_from_trio_claims_locks_records_and_unlocks(
    database_url: str, conn: Conn, session: db.Session
) -> None:
    ids = [
        queue.enqueue(conn, NewResult(uuid.uuid4(), f"{i}.png", "ingest", f"http://images.test/{i}.png"))[
            0
        ].id
        for i in range(3)
    ]
    worker = PostgresSession(session, "w1")
    policy = RetryPolicy()
    written, claimed, next_due = await worker.finish_and_claim([], policy, 2)
    assert written == [] and [j.id for j in claimed] == ids[:2] and next_due is None
    assert all(j.status is Status.PROCESSING and j.worker_id == "w1" for j in claimed)
    assert advisory_locks(database_url) == set(ids[:2])
    outcomes = [Outcome(ids[0], "completed"), Outcome(ids[1], "failed", "not an image")]
    written, claimed, next_due = await worker.finish_and_claim(outcomes, policy, 2)
    assert [(j.id, j.status) for j in written] == [(ids[0], Status.COMPLETED), (ids[1], Status.FAILED)]
    assert [j.id for j in claimed] == ids[2:] and next_due is None
    assert advisory_locks(database_url) == {ids[2]}
