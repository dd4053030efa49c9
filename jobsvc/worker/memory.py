"""`MemoryStore`: the queue in memory, a fake of `PostgresStore` for unit tests.

It keeps the `Store` contract (jobsvc.worker.store) with no I/O: the claim order,
rows owned by the session that claimed them (and freed when it is killed or
closed), finish and rescue through the same `RetryPolicy`, wake-ups and cancel
signals to every listener. Time is trio's clock (row timestamps are
``2026-01-01 + trio.current_time()``), so tests run on trio's ``MockClock``.

Test controls, playing the API and the faults: `enqueue`, `cancel`, `job`,
`kill_session`, `drop_listeners`, `wait_until` (a row predicate, woken by every
change: no polling), `owned` (rows a live session owns), ``down`` (every new call fails), ``latency``
(each call's round trip, after its work is done, uncancellable like a thread
hop), ``claims`` (the ``(limit, claimed)`` of every claim) and ``cycles`` (the
``(outcomes, limit)`` of every `finish_and_claim`).
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import trio

from jobsvc.errors import DatabaseUnavailable
from jobsvc.model import DEFAULT_TENANT, Job, Status
from jobsvc.retry import CANCELED_ERROR, Decision, Outcome, RetryPolicy
from jobsvc.worker.store import CancelRequested, Signal, Wakeup

__all__ = ["MemorySession", "MemoryStore"]

T = TypeVar("T")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    return _EPOCH + timedelta(seconds=trio.current_time())


class MemorySession:
    """A `StoreSession` of a `MemoryStore`."""

    def __init__(self, store: MemoryStore, worker_id: str) -> None:
        self._store = store
        self.worker_id = worker_id
        self.killed = False
        self.broken = False
        self.ring = ""  # the fair-share cursor, as queue.TenantRing

    async def claim(self, limit: int) -> tuple[list[Job], float | None]:
        return await self._call(lambda: self._store._claim(self, limit))

    async def finish(self, outcomes: Sequence[Outcome], policy: RetryPolicy) -> list[Job]:
        return await self._call(lambda: self._store._finish(self, outcomes, policy))

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], policy: RetryPolicy, limit: int
    ) -> tuple[list[Job], list[Job], float | None]:
        def cycle() -> tuple[list[Job], list[Job], float | None]:
            self._store.cycles.append((len(outcomes), limit))
            written = self._store._finish(self, outcomes, policy) if outcomes else []
            if limit <= 0:
                return written, [], None
            return (written, *self._store._claim(self, limit))

        return await self._call(cycle)

    async def ping(self) -> None:
        await self._call(lambda: None)

    async def close(self) -> None:
        self._store._release(self)
        await trio.lowlevel.checkpoint()

    async def _call(self, work: Callable[[], T]) -> T:
        if self.killed:
            self.broken = True
            raise DatabaseUnavailable("lost the worker's session: terminated")
        return await self._store._round_trip(work)


class _Signals:
    """One listener's signals; raises `DatabaseUnavailable` once dropped."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Signal]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Signals:
        return self

    async def __anext__(self) -> Signal:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise DatabaseUnavailable("lost the LISTEN connection: dropped") from None


