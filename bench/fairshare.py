"""(9) Fair share: the round-robin claim against the single-queue claim it replaced (DESIGN §8).

For 1, 10 and 1,000 tenants: QUEUED due rows spread evenly over the tenants (one
``INSERT … SELECT``, then ``VACUUM ANALYZE``), on top of FINISHED finished rows
(the table a claim usually runs on). Then one connection claims BATCH rows per
transaction until the queue is empty, as a worker with BATCH free slots does;
rows per second over the whole drain, and the median claim in ms. Each run
measures both statements on fresh, identically filled databases, in turn (which
goes first alternates). The claims' session advisory locks are released after
each transaction (not timed), as the finisher does.

- ``fair share``: `queue.claim` (`jobsvc.queries.CLAIM_SQL`), with a `TenantRing`;
- ``single queue``: `SINGLE_QUEUE_CLAIM_SQL` below, the statement before version 3
  (one ``ORDER BY priority DESC, run_at, id`` over every tenant), on its database
  with the index it walked (`SINGLE_QUEUE_INDEX_SQL`: schema version 4 dropped it).

Then the quota's cost on enqueue: THREADS connections enqueueing ENQUEUES each at
once for one tenant, with ``max_queued`` 0 (no quota: no lock, no count) and with
the default cap (every enqueue of the tenant takes its lock and counts).
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from bench import jobs
from bench.context import Context
from bench.pg import connect
from jobsvc import queue

NAME = "fairshare"
TENANTS = (1, 10, 1000)
QUEUED = 20_000
FINISHED = 200_000
BATCH = 16
THREADS = 4
ENQUEUES = 1500
CAP = 100_000

# The claim before fair share (schema version 2), kept for comparison.
SINGLE_QUEUE_CLAIM_SQL = """
WITH picked AS MATERIALIZED (
    SELECT id FROM jobsvc_results
    WHERE status = 'Queued' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobsvc_results r
SET status = 'Processing', attempts = r.attempts + 1, started_at = now(), updated_at = now(),
    worker_id = %(worker_id)s, error = NULL
FROM picked
WHERE r.id = picked.id
RETURNING r.*, pg_advisory_lock(r.id)::text AS locked
"""

# The index the single-queue claim walks in its ORDER BY, as schema versions 1-3 had it
# (version 4 dropped it: no jobsvc statement uses it since the fair-share claim).
SINGLE_QUEUE_INDEX_SQL = """
CREATE INDEX jobsvc_results_claim_idx
    ON jobsvc_results (priority DESC, run_at, id) WHERE status = 'Queued'
"""

FILL_SQL = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url, status, tenant, run_at, finished_at)
SELECT gen_random_uuid(), 'r' || g || '.png', 'ingest', 'http://images.test/r' || g || '.png',
       CASE WHEN g <= %(finished)s THEN 'Completed' ELSE 'Queued' END,
       't' || (g %% %(tenants)s), now() - make_interval(secs => 3600 - g * 0.001),
       CASE WHEN g <= %(finished)s THEN now() END
FROM generate_series(1, %(finished)s + %(queued)s) AS g
"""


def fill(url: str, tenants: int, fair: bool) -> None:
    with connect(url) as conn:
        if not fair:
            conn.execute(SINGLE_QUEUE_INDEX_SQL)
        conn.execute(FILL_SQL, {"finished": FINISHED, "queued": QUEUED, "tenants": tenants})
        conn.execute("VACUUM ANALYZE jobsvc_results")
        conn.execute("CHECKPOINT")


def drain(url: str, fair: bool) -> tuple[float, float]:
    """Claim every Queued row, BATCH per transaction: (rows/s, median ms per claim)."""
    ring = queue.TenantRing()
    times: list[float] = []
    claimed = 0
    with connect(url) as conn:
        while True:
            start = time.perf_counter()
            with conn.transaction():
                if fair:
                    n = len(queue.claim(conn, "bench", BATCH, ring)[0])
                else:
                    params = {"limit": BATCH, "worker_id": "bench"}
                    n = len(conn.execute(SINGLE_QUEUE_CLAIM_SQL, params).fetchall())
            times.append(time.perf_counter() - start)
            conn.execute("SELECT pg_advisory_unlock_all()")
            if n == 0:
                break
            claimed += n
    if claimed != QUEUED:
        raise RuntimeError(f"claimed {claimed} rows, expected {QUEUED}")
    return claimed / sum(times), statistics.median(times) * 1000


def enqueue_rate(url: str, max_queued: int) -> float:
    """Rows per second with THREADS connections enqueueing ENQUEUES each, one tenant."""

    def one(conn: Any, n: int, i: int) -> None:
        new = queue.NewResult(uuid.uuid4(), f"q{n}-{i}.png", "ingest", f"http://h/q{n}-{i}.png", tenant="one")
        with conn.transaction():
            queue.enqueue(conn, new, max_queued=max_queued)

    return jobs.concurrent_rate(url, THREADS, ENQUEUES, one)


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"{QUEUED:,} due rows over 1/10/1,000 tenants on {FINISHED:,} finished rows, claimed "
        f"{BATCH} per transaction by one connection; fair-share vs single-queue claim in turn; "
        f"quota: {THREADS} connections x {ENQUEUES} enqueues of one tenant"
    )
    for i in range(ctx.runs):
        ctx.say(f"fairshare run {i + 1}/{ctx.runs}")
        for tenants in TENANTS:
            order = [True, False] if (i + tenants) % 2 == 0 else [False, True]
            for fair in order:
                label = "fair-share claim" if fair else "single-queue claim"
                with ctx.pg.database("fairshare") as url:
                    fill(url, tenants, fair)
                    rate, median = drain(url, fair)
                case = f"{tenants:,} tenant{'s' if tenants > 1 else ''}"
                ctx.results.add(NAME, label, case, "rows/s", rate)
                ctx.results.add(NAME, f"{label}, median claim of {BATCH}", case, "ms", median)
                ctx.say(f"  {label}, {case}: {rate:,.0f} rows/s, median claim {median:.2f} ms")
        for cap in (0, CAP) if i % 2 == 0 else (CAP, 0):
            with ctx.pg.database("fairshare_quota") as url:
                rate = enqueue_rate(url, cap)
            label = "enqueue, no quota" if cap == 0 else f"enqueue, quota {CAP:,}"
            ctx.results.add(NAME, label, f"{THREADS} connections, 1 tenant", "jobs/s", rate)
            ctx.say(f"  {label}: {rate:,.0f} jobs/s")
