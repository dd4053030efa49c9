"""The harness's side of the peer queues: install, enqueue, wait, verify, timings.

Every check reads the peer's own tables: procrastinate's ``procrastinate_jobs``
(status ``succeeded``) and ``procrastinate_events`` (``deferred``/``started``/
``succeeded`` times); pgqueuer's ``pgqueuer`` (a finished job is deleted) and
``pgqueuer_log`` (``queued``/``picked``/``successful`` times). Timestamps are the
database's ``now()`` as for jobsvc, so every system is measured the same way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.pg import connect

PROCRASTINATE = "procrastinate"
PGQUEUER = ("pgqueuer-psycopg", "pgqueuer-asyncpg")

_SPAN_SQL = {
    PROCRASTINATE: """
        SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded') AS completed,
               (SELECT count(*) FROM procrastinate_jobs) AS total,
               extract(epoch FROM (SELECT max(at) FROM procrastinate_events WHERE type = 'succeeded')
                                - (SELECT min(at) FROM procrastinate_events WHERE type = 'started'))::float8
                   AS seconds
    """,
    "pgqueuer": """
        SELECT (SELECT count(*) FROM pgqueuer_log WHERE status = 'successful') AS completed,
               (SELECT count(*) FROM pgqueuer_log WHERE status = 'queued') AS total,
               (SELECT count(*) FROM pgqueuer) AS left_in_queue,
               extract(epoch FROM (SELECT max(created) FROM pgqueuer_log WHERE status = 'successful')
                                - (SELECT min(created) FROM pgqueuer_log WHERE status = 'picked'))::float8
                   AS seconds
    """,
}

_UNFINISHED_SQL = {
    PROCRASTINATE: "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    "pgqueuer": "SELECT count(*) AS n FROM pgqueuer",
}

_PICKUP_SQL = {
    PROCRASTINATE: """
        SELECT extract(epoch FROM s.at - d.at)::float8 * 1000 AS ms
        FROM procrastinate_events d JOIN procrastinate_events s USING (job_id)
        WHERE d.type = 'deferred' AND s.type = 'started'
    """,
    "pgqueuer": """
        SELECT extract(epoch FROM p.created - q.created)::float8 * 1000 AS ms
        FROM pgqueuer_log q JOIN pgqueuer_log p USING (job_id)
        WHERE q.status = 'queued' AND p.status = 'picked'
    """,
}


def family(system: str) -> str:
    return "pgqueuer" if system in PGQUEUER else system


# --- procrastinate ------------------------------------------------------------------------


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=2))


async def _procrastinate(url: str, n: int, interval: float | None, install: bool) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        if install:
            await app.schema_manager.apply_schema_async()
        deferrer = app.configure_task("noop")
        if interval is None and n:
            # One statement, one transaction: workers see the whole queue at once.
            await deferrer.batch_defer_async(*({} for _ in range(n)))
        elif interval is not None:
            await _paced(n, interval, deferrer.defer_async)


# --- pgqueuer ----------------------------------------------------------------------------


async def _pgqueuer(url: str, n: int, interval: float | None, install: bool) -> None:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        queries = Queries(PsycopgDriver(conn))
        if install:
            await queries.install()
        if interval is None and n:
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        elif interval is not None:
            await _paced(n, interval, lambda: queries.enqueue("noop", None))
    finally:
        await conn.close()


async def _paced(n: int, interval: float, enqueue_one: Any) -> None:
    """One enqueue per ``interval`` seconds, on a fixed schedule (no drift)."""
    start = time.monotonic()
    for i in range(n):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await enqueue_one()


# --- public ------------------------------------------------------------------------------


def install(system: str, url: str) -> None:
    """Create the peer's schema in ``url``'s database."""
    run = _procrastinate if family(system) == PROCRASTINATE else _pgqueuer
    asyncio.run(run(url, 0, None, True))


def enqueue(system: str, url: str, n: int, interval: float | None = None) -> None:
    """``n`` no-op jobs: in batches (``interval`` None) or one at a time, ``interval`` s apart."""
    run = _procrastinate if family(system) == PROCRASTINATE else _pgqueuer
    asyncio.run(run(url, n, interval, False))


def wait_finished(system: str, url: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    with connect(url) as conn:
        while True:
            row = conn.execute(_UNFINISHED_SQL[family(system)]).fetchone()
            if row is not None and row["n"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{system}: {row['n'] if row else '?'} job(s) unfinished after {timeout:.0f}s"
                )
            time.sleep(interval)


def throughput(system: str, url: str, expected: int) -> float:
    """Jobs/s from the first pick to the last success; raises unless every job succeeded."""
    with connect(url) as conn:
        row = conn.execute(_SPAN_SQL[family(system)]).fetchone()
    assert row is not None
    if row["completed"] != expected or row["total"] != expected or row.get("left_in_queue", 0):
        raise RuntimeError(f"{system}: {row['completed']} of {row['total']} succeeded, expected {expected}")
    return float(expected / row["seconds"])


def pickup_ms(system: str, url: str) -> list[float]:
    with connect(url) as conn:
        return [float(r["ms"]) for r in conn.execute(_PICKUP_SQL[family(system)])]
