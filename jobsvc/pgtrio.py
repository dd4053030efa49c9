"""Statements sent from the trio thread: psycopg's non-blocking protocol under
`trio.lowlevel.wait_readable` / `wait_writable`, with no thread hop (issue 14, round 4).

A `trio.to_thread.run_sync` hop costs a futex wake-up of a cached thread each way
(milliseconds on a loaded 2-core machine) and the thread's CPU contends for the GIL.
The hot paths (the worker's claim and cycle, the API's lone enqueue) are a few short
statements on a connection nobody else uses at that moment, so they can be sent and
read from the trio thread, as `listening.Listener` already reads its notifications.

A unit of work is written once as a `Plan`: a generator that yields each `Statement`
and receives its rows. `run_sync` runs a plan on a connection from a thread (the
thread path, unchanged for every other caller); `run` runs it from the trio thread.
Both send the same statements through the same psycopg cursor, so the rows, their
types, psycopg's automatic prepared statements and the errors raised are the same.

**psycopg internals, in this one place**: psycopg's public `pq.PGconn` has the
non-blocking calls, but turning ``%(name)s`` queries into ``$n`` ones, dumping the
parameters, preparing, and building an error from a result would copy most of
psycopg's cursor. Instead `run` drives the cursor's own generator
(``Cursor._execute_gen``), the one psycopg's blocking ``Cursor.execute`` hands to
``Connection.wait``, and answers its ``Wait`` requests with trio's waits. That
generator is internal: pyproject.toml pins psycopg to one version, and
tests/integration/test_pgtrio.py checks the rows, the types and the errors against
the thread path's.

Cancellation: a statement in flight is never abandoned (the shield), as a thread hop
cannot be; a cancelled caller sees the cancellation at its next checkpoint, after
the plan's statements have run. A plan is not started once its caller is cancelled.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import trio
from psycopg.abc import PQGen
from psycopg.rows import RowFactory
from psycopg.waiting import Ready, Wait

__all__ = ["Plan", "Statement", "run", "run_sync"]

T = TypeVar("T")
RV = TypeVar("RV")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a plan: its SQL (from jobsvc.queries), its parameters, how its
    rows are made, and whether results come back in binary. A plan receives its rows
    (none for a command)."""

    sql: str
    params: Mapping[str, Any] | None
    row_factory: RowFactory[Any]
    binary: bool = True


#: A unit of work: yields its statements, receives each one's rows, returns its answer.
Plan = Generator[Statement, list[Any], T]


def run_sync(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    """Run ``plan`` with psycopg's blocking calls (from a thread)."""
    try:
        statement = next(plan)
        while True:
            with conn.cursor(row_factory=statement.row_factory, binary=statement.binary) as cursor:
                cursor.execute(statement.sql, statement.params)
                rows = cursor.fetchall() if cursor.description is not None else []
            statement = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


async def run(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    """Run ``plan`` from the trio thread. The caller serialises the connection's users
    (`db.Session`'s lock); psycopg's errors are raised as the thread path raises them."""
    await trio.lowlevel.checkpoint_if_cancelled()
    with trio.CancelScope(shield=True):
        result = await _run_shielded(conn, plan)
    return result


@trio.lowlevel.enable_ki_protection
async def _run_shielded(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    # Ctrl-C is delivered after the plan, not between a statement's send and its result.
    # conn.lock is psycopg's guard against threads sharing the connection; the caller's
    # trio lock already excludes our own users, so taking it never waits.
    if not conn.lock.acquire(blocking=False):
        raise RuntimeError("the connection is in use by a thread")
    try:
        statement = next(plan)
        while True:
            with conn.cursor(row_factory=statement.row_factory, binary=statement.binary) as cursor:
                await _wait(
                    cursor._execute_gen(statement.sql, statement.params, binary=statement.binary),
                    conn.pgconn.socket,
                )
                # The results are already in: no I/O. A command has no rows.
                rows = cursor.fetchall() if cursor.description is not None else []
            statement = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        conn.lock.release()


async def _wait(gen: PQGen[RV], fd: int) -> RV:
    """psycopg's ``waiting.wait`` with trio's waits: run ``gen``, answering each ``Wait``
    with the socket's readiness once trio reports it."""
    try:
        wait = next(gen)
        while True:
            if wait == Wait.R:
                await trio.lowlevel.wait_readable(fd)
                ready = Ready.R
            elif wait == Wait.W:
                await trio.lowlevel.wait_writable(fd)
                ready = Ready.W
            else:
                ready = await _wait_either(fd)
            wait = gen.send(ready)
    except StopIteration as done:
        value: RV = done.value
        return value


async def _wait_either(fd: int) -> Ready:
    """Readable or writable, whichever comes first: psycopg asks for both while a send
    does not fit in the socket (it reads meanwhile, so that neither end blocks). A few
    hundred bytes of parameters always fit: this path is for large sends."""
    ready = 0
    async with trio.open_nursery() as nursery:

        async def readable() -> None:
            nonlocal ready
            await trio.lowlevel.wait_readable(fd)
            ready |= Ready.R
            nursery.cancel_scope.cancel()

        async def writable() -> None:
            nonlocal ready
            await trio.lowlevel.wait_writable(fd)
            ready |= Ready.W
            nursery.cancel_scope.cancel()

        nursery.start_soon(readable)
        nursery.start_soon(writable)
    return Ready(ready)
