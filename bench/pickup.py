"""(3) Pickup latency: an idle worker, jobs enqueued one at a time 10 ms apart.

jobsvc: each job goes in as a Python application puts it, with the library's
``jobsvc.enqueue``: on an autocommit connection (the row jobsvc), one statement that
is its own transaction, the insert and the wake-up NOTIFY delivered at its commit, as
the API writes a request alone and as the peers below enqueue (pgqueuer: one
statement on an autocommit connection); and in a transaction of its own (the row
"jobsvc, enqueue in a transaction": BEGIN, the statement, COMMIT, as an application
enqueuing beside its own rows does; until round 4 this was the jobsvc row); and
through one ``jobsvc api`` process. Latency is ``started_at - created_at`` (both the
database's clock; ``created_at`` is the enqueuing transaction's start).
The peers get the same pacing through their own enqueue calls, and are measured
from their own tables (deferred → started; queued → picked).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import uuid
from urllib.parse import urlsplit

import jobsvc
from bench import jobs, peers, throughput
from bench.context import SETTLE, Context
from bench.pg import connect
from bench.procs import clean_env
from bench.report import percentile

NAME = "pickup"
COUNT = 500
INTERVAL = 0.010
CONCURRENCY = 16
SYSTEMS = ("procrastinate", "pgqueuer-psycopg", "pgqueuer-asyncpg")

LATENCY_SQL = """
SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms
FROM jobsvc_results WHERE started_at IS NOT NULL
"""


def enqueue_paced(url: str, n: int, interval: float, *, transaction: bool = False) -> None:
    with connect(url) as conn:  # autocommit
        start = time.monotonic()
        for i in range(n):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with conn.transaction() if transaction else contextlib.nullcontext():
                # The row and its wake-up, delivered at the commit (the statement's own,
                # or the transaction's).
                jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url=f"http://127.0.0.1:9/p{i}.png", type="noop")


def post_paced(base: str, n: int, interval: float) -> None:
    """``POST /results/enqueue`` one at a time on one keep-alive connection, paced."""
    parts = urlsplit(base)
    client = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    start = time.monotonic()
    for i in range(n):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = json.dumps(
            {"jobId": str(uuid.uuid4()), "type": "noop", "imgUrl": f"http://127.0.0.1:9/p{i}.png"}
        )
        client.request("POST", "/results/enqueue", body, {"Content-Type": "application/json"})
        response = client.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeError(f"enqueue answered {response.status}")
        if response.getheader("Connection", "").lower() == "close":
            client.close()  # hypercorn's keep_alive_max_requests
    client.close()


def api_once(ctx: Context) -> list[float]:
    """Issue 14: the same pacing through one ``jobsvc api`` process (probe off)."""
    with ctx.pg.database("pickup_api") as url:
        workers = throughput.start_noop_workers(ctx, url, 1, CONCURRENCY)
        environ = clean_env(
            JOBSVC_DATABASE_URL=url,
            JOBSVC_PORT="0",
            JOBSVC_VERIFY_ON_ENQUEUE="false",
            JOBSVC_AUTH="off",
            JOBSVC_STORAGE_URL=f"file://{ctx.workdir / 'pickup-results'}",
        )
        api = ctx.children.python("jobsvc-api", "jobsvc.cli", "api", env=environ)
        try:
            base = api.wait_for("jobsvc api: listening on").split()[4]
            time.sleep(SETTLE)
            post_paced(base, COUNT, INTERVAL)
            jobs.wait_finished(url, 60)
            with connect(url) as conn:
                values = [float(r["ms"]) for r in conn.execute(LATENCY_SQL)]
        finally:
            api.stop()
            for w in workers:
                w.stop()
    return values


def jobsvc_once(ctx: Context, *, transaction: bool = False) -> list[float]:
    with ctx.pg.database("pickup") as url:
        workers = throughput.start_noop_workers(ctx, url, 1, CONCURRENCY)
        try:
            enqueue_paced(url, COUNT, INTERVAL, transaction=transaction)
            jobs.wait_finished(url, 60)
            with connect(url) as conn:
                values = [float(r["ms"]) for r in conn.execute(LATENCY_SQL)]
        finally:
            for w in workers:
                w.stop()
    return values


def peer_once(ctx: Context, system: str) -> list[float]:
    with ctx.pg.database(system.replace("-", "_"), migrate=False) as url:
        peers.install(system, url)
        worker = throughput.start_peer(ctx, system, url)
        try:
            peers.enqueue(system, url, COUNT, INTERVAL)
            peers.wait_finished(system, url, 60)
            values = peers.pickup_ms(system, url)
        finally:
            worker.stop()
    return values


def record(ctx: Context, label: str, values: list[float]) -> None:
    if len(values) != COUNT:
        raise RuntimeError(f"{label}: {len(values)} pickups measured, expected {COUNT}")
    for p in (50, 95, 99):
        ctx.results.add(NAME, label, f"p{p}", "ms", percentile(values, p))
    ctx.say(f"  {label}: p50 {percentile(values, 50):.2f} ms, p99 {percentile(values, 99):.2f} ms")


def run(ctx: Context) -> None:
    ctx.settings[NAME] = (
        f"{COUNT} jobs, one at a time {INTERVAL * 1000:.0f} ms apart, to an idle worker "
        f"(jobsvc concurrency {CONCURRENCY}; peers as in throughput); startedAt - createdAt"
    )
    for i in range(ctx.runs):
        ctx.say(f"pickup run {i + 1}/{ctx.runs}")
        record(ctx, "jobsvc", jobsvc_once(ctx))
        record(ctx, "jobsvc, enqueue in a transaction", jobsvc_once(ctx, transaction=True))
        record(ctx, "jobsvc through the API", api_once(ctx))
        for system in SYSTEMS:
            record(ctx, throughput.peer_label(system), peer_once(ctx, system))
