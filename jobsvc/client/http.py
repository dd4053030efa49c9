"""The typed blocking HTTP client of the jobsvc API, `Client`, and what it shares with
`jobsvc.client.aio.AsyncClient` (trio or asyncio, through anyio): argument types, the
enqueue call, the download's part file.

Each method is one API call (README, "HTTP API") and returns the pydantic models of
`jobsvc.schemas`; a refused request raises `ClientError` (status, the server's
sentence). What a call sends and how its answer is read is `jobsvc.client.core`,
shared by both classes: this module only moves bytes, sleeps, and writes files.
Nothing here prints or exits: the commands (`jobsvc.client.commands`) decide what
a user sees.
"""

from __future__ import annotations

import builtins
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

import httpx

from jobsvc.client import core
from jobsvc.client.core import (
    CONNECT_RETRIES,
    CONNECT_RETRY_DELAY,
    CONNECT_TIMEOUT,
    MAX_RECONNECT_DELAY,
    MAX_RECONNECTS,
    REQUEST_TIMEOUT,
    STREAM_READ_TIMEOUT,
    BatchItem,
    Call,
    ClientError,
    Enqueued,
    EventStream,
    Page,
    PageWalk,
    error_sentence,
    translate,
)
from jobsvc.client.display import JobTracker
from jobsvc.schemas import CancelResponse, EnqueueRequest, JobView

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_RECONNECTS",
    "MAX_RECONNECT_DELAY",
    "REQUEST_TIMEOUT",
    "STREAM_READ_TIMEOUT",
    "BatchItem",
    "Client",
    "ClientError",
    "Enqueued",
    "Page",
    "error_sentence",
]

T = TypeVar("T")
JobId = str | uuid.UUID
Order = Literal["asc", "desc"]
NewJobs = Iterable[EnqueueRequest | Mapping[str, Any]]


class Writable(Protocol):
    """Where `download` may write: a binary file (``write`` returns a count) or, for
    `AsyncClient`, also an async file (``write`` returns an awaitable)."""

    def write(self, data: bytes, /) -> object: ...


Destination = str | os.PathLike[str] | Writable


def _run_at_ms(run_at: int | datetime | None) -> int | None:
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise TypeError("run_at must be an aware datetime (with a time zone) or epoch milliseconds")
        return int(run_at.timestamp() * 1000)
    return run_at


def enqueue_request_call(
    job_id: JobId,
    img_url: str,
    type: str,
    priority: int | None,
    run_at: int | datetime | None,
    attempts: int | None,
) -> Call[Enqueued]:
    return core.enqueue_call(
        core.enqueue_body(str(job_id), img_url, type, priority, _run_at_ms(run_at), attempts)
    )


def part_file(dest: str | os.PathLike[str]) -> tuple[Path, Path]:
    """A download goes to ``<dest>.part``, renamed when complete: never a truncated image."""
    path = Path(dest)
    return path, path.with_name(path.name + ".part")


def check_stream(response: httpx.Response) -> None:
    if not response.is_success:
        raise core.refused(response)


