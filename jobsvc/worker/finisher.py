"""Outcomes waiting to be recorded: the claimer writes them with its next claim, one
store call (one transaction) per cycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jobsvc.model import Job
from jobsvc.retry import Outcome, RetryPolicy

__all__ = ["Finisher"]


class Finisher:
    """Collects the outcomes of one session's jobs for the claimer's next cycle.

    `post` hands an outcome over and returns at once: the job's slot stays taken until
    the cycle that records it commits (`Executor.release`), so a job task need not
    wait (no event and no wake-up per job). Outcomes that arrive while a cycle is in
    flight go into the next one. ``on_pending`` is called when an outcome arrives (it
    wakes the claimer).
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
        self._pending: list[Outcome] = []
        #: Once true, `post` refuses (set when the session is lost or its cycle ends).
        self.closed = False

    def post(self, outcome: Outcome) -> bool:
        """Queue ``outcome`` for the next cycle; False (nothing will be recorded) once closed."""
        if self.closed:
            return False
        self._pending.append(outcome)
        self._on_pending()
        return True

    def take(self) -> list[Outcome]:
        """The outcomes waiting now, for one cycle (later ones wait for the next)."""
        batch, self._pending = self._pending, []
        return batch

    def recorded(self, written: Sequence[Job]) -> None:
        """A cycle committed; ``written`` are the rows it changed."""
        self._on_recorded(written)

    def close(self) -> list[Outcome]:
        """No more cycles: returns the outcomes that will never be recorded."""
        self.closed = True
        dropped, self._pending = self._pending, []
        return dropped
