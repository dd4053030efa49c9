"""The plans of ``GET /results/list`` on a million rows: ``python -m bench.list_plans URL``.

Creates a database next to URL's (a superuser URI), migrates it, fills it with
1,000,000 results over 30 days (90 % Completed, 4 % Failed, 2 % Canceled, 3 %
Queued, 1 % Processing; types ingest 80 %, thumb 15 %, rare 5 %; one row in seven of
tenant ``acme``, the others ``default``), ANALYZEs it, then prints ``EXPLAIN (ANALYZE,
BUFFERS)`` of the statement `jobsvc.queue.list_jobs` sends for each main filter
combination (first page of 101 rows, and a page deep into the keyset), planned with
the parameters' values; then of the other statements that must stay on an index
whatever the table holds (the rescuer's, the claim's, /metrics', the cleaner's), each
in a transaction rolled back. Drops the database at the end.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from jobsvc import queries, queue
from jobsvc.model import Status

ROWS = 1_000_000
FILL_SQL = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url, status, created_at, updated_at, run_at,
                            finished_at, tenant)
SELECT gen_random_uuid(), 'r.png',
       CASE WHEN i %% 20 < 16 THEN 'ingest' WHEN i %% 20 < 19 THEN 'thumb' ELSE 'rare' END,
       'http://h.test/' || i || '/r.png',
       CASE WHEN i %% 100 < 90 THEN 'Completed' WHEN i %% 100 < 94 THEN 'Failed'
            WHEN i %% 100 < 96 THEN 'Canceled' WHEN i %% 100 < 99 THEN 'Queued' ELSE 'Processing' END,
       %(start)s::timestamptz + (i * interval '30 days' / %(rows)s::int), now(), now(),
       CASE WHEN i %% 100 < 96 THEN %(start)s::timestamptz + (i * interval '30 days' / %(rows)s::int) END,
       CASE WHEN i %% 7 = 0 THEN 'acme' ELSE 'default' END
FROM generate_series(1, %(rows)s) AS i
"""
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def cases(conn: psycopg.Connection[dict[str, Any]]) -> list[tuple[str, queue.ListFilter, bool]]:
    some_job = conn.execute("SELECT job_id FROM jobsvc_results WHERE id = 500000").fetchone()
    assert some_job is not None
    f = queue.ListFilter
    failed, canceled = Status.FAILED, Status.CANCELED
    running = (Status.QUEUED, Status.PROCESSING)
    day = {"created_from": START + 10 * DAY, "created_before": START + 11 * DAY}
    return [
        ("no filter, oldest first", f(), False),
        ("no filter, newest first, deep page", f(order="desc"), True),
        ("status=Failed", f(statuses=(failed,)), False),
        ("status=Failed,Canceled, desc, deep page", f(statuses=(failed, canceled), order="desc"), True),
        ("type=thumb", f(type="thumb"), False),
        ("type=rare&status=Queued,Processing, desc", f(type="rare", statuses=running, order="desc"), False),
        ("createdAfter/createdBefore (one day)", f(**day), False),  # type: ignore[arg-type]
        ("status=Failed + one day, desc", f(statuses=(failed,), order="desc", **day), False),  # type: ignore[arg-type]
        ("type=thumb + createdAfter", f(type="thumb", created_from=START + 29 * DAY), False),
        ("jobId + status", f(job_id=some_job["job_id"], statuses=(Status.COMPLETED, failed)), False),
        ("tenant=acme", f(tenant="acme"), False),
        ("tenant=acme, newest first, deep page", f(tenant="acme", order="desc"), True),
        ("tenant=acme&status=Failed", f(tenant="acme", statuses=(failed,)), False),
        ("tenant=acme&type=rare", f(tenant="acme", type="rare"), False),
    ]


# The statements besides the list that must stay on an index (params by name).
OTHERS: list[tuple[str, str, dict[str, Any]]] = [
    ("rescuer (RESCUE_LOCK_SQL)", queries.RESCUE_LOCK_SQL, {}),
    (
        "claim of 64 (CLAIM_SQL)",
        queries.CLAIM_SQL,
        {"limit": 64, "tenants": 96, "after": "", "worker_id": "plans"},
    ),
    ("next due (NEXT_DUE_SQL)", queries.NEXT_DUE_SQL, {}),
    ("/metrics queue age (QUEUE_AGE_SQL)", queries.QUEUE_AGE_SQL, {"tenant": None}),
    ("/metrics queue age of a tenant (QUEUE_AGE_SQL)", queries.QUEUE_AGE_SQL, {"tenant": "acme"}),
    ("/metrics and /results/stats counts (COUNTS_SQL)", queries.COUNTS_SQL, {"tenant": None}),
    (
        "cleaner (CLEAN_SQL)",
        queries.CLEAN_SQL,
        {"statuses": ["Completed", "Failed", "Canceled"], "older_than": 7 * 86400, "limit": 1000},
    ),
]


def main() -> None:
    url = sys.argv[1]
    name = f"jobsvc_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        target = psycopg.conninfo.make_conninfo(url, dbname=name)
        with psycopg.connect(target, row_factory=dict_row, autocommit=True) as conn:
            with conn.transaction():
                queue.migrate(conn, queue.load_schema())
            conn.execute("ALTER TABLE jobsvc_results DISABLE TRIGGER jobsvc_results_announce")
            conn.execute(FILL_SQL, {"start": START, "rows": ROWS})
            conn.execute("VACUUM ANALYZE jobsvc_results")
            version = conn.execute("SHOW server_version").fetchone()
            print(f"PostgreSQL {version and version['server_version']}, {ROWS:,} rows\n")
            for title, where, deep in cases(conn):
                after = None
                if deep:  # the cursor of a page 500 pages in
                    rows = queue.list_jobs(conn, where, after=None, limit=50_000)
                    after = queue.ListCursor.of(rows[-1]) if rows else None
                explain(conn, title, where, after)
            for title, statement, params in OTHERS:
                explain_other(conn, title, statement, params)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


Conn = psycopg.Connection[dict[str, Any]]


def explain(conn: Conn, title: str, where: queue.ListFilter, after: Any) -> None:
    captured: list[tuple[Any, Any]] = []

    class Capture:
        def execute(self, statement: Any, params: Any) -> list[Any]:
            captured.append((statement, params))
            return []

    queue.list_jobs(Capture(), where, after=after, limit=101)  # type: ignore[arg-type]
    statement, params = captured[0]
    explained = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}").format(statement)
    plan = conn.execute(explained, params).fetchall()
    print(f"-- {title}")
    for row in plan:
        print(row["QUERY PLAN"])
    print()


def explain_other(conn: Conn, title: str, statement: str, params: dict[str, Any]) -> None:
    """EXPLAIN ANALYZE of ``statement`` in a transaction rolled back (its row locks and
    writes undone; the session advisory locks a claim takes released)."""
    with conn.transaction(force_rollback=True):
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params).fetchall()
    conn.execute("SELECT pg_advisory_unlock_all()")
    print(f"-- {title}")
    for row in plan:
        print(row["QUERY PLAN"])
    print()


if __name__ == "__main__":
    main()
