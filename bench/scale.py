"""(8) Scale: the hot operations on an empty table and on a million finished rows (DESIGN §9).

Two fresh databases per run: "empty" (the schema only) and "full" (1,000,000
finished rows inserted in one ``INSERT … SELECT generate_series``, then ``VACUUM
ANALYZE``, as autovacuum would leave a table that size, and a ``CHECKPOINT`` so that
the load's own writes are not what gets measured). On both, the same sequence, every
call timed on its own (ms, client side), the two databases call by call in turn:

- ``enqueue``: `queue.enqueue`, autocommit (one commit each), REPS new jobs;
- ``claim``: `queue.claim` of one row in its own transaction (REPS Queued rows wait);
- ``list first page``: `queue.list_jobs` (100 rows, oldest first), and ``order=desc``;
- ``get by jobId``: `queue.get_job` of one of the enqueued jobs;
- ``metrics``: `Metrics.update_from_db` (counts per status from the counter deltas,
  queue depth and age), and the same with an exact ``count(*) … GROUP BY status``
  for comparison (what /metrics did before the counters).

Each row is the median of REPS calls; the ratio rows are full / empty (the target:
at most 2). Then the enqueue throughput the counter triggers cost: THREADS
connections enqueueing ENQUEUES each at once, on a fresh database with the counter
triggers, without them, and with the rejected alternative (one counter row per
status, ``INSERT … ON CONFLICT DO UPDATE``: every enqueue updates the same row).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Literal

from bench import jobs
from bench.context import Context
from bench.pg import Conn, connect
from jobsvc import queue
from jobsvc.metrics import Metrics

NAME = "scale"
FULL_ROWS = 1_000_000
REPS = 200
THREADS = 4
ENQUEUES = 1500

FILL_SQL = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url, status, attempts, created_at,
                            updated_at, started_at, finished_at)
SELECT gen_random_uuid(), 'r' || g || '.png', 'ingest', 'http://images.test/r' || g || '.png',
       (ARRAY['Completed', 'Completed', 'Completed', 'Failed', 'Canceled'])[1 + g %% 5], 1,
       now() - make_interval(secs => g * 0.5), now() - make_interval(secs => g * 0.5 - 1),
       now() - make_interval(secs => g * 0.5 - 0.5), now() - make_interval(secs => g * 0.5 - 1)
FROM generate_series(1, %(rows)s) AS g
"""

# The alternative the counter deltas replace: one row per status, updated in place.
HOT_ROW_SQL = """
ALTER TABLE jobsvc_results DISABLE TRIGGER jobsvc_results_count_insert;
CREATE TABLE hot_counts (status text PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION hot_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hot_counts SELECT status, count(*) FROM new_rows GROUP BY status
    ON CONFLICT (status) DO UPDATE SET n = hot_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE TRIGGER hot_count AFTER INSERT ON jobsvc_results REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hot_count();
"""
NO_COUNTERS_SQL = "ALTER TABLE jobsvc_results DISABLE TRIGGER jobsvc_results_count_insert"


def _new(tag: str, i: int) -> queue.NewResult:
    return queue.NewResult(
        job_id=uuid.uuid4(),
        result_file=f"{tag}{i}.png",
        type="ingest",
        img_url=f"http://127.0.0.1:9/{tag}{i}.png",
    )


class Target:
    """One database under test: a client connection, and a worker connection (the claims'
    advisory locks stay on it until the end)."""

    def __init__(self, url: str) -> None:
        self.conn = connect(url)
        self.worker = connect(url)
        self.job_ids: list[uuid.UUID] = []
        self.times: dict[str, list[float]] = {}

    def close(self) -> None:
        self.conn.close()
        self.worker.close()


def _enqueue(t: Target, i: int) -> object:
    job, _ = queue.enqueue(t.conn, _new("e", i))
    t.job_ids.append(job.job_id)
    return job


def _list(order: Literal["asc", "desc"]) -> Callable[[Target, int], object]:
    where = queue.ListFilter(order=order)
    return lambda t, i: queue.list_jobs(t.conn, where, after=None, limit=100)


