"""Group commit of single enqueues (jobsvc/api/collector.py) against a real PostgreSQL.

The groups are made deterministic by holding a lock the first group needs (a tenant's
quota lock, from a test connection): that group waits in PostgreSQL, the requests that
arrive meanwhile queue up, and they are written as the next group once the lock goes.
"""

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
from jobsvc.db import Database
from jobsvc.errors import DatabaseUnavailable, QuotaExceeded
from jobsvc.metrics import Metrics
from jobsvc.model import Job
from tests.fixtures.app import OpenApi
from tests.helpers import (
    blocked_backends,
    connect,
    enqueue_body,
    held_quota_lock,
    unfinished,
    until,
    wait_blocked,
)

Conn = psycopg.Connection[dict[str, Any]]
Answer = tuple[Job, bool] | BaseException


def new(
    tenant: str = "default", job_id: uuid.UUID | None = None, name: str = "a.png", **kw: Any
) -> queue.NewResult:
    job = job_id or uuid.uuid4()
    return queue.NewResult(
        job_id=job,
        result_file=name,
        type="ingest",
        img_url=f"https://images.test/{job.hex}/{name}",
        tenant=tenant,
        **kw,
    )


@asynccontextmanager
async def running(url: str, *, max_queued: int = 100, in_flight: int = 1) -> AsyncIterator[Collector]:
    """A collector (and its announcer) on its own pool, as one API process has them."""
    database = Database(url, max_size=8, timeout=2.0)
    await database.open()
    announcer = Announcer(database)
    collector = Collector(database, announcer, Metrics(), max_queued, in_flight=in_flight)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            nursery.start_soon(announcer.run)
            yield collector
            nursery.cancel_scope.cancel()
    finally:
        await database.close()


class Answers:
    """Submits single enqueues in their own tasks and keeps each one's answer."""

    def __init__(self, collector: Collector, nursery: trio.Nursery) -> None:
        self.collector = collector
        self.nursery = nursery
        self.got: dict[int, Answer] = {}

    async def submit(self, key: int, item: queue.NewResult, *, queued: bool = True) -> None:
        """Submit ``item`` (answer under ``key``); returns once it waits in the queue
        (``queued``) or was taken into a group."""
        before_groups, before_pending = self.collector.groups, self.collector.pending

        async def one() -> None:
            try:
                self.got[key] = await self.collector.submit(item)
            except Exception as exc:
                self.got[key] = exc

        self.nursery.start_soon(one)
        if queued:
            await until(lambda: self.collector.pending == before_pending + 1, what="the item queued")
        else:
            await until(lambda: self.collector.groups == before_groups + 1, what="a group taken")

    async def all(self, n: int) -> dict[int, Answer]:
        await until(lambda: len(self.got) == n, what=f"{n} answers")
        return self.got


def row_count(url: str, where: str = "true", *args: Any) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT count(*) AS n FROM jobsvc_results WHERE {where}", args).fetchone()
    assert row is not None
    return int(row["n"])


async def test_one_group_holds_several_tenants_duplicates_and_conflicts(database_url: str) -> None:
    shared = uuid.uuid4()
    twin = new("a")
    rival = new("a")
    items = {
        1: new("a"),
        2: twin,
        3: twin,  # identical to 2, same group: 200 with 2's row
        4: rival,
        5: queue.NewResult(rival.job_id, rival.result_file, "ingest", rival.img_url + "?v=2", tenant="a"),
        6: new("a", job_id=shared, name="x.png"),
        7: new("b", job_id=shared, name="y.png"),  # another tenant's jobId, same group: taken
        8: new("b"),
        9: new("c"),
    }
    async with running(database_url) as collector, trio.open_nursery() as nursery:
        answers = Answers(collector, nursery)
        with held_quota_lock(database_url, "a"):
            await answers.submit(0, new("a"), queued=False)  # group 1 waits on the lock
            await wait_blocked(database_url)
            for key, item in items.items():
                await answers.submit(key, item)
            assert collector.pending == len(items)
        got = await answers.all(len(items) + 1)
    assert collector.groups == 2 and collector.largest == len(items)
    status = {k: (v[1] if isinstance(v, tuple) else type(v).__name__) for k, v in got.items()}
    assert status == {
        0: True,
        1: True,
        2: True,
        3: False,
        4: True,
        5: "Conflict",
        6: True,
        7: "Conflict",
        8: True,
        9: True,
    }
    assert isinstance(got[3], tuple) and isinstance(got[2], tuple) and got[3][0].id == got[2][0].id
    assert "is taken" in str(got[7])
    assert row_count(database_url) == 7
    assert {j[0].tenant for j in got.values() if isinstance(j, tuple)} == {"a", "b", "c"}


