"""The API process's job events in: one LISTEN connection fanned out to SSE streams.

The wake-ups out (the enqueues' coalesced NOTIFY) are `jobsvc.announcer`.

- `Broadcaster` (LISTEN in): one events connection per API process, open while the
  process runs (``/readyz`` reports it), that LISTENs on ``jobsvc_events`` only while
  a stream is open, and for ``linger`` seconds after the last one closed (a client
  reconnecting does not flap it). With no stream open the process reads none of the
  notifications its own enqueues send (draining them cost 5.7 % of the API's trio
  thread, issue 14). The listener only collects row ids; a reader task fetches the
  rows of everything collected so far in one hop and fans the job views out to the
  subscribers (one bounded memory channel each), each getting only the rows of
  its tenant (every tenant's for an admin key). A subscriber whose channel is
  full is dropped (its stream ends): a slow client never blocks the others.
- `event_stream`: one Server-Sent Events stream (``GET /results/events``).

What a subscriber sees: a stream says ``: connected`` once the LISTEN is in effect
(the first subscriber waits for it), so every change committed after that reaches
it, and a jobId stream reads its snapshot only then. Events carry a row's state
*when it was read*, so two changes of the same row in quick succession may arrive
as one event with the later state; events of one row are never out of order and
never repeated (the event id ``<rowId>-<updatedAtMs>`` only grows). Notifications
sent while the connection is down or reconnecting are lost for unfiltered live
streams (a stream opened meanwhile says ``: connected`` without the LISTEN, as does
one whose LISTEN takes longer than `LISTEN_WAIT`); a stream filtered
on a ``jobId`` starts with a snapshot of that job's rows, so reconnecting (with or
without ``Last-Event-ID``) catches up on the job's current state, and an open
filtered stream is caught up the same way when the listener is back.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import trio

from jobsvc import queue
from jobsvc.backoff import Backoff, run_with_backoff
from jobsvc.db import Database
from jobsvc.errors import DatabaseUnavailable
from jobsvc.listening import Listener
from jobsvc.model import Job, epoch_ms
from jobsvc.schemas import job_view

log = logging.getLogger("jobsvc.events")

#: How many rows' last event the broadcaster remembers to keep each row's events in order.
_REMEMBERED_ROWS = 10_000

#: Seconds the broadcaster keeps LISTENing after its last subscriber left: longer than
#: the streams' ``retry: 2000``, so a client that reconnects finds it still LISTENing.
DEFAULT_LINGER = 5.0

#: Seconds a new stream waits for the LISTEN (a round trip, unless PostgreSQL hangs:
#: then the stream starts without it and is caught up like one opened while it was down).
LISTEN_WAIT = 5.0


def event_id(job: Job) -> str:
    """Monotonic per row: ``<rowId>-<updatedAt ms>``."""
    return f"{job.id}-{epoch_ms(job.updated_at)}"


@dataclass(eq=False)
class Subscriber:
    """One stream's mailbox: batches of jobs, newest last."""

    job_id: uuid.UUID | None
    send: trio.MemorySendChannel[list[Job]]
    receive: trio.MemoryReceiveChannel[list[Job]]
    dropped: bool = False
    sent: dict[int, datetime] = field(default_factory=dict)
    #: Whose rows it gets (None: every tenant's, an admin key's stream).
    tenant: str | None = None

    def wants(self, job: Job) -> bool:
        if self.tenant is not None and job.tenant != self.tenant:
            return False
        return self.job_id is None or job.job_id == self.job_id


