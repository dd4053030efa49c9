"""The public clients' own rules, on `httpx.MockTransport`: the token, connect retries,
the batch split, and that one core serves both clients."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import jobsvc
from jobsvc.client.core import BATCH_LIMIT, CONNECT_RETRIES
from tests.unit.client.support import JOB, raw_view


def test_token_is_sent_as_bearer_by_both_clients() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[raw_view()])

    with jobsvc.Client("http://api.test", token="s3cret", transport=httpx.MockTransport(handler)) as api:
        api.get(JOB)
    with jobsvc.Client("http://api.test", transport=httpx.MockTransport(handler)) as api:
        api.get(JOB)
    assert seen == ["Bearer s3cret", None]


async def test_async_client_sends_the_token_too() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[raw_view()])

    async with jobsvc.AsyncClient(
        "http://api.test", token="t", transport=httpx.MockTransport(handler)
    ) as api:
        await api.get(JOB)
    assert seen == ["Bearer t"]


def flaky(failures: int, error: type[httpx.TransportError]) -> tuple[httpx.MockTransport, list[int]]:
    calls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        if calls[0] <= failures:
            raise error("down", request=request)
        return httpx.Response(202, json=raw_view())

    return httpx.MockTransport(handler), calls


async def test_connect_errors_are_retried_then_succeed(autojump_clock: Any) -> None:
    transport, calls = flaky(CONNECT_RETRIES, httpx.ConnectError)
    async with jobsvc.AsyncClient("http://api.test", transport=transport) as api:
        answer = await api.enqueue(JOB, "http://images.test/a.png")
    assert answer.created and calls == [CONNECT_RETRIES + 1]


def test_connect_errors_give_up_after_the_retries() -> None:
    transport, calls = flaky(CONNECT_RETRIES + 1, httpx.ConnectError)
    with (
        jobsvc.Client("http://api.test", transport=transport) as api,
        pytest.raises(jobsvc.ClientError) as exc,
    ):
        api.enqueue(JOB, "http://images.test/a.png")
    assert exc.value.unavailable and calls == [CONNECT_RETRIES + 1]


def test_an_error_after_sending_is_not_retried() -> None:
    transport, calls = flaky(1, httpx.ReadTimeout)  # the request may have been acted on
    with jobsvc.Client("http://api.test", transport=transport) as api, pytest.raises(jobsvc.ClientError):
        api.enqueue(JOB, "http://images.test/a.png")
    assert calls == [1]


def test_enqueue_many_sends_the_api_limit_per_request() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        jobs = json.loads(request.content)["jobs"]
        sizes.append(len(jobs))
        return httpx.Response(
            200, json={"results": [{"status": 202, "job": raw_view(), "error": None}] * len(jobs)}
        )

    jobs = [
        {"jobId": JOB, "type": "ingest", "imgUrl": f"http://images.test/{i}.png"}
        for i in range(BATCH_LIMIT + 1)
    ]
    with jobsvc.Client("http://api.test", transport=httpx.MockTransport(handler)) as api:
        items = api.enqueue_many(jobs)
    assert sizes == [BATCH_LIMIT, 1] and len(items) == BATCH_LIMIT + 1
    assert all(item.status == 202 and item.job is not None for item in items)
