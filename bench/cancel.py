"""(4) Cancel latency: jobs in the middle of a slow download are canceled one by one.

A ``jobsvc worker`` (the real image pipeline, file storage) downloads from the
local image server's drip route, which never finishes on its own. For each job:
``queue.cancel`` commits (as ``POST /results/{jobId}/cancel`` does), then the
harness polls until the row is ``Canceled`` *and* its advisory lock is gone.
Latency is wall-clock from before the cancel to that observation (poll every 1 ms).
"""

from __future__ import annotations

import time
import uuid

from bench import jobs
from bench.context import SETTLE, Context
from bench.pg import Conn, connect
from bench.procs import Child, clean_env
from bench.report import percentile
from jobsvc import queue

NAME = "cancel"
COUNT = 30
POLL = 0.001

STATE_SQL = """
SELECT status,
       EXISTS (SELECT FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.objsubid = 1
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = %(id)s) AS locked
FROM jobsvc_results WHERE id = %(id)s
"""


def start_images(ctx: Context) -> tuple[Child, int]:
    server = ctx.children.python("images", "bench.images", env=clean_env())
    port = int(server.wait_for("bench-images listening").split()[-1])
    return server, port


def start_worker(ctx: Context, url: str, storage_url: str, concurrency: int, **env: str) -> Child:
    environ = clean_env(
        JOBSVC_DATABASE_URL=url,
        JOBSVC_STORAGE_URL=storage_url,
        JOBSVC_ALLOW_PRIVATE_URLS="true",
        JOBSVC_CONCURRENCY=str(concurrency),
        **env,
    )
    worker = ctx.children.python("jobsvc-worker", "jobsvc.cli", "worker", env=environ)
    worker.wait_for("jobsvc worker:")
    time.sleep(SETTLE)
    return worker


def cancel_once(ctx: Context, port: int) -> list[float]:
    latencies = []
    with ctx.pg.database("cancel") as url:
        worker = start_worker(ctx, url, f"file://{ctx.workdir / 'cancel-results'}", COUNT)
        try:
            with connect(url) as conn:
                rows = []
                for i in range(COUNT):
                    new = queue.NewResult(
                        job_id=uuid.uuid4(),
                        result_file=f"s{i}.png",
                        type="ingest",
                        img_url=f"http://127.0.0.1:{port}/slow/s{i}.png",
                    )
                    job, _ = queue.enqueue(conn, new)
                    rows.append(job)
                queue.announce(conn, [j.id for j in rows], wakeup=True)
                wait_processing(conn, COUNT)
                time.sleep(0.3)  # let every download get going
                for job in rows:
                    started = time.perf_counter()
                    with conn.transaction():
                        queue.cancel(conn, job.job_id)
                    latencies.append(wait_canceled(conn, job.id, started))
            jobs.wait_finished(url, 10)
        finally:
            worker.stop()
    return latencies


def wait_processing(conn: Conn, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) AS n FROM jobsvc_results WHERE status = 'Processing'").fetchone()
        if row is not None and row["n"] == n:
            return
        time.sleep(0.02)
    raise TimeoutError(f"fewer than {n} jobs Processing after {timeout:.0f}s")


def wait_canceled(conn: Conn, row_id: int, started: float, timeout: float = 10.0) -> float:
    deadline = started + timeout
    while time.perf_counter() < deadline:
        row = conn.execute(STATE_SQL, {"id": row_id}).fetchone()
        if row is None:
            raise RuntimeError(f"row {row_id} disappeared")
        if row["status"] == "Canceled" and not row["locked"]:
            return (time.perf_counter() - started) * 1000
        if row["status"] not in ("Processing", "Canceled"):
            raise RuntimeError(f"row {row_id} ended {row['status']}, not Canceled")
        time.sleep(POLL)
    raise TimeoutError(f"row {row_id} not Canceled and unlocked after {timeout:.0f}s")


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"{COUNT} jobs downloading from a drip route (1 byte / 20 ms), worker concurrency {COUNT}, "
        "file storage; canceled one at a time; until Canceled and advisory lock released"
    )
    images, port = start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"cancel run {i + 1}/{ctx.runs}")
            values = cancel_once(ctx, port)
            for p in (50, 95):
                ctx.results.add(NAME, "jobsvc", f"p{p}", "ms", percentile(values, p))
            ctx.say(f"  p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms")
    finally:
        images.stop()