class MemoryStore:
    """The queue in memory (see the module docstring)."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.down = False
        self.rows: dict[int, Job] = {}
        self.claims: list[tuple[int, int]] = []
        self.cycles: list[tuple[int, int]] = []
        self.sessions: list[MemorySession] = []
        self._owner: dict[int, MemorySession] = {}
        self._listeners: list[trio.MemorySendChannel[Signal]] = []
        self._ids = itertools.count(1)
        self._changed = trio.Event()

    # --- playing the API and the faults ---------------------------------------------

    def enqueue(
        self,
        *,
        type: str = "ingest",
        priority: int = 0,
        delay: float = 0.0,
        max_attempts: int = 3,
        tenant: str = DEFAULT_TENANT,
    ) -> Job:
        """Insert a Queued row due in ``delay`` seconds, and wake the workers."""
        now, row_id = _now(), next(self._ids)
        self.rows[row_id] = Job(
            id=row_id, job_id=uuid.UUID(int=row_id), result_file=f"{row_id}.png", type=type,
            img_url=f"http://images.test/{row_id}.png", status=Status.QUEUED, priority=priority,
            run_at=now + timedelta(seconds=delay), attempts=0, max_attempts=max_attempts, error=None,
            cancel_requested_at=None, worker_id=None, created_at=now, updated_at=now, started_at=None,
            finished_at=None, tenant=tenant,
        )  # fmt: skip
        self._touch()
        self._signal(Wakeup())
        return self.rows[row_id]

    def cancel(self, row_id: int, *, notify: bool = True) -> Job:
        """As `queue.cancel`: a Queued row is Canceled at once; a Processing one gets a
        cancel request and (unless ``notify`` is false: a lost NOTIFY) its owner a signal."""
        row, now = self.rows[row_id], _now()
        if row.status is Status.QUEUED:
            row = replace(row, status=Status.CANCELED, error=CANCELED_ERROR, finished_at=now)
        elif row.status is Status.PROCESSING and row.cancel_requested_at is None:
            row = replace(row, cancel_requested_at=now)
            if notify:
                self._signal(CancelRequested((row_id,)))
        self.rows[row_id] = replace(row, updated_at=now)
        self._touch()
        return self.rows[row_id]

    def job(self, row_id: int) -> Job:
        return self.rows[row_id]

    @property
    def owned(self) -> set[int]:
        """Ids of the rows a live session owns (in PostgreSQL: the advisory locks held)."""
        return set(self._owner)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every change to the store."""
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    def kill_session(self, session: MemorySession) -> None:
        """As ``pg_terminate_backend``: its rows are free at once; its next call fails."""
        session.killed = True
        self._release(session)

    def drop_listeners(self) -> None:
        """Every LISTEN link breaks (their iteration raises `DatabaseUnavailable`)."""
        for send in self._listeners:
            send.close()
        self._listeners.clear()

    # --- the Store protocol ---------------------------------------------------------

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def connect(self, worker_id: str) -> MemorySession:
        session = await self._round_trip(lambda: MemorySession(self, worker_id))
        self.sessions.append(session)
        return session

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Signal]]:
        send, receive = await self._round_trip(lambda: trio.open_memory_channel[Signal](math.inf))
        self._listeners.append(send)
        try:
            yield _Signals(receive)
        finally:
            if send in self._listeners:
                self._listeners.remove(send)
            send.close()
            receive.close()

    async def cancel_requested(self, ids: Sequence[int]) -> list[int]:
        def requested() -> list[int]:
            rows = [self.rows[i] for i in ids if i in self.rows]
            return [r.id for r in rows if r.status is Status.PROCESSING and r.cancel_requested_at is not None]

        return await self._round_trip(requested)

    async def rescue(self, policy: RetryPolicy) -> list[Job]:
        def rescue() -> list[Job]:
            processing = [r for r in self.rows.values() if r.status is Status.PROCESSING]
            orphans = [r for r in processing if r.id not in self._owner]
            return self._write([policy.lost(r) for r in orphans])

        return await self._round_trip(rescue)

    async def clean(self, older_than: float, limit: int) -> int | None:
        def clean() -> int:
            cutoff = _now() - timedelta(seconds=older_than)
            old = [
                (r.finished_at, r.id)
                for r in self.rows.values()
                if r.status.finished and r.finished_at is not None and r.finished_at < cutoff
            ]
            doomed = sorted(old)[:limit]
            for _, row_id in doomed:
                del self.rows[row_id]
            self._touch()
            return len(doomed)

        return await self._round_trip(clean)

    async def compact_counts(self) -> bool:
        return await self._round_trip(lambda: True)

    # --- internals ------------------------------------------------------------------

    async def _round_trip(self, work: Callable[[], T]) -> T:
        if self.down:
            raise DatabaseUnavailable("PostgreSQL is not reachable: the in-memory store is down")
        result = work()  # committed before the answer travels back
        with trio.CancelScope(shield=True):
            await trio.sleep(self.latency)
        return result

    def _claim(self, session: MemorySession, limit: int) -> tuple[list[Job], float | None]:
        now = _now()
        queued = [r for r in self.rows.values() if r.status is Status.QUEUED]
        due = sorted((r for r in queued if r.run_at <= now), key=lambda r: (-r.priority, r.run_at, r.id))
        # Fair share as CLAIM_SQL: the tenants in name order after the session's ring
        # cursor (wrapping around), one row of each, then a second of each, ...
        tenants = sorted({r.tenant for r in due}, key=lambda t: (t <= session.ring, t))
        turn = {t: i for i, t in enumerate(tenants)}
        rank: dict[str, int] = {}
        order = []
        for r in due:
            rank[r.tenant] = rank.get(r.tenant, 0) + 1
            order.append(((rank[r.tenant], turn[r.tenant]), r))
        order.sort(key=lambda pair: pair[0])
        picked = [r for _, r in order[:limit]]
        if picked:
            session.ring = max(picked, key=lambda r: turn[r.tenant]).tenant
        claimed = []
        for row in picked:
            row = replace(
                row, status=Status.PROCESSING, attempts=row.attempts + 1, started_at=now,
                updated_at=now, worker_id=session.worker_id, error=None,
            )  # fmt: skip
            self.rows[row.id] = row
            self._owner[row.id] = session
            claimed.append(row)
        self.claims.append((limit, len(claimed)))
        self._touch()
        later = [r.run_at for r in queued if r.run_at > now]
        next_due = (min(later) - now).total_seconds() if later and len(claimed) < limit else None
        return claimed, next_due

    def _finish(self, session: MemorySession, outcomes: Sequence[Outcome], policy: RetryPolicy) -> list[Job]:
        decisions = []
        for outcome in outcomes:
            row = self.rows.get(outcome.id)
            if row is not None and row.status is Status.PROCESSING and row.worker_id == session.worker_id:
                decisions.append(policy.decide(row, outcome))
        written = self._write(decisions)
        for outcome in outcomes:
            if self._owner.get(outcome.id) is session:
                del self._owner[outcome.id]
        self._touch()
        return written

    def _write(self, decisions: Sequence[Decision]) -> list[Job]:
        now, written = _now(), []
        for d in decisions:
            row = self.rows[d.id]
            run_at = now + timedelta(seconds=d.delay) if d.status is Status.QUEUED else row.run_at
            row = replace(
                row, status=d.status, error=d.error, attempts=d.attempts, run_at=run_at,
                finished_at=now if d.status.finished else None, worker_id=None, updated_at=now,
            )  # fmt: skip
            self.rows[d.id] = row
            written.append(row)
        self._touch()
        if any(r.status is Status.QUEUED for r in written):
            self._signal(Wakeup())
        return written

    def _release(self, session: MemorySession) -> None:
        for row_id in [i for i, owner in self._owner.items() if owner is session]:
            del self._owner[row_id]
        self._touch()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _signal(self, signal: Signal) -> None:
        for send in self._listeners:
            send.send_nowait(signal)
