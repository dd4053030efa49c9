"""The one retry policy: how the end of an attempt becomes the row's next state.

Every rule about retrying lives here, in Python, and nowhere in SQL:

- which errors retry: `outcome_of` maps what a handler raised to an `Outcome`
  (`PermanentError` → failed, `TransientError` or any other exception → retry;
  `jobsvc.fetch` and `jobsvc.storage` raise those two classes);
- when to give up, the delay before the next attempt and the error text:
  `RetryPolicy.decide` maps an outcome and the row, read under its lock, to a
  `Decision` that the store writes as it is (``queue.finish``, ``queue.rescue``
  and the in-memory store all call it);
- a row whose worker was lost is one more transient failure (`RetryPolicy.lost`):
  it gets the same backoff, and fails once its attempts are spent.

To change the policy, change this module; its unit tests are tests/unit/test_retry.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from jobsvc.errors import PermanentError, TransientError
from jobsvc.model import Job, Status

__all__ = ["CANCELED_ERROR", "Decision", "Outcome", "OutcomeKind", "RetryPolicy", "outcome_of"]

#: The error text of every canceled row (canceled while Queued, while running, or rescued).
CANCELED_ERROR = "canceled on request"

OutcomeKind = Literal["completed", "failed", "retry", "canceled", "requeue"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the worker reports it.

    - ``completed``/``failed``/``canceled``: final.
    - ``retry``: a transient error; Queued again after a backoff, or Failed when the
      attempts are spent (or Canceled if a cancel was requested meanwhile).
    - ``requeue``: the worker gave the job back (shutdown); the attempt is not counted.
    """

    id: int
    kind: OutcomeKind
    error: str | None = None


def outcome_of(row_id: int, exc: BaseException | None) -> Outcome:
    """The outcome of an attempt that returned (``exc`` None) or raised ``exc``."""
    if exc is None:
        return Outcome(row_id, "completed")
    if isinstance(exc, PermanentError):
        return Outcome(row_id, "failed", str(exc))
    if isinstance(exc, TransientError):
        return Outcome(row_id, "retry", str(exc))
    # A handler bug must not kill the worker: retry, and say what it was.
    return Outcome(row_id, "retry", f"unexpected error: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the store writes for one row: its status, error and attempts as given;
    ``run_at = now + delay`` when Queued; ``finished_at = now`` when final."""

    id: int
    status: Status
    error: str | None
    attempts: int
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: about ``base * factor ** (attempt - 1)`` seconds
    (1, 4, 16 s with the defaults) before attempt ``attempt + 1``."""

    base: float = 1.0
    factor: float = 4.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th attempt failed transiently."""
        spread = random.uniform(1.0 - self.jitter, 1.0 + self.jitter)  # a burst must not stampede
        return self.base * self.factor ** (max(attempt, 1) - 1) * spread

    def decide(self, row: Job, outcome: Outcome) -> Decision:
        """The next state of ``row`` (read under its row lock, so a cancel requested a
        moment ago is seen) after ``outcome``."""
        final = self.final(outcome)
        if final is not None:
            return Decision(row.id, *final, row.attempts)
        # A retry or a give-back of a row whose cancel was requested ends Canceled.
        attempts = row.attempts - 1 if outcome.kind == "requeue" else row.attempts
        if outcome.kind == "canceled" or row.cancel_requested_at is not None:
            return Decision(row.id, Status.CANCELED, CANCELED_ERROR, attempts)
        if outcome.kind == "requeue":
            return Decision(row.id, Status.QUEUED, None, attempts)
        if row.attempts >= row.max_attempts:
            error = f"{outcome.error} (gave up after {row.attempts} attempts)"
            return Decision(row.id, Status.FAILED, error, row.attempts)
        return Decision(row.id, Status.QUEUED, outcome.error, row.attempts, self.delay(row.attempts))

    def final(self, outcome: Outcome) -> tuple[Status, str | None] | None:
        """The status and error ``outcome`` ends its row with whatever the row holds
        (completed, failed: the attempt is over and keeps its count); None when the
        decision needs the row read under its lock (a retry, a cancel, a give-back).
        `queue.cycle` writes these without reading the rows first."""
        if outcome.kind == "completed":
            return Status.COMPLETED, None
        if outcome.kind == "failed":
            return Status.FAILED, outcome.error
        return None

    def lost(self, row: Job) -> Decision:
        """The next state of a Processing row whose worker is gone (the rescuer's case):
        the lost attempt counts, as a transient failure."""
        error = (
            f"the worker running attempt {row.attempts} was lost"
            f" ({row.worker_id or '?'} died or lost its database connection)"
        )
        return self.decide(row, Outcome(row.id, "retry", error))
