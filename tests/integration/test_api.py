"""The HTTP API against a real PostgreSQL, through the app's real lifespan (DESIGN §2)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import trio

from jobsvc import queue
from jobsvc.api import MAX_BODY_BYTES, create_app
from jobsvc.config import Settings
from jobsvc.queue import Outcome
from jobsvc.schemas import CancelResponse, JobView, JobViews
from jobsvc.storage import storage_from_settings
from tests.fixtures.app import Api, OpenApi, error_of
from tests.fixtures.images import PNG, ImageServer
from tests.helpers import enqueue_body, held_quota_lock, in_thread, until, wait_blocked

Conn = psycopg.Connection[dict[str, Any]]
T = TypeVar("T")


def body(**fields: Any) -> dict[str, Any]:
    """`enqueue_body`, where a field given as ``_ABSENT`` is left out."""
    doc = enqueue_body("http://images.test/a/x.png", **fields)
    return {k: v for k, v in doc.items() if v is not _ABSENT}


_ABSENT = object()


async def enqueue(api: Api, **fields: Any) -> Any:
    return await api.client.post("/results/enqueue", json=body(**fields))


# --------------------------------------------------------------------------- enqueue


async def test_enqueue_accepts_with_202_location_and_queued_view(api: Api) -> None:
    job_id = str(uuid.uuid4())
    response = await enqueue(api, jobId=job_id, imgUrl="https://cdn.test/a/b/photo.jpg")
    assert response.status_code == 202
    assert response.headers["Location"] == f"/results/{job_id}"
    view = await response.get_json()
    JobView.model_validate(view)
    assert view["jobId"] == job_id and view["status"] == "Queued"
    assert view["resultFile"] == "photo.jpg" and view["type"] == "ingest"
    assert view["maxAttempts"] == api.settings.max_attempts and view["priority"] == 0
    assert view["attempts"] == 0 and view["cancelRequested"] is False and view["error"] is None
    assert isinstance(view["createdAt"], int) and view["durationMs"] is None


async def test_enqueue_identical_retry_is_200_and_different_request_is_409(api: Api) -> None:
    first = body()
    assert (await api.client.post("/results/enqueue", json=first)).status_code == 202
    again = await api.client.post("/results/enqueue", json=first)
    assert again.status_code == 200 and "Location" not in again.headers
    assert (await again.get_json())["jobId"] == first["jobId"]
    conflict = await api.client.post("/results/enqueue", json={**first, "type": "other"})
    assert "already has result 'x.png'" in await error_of(conflict, 409)
    other_url = await api.client.post("/results/enqueue", json={**first, "imgUrl": "http://h.test/b/x.png"})
    await error_of(other_url, 409)


async def test_enqueue_several_results_per_job(api: Api) -> None:
    job_id = str(uuid.uuid4())
    for name in ("a.png", "b.png", "c.jpg"):
        assert (await enqueue(api, jobId=job_id, imgUrl=f"http://h.test/{name}")).status_code == 202
    response = await api.client.get(f"/results/{job_id}")
    assert response.status_code == 200
    views = await response.get_json()
    JobViews.model_validate(views)
    assert [v["resultFile"] for v in views] == ["a.png", "b.png", "c.jpg"]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (
            "https://bucket.s3.amazonaws.com/a/results_2.png?X-Amz-Expires=60&X-Amz-Signature=ab",
            "results_2.png",
        ),
        ("http://h.test/dir/caf%C3%A9%20au%20lait.png#frag", "café au lait.png"),
    ],
)
async def test_enqueue_result_file_is_the_decoded_last_segment(api: Api, url: str, name: str) -> None:
    response = await enqueue(api, imgUrl=url)
    assert response.status_code == 202
    assert (await response.get_json())["resultFile"] == name


async def test_enqueue_optional_fields_and_unknown_fields(api: Api) -> None:
    run_at = 4_102_444_800_000  # 2100-01-01
    response = await enqueue(api, priority=-7, runAt=run_at, maxAttempts=7, comment="ignored")
    assert response.status_code == 202
    view = await response.get_json()
    assert (view["priority"], view["runAt"], view["maxAttempts"]) == (-7, run_at, 7)
    nulls = await enqueue(api, priority=None, runAt=None, maxAttempts=None)
    assert nulls.status_code == 202
    assert (await nulls.get_json())["priority"] == 0


BAD_FIELDS = [
    ({"jobId": _ABSENT}, "jobId is required"),
    ({"type": _ABSENT}, "type is required"),
    ({"imgUrl": _ABSENT}, "imgUrl is required"),
    ({"jobId": None}, "jobId must be a string, not null"),
    ({"jobId": 123}, "jobId must be a string"),
    ({"jobId": "not-a-uuid"}, "jobId must be a UUID"),
    ({"jobId": "00000000-0000-0000-0000-000000000000"}, "nil UUID"),
    ({"type": ""}, "type is invalid"),
    ({"type": "x" * 65}, "type is invalid"),
    ({"type": 5}, "type must be a string"),
    ({"type": None}, "type must be a string, not null"),
    ({"type": "a\tb"}, "control characters"),
    ({"imgUrl": None}, "imgUrl must be a string"),
    ({"imgUrl": "ftp://h.test/x.png"}, "http or https"),
    ({"imgUrl": "/relative/x.png"}, "http or https"),
    ({"imgUrl": "not a url"}, "imgUrl"),
    ({"imgUrl": "http://user:secret@h.test/x.png"}, "credentials"),
    ({"imgUrl": "http://h.test/dir/"}, "file name"),
    ({"imgUrl": "http://h.test/" + "a" * 2050 + ".png"}, "imgUrl is invalid"),
    ({"priority": 101}, "priority is invalid"),
    ({"priority": -101}, "priority is invalid"),
    ({"priority": True}, "priority must be an integer, not a boolean"),
    ({"priority": 1.5}, "priority must be an integer"),
    ({"priority": "1"}, "priority must be an integer, not a string"),
    ({"runAt": -1}, "runAt is invalid"),
    ({"runAt": 10**16}, "runAt is invalid"),
    ({"runAt": False}, "runAt must be an integer"),
    ({"maxAttempts": 0}, "maxAttempts is invalid"),
    ({"maxAttempts": 11}, "maxAttempts is invalid"),
    ({"maxAttempts": True}, "maxAttempts must be an integer"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_FIELDS, ids=[e for _, e in BAD_FIELDS])
async def test_enqueue_bad_field_is_400_with_a_sentence(
    api: Api, fields: dict[str, Any], expected: str
) -> None:
    response = await enqueue(api, **fields)
    assert expected in await error_of(response, 400)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'[{"jobId": "x"}]', "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b'{"jobId": ', "not valid JSON"),
        (b'{"priority": NaN}', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"type": "\xff"}', "not valid UTF-8"),
    ],
)
async def test_enqueue_malformed_body_is_400(api: Api, raw: bytes, expected: str) -> None:
    response = await api.client.post(
        "/results/enqueue", data=raw, headers={"Content-Type": "application/json"}
    )
    assert expected in await error_of(response, 400)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.jobsvc+json"])
async def test_enqueue_accepts_json_content_types(api: Api, content_type: str) -> None:
    data = json.dumps(body()).encode()
    response = await api.client.post("/results/enqueue", data=data, headers={"Content-Type": content_type})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_enqueue_non_json_content_type_is_415(api: Api, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await api.client.post("/results/enqueue", data=json.dumps(body()).encode(), headers=headers)
    await error_of(response, 415)


async def test_enqueue_body_over_64_kib_is_413(api: Api) -> None:
    big = body(padding="x" * MAX_BODY_BYTES)
    response = await api.client.post("/results/enqueue", json=big)
    assert "larger than 65536 bytes" in await error_of(response, 413)


async def test_enqueue_body_larger_than_its_content_length_is_413(api: Api) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "100"}
    async with api.client.request("/results/enqueue", method="POST", headers=headers) as connection:
        for _ in range(5):
            await connection.send(b" " * 20_000)
        await connection.send_complete()
        response = await connection.as_response()
    assert "larger than" in await error_of(response, 413)


# --------------------------------------------------------------------------- probe


async def test_probe_refuses_unreachable_and_non_images_and_accepts_a_png(
    open_api: OpenApi, image_server: ImageServer
) -> None:
    async with open_api(verify_on_enqueue=True, allow_private_urls=True) as api:
        missing = await enqueue(api, imgUrl=image_server.url("/404/x.png"))
        assert "not a reachable image" in (reason := await error_of(missing, 400)) and "404" in reason
        html = await enqueue(api, imgUrl=image_server.url("/html/page.png"))
        assert "not a reachable image" in await error_of(html, 400)
        good = await enqueue(api, imgUrl=image_server.url(f"/img/{uuid.uuid4().hex}.png"))
        assert good.status_code == 202


async def test_probe_refuses_private_addresses_by_default(
    open_api: OpenApi, image_server: ImageServer
) -> None:
    async with open_api(verify_on_enqueue=True, allow_private_urls=False) as api:
        response = await enqueue(api, imgUrl=f"http://127.0.0.1:{image_server.port}/x.png")
        assert "not a reachable image" in await error_of(response, 400)


async def test_probe_is_skipped_for_an_identical_retry(open_api: OpenApi, image_server: ImageServer) -> None:
    path = f"/img/{uuid.uuid4().hex}.png"
    async with open_api(verify_on_enqueue=True) as api:
        first = body(imgUrl=image_server.url(path))
        assert (await api.client.post("/results/enqueue", json=first)).status_code == 202
        assert (await api.client.post("/results/enqueue", json=first)).status_code == 200
    assert image_server.hits(path) == 1


# --------------------------------------------------------------------------- wake-ups


async def test_enqueue_wakes_workers_once_committed(api: Api, notifications: Any) -> None:
    wakeups = notifications(queue.WAKEUP_CHANNEL, queue.EVENTS_CHANNEL)
    response = await enqueue(api)
    assert response.status_code == 202
    seen: list[psycopg.Notify] = []
    with trio.fail_after(5):
        while {n.channel for n in seen} != {queue.WAKEUP_CHANNEL, queue.EVENTS_CHANNEL}:
            seen.append(await wakeups.next())
    (wake,) = [n for n in seen if n.channel == queue.WAKEUP_CHANNEL]
    assert wake.payload == ""


async def test_a_burst_of_enqueues_is_coalesced_into_few_wakeups(
    api: Api, notifications: Any, database_url: str
) -> None:
    # The burst is made certain rather than hoped for: the first request's transaction
    # waits on the tenant's quota lock (held here) while the other 49 pile up behind it.
    listener = notifications(queue.WAKEUP_CHANNEL, queue.EVENTS_CHANNEL)
    collector = api.services.collector
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await enqueue(api)).status_code)

    async with trio.open_nursery() as nursery:
        with held_quota_lock(database_url):
            nursery.start_soon(one)
            await wait_blocked(database_url)
            for _ in range(49):
                nursery.start_soon(one)
            await until(lambda: collector.pending == 49, what="49 requests queued behind the first")
    assert statuses == [202] * 50
    announced: set[int] = set()
    wakeups = 0
    with trio.fail_after(10):
        while len(announced) < 50:
            notification = await listener.next()
            if notification.channel == queue.WAKEUP_CHANNEL:
                wakeups += 1
            else:
                announced.update(int(i) for i in notification.payload.split(","))
    assert 1 <= wakeups <= 2, wakeups  # one per group at most: 50 requests, two groups


# --------------------------------------------------------------------------- get, list


async def test_get_unknown_job_is_404_and_malformed_id_is_400(api: Api) -> None:
    assert "does not exist" in await error_of(await api.client.get(f"/results/{uuid.uuid4()}"), 404)
    assert "must be a UUID" in await error_of(await api.client.get("/results/nope"), 400)


async def test_unknown_route_and_wrong_method_are_json(api: Api) -> None:
    assert "/nowhere" in await error_of(await api.client.get("/nowhere"), 404)
    wrong = await api.client.delete("/results/list")
    assert "DELETE is not allowed" in await error_of(wrong, 405)
    assert "GET" in wrong.headers["Allow"]
    await error_of(await api.client.post("/healthz"), 405)


async def test_list_pages_with_link_and_cursor(api: Api) -> None:
    job_ids = [str(uuid.uuid4()) for _ in range(5)]
    for job_id in job_ids:
        assert (await enqueue(api, jobId=job_id)).status_code == 202
    seen: list[str] = []
    url: str | None = "/results/list?limit=2"
    pages = 0
    while url is not None:
        response = await api.client.get(url)
        assert response.status_code == 200 and response.headers["ETag"]
        views = await response.get_json()
        JobViews.model_validate(views)
        seen += [v["jobId"] for v in views]
        pages += 1
        link = response.headers.get("Link")
        if link is None:
            url = None
        else:
            assert link.endswith('>; rel="next"') and "limit=2" in link and "after=" in link
            url = link[1 : link.index(">")]
    assert seen == job_ids and pages == 3


async def test_list_filters_by_status_and_job(api: Api) -> None:
    keep, drop = str(uuid.uuid4()), str(uuid.uuid4())
    await enqueue(api, jobId=keep, imgUrl="http://h.test/1.png")
    await enqueue(api, jobId=keep, imgUrl="http://h.test/2.png")
    await enqueue(api, jobId=drop)
    assert (await api.client.post(f"/results/{drop}/cancel")).status_code == 200
    canceled = await (await api.client.get("/results/list?status=Canceled")).get_json()
    assert [v["jobId"] for v in canceled] == [drop]
    queued = await (await api.client.get("/results/list", query_string={"status": "Queued"})).get_json()
    assert {v["jobId"] for v in queued} == {keep}
    mine = await (await api.client.get(f"/results/list?jobId={keep}")).get_json()
    assert [v["resultFile"] for v in mine] == ["1.png", "2.png"]


@pytest.mark.parametrize(
    "query",
    [
        "status=Done",
        "jobId=nope",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=!!",
        "after=" + base64.urlsafe_b64encode(b"abc").decode(),
        "limit=1&limit=2",
    ],
)
async def test_list_bad_query_is_400(api: Api, query: str) -> None:
    await error_of(await api.client.get(f"/results/list?{query}"), 400)


async def test_list_etag_and_if_none_match(api: Api) -> None:
    await enqueue(api)
    first = await api.client.get("/results/list")
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    cached = await api.client.get("/results/list", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and await cached.get_data() == b""
    assert cached.headers["ETag"] == etag
    weak = await api.client.get("/results/list", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    await enqueue(api)
    changed = await api.client.get("/results/list", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


# --------------------------------------------------------------------------- cancel


async def test_cancel_queued_job_is_canceled_and_idempotent(api: Api) -> None:
    job_id = str(uuid.uuid4())
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/a.png")
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/b.png")
    for _ in range(2):
        response = await api.client.post(f"/results/{job_id}/cancel")
        assert response.status_code == 200
        doc = await response.get_json()
        CancelResponse.model_validate(doc)
        assert doc == {
            "jobId": job_id,
            "status": "Canceled",
            "results": [
                {"resultFile": "a.png", "status": "Canceled"},
                {"resultFile": "b.png", "status": "Canceled"},
            ],
        }


async def test_cancel_of_a_processing_result_is_requested(api: Api, conn: Conn) -> None:
    job_id = str(uuid.uuid4())
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/run.png", priority=100)
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/wait.png", priority=-100)
    (claimed,), _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 1))
    assert claimed.result_file == "run.png"
    doc = await (await api.client.post(f"/results/{job_id}/cancel")).get_json()
    assert doc["status"] == "Processing"
    assert doc["results"] == [
        {"resultFile": "run.png", "status": "Processing"},
        {"resultFile": "wait.png", "status": "Canceled"},
    ]
    views = await (await api.client.get(f"/results/{job_id}")).get_json()
    assert [v["cancelRequested"] for v in views] == [True, True]


async def test_cancel_unknown_is_404_and_malformed_is_400(api: Api) -> None:
    await error_of(await api.client.post(f"/results/{uuid.uuid4()}/cancel"), 404)
    await error_of(await api.client.post("/results/123/cancel"), 400)


# --------------------------------------------------------------------------- download


async def complete(api: Api, conn: Conn, tmp_path: Path, job_id: str, name: str, data: bytes = PNG) -> None:
    """Do what a worker does: store the file, then record Completed."""
    source = tmp_path / f"source-{uuid.uuid4().hex}"
    source.write_bytes(data)
    storage = storage_from_settings(api.settings)
    try:
        await storage.put(f"{job_id}/{name}", source, "image/png")
    finally:
        await storage.aclose()
    jobs, _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 100))
    (mine,) = [j for j in jobs if str(j.job_id) == job_id and j.result_file == name]
    await in_thread(conn, lambda c: queue.finish(c, "w1", [Outcome(mine.id, "completed")]))


async def test_download_streams_a_completed_result(api: Api, conn: Conn, tmp_path: Path) -> None:
    job_id = str(uuid.uuid4())
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/done.png")
    await enqueue(api, jobId=job_id, imgUrl="http://h.test/later.png", priority=-1)
    assert "Queued, not Completed" in await error_of(await api.client.get(f"/results/{job_id}/done.png"), 404)
    await complete(api, conn, tmp_path, job_id, "done.png")
    response = await api.client.get(f"/results/{job_id}/done.png")
    assert response.status_code == 200
    assert response.content_type == "image/png" and await response.get_data() == PNG
    assert response.headers["Content-Length"] == str(len(PNG))
    await error_of(await api.client.get(f"/results/{job_id}/missing.png"), 404)
    await error_of(await api.client.get(f"/results/{uuid.uuid4()}/done.png"), 404)
    await error_of(await api.client.get("/results/nope/done.png"), 400)


async def test_download_from_s3_redirects_to_a_presigned_url(
    open_api: OpenApi, s3_settings: Settings, conn: Conn, tmp_path: Path
) -> None:
    async with open_api(
        storage_url=s3_settings.storage_url, s3_endpoint_url=s3_settings.s3_endpoint_url
    ) as api:
        job_id = str(uuid.uuid4())
        await enqueue(api, jobId=job_id, imgUrl="http://h.test/s3.png")
        await complete(api, conn, tmp_path, job_id, "s3.png")
        response = await api.client.get(f"/results/{job_id}/s3.png")
        assert response.status_code == 307
        location = response.headers["Location"]
        assert location.startswith(str(s3_settings.s3_endpoint_url)) and "X-Amz-Expires=300" in location
        async with httpx.AsyncClient(trust_env=False) as http:
            fetched = await http.get(location)
        assert fetched.status_code == 200 and fetched.content == PNG


# --------------------------------------------------------------------------- operations


async def test_healthz_and_readyz_on_a_migrated_database(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert health.status_code == 200 and await health.get_json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    doc = await ready.get_json()
    assert doc["status"] == "ok" and set(doc["checks"].values()) == {"ok"}


async def test_readyz_is_503_without_the_schema(open_api: OpenApi, empty_database_url: str) -> None:
    async with open_api(database_url=empty_database_url) as api:
        response = await api.client.get("/readyz")
        assert response.status_code == 503
        doc = await response.get_json()
        assert "not migrated" in doc["error"] and doc["checks"]["database"] == "ok"
        assert (await api.client.get("/healthz")).status_code == 200


async def test_requests_are_503_while_postgresql_is_unreachable(open_api: OpenApi) -> None:
    dead = "postgresql://jobsvc@127.0.0.1:1/nothing"
    async with open_api(database_url=dead) as api:
        assert (await api.client.get("/healthz")).status_code == 200
        ready = await api.client.get("/readyz")
        doc = await ready.get_json()
        assert ready.status_code == 503 and doc["checks"]["database"].startswith("unreachable")
        assert "PostgreSQL" in await error_of(await enqueue(api), 503)


async def test_openapi_documents_every_route_and_the_error_shape(api: Api) -> None:
    doc = await (await api.client.get("/openapi.json")).get_json()
    paths = doc["paths"]
    auth = {"401", "403"}  # every route that needs a key with a scope
    expected = {
        # 429: JOBSVC_RATE_LIMIT (and on enqueue and batch items, the tenant's quota)
        ("/results/enqueue", "post"): {"202", "200", "400", "409", "413", "415", "429", "500", "503", *auth},
        ("/results/list", "get"): {"200", "304", "400", "429", "500", "503", *auth},
        ("/results/events", "get"): {"200", "400", "429", "500", "503", *auth},
        ("/results/{jobId}", "get"): {"200", "400", "404", "429", "500", "503", *auth},
        ("/results/{jobId}/cancel", "post"): {"200", "400", "404", "429", "500", "503", *auth},
        ("/results/{jobId}/retry", "post"): {"200", "400", "404", "429", "500", "503", *auth},
        ("/results/batch", "post"): {"200", "400", "413", "415", "429", "500", "503", *auth},
        ("/results/{jobId}/{resultFile}", "get"): {"200", "307", "400", "404", "429", "500", "503", *auth},
        ("/auth/whoami", "get"): {"200", "401", "500", "503"},
        ("/healthz", "get"): {"200"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), codes in expected.items():
        assert {str(c) for c in paths[path][method]["responses"]} == codes, (path, method)
    components = doc["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/")
        resolved: dict[str, Any] = components[ref.rsplit("/", 1)[1]]
        return resolved

    enqueue_doc = paths["/results/enqueue"]["post"]
    schema = resolve(enqueue_doc["requestBody"]["content"]["application/json"]["schema"])
    assert {"jobId", "type", "imgUrl", "priority", "runAt", "maxAttempts"} <= set(schema["properties"])
    assert set(schema["required"]) == {"jobId", "type", "imgUrl"}
    assert (
        "Location" in enqueue_doc["responses"]["202"]["headers"]
        or "location" in enqueue_doc["responses"]["202"]["headers"]
    )
    error = resolve(enqueue_doc["responses"]["409"]["content"]["application/json"]["schema"])
    assert error["properties"] == {"error": {"type": "string"}}
    assert "text/event-stream" in paths["/results/events"]["get"]["responses"]["200"]["content"]
    list_params = {p["name"] for p in paths["/results/list"]["get"]["parameters"]}
    assert {"status", "jobId", "limit", "after", "if-none-match"} <= list_params
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in (await docs.get_data(as_text=True)).lower()


async def test_an_unexpected_error_is_a_500_sentence_without_details(api_settings: Settings) -> None:
    app = create_app(api_settings)

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret internals")

    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/boom")
    message = await error_of(response, 500)
    assert "secret" not in message and "Traceback" not in message


async def test_openapi_spec_is_valid_and_matches_the_routes(api: Api) -> None:
    from openapi_spec_validator import validate

    doc = await (await api.client.get("/openapi.json")).get_json()
    validate(doc)  # raises on an invalid OpenAPI document
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in api.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
        and not rule.rule.startswith(("/openapi.json", "/docs", "/redocs", "/scalar", "/dashboard"))
        and rule.rule != "/"  # the HTML pages (and / redirecting to one) are not API
        and rule.endpoint != "static"
    }
    assert documented == served


async def test_openapi_is_shaped_for_client_generators(api: Api) -> None:
    doc = await (await api.client.get("/openapi.json")).get_json()
    operation_ids: list[str] = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            where = (path, method)
            operation_ids.append(operation["operationId"])
            assert len(operation["tags"]) == 1, where
            assert operation["tags"][0] in {tag["name"] for tag in doc["tags"]}, where
            assert operation["summary"] and operation["description"], where
            for code, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    # Every JSON body is a component by reference (an array: of references):
                    # inline copies make generators emit one class per response, or none.
                    if media == "application/json":
                        schema = content["schema"]
                        assert "$ref" in schema or "$ref" in schema.get("items", {}), (where, code)
    assert len(set(operation_ids)) == len(operation_ids)
    assert {"enqueue", "listResults", "getJob", "cancelJob", "downloadResult"} <= set(operation_ids)
    assert {"JobView", "ErrorBody", "ReadyBody", "EnqueueRequest", "CancelResponse"} <= set(
        doc["components"]["schemas"]
    )
    text = json.dumps(doc)
    assert "``" not in text and "schema.sql" not in text  # plain text, about the API only
