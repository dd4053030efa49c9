"""GET /results/events: the SSE fan-out, against a real PostgreSQL and the app's lifespan.

Transitions are driven with `queue.claim` / `queue.finish` on a session of the
test's own, as a worker would; no worker runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import psycopg
import pytest
import trio
import trio.testing

from jobsvc import queue
from jobsvc.announcer import Announcer
from jobsvc.api import end_event_streams
from jobsvc.db import Database
from jobsvc.errors import DatabaseUnavailable
from jobsvc.events import Broadcaster, event_stream
from jobsvc.listening import Listener
from jobsvc.model import Job, Status
from jobsvc.queue import Outcome
from jobsvc.schemas import JobView
from tests.fixtures.app import Api, OpenApi
from tests.helpers import in_thread, until

Conn = psycopg.Connection[dict[str, Any]]
T = TypeVar("T")


class Stream:
    """One SSE response read through the test client, parsed into events and comments."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._buffer = b""
        self.ended = False

    async def next(self) -> dict[str, str]:
        """The next message: {"comment": …} or {"event", "id", "data"}; raises at the end."""
        while b"\n\n" not in self._buffer:
            try:
                self._buffer += await self.connection.receive()
            except trio.EndOfChannel:
                self.ended = True
                raise
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        message: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            name, _, value = line.partition(":")
            message[name or "comment"] = value.strip()
        return message

    async def next_event(self) -> dict[str, Any]:
        while "event" not in (message := await self.next()):
            pass
        assert message["event"] == "job"
        view = json.loads(message["data"])
        JobView.model_validate(view)
        return {"id": message["id"], **view}


@asynccontextmanager
async def subscribe(
    api: Api, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    """An open event stream; disconnects (as a client closing it) when the block ends."""
    async with api.client.request(f"/results/events{query}", headers=headers) as connection:
        await connection.send_complete()
        stream = Stream(connection)
        with trio.fail_after(5):
            first = await stream.next()
        assert connection.status_code == 200
        assert connection.headers["Content-Type"].startswith("text/event-stream")
        assert first["comment"] == "connected"  # subscribed: nothing from now on is missed
        yield stream
        # As a client closing the stream (on an exception, the connection's __aexit__ does
        # it). The test client never ends its own side of an endless response: once the
        # app has handled the disconnect, close it, which its __aexit__ accepts.
        await connection.disconnect()
        await trio.testing.wait_all_tasks_blocked()
        connection._client_receive.close()


def broadcaster(api: Api) -> Broadcaster:
    return api.services.broadcaster


async def test_filtered_subscriber_follows_its_job_in_order_and_nothing_else(api: Api, conn: Conn) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with subscribe(api, f"?jobId={mine}") as stream:
        await api.enqueue(job_id=other, priority=100)
        await api.enqueue(job_id=mine, priority=0)
        with trio.fail_after(5):
            queued = await stream.next_event()
        assert (queued["jobId"], queued["status"]) == (mine, "Queued")

        # The other job moves first: its events must not reach this stream.
        (claimed_other,), _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 1))
        assert str(claimed_other.job_id) == other
        (claimed,), _ = await in_thread(conn, lambda c: queue.claim(c, "w1", 1))
        with trio.fail_after(5):
            processing = await stream.next_event()
        assert (processing["jobId"], processing["status"], processing["attempts"]) == (mine, "Processing", 1)

        await in_thread(conn, lambda c: queue.finish(c, "w1", [Outcome(claimed_other.id, "failed", "no")]))
        await in_thread(conn, lambda c: queue.finish(c, "w1", [Outcome(claimed.id, "completed")]))
        with trio.fail_after(5):
            completed = await stream.next_event()
        assert (completed["jobId"], completed["status"]) == (mine, "Completed")
        assert completed["durationMs"] is not None

    ids = [queued["id"], processing["id"], completed["id"]]
    assert len({i.split("-")[0] for i in ids}) == 1  # <rowId>-<updatedAtMs>, one row
    stamps = [int(i.split("-")[1]) for i in ids]
    assert stamps == sorted(stamps)


