"""The harness's side of jobsvc's table: bulk enqueue, wait until done, timings, checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bench.pg import connect
from jobsvc import queue

# Setup only (not measured): N Queued rows in one statement, as the API would have left them.
BULK_INSERT_SQL = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url)
SELECT gen_random_uuid(), %(prefix)s || i || %(suffix)s, %(type)s,
       %(base)s || %(prefix)s || i || %(suffix)s
FROM generate_series(1, %(n)s) AS i
"""

SPAN_SQL = """
SELECT count(*) FILTER (WHERE status = 'Completed') AS completed,
       count(*) AS total,
       extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds
FROM jobsvc_results
"""

UNFINISHED_SQL = "SELECT count(*) AS n FROM jobsvc_results WHERE finished_at IS NULL"


def bulk_enqueue(
    url: str,
    n: int,
    *,
    type: str = "noop",
    base: str = "http://127.0.0.1:9/",
    prefix: str = "job-",
    suffix: str = ".png",
    wake: bool = True,
) -> None:
    """Insert ``n`` Queued rows in one transaction, then one wake-up NOTIFY."""
    with connect(url) as conn:
        params = {"n": n, "type": type, "base": base, "prefix": prefix, "suffix": suffix}
        conn.execute(BULK_INSERT_SQL, params)
        conn.execute("VACUUM ANALYZE jobsvc_results")
        if wake:
            queue.announce(conn, [], wakeup=True)


def wait_finished(url: str, timeout: float, interval: float = 0.1) -> None:
    """Poll until no row is unfinished; raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with connect(url) as conn:
        while True:
            row = conn.execute(UNFINISHED_SQL).fetchone()
            if row is not None and row["n"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row['n'] if row else '?'} job(s) still unfinished after {timeout:.0f}s")
            time.sleep(interval)


def span(url: str) -> dict[str, Any]:
    """Completed count, total and seconds from the first claim to the last finish."""
    with connect(url) as conn:
        row = conn.execute(SPAN_SQL).fetchone()
        assert row is not None
        return dict(row)


def throughput(url: str, expected: int) -> float:
    """Jobs/s from first claim to last finish; raises when not every job Completed."""
    s = span(url)
    if s["completed"] != expected or s["total"] != expected:
        raise RuntimeError(f"jobsvc: {s['completed']} of {s['total']} Completed, expected {expected}")
    return float(expected / s["seconds"])


def concurrent_rate(url: str, threads: int, each: int, work: Callable[[Any, int, int], object]) -> float:
    """Calls per second of ``work(conn, thread, i)``, ``each`` calls on each of ``threads``
    connections started together (a barrier), timed from the start to the last join."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with connect(url) as conn:
                barrier.wait()
                for i in range(each):
                    work(conn, n, i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for th in started:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in started:
        th.join(timeout=300)
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return threads * each / elapsed
