"""Recording outcomes in batches: one store call (one UPDATE) per batch."""

from __future__ import annotations

from collections.abc import Callable

import trio

from jobsvc.model import Job
from jobsvc.retry import Outcome, RetryPolicy
from jobsvc.worker.store import StoreSession

__all__ = ["Finisher"]


class Finisher:
    """Collects outcomes and records them in batches through one session.

    `record` waits until its outcome is committed, or returns at once when the
    session was lost (then nothing can be recorded: the rescuer moves the row on).
    Outcomes that arrive while a batch is being written form the next batch.
    """

    def __init__(
        self, session: StoreSession, policy: RetryPolicy, on_recorded: Callable[[list[Job]], None]
    ) -> None:
        self._session = session
        self._policy = policy
        self._on_recorded = on_recorded
        self._pending: list[tuple[Outcome, trio.Event]] = []
        self._wake = trio.Event()
        #: Once true, `record` returns at once (set when the session is lost or the task ends).
        self.closed = False

    async def record(self, outcome: Outcome) -> None:
        if self.closed:
            return
        done = trio.Event()
        self._pending.append((outcome, done))
        self._wake.set()
        await done.wait()

    async def run(self) -> None:
        """Write batches until cancelled; raises `DatabaseUnavailable` if the session dies.
        Either way it closes, releasing every waiting `record`."""
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._pending = self._pending, []
                try:
                    jobs = await self._session.finish([o for o, _ in batch], self._policy)
                    self._on_recorded(jobs)
                finally:
                    for _, done in batch:
                        done.set()
        finally:
            self.closed = True
            for _, done in self._pending:
                done.set()