async def test_unfiltered_subscriber_sees_every_job(api: Api) -> None:
    async with subscribe(api) as stream:
        jobs = [str(uuid.uuid4()) for _ in range(3)]
        for job_id in jobs:
            await api.enqueue(job_id=job_id)
        seen: list[str] = []
        with trio.fail_after(5):
            while len(seen) < 3:
                seen.append((await stream.next_event())["jobId"])
        assert seen == jobs


@asynccontextmanager
async def own_listener(api: Api) -> AsyncIterator[Listener]:
    """The test's own LISTEN on the events channel: proof that a notification was sent."""
    listener = await Listener.open(api.settings.require_database_url(), [queue.EVENTS_CHANNEL])
    async with listener:
        yield listener


async def next_notification(listener: Listener) -> str:
    with trio.fail_after(5):
        async for notification in listener:
            return notification.payload
    raise AssertionError("the LISTEN connection ended")


async def test_no_notification_is_read_while_nobody_subscribes(api: Api) -> None:
    # Draining our own enqueues' NOTIFYs for nobody cost 5.7 % of the API's trio thread
    # (issue 14): the events connection is open (readyz) but LISTENs only for subscribers.
    hub = broadcaster(api)
    async with own_listener(api) as witness:
        await api.enqueue(job_id=str(uuid.uuid4()))
        await next_notification(witness)  # sent, and delivered to whoever listened
    await trio.testing.wait_all_tasks_blocked()
    assert (hub.received, hub.reads, hub.listens) == (0, 0, 0)
    assert hub.connected and not hub.delivering
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and (await ready.get_json())["checks"]["events"] == "ok"

    async with subscribe(api) as stream:
        assert hub.delivering and hub.listens == 1
        job_id = str(uuid.uuid4())
        await api.enqueue(job_id=job_id)
        with trio.fail_after(5):
            assert (await stream.next_event())["jobId"] == job_id
    assert hub.received >= 1 and hub.reads >= 1


async def test_first_subscriber_gets_the_change_committed_right_after_connected(api: Api, conn: Conn) -> None:
    # Nobody listens when the stream opens: its ": connected" must wait for the LISTEN.
    job_id = str(uuid.uuid4())
    await api.enqueue(job_id=job_id)
    assert not broadcaster(api).delivering
    async with subscribe(api) as stream:
        assert broadcaster(api).delivering  # ": connected" came once the LISTEN was in effect
        # Committed from the test's own thread, blocking: the app runs nothing in between.
        with conn.transaction():
            queue.claim(conn, "w1", 1)
        with trio.fail_after(5):
            event = await stream.next_event()
        assert (event["jobId"], event["status"]) == (job_id, "Processing")


async def test_the_listen_ends_after_the_last_subscriber_and_comes_back_for_the_next(
    open_api: OpenApi, conn: Conn
) -> None:
    async with open_api(app_options={"events_linger": 0}) as api:
        hub = broadcaster(api)
        async with subscribe(api):
            pass
        await until(lambda: not hub.delivering, timeout=5)
        received = hub.received
        job_id = str(uuid.uuid4())
        async with own_listener(api) as witness:
            await api.enqueue(job_id=job_id)
            await next_notification(witness)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.received == received and hub.connected

        # A jobId stream opened now: the snapshot (read once the LISTEN is back), then live.
        async with subscribe(api, f"?jobId={job_id}") as stream:
            assert hub.listens == 2
            with trio.fail_after(5):
                assert (await stream.next_event())["status"] == "Queued"
            await in_thread(conn, lambda c: queue.claim(c, "w1", 1))
            with trio.fail_after(5):
                assert (await stream.next_event())["status"] == "Processing"


