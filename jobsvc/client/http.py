"""Typed HTTP clients of the jobsvc API: `Client` (blocking) and `AsyncClient` (trio).

Each method is one API call (DESIGN §2) and returns the pydantic models of
`jobsvc.schemas`. Errors, all `ClientError`::

    ClientError                  str(err) is one sentence
      .status  the HTTP status of a refused request (None: no usable answer)
      .error   the API's own ``{"error": sentence}`` (None when it sent none)
      .unavailable  True when the API could not be reached, answered
                    502/503/504, or an event stream was lost: worth retrying later

httpx's exceptions become `ClientError` in one place, `_translate`; HTTP error
answers and undecodable bodies in `_decode`. Nothing here prints or exits: the
commands (`jobsvc.client.commands`) decide what a user sees.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
import pydantic
import trio

from jobsvc import __version__
from jobsvc.client.sse import SSEParser
from jobsvc.schemas import CancelResponse, JobView, JobViews

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_RECONNECTS",
    "MAX_RECONNECT_DELAY",
    "REQUEST_TIMEOUT",
    "STREAM_READ_TIMEOUT",
    "AsyncClient",
    "Client",
    "ClientError",
    "Enqueued",
    "Page",
    "error_sentence",
]

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
#: The API sends a heartbeat comment every 15 s: three missed ones mean the stream is dead.
STREAM_READ_TIMEOUT = 45.0
#: Consecutive failed reconnects of an event stream before `AsyncClient.events` gives up.
MAX_RECONNECTS = 5
MAX_RECONNECT_DELAY = 10.0
_UNAVAILABLE_STATUSES = (502, 503, 504)


class ClientError(Exception):
    """A request that did not succeed; ``str(err)`` is a sentence (see the module docstring)."""

    def __init__(
        self, message: str, *, status: int | None = None, error: str | None = None, unavailable: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.unavailable = unavailable


@dataclass(frozen=True)
class Enqueued:
    """The answer to an enqueue: the job view, and False in ``created`` when an identical
    request had already enqueued it (HTTP 200: a safe retry) rather than this one (202)."""

    view: JobView
    created: bool


@dataclass(frozen=True)
class Page:
    """One page of ``GET /results/list``; ``next_url`` is the Link rel=next, if more rows exist."""

    views: list[JobView]
    next_url: str | None


# --- the one place httpx's errors and the API's answers are interpreted --------------


def _options(url: str, transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "base_url": url,
        "timeout": httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        "headers": {"User-Agent": f"jobsvc/{__version__}"},
    }
    if transport is not None:
        options["transport"] = transport
    return options


@contextmanager
def _translate(url: str) -> Iterator[None]:
    """The one place where httpx's exceptions become `ClientError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach the API at {url}: {_describe(exc)}", unavailable=True) from exc
    except httpx.HTTPError as exc:
        raise ClientError(f"talking to the API at {url} failed: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _refused(response: httpx.Response) -> ClientError:
    status = response.status_code
    return ClientError(
        error_sentence(status, response.content),
        status=status,
        error=_api_error(response.content),
        unavailable=status in _UNAVAILABLE_STATUSES,
    )


def _decode(response: httpx.Response, model: Callable[[Any], T]) -> T:
    """The body of a successful answer as ``model``; raises `ClientError` otherwise."""
    if not response.is_success:
        raise _refused(response)
    try:
        return model(response.json())
    except ValueError:  # not JSON, or pydantic's ValidationError: not what the API sends
        raise ClientError(
            f"the API answered HTTP {response.status_code} with a body that is not what it documents",
            status=response.status_code,
        ) from None


def _api_error(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def error_sentence(status: int, body: bytes) -> str:
    """The API's ``{"error": sentence}``, or a description of an unexpected answer."""
    error = _api_error(body)
    if error is not None:
        return f"{error} (HTTP {status})"
    snippet = " ".join(body.decode("utf-8", "replace").split())
    if len(snippet) > 120:
        snippet = snippet[:119] + "…"
    return f"the API answered HTTP {status}" + (f": {snippet}" if snippet else "")


def _job_path(job_id: str) -> str:
    return f"/results/{quote(job_id, safe='')}"


def _views(data: Any) -> list[JobView]:
    return JobViews.model_validate(data).root


# --- the clients ---------------------------------------------------------------------


class Client:
    """A blocking client of the API at ``url``; close it (or use ``with``) when done."""

    def __init__(self, url: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self._http = httpx.Client(**_options(url, transport))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with _translate(self.url):
            return self._http.request(method, path, **kwargs)

    def enqueue(
        self,
        job_id: str,
        img_url: str,
        *,
        type: str = "ingest",
        priority: int | None = None,
        run_at: int | None = None,
        max_attempts: int | None = None,
    ) -> Enqueued:
        """``POST /results/enqueue``: one result of a job (``None`` leaves the server's default)."""
        body: dict[str, Any] = {"jobId": job_id, "type": type, "imgUrl": img_url}
        optional = {"priority": priority, "runAt": run_at, "maxAttempts": max_attempts}
        body.update({key: value for key, value in optional.items() if value is not None})
        response = self._send("POST", "/results/enqueue", json=body)
        return Enqueued(_decode(response, JobView.model_validate), created=response.status_code != 200)

    def pages(
        self, *, status: str | None = None, job_id: str | None = None, limit: int | None = None
    ) -> Iterator[Page]:
        """``GET /results/list``, then each next page (Link rel=next) as long as it is iterated."""
        params = {"status": status, "jobId": job_id, "limit": limit}
        response = self._send(
            "GET", "/results/list", params={k: v for k, v in params.items() if v is not None}
        )
        seen: set[str] = set()
        while True:
            page = Page(_decode(response, _views), response.links.get("next", {}).get("url"))
            yield page
            if page.next_url is None or page.next_url in seen:  # a server looping its links
                return
            seen.add(page.next_url)
            response = self._send("GET", page.next_url)

    def get(self, job_id: str) -> list[JobView]:
        """``GET /results/{jobId}``: every result of the job."""
        return _decode(self._send("GET", _job_path(job_id)), _views)

    def cancel(self, job_id: str) -> CancelResponse:
        """``POST /results/{jobId}/cancel``: cancel every unfinished result of the job."""
        return _decode(self._send("POST", _job_path(job_id) + "/cancel"), CancelResponse.model_validate)

    def retry(self, job_id: str) -> CancelResponse:
        """``POST /results/{jobId}/retry``: put the job's Failed and Canceled results back to Queued."""
        return _decode(self._send("POST", _job_path(job_id) + "/retry"), CancelResponse.model_validate)


class AsyncClient:
    """A trio client of the API at ``url``, for what is awaited: following events."""

    def __init__(self, url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self._http = httpx.AsyncClient(**_options(url, transport))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, job_id: str) -> list[JobView]:
        """``GET /results/{jobId}``: every result of the job."""
        with _translate(self.url):
            response = await self._http.get(_job_path(job_id))
        return _decode(response, _views)

    async def events(
        self, job_id: str | None = None, *, on_connect: Callable[[], None] | None = None
    ) -> AsyncGenerator[JobView, None]:
        """Yield the job view of every ``job`` event of ``GET /results/events``, forever.

        A stream that ends or breaks is reopened (with ``Last-Event-ID``) after the
        server's ``retry`` delay, doubling on each consecutive failure; after
        `MAX_RECONNECTS` failures in a row it raises `ClientError` (unavailable). A
        first connection that fails, or an answer other than 200, raises at once.
        ``on_connect`` runs when a connection's first line arrives: the API subscribes
        a stream before it sends anything, so from then on no change is missed.
        Cancelling the iteration closes the connection.
        """
        parser = SSEParser()
        failures = 0
        connected = False
        while True:
            with _translate(self.url):
                try:
                    async with self._connect(job_id, parser) as lines:
                        failures, connected = 0, True
                        async with aclosing(_job_events(lines, parser, on_connect)) as views:
                            async for view in views:
                                yield view
                    reason = "the event stream ended"
                except httpx.TransportError as exc:
                    if not connected:
                        raise  # as `_translate` words it: the API cannot be reached
                    reason = _describe(exc)
            failures += 1
            if failures > MAX_RECONNECTS:
                raise ClientError(
                    f"lost the event stream of {self._http.base_url} ({reason}); gave up after "
                    f"{MAX_RECONNECTS} reconnects",
                    unavailable=True,
                )
            await trio.sleep(min(parser.retry_seconds * 2 ** (failures - 1), MAX_RECONNECT_DELAY))

    @asynccontextmanager
    async def _connect(self, job_id: str | None, parser: SSEParser) -> AsyncIterator[AsyncIterator[str]]:
        """One connection of the event stream, answered 200; its lines, until it ends."""
        params = {} if job_id is None else {"jobId": job_id}
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if parser.last_event_id:
            headers["Last-Event-ID"] = parser.last_event_id
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT)
        request = self._http.stream("GET", "/results/events", params=params, headers=headers, timeout=timeout)
        async with request as response:
            if response.status_code != 200:
                await response.aread()
                raise _refused(response)
            parser.reset()
            yield response.aiter_lines()


async def _job_events(
    lines: AsyncIterator[str], parser: SSEParser, on_connect: Callable[[], None] | None
) -> AsyncGenerator[JobView, None]:
    """The job views of one connection's ``job`` events; ``on_connect`` at its first line."""
    first = True
    async for line in lines:
        if first and on_connect is not None:
            on_connect()
        first = False
        event = parser.feed(line)
        if event is not None and event.event == "job":
            yield _event_view(event.data)


def _event_view(data: str) -> JobView:
    try:
        return JobView.model_validate_json(data)
    except pydantic.ValidationError:
        raise ClientError(f"the API sent an event that is not a job view: {data!r:.100}") from None