async def test_the_quota_stays_exact_under_concurrent_groups_of_two_processes(database_url: str) -> None:
    cap = 7
    existing = [new("q") for _ in range(2)]
    async with running(database_url, max_queued=cap) as first:
        for item in existing:
            assert (await first.submit(item))[1] is True
    fresh = [new("q") for _ in range(40)]
    async with (
        running(database_url, max_queued=cap, in_flight=2) as one,
        running(database_url, max_queued=cap, in_flight=2) as two,
    ):
        got: list[Answer] = []

        async def submit(collector: Collector, item: queue.NewResult) -> None:
            try:
                got.append(await collector.submit(item))
            except Exception as exc:
                got.append(exc)

        async with trio.open_nursery() as nursery:
            for i, item in enumerate(fresh + existing):  # the retries of existing ones: 200
                nursery.start_soon(submit, (one, two)[i % 2], item)
    created = [a for a in got if isinstance(a, tuple) and a[1]]
    retried = [a for a in got if isinstance(a, tuple) and not a[1]]
    refused = [a for a in got if isinstance(a, QuotaExceeded)]
    assert len(got) == len(fresh) + len(existing)
    assert (len(created), len(retried), len(refused)) == (cap - len(existing), len(existing), 40 - 5)
    assert all(e.retry_after > 0 for e in refused)
    assert unfinished(database_url, "q") == cap


async def test_a_group_failing_on_one_item_answers_each_as_alone(database_url: str) -> None:
    # A trigger refuses one item with a deadlock error: the group's transaction fails,
    # and each item is written again alone; only the poisoned one fails (503, as alone).
    with connect(database_url) as conn:
        conn.execute(
            """
            CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.img_url LIKE '%poison%' THEN
                    RAISE EXCEPTION 'deadlock (test)' USING ERRCODE = 'deadlock_detected';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON jobsvc_results FOR EACH ROW EXECUTE FUNCTION poison();
            """
        )
    bad = new("a")
    bad = queue.NewResult(bad.job_id, bad.result_file, "ingest", "https://images.test/poison.png", tenant="a")
    good = [new("a") for _ in range(3)]
    async with running(database_url) as collector, trio.open_nursery() as nursery:
        answers = Answers(collector, nursery)
        with held_quota_lock(database_url, "a"):
            await answers.submit(0, new("a"), queued=False)
            await wait_blocked(database_url)
            for key, item in enumerate([good[0], bad, good[1], good[2]], start=1):
                await answers.submit(key, item)
        got = await answers.all(5)
    assert collector.largest == 4
    assert isinstance(got[2], DatabaseUnavailable)
    assert all(isinstance(got[k], tuple) and got[k][1] for k in (0, 1, 3, 4))  # type: ignore[index]
    assert row_count(database_url) == 4


