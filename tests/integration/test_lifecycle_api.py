"""Retry, batch enqueue and the filtered, keyset-paged list, against a real PostgreSQL
through the app's real lifespan (DESIGN §2: POST /results/{jobId}/retry, POST
/results/batch, GET /results/list)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import trio

from jobsvc import queue
from jobsvc.queue import Outcome
from jobsvc.schemas import CancelResponse
from tests.fixtures.app import Api
from tests.integration.test_api import Notifications, enqueue, error_of
from tests.support import in_thread

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def notifications(database_url: str) -> Iterator[Callable[..., Notifications]]:
    opened: list[Notifications] = []

    def listen(*channels: str) -> Notifications:
        opened.append(Notifications(database_url, *channels))
        return opened[-1]

    yield listen
    for n in opened:
        n.conn.close()


# --------------------------------------------------------------------------- retry


async def test_retry_requeues_failed_and_canceled_results_only(
    api: Api, conn: Conn, notifications: Any
) -> None:
    job_id = str(uuid.uuid4())
    for name in ("done", "bad", "stopped", "waiting"):
        assert (await enqueue(api, jobId=job_id, imgUrl=f"http://h.test/{name}.png")).status_code == 202
    claimed, _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 3))
    by_name = {j.result_file: j for j in claimed}
    assert set(by_name) == {"done.png", "bad.png", "stopped.png"}
    await in_thread(
        conn,
        lambda c: queue.finish(
            c,
            "w1",
            [
                Outcome(by_name["done.png"].id, "completed"),
                Outcome(by_name["bad.png"].id, "failed", "not an image"),
                Outcome(by_name["stopped.png"].id, "canceled", "canceled on request"),
            ],
        ),
    )
    wakeups = notifications(queue.WAKEUP_CHANNEL)

    response = await api.client.post(f"/results/{job_id}/retry")
    assert response.status_code == 200
    doc = await response.get_json()
    CancelResponse.model_validate(doc)
    assert doc == {
        "jobId": job_id,
        "status": "Queued",
        "results": [
            {"resultFile": "done.png", "status": "Completed"},
            {"resultFile": "bad.png", "status": "Queued"},
            {"resultFile": "stopped.png", "status": "Queued"},
            {"resultFile": "waiting.png", "status": "Queued"},
        ],
    }
    with trio.fail_after(5):
        assert (await wakeups.next()).payload == ""
    views = {v["resultFile"]: v for v in await (await api.client.get(f"/results/{job_id}")).get_json()}
    for name in ("bad.png", "stopped.png"):
        view = views[name]
        assert view["attempts"] == 0 and view["error"] is None and not view["cancelRequested"]
        assert view["startedAt"] is None and view["finishedAt"] is None and view["durationMs"] is None
        assert view["runAt"] >= view["updatedAt"] - 1000
    assert views["done.png"]["attempts"] == 1 and views["done.png"]["finishedAt"] is not None

    # Retried results are claimable again at once, and count their attempts from 1.
    again, _ = await in_thread(conn, lambda c: queue.claim(c, "w2", 10))
    assert {j.result_file: j.attempts for j in again if str(j.job_id) == job_id} == {
        "bad.png": 1,
        "stopped.png": 1,
        "waiting.png": 1,
    }


async def test_retry_of_a_job_with_nothing_to_retry_changes_nothing(api: Api) -> None:
    job_id = str(uuid.uuid4())
    await enqueue(api, jobId=job_id)
    before = await (await api.client.get(f"/results/{job_id}")).get_json()
    doc = await (await api.client.post(f"/results/{job_id}/retry")).get_json()
    assert doc["status"] == "Queued" and doc["results"] == [{"resultFile": "x.png", "status": "Queued"}]
    assert await (await api.client.get(f"/results/{job_id}")).get_json() == before


async def test_retry_unknown_is_404_and_malformed_is_400(api: Api) -> None:
    assert "does not exist" in await error_of(await api.client.post(f"/results/{uuid.uuid4()}/retry"), 404)
    assert "must be a UUID" in await error_of(await api.client.post("/results/nope/retry"), 400)