class Broadcaster:
    """One events connection per process, LISTENing while someone subscribes, fanned out
    to many subscribers."""

    def __init__(
        self, database: Database, url: str, *, buffer: int = 256, linger: float = DEFAULT_LINGER
    ) -> None:
        self._database = database
        self._url = url
        self._buffer = buffer
        self._linger = linger
        self._subscribers: set[Subscriber] = set()
        self._pending: set[int] = set()
        self._wake = trio.Event()
        self._last: OrderedDict[int, datetime] = OrderedDict()
        self._ended = False
        #: Streams may have missed changes (the connection was lost under them, or one began
        #: while it was down): catch the jobId streams up at the next LISTEN.
        self._behind = False
        #: Cancelled to wake the listener when the first subscriber arrives or the last leaves.
        self._poke: trio.CancelScope | None = None
        #: Subscribers waiting in `until_delivering` for the LISTEN.
        self._lot = trio.lowlevel.ParkingLot()
        #: True while the events connection is up (readyz reports it), LISTENing or not.
        self.connected = False
        #: True while ``LISTEN jobsvc_events`` is in effect on it.
        self.delivering = False
        #: Set once the first connection attempt has succeeded or failed.
        self.first_attempt = trio.Event()
        #: Notifications received, row reads (one transaction each) and LISTENs so far;
        #: no notification is read and no row while nobody subscribes (the tests watch them).
        self.received = 0
        self.reads = 0
        self.listens = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, job_id: uuid.UUID | None = None, tenant: str | None = None) -> Subscriber:
        """A new mailbox for ``tenant``'s rows (None: every tenant's); already closed (its
        stream ends at once) after `end_streams`. Its events flow once `until_delivering`
        returns."""
        send, receive = trio.open_memory_channel[list[Job]](self._buffer)
        subscriber = Subscriber(job_id, send, receive, tenant=tenant)
        if self._ended:
            send.close()
        else:
            self._subscribers.add(subscriber)
            if len(self._subscribers) == 1:
                self._wake_listener()
        return subscriber

    async def until_delivering(self) -> None:
        """Wait until the LISTEN is in effect for the subscribers registered so far: every
        change committed after this returns reaches them. Returns at once while the
        connection is down (those changes are caught up for jobId streams once it is back:
        the module docstring), after `LISTEN_WAIT` seconds the same way, or after
        `end_streams`. Cancellable."""
        with trio.move_on_after(LISTEN_WAIT):
            while not self.delivering and self.connected and not self._ended and self._subscribers:
                await self._lot.park()
        if self._subscribers and not self.delivering:
            self._behind = True  # it goes on without the LISTEN: caught up at the next one
        await trio.lowlevel.checkpoint()

    def end_streams(self) -> None:
        """End every stream, now and from now on (at shutdown: SSE clients must not hold
        the server's graceful shutdown open; they reconnect to another instance)."""
        self._ended = True
        for subscriber in list(self._subscribers):
            self._subscribers.discard(subscriber)
            subscriber.send.close()
        self._lot.unpark_all()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Synchronous, so that it also runs from a generator closed while cancelled."""
        self._subscribers.discard(subscriber)
        subscriber.send.close()
        subscriber.receive.close()
        if not self._subscribers:
            self._wake_listener()

    def _wake_listener(self) -> None:
        if self._poke is not None:
            self._poke.cancel()

    def publish(self, jobs: Sequence[Job]) -> None:
        """Fan a batch out without blocking; drops each subscriber whose channel is full."""
        fresh = []
        for job in jobs:
            last = self._last.get(job.id)
            if last is not None and job.updated_at <= last:
                continue  # an older or already published state of this row
            self._last[job.id] = job.updated_at
            self._last.move_to_end(job.id)
            fresh.append(job)
        while len(self._last) > _REMEMBERED_ROWS:
            self._last.popitem(last=False)
        if not fresh:
            return
        for subscriber in list(self._subscribers):
            batch = [job for job in fresh if subscriber.wants(job)]
            if not batch:
                continue
            try:
                subscriber.send.send_nowait(batch)
            except trio.WouldBlock:
                log.info("dropping a slow event subscriber (%d batches behind)", self._buffer)
                subscriber.dropped = True
                self._subscribers.discard(subscriber)
                subscriber.send.close()  # its stream ends once it has read what is buffered
            except trio.ClosedResourceError:
                self._subscribers.discard(subscriber)

    async def run(self) -> None:
        """Keep the events connection open, LISTEN on it while someone subscribes, and
        publish forever; reconnects with backoff when the database goes away.

        Cancelled, it closes the connection and ends every subscriber's stream.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_rows)
                await run_with_backoff("events listener", self._listen_once)
        finally:
            self.connected = self.delivering = False
            self._lot.unpark_all()
            for subscriber in list(self._subscribers):  # their streams end; a restart takes new ones
                self._subscribers.discard(subscriber)
                subscriber.send.close()

    async def _listen_once(self) -> None:
        try:
            listener = await Listener.open(self._url, [])
        finally:
            self.first_attempt.set()
        async with listener:
            self.connected = True
            try:
                await self._serve(listener)
            finally:
                if self._subscribers:  # what changes while nobody listens is lost to them
                    self._behind = True
                self.connected = self.delivering = False
                self._poke = None
                self._lot.unpark_all()  # waiting subscribers go on without it (until_delivering)

    async def _serve(self, listener: Listener) -> None:
        """LISTEN while there are subscribers (and ``linger`` seconds after the last one
        left, so a reconnecting client does not flap it), UNLISTEN after; read what arrives."""
        quiet_since: float | None = None  # when the last subscriber left, while LISTENing
        while True:
            if self._subscribers:
                quiet_since = None
                if not self.delivering:
                    await listener.listen(queue.EVENTS_CHANNEL)
                    self.listens += 1
                    self.delivering = True
                    self._lot.unpark_all()
                if self._behind:
                    await self._catch_up()
            elif self.delivering:
                quiet_since = trio.current_time() if quiet_since is None else quiet_since
                # The very expression of the wait's deadline below: past it, never wait again.
                if trio.current_time() >= quiet_since + self._linger:
                    self.delivering = False
                    quiet_since = None
                    await listener.unlisten(queue.EVENTS_CHANNEL)
                    continue  # a subscriber may have come during the UNLISTEN
            for notification in listener.drain():
                self.received += 1
                self._pending.update(queue.parse_ids(notification.payload))
                self._wake.set()
            if self.delivering and not self._subscribers and quiet_since is None:
                continue  # the last subscriber left during the LISTEN or the catch-up
            deadline = math.inf if quiet_since is None else quiet_since + self._linger
            with trio.CancelScope(deadline=deadline) as self._poke:
                await listener.wait_readable()
            self._poke = None

    async def _catch_up(self) -> None:
        """Once LISTENing again: changes notified while nobody listened are lost, so read the
        rows of every job a stream follows now; `publish` skips the states already sent."""
        job_ids = sorted({s.job_id for s in self._subscribers if s.job_id is not None})
        if job_ids:
            jobs = await self._database.run(lambda c: [j for jid in job_ids for j in queue.get_job(c, jid)])
            self.publish(jobs)
        self._behind = False

    async def _read_rows(self) -> None:
        backoff = Backoff(0.05, 5.0)
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._pending:
                continue
            ids, self._pending = sorted(self._pending), set()
            if not self._subscribers:
                # Nobody to tell: without this, every enqueue cost the API a second
                # transaction (issue 14). A stream that subscribes later starts live,
                # or, filtered on a jobId, from a snapshot of the job's rows.
                continue
            self.reads += 1
            try:
                jobs = await self._database.run(functools.partial(queue.get_by_ids, ids=ids))
            except DatabaseUnavailable as exc:
                log.warning("cannot read changed rows (%s); retrying in %.2fs", exc, backoff.next)
                self._pending.update(ids)
                self._wake.set()
                await backoff.sleep()
                continue
            backoff.reset()
            self.publish(jobs)


