"""jobsvc.client.http: the typed clients on an in-memory transport (httpx.MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from jobsvc.client.http import MAX_RECONNECTS, ClientError, error_sentence
from jobsvc.model import Status
from tests.unit.client.support import JOB, fake_api, fake_sync_api, raw_view, sse

# --- errors ------------------------------------------------------------------------------


def test_error_sentence_uses_the_api_error() -> None:
    assert error_sentence(400, b'{"error": "imgUrl must be http"}') == "imgUrl must be http (HTTP 400)"


def test_error_sentence_describes_an_unexpected_body() -> None:
    assert error_sentence(502, b"<html>\n<b>Bad gateway</b></html>") == (
        "the API answered HTTP 502: <html> <b>Bad gateway</b></html>"
    )
    assert error_sentence(500, b"") == "the API answered HTTP 500"
    assert error_sentence(500, b'["error"]') == 'the API answered HTTP 500: ["error"]'


# --- the blocking client -----------------------------------------------------------------


def test_enqueue_sends_only_the_given_options_and_returns_the_typed_view() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json=raw_view("Queued"))

    with fake_sync_api(handler) as api:
        answer = api.enqueue(JOB, "http://i.test/a.png", priority=5)
    assert bodies == [{"jobId": JOB, "type": "ingest", "imgUrl": "http://i.test/a.png", "priority": 5}]
    assert answer.created
    assert (str(answer.view.job_id), answer.view.status) == (JOB, Status.QUEUED)


def test_enqueue_an_identical_retry_is_not_created() -> None:
    with fake_sync_api(lambda r: httpx.Response(200, json=raw_view("Completed"))) as api:
        answer = api.enqueue(JOB, "http://i.test/a.png")
    assert not answer.created and answer.view.status == Status.COMPLETED


def test_pages_follow_the_next_link_and_stop_when_it_repeats() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        n = len(seen)
        # The third page links back to the second: a broken server must not loop us forever.
        link = "</results/list?after=2>" if n == 3 else f"</results/list?after={n + 1}>"
        return httpx.Response(
            200, json=[raw_view(result_file=f"{n}.png")], headers={"Link": f'{link}; rel="next"'}
        )

    with fake_sync_api(handler) as api:
        pages = list(api.pages(status="Queued", limit=1))
    assert [[v.result_file for v in page.views] for page in pages] == [["1.png"], ["2.png"], ["3.png"]]
    assert seen == [
        "http://api.test/results/list?status=Queued&limit=1",
        "http://api.test/results/list?after=2",
        "http://api.test/results/list?after=3",
    ]
    assert pages[-1].next_url == "/results/list?after=2"


def test_get_and_cancel_quote_the_job_id_and_return_typed_answers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.raw_path == b"/results/a%2Fb"
            return httpx.Response(200, json=[raw_view("Processing")])
        assert request.url.raw_path == b"/results/a%2Fb/cancel"
        return httpx.Response(
            200,
            json={
                "jobId": JOB,
                "status": "Canceled",
                "results": [{"resultFile": "a.png", "status": "Canceled"}],
            },
        )

    with fake_sync_api(handler) as api:
        assert [v.status for v in api.get("a/b")] == [Status.PROCESSING]
        answer = api.cancel("a/b")
    assert answer.status == Status.CANCELED
    assert [(r.result_file, r.status) for r in answer.results] == [("a.png", Status.CANCELED)]


@pytest.mark.parametrize(
    ("status", "unavailable"),
    [(400, False), (404, False), (409, False), (502, True), (503, True), (504, True)],
)
def test_a_refused_request_carries_the_status_and_the_api_sentence(status: int, unavailable: bool) -> None:
    api = fake_sync_api(lambda r: httpx.Response(status, json={"error": "no such job"}))
    with api, pytest.raises(ClientError) as exc:
        api.get(JOB)
    assert (exc.value.status, exc.value.error, exc.value.unavailable) == (status, "no such job", unavailable)
    assert str(exc.value) == f"no such job (HTTP {status})"


def test_an_unreachable_api_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    refused = r"cannot reach the API at http://api\.test: connection refused"
    with fake_sync_api(handler) as api, pytest.raises(ClientError, match=refused) as exc:
        api.cancel(JOB)
    assert exc.value.unavailable and exc.value.status is None


@pytest.mark.parametrize("body", [b"<html>ok</html>", b'[{"jobId": "x"}]', b"{}"])
def test_a_success_with_an_undocumented_body_is_an_error(body: bytes) -> None:
    api = fake_sync_api(lambda r: httpx.Response(200, content=body))
    with api, pytest.raises(ClientError, match="HTTP 200 with a body that is not what it documents") as exc:
        api.get(JOB)
    assert exc.value.status == 200 and exc.value.error is None


async def test_events_refuse_an_event_that_is_not_a_job_view() -> None:
    stream = b'event: job\ndata: {"jobId": 1}\n\n'
    async with fake_api(lambda r: httpx.Response(200, content=stream)) as api:
        with pytest.raises(ClientError, match="not a job view"):
            async for _ in api.events(JOB):
                pass


# --- the event stream --------------------------------------------------------------------


async def test_events_reconnects_with_last_event_id_when_the_stream_ends(autojump_clock: Any) -> None:
    seen: list[httpx.Request] = []
    streams = [sse(raw_view("Queued", updated=1)), sse(raw_view("Processing", updated=2))]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=streams[len(seen) - 1])

    connections = []
    async with fake_api(handler) as api:
        got: list[str] = []
        async for v in api.events(JOB, on_connect=lambda: connections.append(len(got))):
            got.append(v.status)
            if len(got) == 2:
                break
    assert got == ["Queued", "Processing"]
    assert connections == [0, 1]  # each connection announced before its events
    assert [r.url.params["jobId"] for r in seen] == [JOB, JOB]
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "1-1"


async def test_events_fails_at_once_when_the_first_connection_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with fake_api(handler) as api:
        with pytest.raises(ClientError, match=r"cannot reach the API at http://api\.test") as exc:
            async for _ in api.events(None):
                pass
    assert exc.value.unavailable and exc.value.status is None


async def test_events_gives_up_after_repeated_reconnect_failures(autojump_clock: Any) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, content=sse())
        raise httpx.ConnectError("connection refused", request=request)

    async with fake_api(handler) as api:
        with pytest.raises(ClientError, match="gave up after 5 reconnects") as exc:
            async for _ in api.events(None):
                pass
    assert exc.value.unavailable
    assert calls == 1 + MAX_RECONNECTS


async def test_events_raises_the_api_error_of_a_refused_stream() -> None:
    async with fake_api(lambda r: httpx.Response(400, json={"error": "jobId must be a UUID"})) as api:
        with pytest.raises(ClientError, match="jobId must be a UUID") as exc:
            async for _ in api.events("nope"):
                pass
    assert (exc.value.status, exc.value.error, exc.value.unavailable) == (400, "jobId must be a UUID", False)
