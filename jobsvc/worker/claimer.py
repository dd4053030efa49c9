"""The worker's cycle: record the outcomes that are in and claim as many due rows as
there are free slots, in one store call (one transaction, one commit)."""

from __future__ import annotations

import math

import trio

from jobsvc.errors import DatabaseUnavailable
from jobsvc.metrics import Metrics
from jobsvc.retry import Outcome
from jobsvc.worker.executor import Executor
from jobsvc.worker.finisher import Finisher
from jobsvc.worker.report import log_transitions
from jobsvc.worker.store import StoreSession

__all__ = ["CONTENDED_RETRY", "Claimer"]

#: After a short claim that left due rows behind (locked by another worker's claim in
#: flight), claim again this many seconds later: that claim commits within a round trip
#: or two, and until then a new claim would skip the same rows again.
CONTENDED_RETRY = 0.002


class Claimer:
    """Runs cycles while outcomes wait or slots are free and the queue may hold due rows;
    otherwise sleeps until `poke` (work may be due: a NOTIFY, the safety net), `wake` (an
    outcome arrived, a slot freed, shutdown, a health check) or the next delayed row's time.

    A cycle is one `StoreSession.finish_and_claim`: the jobs whose outcomes it records
    free their slots in the same call, so the claim counts them as free. The serial
    chain finish → claim costs one round trip and one commit per cycle in the common
    case, sent from the trio thread (`jobsvc.pgtrio`: no thread hop).
    """

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
        """Look again at the outcomes, the free slots and the stop flag."""
        self._wake.set()

    async def run(
        self, session: StoreSession, jobs: trio.Nursery, finisher: Finisher, claims_ended: trio.Event
    ) -> None:
        """Claim into ``jobs`` and record ``finisher``'s outcomes until cancelled. Once the
        executor is stopping it claims nothing more and sets ``claims_ended`` (no claim is
        in flight then), and goes on recording. Raises `DatabaseUnavailable` when the
        session breaks (found by a call, or by a health check that woke us), after
        abandoning the jobs. Either way it closes ``finisher``."""
        self._more = True  # a new session: whatever was notified meanwhile is lost
        batch: list[Outcome] = []
        try:
            while True:
                if session.broken:  # its locks, hence its jobs, are gone
                    raise DatabaseUnavailable("the worker's session is broken")
                self._wake = trio.Event()
                stopping = self._executor.stopping
                if stopping:
                    claims_ended.set()
                batch = finisher.take()
                # The jobs of ``batch`` still count as running until it is recorded.
                free = self._concurrency - len(self._executor.running) + len(batch)
                limit = free if self._more and free > 0 and not stopping else 0
                if batch or limit:
                    await self._cycle(session, jobs, finisher, batch, limit)
                    batch = []
                    continue
                deadline = self._next_due if free > 0 and not stopping else math.inf
                with trio.move_on_at(deadline) as timer:
                    await self._wake.wait()
                if timer.cancelled_caught:
                    self._next_due = math.inf
                    self._more = True
        except DatabaseUnavailable:
            self._executor.abandon()  # before the nursery cancels the jobs
            raise
        finally:
            self._executor.release([*batch, *finisher.close()])  # never to be recorded

    async def _cycle(
        self, session: StoreSession, jobs: trio.Nursery, finisher: Finisher, batch: list[Outcome], limit: int
    ) -> None:
        if limit:
            self._more = False  # a wake-up during the claim sets it again
        written, claimed, next_due = await session.finish_and_claim(batch, finisher.policy, limit)
        self._executor.release(batch)  # their slots are free before the claimed jobs take them
        finisher.recorded(written)
        if not limit:
            return
        if len(claimed) == limit:
            self._more = True  # a full batch: there may be more
        elif next_due is not None:
            # 0: due rows that another worker's claim held: look again once it has committed.
            self._next_due = trio.current_time() + max(next_due, CONTENDED_RETRY)
        else:
            self._next_due = math.inf
        self._metrics.claims.inc(len(claimed))
        log_transitions(claimed)  # Queued -> Processing
        for job in claimed:
            jobs.start_soon(self._executor.run, self._executor.admit(job))
