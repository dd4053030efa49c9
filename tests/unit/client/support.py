"""Job views and fake APIs shared by the client's unit tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from jobsvc.client.aio import AsyncClient
from jobsvc.client.http import Client
from jobsvc.schemas import JobView

JOB = "0b6e1f2a-1111-4222-8333-444455556666"
OTHER = "9c1d2e3f-aaaa-4bbb-8ccc-ddddeeeeffff"


def raw_view(
    status: str = "Queued", *, updated: int = 1_000, result_file: str = "a.png", **kw: Any
) -> dict[str, Any]:
    """A job view as the API sends it (camelCase JSON); ``kw`` overrides fields."""
    return {
        "jobId": JOB,
        "type": "ingest",
        "imgUrl": f"http://images.test/{result_file}",
        "status": status,
        "resultFile": result_file,
        "createdAt": 1_000,
        "updatedAt": updated,
        "startedAt": None,
        "finishedAt": None,
        "durationMs": None,
        "runMs": None,
        "attempts": 0,
        "maxAttempts": 3,
        "priority": 0,
        "runAt": 1_000,
        "cancelRequested": False,
        "error": None,
        "tenant": "default",
        **kw,
    }


def view(status: str = "Queued", *, updated: int = 1_000, result_file: str = "a.png", **kw: Any) -> JobView:
    """`raw_view`, as the clients return it."""
    return JobView.model_validate(raw_view(status, updated=updated, result_file=result_file, **kw))


def sse(*views: dict[str, Any], retry: int = 1) -> bytes:
    """An event stream of ``views`` (raw), with comments and heartbeats between them."""
    parts = [f"retry: {retry}\n: connected\n\n"]
    for v in views:
        parts.append(f"event: job\nid: 1-{v['updatedAt']}\ndata: {json.dumps(v)}\n\n: heartbeat\n\n")
    return "".join(parts).encode()


def fake_api(handler: Callable[[httpx.Request], httpx.Response]) -> AsyncClient:
    return AsyncClient("http://api.test", transport=httpx.MockTransport(handler))


def fake_sync_api(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://api.test", transport=httpx.MockTransport(handler))