#: The operations in the order they run; each is called REPS times on each database.
OPS: list[tuple[str, Callable[[Target, int], object]]] = [
    ("enqueue", _enqueue),
    ("claim", lambda t, i: _claim_one(t.worker)),
    ("list first page", _list("asc")),
    ("list first page, desc", _list("desc")),
    ("get by jobId", lambda t, i: queue.get_job(t.conn, t.job_ids[i])),
    ("metrics", lambda t, i: Metrics().update_from_db(t.conn)),
    ("metrics, exact count(*)", lambda t, i: (queue.status_counts_exact(t.conn), queue.queue_age(t.conn))),
]


def measure(empty_url: str, full_url: str) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per operation on each database. The two are measured call by call in
    turn (which one goes first alternates), so that load from elsewhere on the machine
    (checkpoints, other processes) falls on both alike."""
    empty, full = Target(empty_url), Target(full_url)
    try:
        for op, fn in OPS:
            for i in range(REPS):
                for target in (empty, full) if i % 2 == 0 else (full, empty):
                    start = time.perf_counter()
                    fn(target, i)
                    target.times.setdefault(op, []).append((time.perf_counter() - start) * 1000)
    finally:
        empty.close()
        full.close()
    e, f = ({op: statistics.median(v) for op, v in t.times.items()} for t in (empty, full))
    return e, f


def _claim_one(conn: Conn) -> None:
    with conn.transaction():
        jobs, _ = queue.claim(conn, "bench-scale", 1)
    if len(jobs) != 1:
        raise RuntimeError("claim found no Queued row")


def fill(url: str, rows: int) -> float:
    start = time.monotonic()
    with connect(url) as conn:
        conn.execute(FILL_SQL, {"rows": rows})
        conn.execute("VACUUM ANALYZE jobsvc_results")
        conn.execute("VACUUM ANALYZE jobsvc_counts")
        conn.execute("CHECKPOINT")  # the load's dirty pages are written now, not while measuring
    return time.monotonic() - start


def enqueue_rate(url: str) -> float:
    """Rows per second with THREADS connections enqueueing ENQUEUES each at once."""
    return jobs.concurrent_rate(
        url, THREADS, ENQUEUES, lambda conn, n, i: queue.enqueue(conn, _new(f"t{n}-", i))
    )


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"{FULL_ROWS:,} finished rows (INSERT … SELECT, VACUUM ANALYZE, CHECKPOINT) vs an empty table, "
        f"measured call by call in turn; median of {REPS} calls per operation, client-side ms; "
        f"enqueue rate: {THREADS} connections x {ENQUEUES} enqueues (autocommit)"
    )
    for i in range(ctx.runs):
        ctx.say(f"scale run {i + 1}/{ctx.runs}: filling {FULL_ROWS:,} rows")
        with ctx.pg.database("scale_empty") as empty_url, ctx.pg.database("scale_full") as full_url:
            ctx.say(f"  filled, analyzed and checkpointed in {fill(full_url, FULL_ROWS):.1f} s")
            empty, full = measure(empty_url, full_url)
        for op in empty:
            ctx.results.add(NAME, op, "empty", "ms", empty[op])
            ctx.results.add(NAME, op, f"{FULL_ROWS // 1_000_000}M finished rows", "ms", full[op])
            ratio = full[op] / empty[op]
            ctx.results.add(NAME, op, "full / empty", "ratio", ratio)
            ctx.say(f"  {op}: {empty[op]:.3f} ms empty, {full[op]:.3f} ms full, ratio {ratio:.2f}")
        variants = [("counter deltas", None), ("no counters", NO_COUNTERS_SQL), ("hot row", HOT_ROW_SQL)]
        for label, setup in variants[i % 3 :] + variants[: i % 3]:  # each run starts with another
            with ctx.pg.database("scale_rate") as url:
                if setup is not None:
                    with connect(url) as conn:
                        conn.execute(setup.encode())
                rate = enqueue_rate(url)
            ctx.results.add(NAME, f"enqueue rate, {label}", f"{THREADS} connections", "jobs/s", rate)
            ctx.say(f"  enqueue rate, {label}: {rate:,.0f} jobs/s")