class Client:
    """A blocking client of the API at ``url``; close it (or use ``with``) when done.

    ``token`` is sent as ``Authorization: Bearer``; ``timeout`` bounds each request
    (connecting: 5 s). A call whose connection fails is tried again twice.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(**core.client_options(self.url, token, timeout), transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: Call[T]) -> T:
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                with translate(self.url):
                    response = self._http.request(
                        call.method, call.path, params=call.params or None, json=call.json
                    )
                break
            except ClientError as exc:
                if attempt == CONNECT_RETRIES or not core.connect_failed(exc.__cause__):
                    raise
            time.sleep(CONNECT_RETRY_DELAY * 2**attempt)
        return call.decode(response)

    def enqueue(
        self,
        job_id: JobId,
        img_url: str,
        *,
        type: str = "ingest",
        priority: int | None = None,
        run_at: int | datetime | None = None,
        max_attempts: int | None = None,
    ) -> Enqueued:
        """``POST /results/enqueue``: one result of a job (``None`` leaves the server's default;
        ``run_at`` in epoch milliseconds or an aware datetime)."""
        return self._call(enqueue_request_call(job_id, img_url, type, priority, run_at, max_attempts))

    def enqueue_many(self, jobs: NewJobs) -> builtins.list[BatchItem]:
        """``POST /results/batch``, `core.BATCH_LIMIT` jobs per request: one `BatchItem` per
        job, in order. Items are `EnqueueRequest` or dicts in the API's camelCase."""
        return [item for body in core.batch_bodies(jobs) for item in self._call(core.batch_call(body))]

    def get(self, job_id: JobId) -> builtins.list[JobView]:
        """``GET /results/{jobId}``: every result of the job."""
        return self._call(core.get_call(str(job_id)))

    def pages(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_id: JobId | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> Iterator[Page]:
        """``GET /results/list``, then each next page (Link rel=next) as long as it is iterated."""
        params = core.list_params(status, None if job_id is None else str(job_id), order, limit)
        walk = PageWalk()
        call: Call[Page] | None = core.page_call("/results/list", params)
        while call is not None:
            page = self._call(call)
            yield page
            call = walk.next(page)

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_id: JobId | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> Iterator[JobView]:
        """Every matching result, page after page (``limit`` rows per request)."""
        for page in self.pages(status=status, job_id=job_id, order=order, limit=limit):
            yield from page.views

    def cancel(self, job_id: JobId) -> CancelResponse:
        """``POST /results/{jobId}/cancel``: cancel every unfinished result of the job."""
        return self._call(core.cancel_call(str(job_id)))

    def retry(self, job_id: JobId) -> CancelResponse:
        """``POST /results/{jobId}/retry``: every Failed or Canceled result back to Queued."""
        return self._call(core.retry_call(str(job_id)))

    def download(self, job_id: JobId, result_file: str, dest: Destination) -> int:
        """Stream the stored image to ``dest`` (a path, or a binary file); returns its size.

        Never held in memory whole. A path is written as ``<dest>.part`` and renamed
        when complete, so a failed download leaves no file behind.
        """
        path = core.download_path(str(job_id), result_file)
        with translate(self.url), self._http.stream("GET", path, follow_redirects=True) as response:
            if not response.is_success:
                response.read()
            check_stream(response)
            if not isinstance(dest, str | os.PathLike):
                return _write_all(dest, response.iter_bytes())
            final, part = part_file(dest)
            try:
                with part.open("wb") as file:
                    size = _write_all(file, response.iter_bytes())
                part.replace(final)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            return size

    def events(
        self, job_id: JobId | None = None, *, on_connect: Callable[[], None] | None = None
    ) -> Generator[JobView, None, None]:
        """The job view of every ``job`` event of ``GET /results/events``, forever (see
        `AsyncClient.events`); close the iterator (``contextlib.closing``) to disconnect."""
        stream = EventStream(self.url, None if job_id is None else str(job_id))
        while True:
            with translate(self.url):
                try:
                    with self._http.stream(**stream.request_args()) as response:
                        if response.status_code != 200:
                            response.read()
                            raise core.refused(response)
                        stream.connected()
                        for index, line in enumerate(response.iter_lines()):
                            if index == 0 and on_connect is not None:
                                on_connect()
                            view = stream.feed(line)
                            if view is not None:
                                yield view
                    reason = "the event stream ended"
                except httpx.TransportError as exc:
                    if not stream.ever_connected:
                        raise  # as `translate` words it: the API cannot be reached
                    reason = core.describe(exc)
            time.sleep(stream.reconnect_delay(reason))

    def watch(self, job_id: JobId) -> Iterator[JobView]:
        """The job's results as they are, then each change, until every result is finished
        (Completed, Failed or Canceled). A dropped event stream is resumed; an unknown
        job raises `ClientError` (404)."""
        tracker = JobTracker(str(job_id))
        current = self.get(job_id)
        if current:  # the API's spelling of the id, which its events carry
            tracker.job_id = str(current[0].job_id)
        yield from (view for view in current if tracker.update(view))
        if tracker.finished:
            return
        with closing(self.events(tracker.job_id)) as events:
            for view in events:
                if tracker.update(view):
                    yield view
                if tracker.finished:
                    return


def _write_all(dest: Writable, chunks: Iterator[bytes]) -> int:
    size = 0
    for chunk in chunks:
        dest.write(chunk)
        size += len(chunk)
    return size
