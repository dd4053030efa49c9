"""Retry, batch enqueue and the filtered, keyset-paged list, against a real PostgreSQL
through the app's real lifespan (DESIGN §2: POST /results/{jobId}/retry, POST
/results/batch, GET /results/list)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest
import trio

from jobsvc import queue
from jobsvc.api.batch import PROBE_CONCURRENCY
from jobsvc.queue import Outcome
from jobsvc.schemas import MAX_RUN_AT_MS, BatchResponse, CancelResponse
from tests.fixtures.app import Api, OpenApi, error_of
from tests.fixtures.images import ImageServer
from tests.helpers import in_thread
from tests.integration.test_api import body, enqueue

Conn = psycopg.Connection[dict[str, Any]]


def new_result(job_id: uuid.UUID, name: str, type: str = "ingest") -> queue.NewResult:
    return queue.NewResult(job_id=job_id, result_file=name, type=type, img_url=f"http://h.test/{name}")


# --------------------------------------------------------------------------- retry


async def test_retry_requeues_failed_and_canceled_results_only(
    api: Api, conn: Conn, notifications: Any
) -> None:
    job_id = str(uuid.uuid4())
    # Inserted without the API's announcer, so the only wake-up below is the retry's.
    for name in ("done", "bad", "stopped", "waiting"):
        new = new_result(uuid.UUID(job_id), f"{name}.png")
        await in_thread(conn, lambda c, n=new: queue.enqueue(c, n))
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


async def test_list_at_the_ends_of_the_time_range_is_an_empty_page_not_a_500(api: Api) -> None:
    await api.enqueue()
    # the last millisecond of year 9999: nothing is later (its + 1 ms used to overflow datetime)
    for query in (f"createdAfter={MAX_RUN_AT_MS}", "createdBefore=0"):
        response = await api.client.get(f"/results/list?{query}")
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert await response.get_json() == []
    assert len(await (await api.client.get(f"/results/list?createdBefore={MAX_RUN_AT_MS}")).get_json()) == 1


# --------------------------------------------------------------------------- batch


async def post_batch(api: Api, jobs: list[Any]) -> list[dict[str, Any]]:
    response = await api.client.post("/results/batch", json={"jobs": jobs})
    assert response.status_code == 200, await response.get_data(as_text=True)
    doc = await response.get_json()
    BatchResponse.model_validate(doc)
    results: list[dict[str, Any]] = doc["results"]
    assert len(results) == len(jobs)
    return results


async def test_batch_judges_new_identical_conflicting_and_invalid_items_in_order(
    api: Api, conn: Conn, notifications: Any
) -> None:
    existing = body(imgUrl="http://h.test/old.png")
    # Inserted directly, not through the API: its own (coalesced, later) announcement
    # would otherwise race the batch's on the listener below.
    await in_thread(conn, lambda c: queue.enqueue(c, new_result(uuid.UUID(existing["jobId"]), "old.png")))
    fresh = [body(imgUrl=f"http://h.test/new-{i}.png") for i in range(3)]
    twin = body(imgUrl="http://h.test/twin.png")
    listener = notifications(queue.WAKEUP_CHANNEL, queue.EVENTS_CHANNEL)

    jobs: list[Any] = [
        fresh[0],  # 0: new
        existing,  # 1: identical to an existing result
        {**existing, "type": "other"},  # 2: same key, different request
        {**fresh[1], "jobId": "nope"},  # 3: invalid id
        twin,  # 4: new
        fresh[1],  # 5: new
        {**twin, "imgUrl": "http://h.test/twin.png?v=2"},  # 6: same key as 4, different URL
        twin,  # 7: same request as 4, later in the batch
        [1, 2],  # 8: not an object
        {"jobId": str(uuid.uuid4()), "type": "ingest"},  # 9: no imgUrl
        {**fresh[2], "priority": 101},  # 10: out of range
        fresh[2],  # 11: new (its invalid twin above is no row)
    ]
    results = await post_batch(api, jobs)
    statuses = [r["status"] for r in results]
    assert statuses == [202, 200, 409, 400, 202, 202, 409, 200, 400, 400, 400, 202]
    for r in results:
        assert (r["job"] is None) == (r["status"] not in (200, 202))
        assert (r["error"] is None) == (r["status"] in (200, 202))
    for conflict in (results[2], results[6]):
        assert "from a different request" in conflict["error"]
    assert "UUID" in results[3]["error"] and "JSON object" in results[8]["error"]
    assert "imgUrl is required" in results[9]["error"] and "priority" in results[10]["error"]
    assert results[7]["job"] == results[4]["job"] and results[4]["job"]["status"] == "Queued"
    assert results[1]["job"]["resultFile"] == "old.png"

    # Inserted once each, in input order, in one transaction (one now(), one created_at).
    new_ids = [(r["job"]["jobId"], r["job"]["resultFile"]) for r in results if r["status"] == 202]
    select = "SELECT id, job_id, result_file, created_at FROM jobsvc_results ORDER BY id"
    rows = await in_thread(conn, lambda c: c.execute(select).fetchall())
    assert [(str(r["job_id"]), r["result_file"]) for r in rows[1:]] == new_ids
    assert len({r["created_at"] for r in rows[1:]}) == 1

    # One wake-up for the whole batch, and the new rows announced on the events channel.
    announced: set[int] = set()
    wakeups = 0
    with trio.fail_after(5):
        while len(announced) < 4:
            notification = await listener.next()
            if notification.channel == queue.WAKEUP_CHANNEL:
                wakeups += 1
            else:
                announced.update(int(i) for i in notification.payload.split(","))
    assert announced == {r["id"] for r in rows[1:]} and wakeups == 1


async def test_batch_of_a_thousand_items_is_accepted_and_more_is_413(api: Api) -> None:
    jobs = [body(imgUrl=f"http://h.test/many/{i}.png") for i in range(1000)]
    assert len(json.dumps({"jobs": jobs})) > 64 * 1024  # over the single enqueue's limit
    results = await post_batch(api, jobs)
    assert {r["status"] for r in results} == {202}
    assert [r["job"]["resultFile"] for r in results] == [f"{i}.png" for i in range(1000)]
    again = await post_batch(api, jobs)  # a client retrying the whole batch
    assert {r["status"] for r in again} == {200}
    too_many = await api.client.post("/results/batch", json={"jobs": [*jobs, body()]})
    assert "at most 1000" in await error_of(too_many, 413)


async def test_batch_body_over_4_mib_is_413(api: Api) -> None:
    padded = {"jobs": [body(padding="x" * (5 * 1024 * 1024))]}
    too_big = await api.client.post("/results/batch", json=padded)
    assert "larger than 4194304 bytes" in await error_of(too_big, 413)
    # The single enqueue keeps its own limit.
    big = body(padding="x" * (100 * 1024))
    single = await api.client.post("/results/enqueue", json=big)
    assert "larger than 65536 bytes" in await error_of(single, 413)


@pytest.mark.parametrize(
    "doc",
    [[body()], {"job": [body()]}, {"jobs": body()}, {"jobs": None}, {"jobs": []}, "jobs", 3],
)
async def test_batch_envelope_must_be_an_object_with_a_jobs_array(api: Api, doc: Any) -> None:
    await error_of(await api.client.post("/results/batch", json=doc), 400)


async def test_batch_refuses_non_json_and_malformed_json(api: Api) -> None:
    text = await api.client.post("/results/batch", data=b"{}", headers={"Content-Type": "text/plain"})
    await error_of(text, 415)
    json_type = {"Content-Type": "application/json"}
    bad = await api.client.post("/results/batch", data=b'{"jobs": [', headers=json_type)
    assert "not valid JSON" in await error_of(bad, 400)


async def test_batch_probes_only_new_urls_and_refuses_unreachable_ones(
    open_api: OpenApi, image_server: ImageServer
) -> None:
    key = uuid.uuid4().hex
    good, old, missing = (f"/img/{key}-good.png", f"/img/{key}-old.png", f"/404/{key}-gone.png")
    async with open_api(verify_on_enqueue=True) as api:
        existing = body(imgUrl=image_server.url(old))
        assert (await api.client.post("/results/enqueue", json=existing)).status_code == 202
        gone = body(imgUrl=image_server.url(missing))
        results = await post_batch(api, [body(imgUrl=image_server.url(good)), existing, gone, gone])
    assert [r["status"] for r in results] == [202, 200, 400, 400]
    assert "not a reachable image" in results[2]["error"] and results[3]["error"] == results[2]["error"]
    assert image_server.hits(good) == 1 and image_server.hits(old) == 1  # not probed again
    assert image_server.hits(missing) == 1  # the duplicate shares its first's answer


async def test_batch_probes_concurrently_within_the_bound(
    open_api: OpenApi, image_server: ImageServer
) -> None:
    # Every URL hangs until the probe's timeout: 2 waves of PROBE_CONCURRENCY plus one
    # more cannot take less than 3 timeouts if bounded, nor 33 timeouts if concurrent.
    timeout = 0.3
    key = uuid.uuid4().hex
    jobs = [body(imgUrl=image_server.url(f"/hang/{key}/{i}.png")) for i in range(2 * PROBE_CONCURRENCY + 1)]
    async with open_api(verify_on_enqueue=True, probe_timeout=timeout) as api:
        started = time.monotonic()
        results = await post_batch(api, jobs)
        elapsed = time.monotonic() - started
    assert {r["status"] for r in results} == {400}
    assert 3 * timeout <= elapsed < 10 * timeout, elapsed
