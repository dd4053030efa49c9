"""Running claimed jobs: one cancel scope per job, and the bookkeeping around them.

The executor owns the set of running jobs. Each is stopped at most once, for the
first of three reasons: ``cancel`` (a client asked: recorded Canceled),
``shutdown`` (the grace period ran out, or the job was claimed while stopping:
given back to Queued without counting the attempt) and ``lost`` (the session that
owns the row is gone: nothing is recorded, the rescuer moves the row on).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import trio

from jobsvc.errors import JobError
from jobsvc.model import Job
from jobsvc.retry import Outcome, outcome_of
from jobsvc.worker.finisher import Finisher

__all__ = ["PENDING_CANCEL_TTL", "Executor", "Handler", "StopReason"]

log = logging.getLogger("jobsvc.worker")

Handler = Callable[[Job], Awaitable[None]]
StopReason = Literal["cancel", "shutdown", "lost"]

#: A cancel NOTIFY may overtake the claim that makes the job ours; remember it this long.
PENDING_CANCEL_TTL = 60.0


@dataclass(eq=False)
class _Slot:
    job: Job
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


class Executor:
    """Runs each admitted job's handler in its own cancel scope and reports its outcome
    to the current session's `Finisher` (set by the worker per session).

    ``handlers`` maps a job ``type`` to its handler; other types go to ``default``.
    ``on_end`` is called whenever a job leaves (a slot is free).
    """

    def __init__(
        self, handlers: Mapping[str, Handler], default: Handler | None, on_end: Callable[[], None]
    ) -> None:
        self.handlers = dict(handlers)
        self.default = default
        self.finisher: Finisher | None = None
        #: Set by `Worker.shutdown`: jobs claimed from now on are given back at once.
        self.stopping = False
        self.running: dict[int, _Slot] = {}
        self._pending_cancels: dict[int, float] = {}
        self._changed = trio.Event()
        self._on_end = on_end

    def admit(self, job: Job) -> _Slot:
        """Count a claimed job as running at once, before its task starts: the next
        claim's free slots must not include jobs that are merely spawned."""
        slot = _Slot(job)
        self.running[job.id] = slot
        if self._pending_cancels.pop(job.id, None) is not None or job.cancel_requested_at is not None:
            slot.stop("cancel")
        elif self.stopping:  # brought in by a claim in flight when shutdown began: give it back
            slot.stop("shutdown")
        return slot

    async def run(self, slot: _Slot) -> None:
        """The task of one job. It ends by handing its outcome to the finisher, which cannot
        be cancelled (a cancelled worker still records what it knows); the job keeps its
        slot until the cycle that records the outcome commits (`release`), or until the
        session is lost (then nothing is recorded: the finisher is closed)."""
        job = slot.job
        handler = self.handlers.get(job.type, self.default)
        assert handler is not None, "the worker sets a default handler before claiming"
        outcome: Outcome | None = None
        try:
            if slot.reason is None:  # not canceled or given back before it started
                with slot.scope:
                    outcome = await self._attempt(handler, job)
        finally:
            if outcome is None:
                reason = slot.reason or "shutdown"
                if reason == "cancel":
                    outcome = Outcome(job.id, "canceled")
                elif reason == "shutdown":
                    outcome = Outcome(job.id, "requeue")
            # No wait for the commit: the task ends here, its slot goes with `release`.
            if outcome is None or self.finisher is None or not self.finisher.post(outcome):
                self._leave(slot)

    def _leave(self, slot: _Slot) -> None:
        # Never remove a new claim of the same row (a row given back may be claimed again).
        if self.running.get(slot.job.id) is slot:
            del self.running[slot.job.id]
            self._changed.set()
        self._on_end()

    async def _attempt(self, handler: Handler, job: Job) -> Outcome:
        try:
            await handler(job)
        except JobError as exc:
            return outcome_of(job.id, exc)
        except Exception as exc:  # a handler bug must not kill the worker: log it, retry
            log.exception("handler for job %s/%s raised", job.job_id, job.result_file)
            return outcome_of(job.id, exc)
        return outcome_of(job.id, None)

    def release(self, recorded: Sequence[Outcome]) -> None:
        """These outcomes are committed, or will never be (the session is gone): their jobs
        no longer hold slots. The claimer's cycle calls it before it admits the rows it
        claimed in the same call (which may include one of these rows again)."""
        for outcome in recorded:
            self.running.pop(outcome.id, None)
        if recorded:
            self._changed.set()

    def cancel(self, row_id: int) -> None:
        """A cancel request for ``row_id``: stop it if it runs here, else remember it for a
        while (its claim may still be on its way back)."""
        slot = self.running.get(row_id)
        if slot is not None:
            slot.stop("cancel")
            return
        now = trio.current_time()
        self._pending_cancels = {
            i: t for i, t in self._pending_cancels.items() if now - t < PENDING_CANCEL_TTL
        }
        self._pending_cancels[row_id] = now

    def abandon(self) -> None:
        """The session is gone (or going): its locks are, so the jobs are no longer ours."""
        if self.finisher is not None:
            self.finisher.closed = True
        for slot in list(self.running.values()):
            slot.stop("lost")

    async def drain(self, grace: float) -> None:
        """Graceful stop: give running jobs ``grace`` seconds, then give the rest back."""
        if self.running:
            log.info("shutting down: waiting up to %.0fs for %d job(s)", grace, len(self.running))
            with trio.move_on_after(grace):
                await self._wait_idle()
        for slot in list(self.running.values()):
            slot.stop("shutdown")
        await self._wait_idle()

    async def _wait_idle(self) -> None:
        while self.running:
            self._changed = trio.Event()
            await self._changed.wait()
