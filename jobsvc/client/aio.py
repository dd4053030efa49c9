"""The typed async HTTP client of the jobsvc API, `AsyncClient` (trio or asyncio, through
anyio): the same arguments and methods as `jobsvc.client.http.Client`, awaited. Both
build their calls and read their answers with `jobsvc.client.core`; this module only
moves bytes, sleeps and writes files.
"""

from __future__ import annotations

import builtins
import inspect
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from datetime import datetime
from types import TracebackType
from typing import Self

import anyio
import httpx

from jobsvc.client import core
from jobsvc.client.core import (
    CONNECT_RETRIES,
    CONNECT_RETRY_DELAY,
    REQUEST_TIMEOUT,
    BatchItem,
    Call,
    ClientError,
    Enqueued,
    EventStream,
    Page,
    PageWalk,
    translate,
)
from jobsvc.client.display import JobTracker
from jobsvc.client.http import (
    Destination,
    JobId,
    NewJobs,
    Order,
    T,
    Writable,
    check_stream,
    enqueue_request_call,
    part_file,
)
from jobsvc.schemas import CancelResponse, JobView

__all__ = ["AsyncClient"]


class AsyncClient:
    """An async client of the API at ``url`` for trio or asyncio (the same arguments and
    methods as `Client`, awaited); close it (``aclose``, or ``async with``) when done."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(**core.client_options(self.url, token, timeout), transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, call: Call[T]) -> T:
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                with translate(self.url):
                    response = await self._http.request(
                        call.method, call.path, params=call.params or None, json=call.json
                    )
                break
            except ClientError as exc:
                if attempt == CONNECT_RETRIES or not core.connect_failed(exc.__cause__):
                    raise
            await anyio.sleep(CONNECT_RETRY_DELAY * 2**attempt)
        return call.decode(response)

    async def enqueue(
        self,
        job_id: JobId,
        img_url: str,
        *,
        type: str = "ingest",
        priority: int | None = None,
        run_at: int | datetime | None = None,
        max_attempts: int | None = None,
    ) -> Enqueued:
        """``POST /results/enqueue`` (see `Client.enqueue`)."""
        return await self._call(enqueue_request_call(job_id, img_url, type, priority, run_at, max_attempts))

    async def enqueue_many(self, jobs: NewJobs) -> builtins.list[BatchItem]:
        """``POST /results/batch`` (see `Client.enqueue_many`)."""
        return [item for body in core.batch_bodies(jobs) for item in await self._call(core.batch_call(body))]

    async def get(self, job_id: JobId) -> builtins.list[JobView]:
        """``GET /results/{jobId}``: every result of the job."""
        return await self._call(core.get_call(str(job_id)))

    async def pages(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_id: JobId | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> AsyncGenerator[Page, None]:
        """``GET /results/list``, then each next page as long as it is iterated."""
        params = core.list_params(status, None if job_id is None else str(job_id), order, limit)
        walk = PageWalk()
        call: Call[Page] | None = core.page_call("/results/list", params)
        while call is not None:
            page = await self._call(call)
            yield page
            call = walk.next(page)

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_id: JobId | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> AsyncGenerator[JobView, None]:
        """Every matching result, page after page (``limit`` rows per request)."""
        async with aclosing(self.pages(status=status, job_id=job_id, order=order, limit=limit)) as pages:
            async for page in pages:
                for view in page.views:
                    yield view

    async def cancel(self, job_id: JobId) -> CancelResponse:
        """``POST /results/{jobId}/cancel``: cancel every unfinished result of the job."""
        return await self._call(core.cancel_call(str(job_id)))

    async def retry(self, job_id: JobId) -> CancelResponse:
        """``POST /results/{jobId}/retry``: every Failed or Canceled result back to Queued."""
        return await self._call(core.retry_call(str(job_id)))

    async def download(self, job_id: JobId, result_file: str, dest: Destination) -> int:
        """Stream the stored image to ``dest``: a path (written through a worker thread,
        as ``<dest>.part`` then renamed), a binary file, or an async file; returns its size."""
        path = core.download_path(str(job_id), result_file)
        with translate(self.url):
            async with self._http.stream("GET", path, follow_redirects=True) as response:
                if not response.is_success:
                    await response.aread()
                check_stream(response)
                if not isinstance(dest, str | os.PathLike):
                    return await _awrite_all(dest, response.aiter_bytes())
                final, part = part_file(dest)
                try:
                    async with await anyio.open_file(part, "wb") as file:
                        size = await _awrite_all(file, response.aiter_bytes())
                    await anyio.Path(part).replace(final)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                return size

    async def events(
        self, job_id: JobId | None = None, *, on_connect: Callable[[], None] | None = None
    ) -> AsyncGenerator[JobView, None]:
        """Yield the job view of every ``job`` event of ``GET /results/events``, forever.

        A stream that ends or breaks is reopened (with ``Last-Event-ID``) after the
        server's ``retry`` delay, doubling on each consecutive failure; after
        `MAX_RECONNECTS` failures in a row it raises `ClientError` (unavailable). A
        first connection that fails, or an answer other than 200, raises at once.
        ``on_connect`` runs when a connection's first line arrives: the API subscribes
        a stream before it sends anything, so from then on no change is missed.
        Cancelling the iteration (or ``aclose``) closes the connection.
        """
        stream = EventStream(self.url, None if job_id is None else str(job_id))
        while True:
            with translate(self.url):
                try:
                    async with self._http.stream(**stream.request_args()) as response:
                        if response.status_code != 200:
                            await response.aread()
                            raise core.refused(response)
                        stream.connected()
                        first = True
                        async for line in response.aiter_lines():
                            if first and on_connect is not None:
                                on_connect()
                            first = False
                            view = stream.feed(line)
                            if view is not None:
                                yield view
                    reason = "the event stream ended"
                except httpx.TransportError as exc:
                    if not stream.ever_connected:
                        raise  # as `translate` words it: the API cannot be reached
                    reason = core.describe(exc)
            await anyio.sleep(stream.reconnect_delay(reason))

    async def watch(self, job_id: JobId) -> AsyncGenerator[JobView, None]:
        """The job's results as they are, then each change, until every result is finished
        (see `Client.watch`)."""
        tracker = JobTracker(str(job_id))
        current = await self.get(job_id)
        if current:
            tracker.job_id = str(current[0].job_id)
        for view in current:
            if tracker.update(view):
                yield view
        if tracker.finished:
            return
        async with aclosing(self.events(tracker.job_id)) as events:
            async for view in events:
                if tracker.update(view):
                    yield view
                if tracker.finished:
                    return


async def _awrite_all(dest: Writable, chunks: AsyncIterator[bytes]) -> int:
    size = 0
    async for chunk in chunks:
        written = dest.write(chunk)
        if inspect.isawaitable(written):
            await written
        size += len(chunk)
    return size