def _format(job: Job) -> str:
    data = json.dumps(job_view(job), separators=(",", ":"), ensure_ascii=False)
    return f"event: job\nid: {event_id(job)}\ndata: {data}\n\n"


async def event_stream(
    broadcaster: Broadcaster,
    *,
    job_id: uuid.UUID | None,
    tenant: str | None = None,
    last_event_id: str | None,
    snapshot: Callable[[uuid.UUID], Awaitable[list[Job]]],
    heartbeat: float = 15.0,
) -> AsyncIterator[bytes]:
    """One SSE stream: a ``: connected`` comment once subscribed (the LISTEN in effect),
    then ``job`` events, and a ``: heartbeat`` comment after each ``heartbeat`` seconds
    of silence.

    With ``job_id``, the stream starts with the current state of that job's rows
    (except a row whose state is exactly ``last_event_id``, which the client has).
    The stream ends when the subscriber is dropped or the broadcaster stops; a
    client disconnect closes the generator, which unsubscribes (synchronously).
    """
    subscriber = broadcaster.subscribe(job_id, tenant)
    try:
        # ``: connected`` promises that every change committed from now on is sent, and a
        # jobId stream's snapshot must be read after the LISTEN is in effect, not before.
        await broadcaster.until_delivering()
        yield b"retry: 2000\n: connected\n\n"
        if job_id is not None:
            jobs = await snapshot(job_id)
            chunk = _render(subscriber, jobs, skip=last_event_id)
            if chunk:
                yield chunk
        while True:
            batch: list[Job] | None = None
            with trio.move_on_after(heartbeat if heartbeat > 0 else math.inf):
                try:
                    batch = await subscriber.receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            if batch is None:
                yield b": heartbeat\n\n"
                continue
            chunk = _render(subscriber, batch)
            if chunk:
                yield chunk
    finally:
        broadcaster.unsubscribe(subscriber)


def _render(subscriber: Subscriber, jobs: Sequence[Job], skip: str | None = None) -> bytes:
    """The events of ``jobs`` this subscriber has not seen yet, in one chunk."""
    parts = []
    for job in jobs:
        if subscriber.job_id is not None:
            # Filtered streams mix a snapshot with live events: keep each row monotonic.
            seen = subscriber.sent.get(job.id)
            if seen is not None and job.updated_at <= seen:
                continue
            subscriber.sent[job.id] = job.updated_at
        if skip is not None and event_id(job) == skip:
            continue
        parts.append(_format(job))
    return "".join(parts).encode("utf-8")


__all__: list[str] = [
    "Broadcaster",
    "Subscriber",
    "event_id",
    "event_stream",
]
