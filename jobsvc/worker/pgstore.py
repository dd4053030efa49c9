"""The PostgreSQL `Store`: the worker's three kinds of connection.

- one `db.Session` per `connect` (claims and finishes; it owns the advisory locks),
- one `listening.Listener` per `listen` (LISTEN ``jobsvc_wakeup`` and ``jobsvc_cancel``),
- a pool of two (`db.Database`) for the rescuer, the cleaner and cancel reconciliation.

So a worker process holds four connections whatever its concurrency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

from jobsvc import queue
from jobsvc.db import Database, Session
from jobsvc.listening import Listener
from jobsvc.model import Job
from jobsvc.queries import PING_SQL
from jobsvc.retry import Outcome, RetryPolicy
from jobsvc.worker.store import CancelRequested, Signal, Wakeup

__all__ = ["PostgresSession", "PostgresStore"]


class PostgresSession:
    """A `StoreSession` on one dedicated connection (`db.Session`)."""

    def __init__(self, session: Session, worker_id: str) -> None:
        self._session = session
        self._worker_id = worker_id
        self._ring = queue.TenantRing()  # this session's place in the fair-share round-robin

    @property
    def broken(self) -> bool:
        return self._session.broken

    @property
    def backend_pid(self) -> int:
        return self._session.backend_pid

    async def claim(self, limit: int) -> tuple[list[Job], float | None]:
        return await self._session.run(
            partial(queue.claim, worker_id=self._worker_id, limit=limit, ring=self._ring)
        )

    async def finish(self, outcomes: Sequence[Outcome], policy: RetryPolicy) -> list[Job]:
        finish = partial(queue.finish, worker_id=self._worker_id, policy=policy)
        return await self._session.run(partial(finish, outcomes=list(outcomes)))

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], policy: RetryPolicy, limit: int
    ) -> tuple[list[Job], list[Job], float | None]:
        # One statement in the common case (`queue.cycle`), on the session's autocommit link,
        # sent from the trio thread (no thread hop: the pickup's claim leaves at once).
        plan = queue.cycle_plan(self._worker_id, list(outcomes), limit, self._ring, policy)
        if plan is not None:
            return await self._session.run_plan(plan)
        # An outcome that needs its row read first: the transaction, in a thread.
        cycle = partial(queue.cycle, worker_id=self._worker_id, limit=limit, ring=self._ring, policy=policy)
        return await self._session.run_statements(partial(cycle, outcomes=list(outcomes)))

    async def ping(self) -> None:
        await self._session.run(lambda c: c.execute(PING_SQL))

    async def close(self) -> None:
        await self._session.close()


class PostgresStore:
    """The queue in PostgreSQL, as the worker uses it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._db = Database(url, max_size=2, application_name="jobsvc-worker")

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def connect(self, worker_id: str) -> PostgresSession:
        return PostgresSession(await Session.connect(self._url), worker_id)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Signal]]:
        listener = await Listener.open(self._url, [queue.WAKEUP_CHANNEL, queue.CANCEL_CHANNEL])
        async with listener:
            yield _signals(listener)

    async def cancel_requested(self, ids: Sequence[int]) -> list[int]:
        return await self._db.run(partial(queue.cancel_requested, ids=list(ids)))

    async def rescue(self, policy: RetryPolicy) -> list[Job]:
        return await self._db.run(partial(queue.rescue, policy=policy))

    async def clean(self, older_than: float, limit: int) -> int | None:
        return await self._db.run(partial(queue.clean_batch, older_than=older_than, limit=limit))

    async def compact_counts(self) -> bool:
        return await self._db.run(queue.compact_counts)


async def _signals(listener: Listener) -> AsyncIterator[Signal]:
    async for note in listener:
        if note.channel == queue.CANCEL_CHANNEL:
            yield CancelRequested(tuple(queue.parse_ids(note.payload)))
        else:
            yield Wakeup()
