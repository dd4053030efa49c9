"""The per-tenant quota (JOBSVC_TENANT_MAX_QUEUED) and the rate limit (JOBSVC_RATE_LIMIT),
DESIGN §8: 429 with Retry-After for both. (50 concurrent enqueues over two real `jobsvc
api` processes leave exactly the cap: tests/system/test_quota.py.)"""

from __future__ import annotations

import uuid

import psycopg
import pytest

import jobsvc
from jobsvc import queue
from jobsvc.model import Status
from tests.fixtures.app import OpenApi
from tests.helpers import connect, enqueue_body, unfinished

IMAGES = "https://example.invalid"
IMAGE = f"{IMAGES}/a.png"


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
        assert (await api.client.post("/results/enqueue", json=enqueue_body(IMAGE))).status_code == 429


async def test_a_batch_past_the_quota_answers_429_per_item_and_identical_retries_200(
    open_api: OpenApi, database_url: str
) -> None:
    async with open_api(tenant_max_queued=2, verify_on_enqueue=False) as api:
        first = enqueue_body(IMAGE)
        made = await api.client.post("/results/enqueue", json=first)
        assert made.status_code == 202
        jobs = [first, *(enqueue_body(f"{IMAGES}/{name}") for name in ("b.png", "c.png", "d.png"))]
        answer = await (await api.client.post("/results/batch", json={"jobs": jobs})).get_json()
        # The identical retry takes no slot; one slot is left for b; c and d are past the cap.
        assert [r["status"] for r in answer["results"]] == [200, 202, 429, 429]
        assert "JOBSVC_TENANT_MAX_QUEUED" in answer["results"][2]["error"]
        assert unfinished(database_url) == 2


async def test_a_retry_past_the_quota_is_429_and_retries_nothing(
    open_api: OpenApi, database_url: str
) -> None:
    async with open_api(tenant_max_queued=2, verify_on_enqueue=False) as api:
        failed = enqueue_body(IMAGE)
        assert (await api.client.post("/results/enqueue", json=failed)).status_code == 202
        with connect(database_url) as conn:
            (job,), _ = queue.claim(conn, "w1", 1)
            queue.finish(conn, "w1", [queue.Outcome(job.id, "failed", "not an image")])
        waiting = [enqueue_body(f"{IMAGES}/{name}") for name in ("b.png", "c.png")]
        for doc in waiting:
            assert (await api.client.post("/results/enqueue", json=doc)).status_code == 202
        # Two unfinished of two: putting the failed one back would make three.
        refused = await api.client.post(f"/results/{failed['jobId']}/retry")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "JOBSVC_TENANT_MAX_QUEUED" in (await refused.get_json())["error"]
        assert [
            v["status"] for v in await (await api.client.get(f"/results/{failed['jobId']}")).get_json()
        ] == ["Failed"]
        assert unfinished(database_url) == 2
        # Once a slot is free, the same retry goes through.
        assert (await api.client.post(f"/results/{waiting[0]['jobId']}/cancel")).status_code == 200
        again = await api.client.post(f"/results/{failed['jobId']}/retry")
        assert again.status_code == 200 and (await again.get_json())["status"] == "Queued"
        assert unfinished(database_url) == 2
