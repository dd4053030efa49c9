"""The claim loop: as many due rows as there are free slots, in one store call."""

from __future__ import annotations

import math

import trio

from jobsvc.errors import DatabaseUnavailable
from jobsvc.metrics import Metrics
from jobsvc.worker.executor import Executor
from jobsvc.worker.report import log_transition
from jobsvc.worker.store import StoreSession

__all__ = ["Claimer"]


class Claimer:
    """Claims while slots are free and the queue may hold due rows; otherwise sleeps
    until `poke` (work may be due: a NOTIFY, the safety net), `wake` (a slot freed,
    shutdown, a health check) or the next delayed row's time."""

    def __init__(self, executor: Executor, concurrency: int, metrics: Metrics) -> None:
        self._executor = executor
        self._concurrency = concurrency
        self._metrics = metrics
        self._more = True  # the queue may hold due rows: claim before waiting
        self._wake = trio.Event()
        self._next_due = math.inf

    def poke(self) -> None:
        """Work may be due: claim (if a slot is free) before waiting again."""
        self._more = True
        self._wake.set()

    def wake(self) -> None:
        """Look again at the free slots and the stop flag."""
        self._wake.set()

    async def run(self, session: StoreSession, jobs: trio.Nursery) -> None:
        """Claim into ``jobs`` until the executor is stopping. Raises `DatabaseUnavailable`
        when the session breaks (found by a call, or by a health check that woke us)."""
        self._more = True  # a new session: whatever was notified meanwhile is lost
        while not self._executor.stopping:
            if session.broken:  # its locks, hence its jobs, are gone
                raise DatabaseUnavailable("the worker's session is broken")
            self._wake = trio.Event()
            free = self._concurrency - len(self._executor.running)
            if self._more and free > 0:
                await self._claim(session, jobs, free)
                continue
            deadline = self._next_due if free > 0 else math.inf
            with trio.move_on_at(deadline) as timer:
                await self._wake.wait()
            if timer.cancelled_caught:
                self._next_due = math.inf
                self._more = True

    async def _claim(self, session: StoreSession, jobs: trio.Nursery, free: int) -> None:
        self._more = False  # a wake-up during the claim sets it again
        claimed, next_due = await session.claim(free)
        if len(claimed) == free:
            self._more = True  # a full batch: there may be more
        else:
            self._next_due = math.inf if next_due is None else trio.current_time() + next_due
        self._metrics.claims.inc(len(claimed))
        for job in claimed:
            log_transition(job)  # Queued -> Processing
            jobs.start_soon(self._executor.run, self._executor.admit(job))
