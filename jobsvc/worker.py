"""The trio worker (DESIGN §3): claim, run, record; rescue; shut down gracefully.

Task tree of `Worker.run`::

    run
    ├── rescuer            start-up + every rescue_interval: orphan sweep, claim safety net,
    │                      cancel reconciliation, session health check
    ├── listener           LISTEN jobsvc_wakeup + jobsvc_cancel; reconnects with backoff
    └── session lifetime   one dedicated connection (owns the advisory locks); reconnects
        ├── claim loop     claims as many due rows as there are free slots, one statement
        ├── finisher       records outcomes in batches, one statement per batch
        └── job (N)         one cancel scope per job; cleanup shielded

Connections per process: the session, the listener and a pool of two (rescuer),
whatever the concurrency.

If the session's connection breaks, its advisory locks are gone: the worker no
longer owns its jobs, so it cancels them without recording anything (a rescuer
requeues them) and reconnects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import trio

from jobsvc import queue
from jobsvc.config import Settings
from jobsvc.db import Database, Listener, Session, run_with_backoff
from jobsvc.errors import DatabaseUnavailable, JobError
from jobsvc.metrics import Metrics
from jobsvc.model import Job, Status
from jobsvc.retry import Outcome, RetryPolicy, outcome_of

log = logging.getLogger("jobsvc.worker")

Handler = Callable[[Job], Awaitable[None]]
StopReason = Literal["cancel", "shutdown", "lost"]

#: A cancel NOTIFY may overtake the claim that makes the job ours; remember it this long.
PENDING_CANCEL_TTL = 60.0


@dataclass(eq=False)
class _Running:
    job: Job
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


class _Finisher:
    """Collects outcomes and records them in batches through the session.

    `record` waits until its outcome is committed, or returns at once when the
    session was lost (then nothing can be recorded: a rescuer will requeue the row).
    """

    def __init__(
        self,
        session: Session,
        worker_id: str,
        policy: RetryPolicy,
        on_recorded: Callable[[list[Job]], None],
    ) -> None:
        self._session = session
        self._policy = policy
        self._worker_id = worker_id
        self._on_recorded = on_recorded
        self._pending: list[tuple[Outcome, trio.Event]] = []
        self._wake = trio.Event()
        self.closed = False

    async def record(self, outcome: Outcome) -> None:
        if self.closed:
            return
        done = trio.Event()
        self._pending.append((outcome, done))
        self._wake.set()
        await done.wait()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._pending = self._pending, []
                outcomes = [o for o, _ in batch]
                try:
                    finish = partial(queue.finish, worker_id=self._worker_id, policy=self._policy)
                    jobs = await self._session.run(partial(finish, outcomes=outcomes))
                    self._on_recorded(jobs)
                finally:
                    for _, done in batch:
                        done.set()
        finally:
            self.closed = True
            for _, done in self._pending:
                done.set()


class Worker:
    """Runs jobs from the queue until `shutdown` (graceful) or cancellation (abrupt).

    ``handlers`` maps a job ``type`` to its handler; every other type goes to
    ``default_handler`` (the image pipeline when None). A handler raises
    `PermanentError` or `TransientError`; any other exception counts as transient.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: Mapping[str, Handler] | None = None,
        default_handler: Handler | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self._url = settings.require_database_url()
        self._handlers = dict(handlers or {})
        self._default = default_handler
        self._running: dict[int, _Running] = {}
        self._pending_cancels: dict[int, float] = {}
        self._more = True  # the queue may hold due rows: claim before waiting
        self._wake = trio.Event()
        self._next_due = math.inf
        self._stopping = False
        self._finisher: _Finisher | None = None
        self._session: Session | None = None
        self._idle = trio.Event()
        self._listening = trio.Event()  # set once the first LISTEN is in place
        self._db = Database(self._url, max_size=2, application_name="jobsvc-worker")
        self.metrics = metrics or Metrics()
        self.policy = RetryPolicy(base=settings.retry_backoff)

    # --- public ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `shutdown` has drained the jobs. Cancelling it abandons running jobs
        (their locks go with the session, and a rescuer requeues them)."""
        async with AsyncExitStack() as stack:
            await self._db.open()
            stack.push_async_callback(self._db.close)
            if self._default is None:
                self._default = await self._image_pipeline(stack)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rescuer)
                nursery.start_soon(run_with_backoff, "worker listener", self._listen_once)
                await self._session_loop(task_status)
                nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` seconds, then go back to Queued."""
        self._stopping = True
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._running)

    # --- session ------------------------------------------------------------------------

    async def _session_loop(self, task_status: trio.TaskStatus[None]) -> None:
        delay = 0.1
        started = False
        while not self._stopping:
            try:
                session = await Session.connect(self._url)
            except DatabaseUnavailable as exc:
                log.warning("worker session: %s; retrying in %.1fs", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                async with trio.open_nursery() as jobs:
                    self._session = session
                    self._finisher = _Finisher(session, self.worker_id, self.policy, self._recorded)
                    jobs.start_soon(self._finisher.run)
                    self._more = True
                    if not started:
                        await self._listening.wait()
                        task_status.started()
                        started = True
                    await self._claim_loop(session, jobs)
                    await self._drain()
                    jobs.cancel_scope.cancel()
            except* DatabaseUnavailable as group:
                log.warning(
                    "worker session lost (%s): abandoning %d job(s)", group.exceptions[0], self.running
                )
            finally:
                self._abandon()
                self._session = None
                await session.close()

    def _abandon(self) -> None:
        """The session is gone (or going): its locks are, so the jobs are no longer ours."""
        if self._finisher is not None:
            self._finisher.closed = True
        for slot in list(self._running.values()):
            slot.stop("lost")

    async def _claim_loop(self, session: Session, jobs: trio.Nursery) -> None:
        while not self._stopping:
            if session.broken:  # found by a health check: its locks, hence its jobs, are gone
                raise DatabaseUnavailable("the worker's session is broken")
            self._wake = trio.Event()
            free = self.settings.concurrency - len(self._running)
            if self._more and free > 0:
                self._more = False  # a NOTIFY during the claim sets it again
                claimed, next_due = await session.run(
                    partial(queue.claim, worker_id=self.worker_id, limit=free)
                )
                if len(claimed) == free:
                    self._more = True
                else:
                    due = math.inf if next_due is None else trio.current_time() + next_due
                    self._next_due = due
                self.metrics.claims.inc(len(claimed))
                for job in claimed:
                    jobs.start_soon(self._run_job, self._admit(job))
                continue
            deadline = self._next_due if free > 0 else math.inf
            with trio.move_on_at(deadline) as timer:
                await self._wake.wait()
            if timer.cancelled_caught:
                self._next_due = math.inf
                self._more = True

    async def _drain(self) -> None:
        """Graceful stop: give running jobs the grace period, then requeue the rest."""
        if self._running:
            log.info(
                "shutting down: waiting up to %.0fs for %d job(s)", self.settings.shutdown_grace, self.running
            )
            with trio.move_on_after(self.settings.shutdown_grace):
                while self._running:
                    self._idle = trio.Event()
                    await self._idle.wait()
        for slot in list(self._running.values()):
            slot.stop("shutdown")
        while self._running:
            self._idle = trio.Event()
            await self._idle.wait()

    # --- one job ------------------------------------------------------------------------

    def _admit(self, job: Job) -> _Running:
        """Count a claimed job as running at once, before its task starts: the next
        claim's free slots must not include jobs that are merely spawned."""
        slot = _Running(job)
        self._running[job.id] = slot
        if self._pending_cancels.pop(job.id, None) is not None or job.cancel_requested_at is not None:
            slot.stop("cancel")
        elif self._stopping:  # brought in by a claim in flight when shutdown began: give it back
            slot.stop("shutdown")
        return slot

    async def _run_job(self, slot: _Running) -> None:
        job = slot.job
        handler = self._handlers.get(job.type, self._default)
        assert handler is not None
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
            with trio.CancelScope(shield=True):
                if outcome is not None and self._finisher is not None:
                    await self._finisher.record(outcome)
            del self._running[job.id]
            self._idle.set()
            self._wake.set()

    async def _attempt(self, handler: Handler, job: Job) -> Outcome:
        try:
            await handler(job)
        except JobError as exc:
            return outcome_of(job.id, exc)
        except Exception as exc:  # a handler bug must not kill the worker: log it, retry
            log.exception("handler for job %s/%s raised", job.job_id, job.result_file)
            return outcome_of(job.id, exc)
        return outcome_of(job.id, None)

    def _recorded(self, jobs: list[Job]) -> None:
        for job in jobs:
            log_transition(job)
            self.metrics.job_recorded(job)
            if job.status is Status.CANCELED:
                self.metrics.cancels.inc()

    # --- notifications ------------------------------------------------------------------

    async def _listen_once(self) -> None:
        listener = await Listener.open(self._url, [queue.WAKEUP_CHANNEL, queue.CANCEL_CHANNEL])
        async with listener:
            self._listening.set()
            # Notifications sent while nobody listened are lost: drain and reconcile.
            self._poke()
            await self._check_session()  # whatever cut the listener may have cut the session
            await self._reconcile_cancels()
            async for note in listener:
                if note.channel == queue.CANCEL_CHANNEL:
                    for part in note.payload.split(","):
                        if part.isdigit():
                            self._cancel(int(part))
                else:
                    self._poke()

    def _poke(self) -> None:
        self._more = True
        self._wake.set()

    def _cancel(self, row_id: int) -> None:
        slot = self._running.get(row_id)
        if slot is not None:
            slot.stop("cancel")
            return
        now = trio.current_time()
        self._pending_cancels = {
            i: t for i, t in self._pending_cancels.items() if now - t < PENDING_CANCEL_TTL
        }
        self._pending_cancels[row_id] = now

    async def _reconcile_cancels(self) -> None:
        ids = list(self._running)
        if ids:
            for row_id in await self._db.run(lambda c: queue.cancel_requested(c, ids)):
                self._cancel(row_id)

    # --- rescuer ------------------------------------------------------------------------

    async def _rescuer(self) -> None:
        """Sweeps orphans at start-up and every rescue_interval; also a claim safety net
        (a wake-up lost between commit and NOTIFY) and a health check of the session."""
        while True:
            try:
                rescued = await self._db.run(partial(queue.rescue, policy=self.policy))
                for job in rescued:
                    log_transition(job, rescued=True)
                self.metrics.rescues.inc(len(rescued))
                await self._reconcile_cancels()
            except DatabaseUnavailable as exc:
                log.warning("rescuer: %s", exc)
            await self._check_session()
            self._poke()
            await trio.sleep(self.settings.rescue_interval)

    async def _check_session(self) -> None:
        """Probe the idle session: a session killed while idle is otherwise only noticed at the
        next claim or finish, and meanwhile a rescuer may hand its jobs to another worker."""
        session = self._session
        if session is None or session.broken:
            return
        try:
            await session.run(lambda c: c.execute("SELECT 1"))
        except DatabaseUnavailable as exc:
            log.warning("worker session failed its health check: %s", exc)
        self._wake.set()  # the claim loop tears a broken session down

    async def _image_pipeline(self, stack: AsyncExitStack) -> Handler:
        from jobsvc.fetch import Fetcher
        from jobsvc.pipeline import ImagePipeline
        from jobsvc.storage import storage_from_settings

        fetcher = Fetcher(self.settings)
        stack.push_async_callback(fetcher.aclose)
        storage = storage_from_settings(self.settings)
        stack.push_async_callback(storage.aclose)
        pipeline: Handler = ImagePipeline(fetcher, storage, on_downloaded=self.metrics.fetch_bytes.inc)
        return pipeline


def log_transition(job: Job, *, rescued: bool = False) -> None:
    """One structured line per recorded transition."""
    duration = None
    if job.finished_at is not None:
        duration = int((job.finished_at - job.created_at).total_seconds() * 1000)
    level = logging.WARNING if job.status is Status.FAILED or rescued else logging.INFO
    log.log(
        level,
        "job %s/%s %s attempt=%d/%d%s%s",
        job.job_id,
        job.result_file,
        job.status.value,
        job.attempts,
        job.max_attempts,
        "" if duration is None else f" duration_ms={duration}",
        "" if not job.error else f" error={job.error!r}",
        extra={
            "job_id": str(job.job_id),
            "result_file": job.result_file,
            "status": job.status.value,
            "attempt": job.attempts,
            "duration_ms": duration,
            "error": job.error,
            "rescued": rescued,
        },
    )
