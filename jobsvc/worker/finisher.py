"""Outcomes waiting to be recorded: the claimer writes them with its next claim, one
store call (one transaction) per cycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from jobsvc.model import Job
from jobsvc.retry import Outcome, RetryPolicy

__all__ = ["Finisher", "Pending"]

#: An outcome and the event its job waits on until the outcome is committed.
Pending = tuple[Outcome, trio.Event]


class Finisher:
    """Collects the outcomes of one session's jobs for the claimer's next cycle.

    `record` waits until its outcome is committed, or returns at once when the
    session was lost (then nothing can be recorded: the rescuer moves the row on).
    Outcomes that arrive while a cycle is in flight go into the next one.
    ``on_pending`` is called when an outcome arrives (it wakes the claimer).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        on_recorded: Callable[[Sequence[Job]], None],
        on_pending: Callable[[], None],
    ) -> None:
        self.policy = policy
        self._on_recorded = on_recorded
        self._on_pending = on_pending
        self._pending: list[Pending] = []
        #: Once true, `record` returns at once (set when the session is lost or its cycle ends).
        self.closed = False

    async def record(self, outcome: Outcome) -> None:
        if self.closed:
            return
        done = trio.Event()
        self._pending.append((outcome, done))
        self._on_pending()
        await done.wait()

    def take(self) -> list[Pending]:
        """The outcomes waiting now, for one cycle (later ones wait for the next)."""
        batch, self._pending = self._pending, []
        return batch

    def recorded(self, batch: Sequence[Pending], written: Sequence[Job]) -> None:
        """``batch`` is committed (``written``: the rows it changed): report, release the jobs."""
        try:
            self._on_recorded(written)
        finally:
            for _, done in batch:
                done.set()

    def close(self, batch: Sequence[Pending] = ()) -> None:
        """No more cycles: release every waiting `record` (``batch``: one taken and not recorded)."""
        self.closed = True
        for _, done in [*batch, *self._pending]:
            done.set()
        self._pending = []
