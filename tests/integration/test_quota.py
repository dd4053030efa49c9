"""The per-tenant quota (JOBSVC_TENANT_MAX_QUEUED) and the rate limit (JOBSVC_RATE_LIMIT),
DESIGN §8: 429 with Retry-After for both. The quota is kept by the database: 50
enqueues at once, spread over two real `jobsvc api` processes, leave exactly the cap."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

import jobsvc
from jobsvc import queue
from jobsvc.model import Status
from tests.fixtures.app import OpenApi
from tests.fixtures.processes import JobsvcProcess
from tests.services import api_env, start_api
from tests.support import connect

Spawn = Callable[..., JobsvcProcess]
CAP = 20
CONCURRENT = 50


def body(name: str = "a.png", job_id: str | None = None) -> dict[str, Any]:
    return {
        "jobId": job_id or str(uuid.uuid4()),
        "type": "ingest",
        "imgUrl": f"https://example.invalid/{name}",
    }


def unfinished(url: str, tenant: str = "default") -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM jobsvc_results"
            " WHERE tenant = %s AND status IN ('Queued', 'Processing')",
            (tenant,),
        ).fetchone()
        assert row is not None
        return int(row["n"])


async def test_fifty_concurrent_enqueues_across_two_api_processes_never_exceed_the_quota(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    env = api_env(database_url, f"file://{tmp_path}", JOBSVC_TENANT_MAX_QUEUED=str(CAP))
    apis = [await start_api(spawn, env), await start_api(spawn, env)]
    statuses: list[int] = []
    retry_after: list[str] = []
    go = trio.Event()

    async def one(i: int) -> None:
        # its own HTTP connection, hence its own request in flight on its API process
        async with apis[i % 2].client() as client:
            await go.wait()
            response = await client.post("/results/enqueue", json=body(f"{i}.png"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(response.headers["Retry-After"])
            assert "JOBSVC_TENANT_MAX_QUEUED" in response.json()["error"]

    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENT):
            nursery.start_soon(one, i)
        await trio.sleep(0.2)  # every client is connected and waiting on the event
        go.set()

    assert sorted(statuses) == [202] * CAP + [429] * (CONCURRENT - CAP)
    assert unfinished(database_url) == CAP
    assert all(int(value) >= 1 for value in retry_after)

    # At the cap, an identical retry is still answered (200), a new result is not.
    async with apis[0].client() as client:
        with connect(database_url) as conn:
            first = conn.execute("SELECT job_id, img_url FROM jobsvc_results LIMIT 1").fetchone()
        assert first is not None
        again = {"jobId": str(first["job_id"]), "type": "ingest", "imgUrl": first["img_url"]}
        assert (await client.post("/results/enqueue", json=again)).status_code == 200
        assert (await client.post("/results/enqueue", json=body())).status_code == 429
        # Finished results free their slots: cancel one job, and one more fits.
        assert (await client.post(f"/results/{first['job_id']}/cancel")).status_code == 200
        assert (await client.post("/results/enqueue", json=body())).status_code == 202
    assert unfinished(database_url) == CAP
    with connect(database_url) as conn:  # the quota's folding of the deltas kept them exact
        assert queue.status_counts(conn) == queue.status_counts_exact(conn)


def test_reserve_quota_tells_a_batch_how_many_fit_and_holds_the_lock(database_url: str) -> None:
    with connect(database_url) as conn, conn.transaction():
        for i in range(3):
            jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url=f"https://example.invalid/{i}.png", tenant="t")
    with connect(database_url) as conn, conn.transaction():
        assert queue.reserve_quota(conn, "t", 10, max_queued=5) == 2
        assert queue.reserve_quota(conn, "t", 10, max_queued=0) == 10  # 0: unlimited
        # Another session enqueueing for the same tenant waits for this transaction.
        with connect(database_url) as other:
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable), other.transaction():
                queue.reserve_quota(other, "t", 1, max_queued=5)
            with other.transaction():  # another tenant does not wait
                assert queue.reserve_quota(other, "u", 1, max_queued=5) == 1


def test_transactional_enqueue_past_the_quota_raises_and_writes_nothing(database_url: str) -> None:
    with connect(database_url) as conn, conn.transaction():
        jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url="https://example.invalid/a.png", max_queued=1)
        with pytest.raises(jobsvc.QuotaExceeded, match="already has 1 queued or running"):
            jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url="https://example.invalid/b.png", max_queued=1)
    assert unfinished(database_url) == 1
    with connect(database_url) as conn:
        assert queue.status_counts(conn)[Status.QUEUED] == 1


async def test_requests_over_the_rate_limit_get_429_with_retry_after(open_api: OpenApi) -> None:
    async with open_api(rate_limit=2, verify_on_enqueue=False) as api:
        answers = [await api.client.get("/results/list") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        refused = answers[-1]
        assert refused.headers["Retry-After"] == "1"
        assert "JOBSVC_RATE_LIMIT" in (await refused.get_json())["error"]
        assert (await api.client.get("/healthz")).status_code == 200  # operations are never limited
        assert (await api.client.post("/results/enqueue", json=body())).status_code == 429


async def test_a_batch_past_the_quota_answers_429_per_item_and_identical_retries_200(
    open_api: OpenApi, database_url: str
) -> None:
    async with open_api(tenant_max_queued=2, verify_on_enqueue=False) as api:
        first = body("a.png")
        made = await api.client.post("/results/enqueue", json=first)
        assert made.status_code == 202
        jobs = [first, body("b.png"), body("c.png"), body("d.png")]
        answer = await (await api.client.post("/results/batch", json={"jobs": jobs})).get_json()
        # The identical retry takes no slot; one slot is left for b; c and d are past the cap.
        assert [r["status"] for r in answer["results"]] == [200, 202, 429, 429]
        assert "JOBSVC_TENANT_MAX_QUEUED" in answer["results"][2]["error"]
        assert unfinished(database_url) == 2
