"""The API's lone enqueue sent from the trio thread on the collector's own connection
(`db.Link`, jobsvc/api/collector.py) against a real PostgreSQL: the answers the pool path
gives, the quota lock still taken in its transaction, and a cancelled request's
transaction still ended."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from jobsvc import queue
from jobsvc.announcer import Announcer
from jobsvc.api.collector import Collector
from jobsvc.db import Database, Link
from jobsvc.errors import Conflict, QuotaExceeded
from jobsvc.metrics import Metrics
from tests.helpers import connect, held_quota_lock, until, wait_blocked

Conn = psycopg.Connection[dict[str, Any]]
LINK_NAME = "jobsvc-enqueue-link-test"


def new(tenant: str = "default", job_id: uuid.UUID | None = None, url: str | None = None) -> queue.NewResult:
    job = job_id or uuid.uuid4()
    return queue.NewResult(
        job, "a.png", "ingest", url or f"https://images.test/{job.hex}/a.png", tenant=tenant
    )


@asynccontextmanager
async def running(url: str, *, max_queued: int = 100) -> AsyncIterator[Collector]:
    """A collector with its link and pool, as one API process has them."""
    database = Database(url, max_size=4, timeout=2.0)
    await database.open()
    link = Link(url, application_name=LINK_NAME)
    announcer = Announcer(database)
    collector = Collector(database, announcer, Metrics(), max_queued, link=link)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            nursery.start_soon(announcer.run)
            yield collector
            nursery.cancel_scope.cancel()
    finally:
        await link.close()
        await database.close()


def link_backends(url: str) -> list[dict[str, Any]]:
    with connect(url) as conn:
        return conn.execute(
            "SELECT pid, state FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [LINK_NAME],
        ).fetchall()


def rows_of(url: str, job_id: uuid.UUID) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM jobsvc_results WHERE job_id = %s", [job_id]).fetchone()
    assert row is not None
    return int(row["n"])


async def test_a_lone_enqueue_on_the_link_answers_as_the_pool_path_does(database_url: str) -> None:
    async with running(database_url, max_queued=2) as collector:
        first = new("t")
        job, created = await collector.submit(first)
        assert created and job.job_id == first.job_id and job.tenant == "t"
        assert len(link_backends(database_url)) == 1  # written on the link's connection
        again, created = await collector.submit(first)
        assert again == job and not created
        with pytest.raises(Conflict):
            await collector.submit(new("t", job_id=first.job_id, url="https://images.test/other.png"))
        await collector.submit(new("t"))
        with pytest.raises(QuotaExceeded):
            await collector.submit(new("t"))
    assert rows_of(database_url, first.job_id) == 1


async def test_the_lone_enqueue_takes_the_quota_lock_and_a_cancelled_one_still_commits(
    database_url: str,
) -> None:
    async with running(database_url) as collector:
        await collector.submit(new("t"))  # opens the link
        item = new("t")
        cancel = trio.CancelScope()

        async def submit() -> None:
            with cancel:
                await collector.submit(item)

        async with trio.open_nursery() as nursery:
            with held_quota_lock(database_url, "t"):
                nursery.start_soon(submit)
                pid = await wait_blocked(database_url)
                assert pid == link_backends(database_url)[0]["pid"]  # the link waits on the lock
                cancel.cancel()  # the request's client left: its transaction is in flight
        # The lock went: the statement ran on, and its transaction committed.
        await until(lambda: rows_of(database_url, item.job_id) == 1, thread=True)
        _, created = await collector.submit(new("t"))
        assert created


async def test_the_link_reconnects_after_its_backend_is_terminated(database_url: str) -> None:
    async with running(database_url) as collector:
        await collector.submit(new())
        [backend] = link_backends(database_url)
        with connect(database_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [backend["pid"]])
        await until(lambda: backend not in link_backends(database_url), thread=True)
        _, created = await collector.submit(new())
        assert created
        assert [b["pid"] for b in link_backends(database_url)] != [backend["pid"]]
