"""(5b) Batch enqueue over HTTP against single enqueues, in the same run.

One ``jobsvc api`` process (probe off, no worker), load from another process with
the raw HTTP/1.1 client (bench/http_load.py): single ``POST /results/enqueue``
(32 in flight, as the ``http`` benchmark), then ``POST /results/batch`` of
`BATCH` new jobs each (`CONCURRENCY` batches in flight). Jobs per second through
the API process, every item checked 202 and every row in the table; the batch's
latency and the API's CPU time per job (from /proc).
"""

from __future__ import annotations

from bench import cancel, http_enqueue
from bench.context import Context

NAME = "batch"
BATCH = 1000
CONCURRENCY = 4
BATCHES = 40
WARMUP = 4
SINGLES = 5_000


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"1 `jobsvc api` process, probe off, no worker; raw HTTP/1.1 client in another process: "
        f"{SINGLES:,} single enqueues ({http_enqueue.CONCURRENCY} in flight, after {http_enqueue.WARMUP} "
        f"warm-up), then {BATCHES} batches of {BATCH:,} ({CONCURRENCY} in flight, after {WARMUP} warm-up), "
        "each in a fresh database"
    )
    images, port = cancel.start_images(ctx)
    try:
        for i in range(ctx.runs):
            ctx.say(f"batch run {i + 1}/{ctx.runs}")
            single = http_enqueue.once(ctx, port, False, "raw", total=SINGLES)
            label = "api, single enqueues"
            ctx.results.add(NAME, label, "throughput", "jobs/s", single["jobs_per_s"])
            ctx.results.add(NAME, label, "api CPU per job", "ms", single["cpu_ms_per_job"])
            batched = http_enqueue.once(
                ctx,
                port,
                False,
                "raw",
                batch=BATCH,
                total=BATCHES,
                warmup=WARMUP,
                concurrency=CONCURRENCY,
            )
            label = f"api, batches of {BATCH:,}"
            ctx.results.add(NAME, label, "throughput", "jobs/s", batched["jobs_per_s"])
            ctx.results.add(NAME, label, "p50 per batch", "ms", batched["p50_ms"])
            ctx.results.add(NAME, label, "api CPU per job", "ms", batched["cpu_ms_per_job"])
    finally:
        images.stop()
