"""Helpers shared by the integration tests: enqueue rows, wait for statuses."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg.rows import dict_row

from jobsvc import queue
from jobsvc.model import Job, Status
from jobsvc.queue import NewResult

T = TypeVar("T")


async def in_thread(conn: psycopg.Connection[dict[str, Any]], fn: Callable[[Any], T]) -> T:
    """Run ``fn(conn)`` in one transaction, in a thread (as jobsvc's own hops do)."""

    def hop() -> T:
        with conn.transaction():
            return fn(conn)

    return await trio.to_thread.run_sync(hop)


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


def enqueue(url: str, img_url: str = "http://images.test/a.png", *, wake: bool = True, **kw: Any) -> Job:
    """Insert a result the way the API does (and announce it unless ``wake=False``)."""
    tenant = kw.pop("tenant", queue.DEFAULT_TENANT)
    with connect(url) as conn:
        job, _ = queue.enqueue(
            conn,
            NewResult(
                job_id=kw.pop("job_id", None) or uuid.uuid4(),
                result_file=kw.pop("result_file", img_url.rsplit("/", 1)[-1]),
                type=kw.pop("type", "ingest"),
                img_url=img_url,
                **kw,
            ),
            tenant=tenant,
        )
        if wake:
            queue.announce(conn, [job.id], wakeup=True)
    return job


def row(url: str, row_id: int) -> Job:
    with connect(url) as conn:
        (job,) = queue.get_by_ids(conn, [row_id])
    return job


async def wait_status(url: str, row_id: int, *statuses: Status, timeout: float = 10.0) -> Job:
    """Wait (with a deadline) until the row reaches one of ``statuses``."""
    with trio.fail_after(timeout):
        while True:
            job = await trio.to_thread.run_sync(row, url, row_id)
            if job.status in statuses:
                return job
            await trio.sleep(0.02)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Wait (with a deadline) until the sync ``predicate()`` (run in a thread) is truthy."""
    with trio.fail_after(timeout):
        while True:
            value = await trio.to_thread.run_sync(predicate)
            if value:
                return value
            await trio.sleep(interval)


def advisory_locks(url: str) -> set[int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return {int(r["objid"]) for r in rows}


def statuses(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return queue.status_counts(conn)
