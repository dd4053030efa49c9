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


# --------------------------------------------------------------------------- list


def new_result(job_id: uuid.UUID, name: str, type: str = "ingest") -> queue.NewResult:
    return queue.NewResult(job_id=job_id, result_file=name, type=type, img_url=f"http://h.test/{name}")


async def walk(api: Api, url: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow Link rel=next from ``url``: every view, and every URL asked."""
    views: list[dict[str, Any]] = []
    asked: list[str] = []
    while url is not None:
        asked.append(url)
        response = await api.client.get(url)
        assert response.status_code == 200, await response.get_data(as_text=True)
        views += await response.get_json()
        link = response.headers.get("Link")
        url = None if link is None else link[1 : link.index(">")]
    return views, asked


async def test_list_pages_in_both_orders_visit_every_row_once(api: Api, conn: Conn) -> None:
    # 130 rows in one transaction share one created_at: the id must break the tie.
    job = uuid.uuid4()
    await in_thread(conn, lambda c: [queue.enqueue(c, new_result(job, f"{i:03}.png")) for i in range(130)])
    for i in range(20):
        await enqueue(api, imgUrl=f"http://h.test/late-{i}.png")
    everything = await in_thread(conn, lambda c: c.execute("SELECT id FROM jobsvc_results").fetchall())
    assert len(everything) == 150

    newest_first, asked = await walk(api, "/results/list?order=desc&limit=7")
    oldest_first, _ = await walk(api, "/results/list?limit=7")
    keys = [(v["createdAt"], v["jobId"], v["resultFile"]) for v in oldest_first]
    assert len(set(keys)) == 150 == len(keys)  # every row exactly once
    assert [(v["createdAt"], v["jobId"], v["resultFile"]) for v in newest_first] == keys[::-1]
    assert [v["resultFile"] for v in oldest_first[:130]] == [f"{i:03}.png" for i in range(130)]
    assert len(asked) == 22 and all("order=desc" in url and "limit=7" in url for url in asked)


async def test_list_cursor_continues_past_its_row_in_either_order(api: Api) -> None:
    names = [f"{i}.png" for i in range(5)]
    for name in names:
        await enqueue(api, imgUrl=f"http://h.test/{name}")
    link = (await api.client.get("/results/list?limit=3")).headers["Link"]
    cursor = link[link.index("after=") + 6 : link.index(">")]
    forward = await (await api.client.get(f"/results/list?after={cursor}")).get_json()
    backward = await (await api.client.get(f"/results/list?order=desc&after={cursor}")).get_json()
    assert [v["resultFile"] for v in forward] == ["3.png", "4.png"]
    assert [v["resultFile"] for v in backward] == ["1.png", "0.png"]


async def test_list_filters_by_status_list_type_and_creation_time(api: Api, conn: Conn) -> None:
    job = uuid.uuid4()
    rows = {}
    for name, type in (("a", "ingest"), ("b", "thumb"), ("c", "ingest"), ("d", "thumb"), ("e", "ingest")):
        new = new_result(job, name, type)
        rows[name], _ = await in_thread(conn, lambda c, n=new: queue.enqueue(c, n))
    # Spread the creation times one second apart (2030-01-01T00:00:0Ns), so the bounds are exact.
    base_ms = 1_893_456_000_000
    for i, name in enumerate("abcde"):
        await in_thread(
            conn,
            lambda c, i=i, n=name: c.execute(
                "UPDATE jobsvc_results SET created_at = to_timestamp(%s / 1000.0) WHERE id = %s",
                (base_ms + 1000 * i, rows[n].id),
            ),
        )
    claimed, _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 5))
    by_name = {j.result_file: j.id for j in claimed}
    await in_thread(
        conn,
        lambda c: queue.finish(
            c,
            "w1",
            [
                Outcome(by_name["a"], "failed", "no"),
                Outcome(by_name["b"], "canceled", "canceled on request"),
                Outcome(by_name["c"], "completed"),
            ],
        ),
    )  # d and e stay Processing

    async def names(query: str) -> list[str]:
        response = await api.client.get(f"/results/list?{query}")
        assert response.status_code == 200, await response.get_data(as_text=True)
        return [v["resultFile"] for v in await response.get_json()]

    assert await names("status=Failed,Canceled") == ["a", "b"]
    assert await names("status=Canceled,Failed&order=desc") == ["b", "a"]
    assert await names("status=Processing,Processing") == ["d", "e"]
    assert await names("type=thumb") == ["b", "d"]
    assert await names("type=thumb&status=Processing") == ["d"]
    assert await names("type=ingest&order=desc") == ["e", "c", "a"]
    assert await names(f"createdAfter={base_ms + 1000}") == ["c", "d", "e"]  # strictly later
    assert await names(f"createdBefore={base_ms + 3000}") == ["a", "b", "c"]  # strictly earlier
    assert await names(f"createdAfter={base_ms}&createdBefore={base_ms + 4000}&order=desc") == ["d", "c", "b"]
    assert await names(f"createdAfter={base_ms}&type=ingest&status=Completed,Processing") == ["c", "e"]
    assert await names(f"jobId={job}&status=Failed,Completed&order=desc") == ["c", "a"]
    assert await names(f"jobId={job}&createdBefore={base_ms + 2000}&type=ingest") == ["a"]

    # The Link keeps every filter; the next page continues within them.
    first = await api.client.get(f"/results/list?type=ingest&createdAfter={base_ms - 1}&order=desc&limit=2")
    link = first.headers["Link"]
    for kept in ("type=ingest", f"createdAfter={base_ms - 1}", "order=desc", "limit=2"):
        assert kept in link
    rest = await (await api.client.get(link[1 : link.index(">")])).get_json()
    both = await first.get_json() + rest
    assert [v["resultFile"] for v in both] == ["e", "c", "a"]


@pytest.mark.parametrize(
    "query",
    [
        "status=Done",
        "status=Queued,Done",
        "status=Queued,",
        "status=",
        "type=",
        "type=a%00b",
        "type=" + "t" * 65,
        "createdAfter=-1",
        "createdBefore=soon",
        "createdAfter=1.5",
        "after=MTIz",  # an id alone: not a cursor of this version
        "order=newest",
    ],
)
async def test_list_bad_filter_is_400(api: Api, query: str) -> None:
    await error_of(await api.client.get(f"/results/list?{query}"), 400)
