"""A peer queue's worker process with a no-op async task: ``python -m bench.peer_worker SYSTEM URL``.

SYSTEM is ``procrastinate``, ``pgqueuer-psycopg`` or ``pgqueuer-asyncpg`` (on uvloop).
Each registers one no-op async task named ``noop``, prints ``bench-worker ready``
and runs until SIGTERM/SIGINT. Settings are the peers' own recommendations for
no-op async jobs (see bench/README.md): procrastinate ``concurrency`` (default 30);
pgqueuer ``batch_size`` (default 100).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

SYSTEMS = ("procrastinate", "pgqueuer-psycopg", "pgqueuer-asyncpg")


async def run_procrastinate(url: str, concurrency: int, pool_size: int) -> None:
    import procrastinate

    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=min(4, pool_size), max_size=pool_size)
    )

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        print(f"bench-worker ready procrastinate concurrency={concurrency} pool={pool_size}", flush=True)
        # Its own signal handlers stop it gracefully on SIGTERM/SIGINT.
        await app.run_worker_async(concurrency=concurrency, wait=True, listen_notify=True)


async def run_pgqueuer(url: str, driver: str, batch_size: int) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    if driver == "asyncpg":
        import asyncpg  # type: ignore[import-untyped]
        from psycopg.conninfo import conninfo_to_dict

        # asyncpg parses URIs itself and wants a scheme: give it libpq's parts instead.
        parts = conninfo_to_dict(url)
        conn = await asyncpg.connect(
            host=parts.get("host"),
            port=int(parts.get("port") or 5432),
            user=parts.get("user"),
            password=parts.get("password") or None,
            database=parts.get("dbname"),
        )
        pgq = PgQueuer.from_asyncpg_connection(conn)
    else:
        import psycopg

        pgq = PgQueuer.from_psycopg_connection(await psycopg.AsyncConnection.connect(url, autocommit=True))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, pgq.shutdown.set)
    print(f"bench-worker ready pgqueuer-{driver} batch_size={batch_size}", flush=True)
    await pgq.run(batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_worker")
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("url", help="libpq URI")
    parser.add_argument("--concurrency", type=int, default=30, help="procrastinate: jobs at a time")
    parser.add_argument("--pool-size", type=int, default=10, help="procrastinate: connection pool size")
    parser.add_argument("--batch-size", type=int, default=100, help="pgqueuer: jobs per dequeue")
    args = parser.parse_args()
    coro: Coroutine[Any, Any, None]
    if args.system == "procrastinate":
        coro = run_procrastinate(args.url, args.concurrency, args.pool_size)
        asyncio.run(coro)
    elif args.system == "pgqueuer-psycopg":
        asyncio.run(run_pgqueuer(args.url, "psycopg", args.batch_size))
    else:
        import uvloop

        uvloop.run(run_pgqueuer(args.url, "asyncpg", args.batch_size))


if __name__ == "__main__":
    main()
