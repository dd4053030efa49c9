"""(1) Queue throughput: N no-op jobs, jobs/s from the first claim to the last finish.

jobsvc: ``bench.noop_worker`` processes (1 at several concurrencies, then 2 and 4 at
the best one); procrastinate and pgqueuer with their recommended settings for
no-op async jobs. Workers start idle; the N jobs are inserted in one transaction
followed by one wake-up, so every system starts from the same full queue.
"""

from __future__ import annotations

import time

from bench import jobs, peers
from bench.context import SETTLE, Context
from bench.procs import Child, clean_env

NAME = "throughput"
#: Concurrencies tried for one jobsvc worker process.
CONCURRENCIES = (16, 64, 256)
PROCESSES = (2, 4)
PROCRASTINATE_CONCURRENCY = 30
PGQUEUER_BATCH = 100
TIMEOUT = 600.0


def run(ctx: Context) -> None:
    n = ctx.jobs
    ctx.settings[NAME] = (
        f"{n:,} no-op jobs; jobsvc concurrency {', '.join(map(str, CONCURRENCIES))} (1 process), "
        f"best of them with {' and '.join(map(str, PROCESSES))} processes; "
        f"procrastinate concurrency {PROCRASTINATE_CONCURRENCY}; pgqueuer batch_size {PGQUEUER_BATCH}"
    )
    for i in range(ctx.runs):
        ctx.say(f"throughput run {i + 1}/{ctx.runs}")
        for c in CONCURRENCIES:
            rate = jobsvc_once(ctx, 1, c)
            ctx.results.add(NAME, f"jobsvc 1 proc c={c}", "no-op", "jobs/s", rate)
        for system in ("procrastinate", "pgqueuer-psycopg", "pgqueuer-asyncpg"):
            rate = peer_once(ctx, system)
            ctx.results.add(NAME, peer_label(system), "no-op", "jobs/s", rate)
    best = best_concurrency(ctx)
    ctx.found["best_concurrency"] = best
    for i in range(ctx.runs):
        ctx.say(f"throughput (processes, levers) run {i + 1}/{ctx.runs}")
        for p in PROCESSES:
            rate = jobsvc_once(ctx, p, best)
            ctx.results.add(NAME, f"jobsvc {p} procs c={best}", "no-op", "jobs/s", rate)
        # Lever: the INFO line logged per recorded transition.
        rate = jobsvc_once(ctx, 1, best, JOBSVC_LOG_LEVEL="WARNING")
        ctx.results.add(
            NAME,
            f"jobsvc 1 proc c={best}, log level WARNING",
            "no-op",
            "jobs/s",
            rate,
            "lever: per-job log line",
        )


def peer_label(system: str) -> str:
    if system == "procrastinate":
        return f"procrastinate c={PROCRASTINATE_CONCURRENCY}"
    return f"{system}{'+uvloop' if system.endswith('asyncpg') else ''} batch={PGQUEUER_BATCH}"


def best_concurrency(ctx: Context) -> int:
    rows = [(ctx.results.get(NAME, f"jobsvc 1 proc c={c}", "no-op"), c) for c in CONCURRENCIES]
    scored = [(row.median, c) for row, c in rows if row is not None and row.values]
    return max(scored)[1] if scored else CONCURRENCIES[0]


def start_noop_workers(ctx: Context, url: str, processes: int, concurrency: int, **env: str) -> list[Child]:
    environ = clean_env(JOBSVC_DATABASE_URL=url, JOBSVC_CONCURRENCY=str(concurrency), **env)
    workers = [
        ctx.children.python(f"noop-worker-c{concurrency}-{i}", "bench.noop_worker", env=environ)
        for i in range(processes)
    ]
    for w in workers:
        w.wait_for("bench-worker ready")
    time.sleep(SETTLE)
    return workers


def jobsvc_once(ctx: Context, processes: int, concurrency: int, **env: str) -> float:
    with ctx.pg.database("throughput") as url:
        workers = start_noop_workers(ctx, url, processes, concurrency, **env)
        try:
            jobs.bulk_enqueue(url, ctx.jobs)
            jobs.wait_finished(url, TIMEOUT)
            rate = jobs.throughput(url, ctx.jobs)
        finally:
            for w in workers:
                w.stop()
    extra = " ".join(f"{k}={v}" for k, v in env.items())
    ctx.say(f"  jobsvc {processes}x c={concurrency} {extra}: {rate:,.0f} jobs/s")
    return rate


def start_peer(ctx: Context, system: str, url: str) -> Child:
    args = [system, url]
    if system == "procrastinate":
        args += ["--concurrency", str(PROCRASTINATE_CONCURRENCY)]
    else:
        args += ["--batch-size", str(PGQUEUER_BATCH)]
    worker = ctx.children.python(system, "bench.peer_worker", *args, env=clean_env())
    worker.wait_for("bench-worker ready")
    time.sleep(SETTLE)
    return worker


def peer_once(ctx: Context, system: str) -> float:
    with ctx.pg.database(system.replace("-", "_"), migrate=False) as url:
        peers.install(system, url)
        worker = start_peer(ctx, system, url)
        try:
            peers.enqueue(system, url, ctx.jobs)
            peers.wait_finished(system, url, TIMEOUT)
            rate = peers.throughput(system, url, ctx.jobs)
        finally:
            worker.stop()
    ctx.say(f"  {system}: {rate:,.0f} jobs/s")
    return rate
