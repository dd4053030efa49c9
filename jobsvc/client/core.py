"""The sans-I/O core of `Client` and `AsyncClient`: what each API call sends, how each
answer is read, and when an event stream is resumed. No socket, no sleep, no clock:
`jobsvc.client.http` (blocking) and `jobsvc.client.aio` (async) are the two thin
transports that use it.

Errors, all `ClientError` (a `jobsvc.JobsvcError`)::

    ClientError                  str(err) is one sentence
      .status  the HTTP status of a refused request (None: no usable answer)
      .error   the API's own ``{"error": sentence}`` (None when it sent none)
      .unavailable  True when the API could not be reached, answered
                    502/503/504, or an event stream was lost: worth retrying later

httpx's exceptions become `ClientError` in one place, `translate`; HTTP error
answers and undecodable bodies in `decode`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from jobsvc import __version__
from jobsvc.client.sse import SSEParser
from jobsvc.errors import JobsvcError
from jobsvc.schemas import CancelResponse, EnqueueRequest, JobView, JobViews

__all__ = [
    "BATCH_LIMIT",
    "CONNECT_RETRIES",
    "CONNECT_TIMEOUT",
    "MAX_RECONNECTS",
    "MAX_RECONNECT_DELAY",
    "REQUEST_TIMEOUT",
    "STREAM_READ_TIMEOUT",
    "BatchItem",
    "Call",
    "ClientError",
    "Enqueued",
    "EventStream",
    "Page",
    "error_sentence",
]

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
#: The API sends a heartbeat comment every 15 s: three missed ones mean the stream is dead.
STREAM_READ_TIMEOUT = 45.0
#: Consecutive failed reconnects of an event stream before the client gives up.
MAX_RECONNECTS = 5
MAX_RECONNECT_DELAY = 10.0
#: A call whose connection could not be made (nothing was sent) is tried this many more
#: times, after 0.25 s, then 0.5 s: every call of the API is safe to repeat (DESIGN §2).
CONNECT_RETRIES = 2
CONNECT_RETRY_DELAY = 0.25
#: Jobs per ``POST /results/batch`` (the API's limit): `enqueue_many` sends larger lists in parts.
BATCH_LIMIT = 1000
_UNAVAILABLE_STATUSES = (502, 503, 504)


class ClientError(JobsvcError):
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


class BatchItem(pydantic.BaseModel):
    """One item's answer in ``POST /results/batch``, in input order: ``status`` as the single
    enqueue would answer (202 created, 200 identical repeat, 400, 409, 429), with the job
    view or the error sentence."""

    status: int
    job: JobView | None = None
    error: str | None = None


class _BatchResponse(pydantic.BaseModel):
    results: list[BatchItem]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reading of its answer (``decode`` raises `ClientError`)."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None


# --- building requests ----------------------------------------------------------------


def client_options(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"User-Agent": f"jobsvc/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "base_url": url,
        "timeout": httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        "headers": headers,
    }


def job_path(job_id: str) -> str:
    return f"/results/{quote(str(job_id), safe='')}"


def enqueue_body(
    job_id: str, img_url: str, type: str, priority: int | None, run_at: int | None, max_attempts: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"jobId": str(job_id), "type": type, "imgUrl": img_url}
    optional = {"priority": priority, "runAt": run_at, "maxAttempts": max_attempts}
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def enqueue_call(body: dict[str, Any]) -> Call[Enqueued]:
    def read(response: httpx.Response) -> Enqueued:
        return Enqueued(decode(response, JobView.model_validate), created=response.status_code != 200)

    return Call("POST", "/results/enqueue", read, json=body)


def batch_bodies(jobs: Iterable[EnqueueRequest | Mapping[str, Any]]) -> Iterator[list[Any]]:
    """The ``jobs`` arrays of the batch requests: `BATCH_LIMIT` items each."""
    chunk: list[Any] = []
    for job in jobs:
        if isinstance(job, EnqueueRequest):
            chunk.append(job.model_dump(mode="json", by_alias=True, exclude_none=True))
        else:
            chunk.append(dict(job))
        if len(chunk) == BATCH_LIMIT:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def batch_call(jobs: list[Any]) -> Call[list[BatchItem]]:
    return Call(
        "POST",
        "/results/batch",
        lambda r: decode(r, _BatchResponse.model_validate).results,
        json={"jobs": jobs},
    )


def list_params(
    status: str | Iterable[str] | None, job_id: str | None, order: Literal["asc", "desc"], limit: int | None
) -> dict[str, str | int]:
    params: dict[str, str | int] = {} if order == "asc" else {"order": order}  # asc: the default
    if status is not None:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if job_id is not None:
        params["jobId"] = str(job_id)
    if limit is not None:
        params["limit"] = limit
    return params


def page_call(path: str, params: Mapping[str, str | int]) -> Call[Page]:
    def read(response: httpx.Response) -> Page:
        return Page(decode(response, views), response.links.get("next", {}).get("url"))

    return Call("GET", path, read, params=params)


def get_call(job_id: str) -> Call[list[JobView]]:
    return Call("GET", job_path(job_id), lambda r: decode(r, views))


def cancel_call(job_id: str) -> Call[CancelResponse]:
    return Call("POST", job_path(job_id) + "/cancel", lambda r: decode(r, CancelResponse.model_validate))


def retry_call(job_id: str) -> Call[CancelResponse]:
    return Call("POST", job_path(job_id) + "/retry", lambda r: decode(r, CancelResponse.model_validate))


def download_path(job_id: str, result_file: str) -> str:
    return f"{job_path(job_id)}/{quote(result_file, safe='')}"


class PageWalk:
    """Follows Link rel=next; stops at the last page or at a link already followed
    (a server looping its links)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def next(self, page: Page) -> Call[Page] | None:
        if page.next_url is None or page.next_url in self._seen:
            return None
        self._seen.add(page.next_url)
        return page_call(page.next_url, {})