async def test_a_reconnecting_client_within_the_linger_finds_the_listen_in_place(open_api: OpenApi) -> None:
    async with open_api(app_options={"events_linger": 60}) as api:
        hub = broadcaster(api)
        async with subscribe(api):
            pass
        await trio.testing.wait_all_tasks_blocked()
        assert hub.delivering and hub.subscriber_count == 0
        async with subscribe(api) as stream:
            job_id = str(uuid.uuid4())
            await api.enqueue(job_id=job_id)
            with trio.fail_after(5):
                assert (await stream.next_event())["jobId"] == job_id
        assert hub.listens == 1


async def test_a_job_streams_snapshot_is_read_once_the_listen_is_in_effect(api: Api) -> None:
    hub = broadcaster(api)
    job_id = str(uuid.uuid4())
    await api.enqueue(job_id=job_id)
    delivering_at_snapshot: list[bool] = []

    async def snapshot(jid: uuid.UUID) -> list[Job]:
        delivering_at_snapshot.append(hub.delivering)
        return await api.services.run(lambda c: queue.get_job(c, jid))

    stream = event_stream(hub, job_id=uuid.UUID(job_id), last_event_id=None, snapshot=snapshot)
    with trio.fail_after(5):
        assert await stream.__anext__() == b"retry: 2000\n: connected\n\n"
        assert b'"status":"Queued"' in await stream.__anext__()
    await stream.aclose()
    assert delivering_at_snapshot == [True]
    assert hub.subscriber_count == 0


async def test_a_subscriber_that_stops_reading_is_dropped_while_others_keep_receiving(
    open_api: OpenApi,
) -> None:
    async with (
        open_api(app_options={"subscriber_buffer": 2}) as api,
        subscribe(api) as slow,
        subscribe(api) as fast,
    ):
        # One batch per enqueue, read by the fast subscriber before the next one.
        # The slow one never reads: the test client holds 10 chunks, its channel 2.
        total = 30
        with trio.fail_after(20):
            for _ in range(total):
                job_id = str(uuid.uuid4())
                await api.enqueue(job_id=job_id)
                assert (await fast.next_event())["jobId"] == job_id
        assert broadcaster(api).subscriber_count == 1
        received = 0
        with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
            while True:
                await slow.next_event()
                received += 1
        assert slow.ended and received < total


async def test_heartbeat_comment_when_idle(open_api: OpenApi) -> None:
    async with open_api(app_options={"heartbeat": 0.05}) as api, subscribe(api) as stream:
        with trio.fail_after(5):
            assert await stream.next() == {"comment": "heartbeat"}


async def test_disconnect_unsubscribes(api: Api) -> None:
    async with subscribe(api):
        async with subscribe(api, f"?jobId={uuid.uuid4()}"):
            assert broadcaster(api).subscriber_count == 2
        assert broadcaster(api).subscriber_count == 1
    assert broadcaster(api).subscriber_count == 0


async def test_filtered_stream_starts_with_the_jobs_current_state(api: Api, conn: Conn) -> None:
    job_id = str(uuid.uuid4())
    await api.enqueue("http://h.test/a.png", job_id)
    await api.enqueue("http://h.test/b.png", job_id)
    async with subscribe(api, f"?jobId={job_id}") as stream:
        with trio.fail_after(5):
            snapshot = [await stream.next_event() for _ in range(2)]
        assert [(e["resultFile"], e["status"]) for e in snapshot] == [
            ("a.png", "Queued"),
            ("b.png", "Queued"),
        ]

    # Reconnecting with Last-Event-ID (README, "Following a job without polling"): the
    # row state that id names is not sent again; every other row's current state is.
    async with subscribe(api, f"?jobId={job_id}", headers={"Last-Event-ID": snapshot[0]["id"]}) as stream:
        with trio.fail_after(5):
            replay = await stream.next_event()
            assert replay["resultFile"] == "b.png"
            assert (await api.client.post(f"/results/{job_id}/cancel")).status_code == 200
            changed = [await stream.next_event() for _ in range(2)]
        assert {(e["resultFile"], e["status"]) for e in changed} == {
            ("a.png", "Canceled"),
            ("b.png", "Canceled"),
        }