async def test_a_connection_lost_mid_group_answers_every_request_503(database_url: str) -> None:
    async with running(database_url) as collector, trio.open_nursery() as nursery:
        answers = Answers(collector, nursery)
        with held_quota_lock(database_url) as holder:
            await answers.submit(0, new(), queued=False)
            pid = await wait_blocked(database_url)
            for key in range(1, 4):
                await answers.submit(key, new())
            holder.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await until(lambda: 0 in answers.got, what="the first group's answer")
            # The next group (three requests) waits on the lock in its turn: lose it too.
            pid = await until(
                lambda: [p for p in blocked_backends(database_url) if p != pid], thread=True, what="group 2"
            )
            holder.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
            got = await answers.all(4)
        assert all(isinstance(a, DatabaseUnavailable) for a in got.values()), got
        assert row_count(database_url) == 0
        # The collector goes on: the pool replaces the lost connections.
        assert (await collector.submit(new()))[1] is True


async def test_an_unreachable_database_answers_every_request_503_without_hanging(database_url: str) -> None:
    dead = "postgresql://jobsvc@127.0.0.1:1/nothing"
    with trio.fail_after(20):
        async with running(dead) as collector:
            got: list[BaseException] = []

            async def one() -> None:
                with pytest.raises(DatabaseUnavailable) as info:
                    await collector.submit(new())
                got.append(info.value)

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one)
    assert len(got) == 10


async def test_a_canceled_waiter_is_withdrawn_or_written_without_harm(database_url: str) -> None:
    async with running(database_url) as collector, trio.open_nursery() as nursery:
        answers = Answers(collector, nursery)
        gone, taken = new(), new()
        with held_quota_lock(database_url):
            # Taken into the waiting group, then its client leaves: it is written all the same.
            taken_scope = trio.CancelScope()
            nursery.start_soon(_submit_in, collector, taken, taken_scope)
            await until(lambda: collector.groups == 1, what="group 1")
            await wait_blocked(database_url)
            taken_scope.cancel()
            # Still queued when its client leaves: withdrawn, nothing written.
            scope = trio.CancelScope()
            nursery.start_soon(_submit_in, collector, gone, scope)
            await until(lambda: collector.pending == 1, what="queued")
            await answers.submit(1, new())
            scope.cancel()
            await until(lambda: collector.pending == 1, what="withdrawn")
        got = await answers.all(1)
    assert isinstance(got[1], tuple) and got[1][1]
    assert row_count(database_url, "job_id = %s", gone.job_id) == 0
    assert row_count(database_url, "job_id = %s", taken.job_id) == 1
    assert collector.groups == 2


async def _submit_in(collector: Collector, item: queue.NewResult, scope: trio.CancelScope) -> None:
    with scope:
        await collector.submit(item)


async def test_concurrent_http_enqueues_are_grouped_with_their_own_answers(
    open_api: OpenApi, database_url: str
) -> None:
    async with open_api(tenant_max_queued=12) as api:
        collector = api.services.collector
        statuses: dict[int, int] = {}
        headers: dict[int, Any] = {}
        same = enqueue_body("http://images.test/same.png")
        clash = dict(same, imgUrl="http://images.test/other/same.png")

        async def post(key: int, doc: dict[str, Any]) -> None:
            response = await api.client.post("/results/enqueue", json=doc)
            statuses[key], headers[key] = response.status_code, response.headers

        async with trio.open_nursery() as nursery:
            with held_quota_lock(database_url):
                nursery.start_soon(post, 0, enqueue_body())
                await until(lambda: collector.groups == 1, what="group 1")
                await wait_blocked(database_url)
                docs = [same, same, clash] + [enqueue_body() for _ in range(20)]
                for key, doc in enumerate(docs, start=1):  # queued in this order
                    nursery.start_soon(post, key, doc)
                    await until(lambda k=key: collector.pending == k, what=f"request {key} queued")
    assert collector.largest == len(docs)
    assert [statuses[k] for k in (1, 2, 3)] == [202, 200, 409]
    rest = [statuses[k] for k in range(4, len(docs) + 1)]
    assert statuses[0] == 202 and rest.count(202) == 12 - 2 and rest.count(429) == 20 - 10
    assert all(headers[k]["Retry-After"] for k in statuses if statuses[k] == 429)
    assert all(headers[k]["Location"].startswith("/results/") for k in statuses if statuses[k] == 202)
    assert unfinished(database_url) == 12