# --- reading answers: the one place httpx's errors and the API's answers are interpreted


@contextmanager
def translate(url: str) -> Iterator[None]:
    """The one place where httpx's exceptions become `ClientError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach the API at {url}: {describe(exc)}", unavailable=True) from exc
    except httpx.HTTPError as exc:
        raise ClientError(f"talking to the API at {url} failed: {describe(exc)}") from exc


def connect_failed(exc: BaseException | None) -> bool:
    """Nothing was sent: the call may be repeated whatever it is."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def refused(response: httpx.Response) -> ClientError:
    status = response.status_code
    return ClientError(
        error_sentence(status, response.content),
        status=status,
        error=_api_error(response.content),
        unavailable=status in _UNAVAILABLE_STATUSES,
    )


def decode(response: httpx.Response, model: Callable[[Any], T]) -> T:
    """The body of a successful answer as ``model``; raises `ClientError` otherwise."""
    if not response.is_success:
        raise refused(response)
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


def views(data: Any) -> list[JobView]:
    return JobViews.model_validate(data).root


# --- the event stream -------------------------------------------------------------------


class EventStream:
    """The state of one ``GET /results/events`` subscription across its connections.

    A transport opens `request_args`, calls `connected` on a 200 answer, `feed`s each
    line (a job view comes back for each ``job`` event) and, when a connection ends or
    breaks, asks `reconnect_delay`: the server's ``retry`` doubled per consecutive
    failure, or `ClientError` after `MAX_RECONNECTS` failures in a row. A first
    connection that fails is not retried (the caller's error is the right one).
    """

    def __init__(self, url: str, job_id: str | None) -> None:
        self.url = url
        self.job_id = job_id
        self.parser = SSEParser()
        self.failures = 0
        self.ever_connected = False

    def request_args(self) -> dict[str, Any]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.parser.last_event_id:
            headers["Last-Event-ID"] = self.parser.last_event_id
        return {
            "method": "GET",
            "url": "/results/events",
            "params": {} if self.job_id is None else {"jobId": str(self.job_id)},
            "headers": headers,
            "timeout": httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT),
        }

    def connected(self) -> None:
        self.failures, self.ever_connected = 0, True
        self.parser.reset()

    def feed(self, line: str) -> JobView | None:
        event = self.parser.feed(line)
        if event is None or event.event != "job":
            return None
        try:
            return JobView.model_validate_json(event.data)
        except pydantic.ValidationError:
            raise ClientError(f"the API sent an event that is not a job view: {event.data!r:.100}") from None

    def reconnect_delay(self, reason: str) -> float:
        self.failures += 1
        if self.failures > MAX_RECONNECTS:
            raise ClientError(
                f"lost the event stream of {self.url} ({reason}); gave up after {MAX_RECONNECTS} reconnects",
                unavailable=True,
            )
        return float(min(self.parser.retry_seconds * 2 ** (self.failures - 1), MAX_RECONNECT_DELAY))