async def test_end_event_streams_ends_open_and_new_streams(api: Api) -> None:
    async with subscribe(api) as stream:
        end_event_streams(api.app)
        with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
            await stream.next()
    async with subscribe(api) as late:
        with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
            await late.next()
    assert broadcaster(api).subscriber_count == 0


async def test_events_malformed_job_id_is_400(api: Api) -> None:
    response = await api.client.get("/results/events?jobId=nope")
    assert response.status_code == 400
    assert "must be a UUID" in (await response.get_json())["error"]


# --------------------------------------------------------------------------- no database


class FlakyDatabase:
    """Stands in for `Database`: fails ``failures`` times, then records each announce."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.notifies: list[list[tuple[str, str]]] = []
        self.done = trio.Event()

    async def run(self, fn: Callable[[Any], T]) -> T:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailable("PostgreSQL is not reachable")
        sent: list[tuple[str, str]] = []

        class Recorder:
            def execute(self, sql: str, params: dict[str, str]) -> None:
                sent.append((params["channel"], params["payload"]))

        result = fn(Recorder())
        self.notifies.append(sent)
        self.done.set()
        return result


async def test_announcer_keeps_ids_while_the_database_is_down(autojump_clock: Any) -> None:
    database = FlakyDatabase(failures=3)
    announcer = Announcer(cast(Database, database))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        for row_id in (1, 2, 3):
            announcer.add(row_id)
        with trio.fail_after(60):
            await database.done.wait()
        nursery.cancel_scope.cancel()
    assert database.notifies == [[(queue.WAKEUP_CHANNEL, ""), (queue.EVENTS_CHANNEL, "1,2,3")]]
    assert announcer.pending == 0 and announcer.sent == 1


async def test_broadcaster_drops_only_the_full_subscriber() -> None:
    hub = Broadcaster(cast(Database, None), "postgresql://unused", buffer=1)
    reader, sleeper = hub.subscribe(), hub.subscribe()
    now = datetime.now(UTC)

    def job(row_id: int, seconds: int) -> Job:
        return Job(
            id=row_id, job_id=uuid.uuid4(), result_file="x.png", type="t", img_url="http://h.test/x.png",
            status=Status.QUEUED, priority=0, run_at=now, attempts=0, max_attempts=3, error=None,
            cancel_requested_at=None, worker_id=None, created_at=now,
            updated_at=now + timedelta(seconds=seconds), started_at=None, finished_at=None,
        )  # fmt: skip

    hub.publish([job(1, 0)])
    assert [j.id for j in reader.receive.receive_nowait()] == [1]
    hub.publish([job(1, 0)])  # the same state again is not news
    hub.publish([job(2, 1)])
    assert [j.id for j in reader.receive.receive_nowait()] == [2]
    assert sleeper.dropped and not reader.dropped and hub.subscriber_count == 1
    assert [j.id for j in sleeper.receive.receive_nowait()] == [1]
    with pytest.raises(trio.EndOfChannel):
        sleeper.receive.receive_nowait()


async def test_a_stream_opened_while_the_database_is_down_says_connected_without_waiting() -> None:
    # Nothing answers on port 1: the events connection stays down. The stream must not hang
    # (its client would see nothing at all); it goes on live, and is caught up once it is back.
    hub = Broadcaster(cast(Database, None), "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        with trio.fail_after(10):
            await hub.first_attempt.wait()
        assert not hub.connected

        async def no_snapshot(jid: uuid.UUID) -> list[Job]:
            return []

        stream = event_stream(hub, job_id=uuid.uuid4(), last_event_id=None, snapshot=no_snapshot)
        with trio.fail_after(1):
            assert await stream.__anext__() == b"retry: 2000\n: connected\n\n"
        assert hub.subscriber_count == 1 and not hub.delivering
        await stream.aclose()
        nursery.cancel_scope.cancel()
