"""`jobsvc.db.Database` against a real PostgreSQL: what its pool hands out works."""

from __future__ import annotations

from typing import Any

import psycopg

from jobsvc.db import Database
from tests.helpers import until

STILL_THERE = "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)"


async def test_the_first_transaction_after_its_backends_are_terminated_succeeds(
    database_url: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    # The pool's checkout check makes a round trip only when the idle socket is
    # readable; a terminated backend's FATAL message must still make the pool
    # replace the connection instead of handing it to a request (a 503).
    database = Database(database_url, max_size=2, timeout=5.0, application_name="jobsvc-db-test")
    await database.open()
    try:
        for _ in range(3):
            assert await database.run(lambda c: c.execute("SELECT 1 AS one").fetchone()) == {"one": 1}
            rows = conn.execute(
                "SELECT pid, pg_terminate_backend(pid) AS signalled FROM pg_stat_activity"
                " WHERE application_name = 'jobsvc-db-test' AND datname = current_database()"
            ).fetchall()
            pids = [row["pid"] for row in rows if row["signalled"]]
            assert pids
            # pg_terminate_backend only signals: wait until those backends are gone. Only
            # those: the pool may already be opening a replacement in the background.
            await until(
                lambda pids=pids: conn.execute(STILL_THERE, [pids]).fetchone() == {"n": 0},
                timeout=5,
                thread=True,
            )
    finally:
        await database.close()
