"""The trio worker: claim, run, record; rescue; shut down gracefully.

`Worker` only composes the parts (docs/ARCHITECTURE.md, "The worker"). Its task tree::

    Worker.run
    ├── rescuer            maintenance.Rescuer: a sweep at start-up and every rescue_interval
    ├── cleaner            maintenance.Cleaner: retention, a pass at start-up and every clean_interval
    ├── safety net         every rescue_interval: claim anyway (a wake-up lost between commit
    │                      and NOTIFY), health-check the idle session, reconcile cancels
    ├── listener           SignalListener: wake-ups and cancel requests; reconnects with backoff
    └── session lifetime   one owning session (the advisory locks); reconnects with backoff
        ├── claimer        Claimer: one store call per cycle: the outcomes in (Finisher
        │                  collects them), then as many due rows as free slots
        └── job (N)        Executor.run: one cancel scope per job; the outcome recorded shielded

If the session breaks, its locks are gone: the worker no longer owns its jobs, so
it cancels them without recording anything (the rescuer moves them on) and
reconnects. The store is the seam (`jobsvc.worker.store`): PostgreSQL in
production, `MemoryStore` in the unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial

import trio

from jobsvc.backoff import run_with_backoff
from jobsvc.config import Settings
from jobsvc.errors import DatabaseUnavailable
from jobsvc.maintenance import Cleaner, CleanerConfig, Rescuer, RescuerConfig
from jobsvc.metrics import Metrics
from jobsvc.retry import RetryPolicy
from jobsvc.worker.claimer import Claimer
from jobsvc.worker.executor import Executor, Handler
from jobsvc.worker.finisher import Finisher
from jobsvc.worker.listener import SignalListener
from jobsvc.worker.report import report_recorded, report_rescued
from jobsvc.worker.store import Store, StoreSession

__all__ = ["Worker"]

log = logging.getLogger("jobsvc.worker")


class Worker:
    """Runs jobs from the queue until `shutdown` (graceful) or cancellation (abrupt).

    ``handlers`` maps a job ``type`` to its handler; every other type goes to
    ``default_handler`` (the image pipeline when None). A handler raises
    `PermanentError` or `TransientError`; any other exception counts as transient
    (`jobsvc.retry`). ``store`` defaults to PostgreSQL at ``settings.database_url``,
    ``policy`` to `RetryPolicy` with ``settings.retry_backoff`` as its base.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: Mapping[str, Handler] | None = None,
        default_handler: Handler | None = None,
        metrics: Metrics | None = None,
        store: Store | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        if store is None:
            from jobsvc.worker.pgstore import PostgresStore

            store = PostgresStore(settings.require_database_url())
        self.settings = settings
        self.worker_id = settings.worker_id
        self.store = store
        self.metrics = metrics or Metrics()
        self.policy = policy or RetryPolicy(base=settings.retry_backoff)
        self._executor = Executor(handlers or {}, default_handler, on_end=self._slot_freed)
        self._claimer = Claimer(self._executor, settings.concurrency, self.metrics)
        self._listener = SignalListener(store, self._claimer, self._executor, catch_up=self._catch_up)
        self._rescuer = Rescuer(
            store,
            self.policy,
            RescuerConfig(interval=settings.rescue_interval),
            on_rescued=partial(report_rescued, self.metrics),
        )
        self._cleaner = Cleaner(
            store,
            CleanerConfig(retention=settings.retention, interval=settings.clean_interval),
            on_deleted=self.metrics.cleaned.inc,
        )
        self._session: StoreSession | None = None
        self._started = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `shutdown` has drained the jobs; ready (``task_status.started()``) once
        the first session and LISTEN are in place. Cancelling it abandons running jobs
        (their locks go with the session, and a rescuer moves them on)."""
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            if self._executor.default is None:
                self._executor.default = await self._image_pipeline(stack)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rescuer.run)
                nursery.start_soon(self._cleaner.run)
                nursery.start_soon(self._safety_net)
                nursery.start_soon(self._listener.run)
                await run_with_backoff("worker session", partial(self._session_once, task_status))
                nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` seconds, then go back to Queued."""
        self._executor.stopping = True
        self._claimer.wake()

    @property
    def running(self) -> int:
        return len(self._executor.running)

    @property
    def cleaner(self) -> Cleaner:
        """The retention service (its ``passes`` and ``skipped`` show it at work)."""
        return self._cleaner

    @property
    def session(self) -> StoreSession | None:
        """The current owning session (None between sessions)."""
        return self._session

    async def _session_once(self, task_status: trio.TaskStatus[None]) -> None:
        """One session's lifetime. Returns after a graceful drain; raises `DatabaseUnavailable`
        when the session cannot be opened or is lost (`run_with_backoff` reconnects)."""
        if self._executor.stopping:
            return
        session = await self.store.connect(self.worker_id)
        lost: DatabaseUnavailable | None = None
        try:
            async with trio.open_nursery() as jobs:
                self._session = session
                finisher = Finisher(self.policy, partial(report_recorded, self.metrics), self._claimer.wake)
                self._executor.finisher = finisher
                claims_ended = trio.Event()
                jobs.start_soon(self._claimer.run, session, jobs, finisher, claims_ended)
                if not self._started:
                    await self._listener.listening.wait()
                    task_status.started()
                    self._started = True
                # Drain only once no claim is in flight: its jobs must be counted (and given back).
                await claims_ended.wait()
                await self._executor.drain(self.settings.shutdown_grace)
                jobs.cancel_scope.cancel()
        except* DatabaseUnavailable as group:
            lost = group.exceptions[0]  # type: ignore[assignment]
        finally:
            self._executor.abandon()
            self._session = None
            await session.close()
        if lost is not None:
            raise DatabaseUnavailable(f"session lost, its jobs abandoned ({lost})")

    def _slot_freed(self) -> None:
        self._claimer.wake()

    async def _safety_net(self) -> None:
        while True:
            await trio.sleep(self.settings.rescue_interval)
            try:
                await self._catch_up()
            except DatabaseUnavailable as exc:
                log.warning("worker safety net: %s", exc)

    async def _catch_up(self) -> None:
        """Make up for signals nobody received: claim anyway, check the session, and ask the
        store which running jobs have a cancel request."""
        self._claimer.poke()
        await self._check_session()
        ids = list(self._executor.running)
        if ids:
            for row_id in await self.store.cancel_requested(ids):
                self._executor.cancel(row_id)

    async def _check_session(self) -> None:
        """Probe the idle session: a session killed while idle is otherwise only noticed at the
        next claim or finish, and meanwhile a rescuer may hand its jobs to another worker."""
        session = self._session
        if session is None or session.broken:
            return
        try:
            await session.ping()
        except DatabaseUnavailable as exc:
            log.warning("worker session failed its health check: %s", exc)
        self._claimer.wake()  # the claimer tears a broken session down

    async def _image_pipeline(self, stack: AsyncExitStack) -> Handler:
        from jobsvc.fetch import Fetcher
        from jobsvc.pipeline import ImagePipeline
        from jobsvc.spool import Spool
        from jobsvc.storage import storage_from_settings

        spool = await trio.to_thread.run_sync(Spool.open, self.settings.spool_dir)  # sweeps dead ones
        stack.callback(spool.close)
        fetcher = Fetcher(self.settings, tmp_dir=spool.path)
        stack.push_async_callback(fetcher.aclose)
        storage = storage_from_settings(self.settings)
        stack.push_async_callback(storage.aclose)
        pipeline: Handler = ImagePipeline(fetcher, storage, on_downloaded=self.metrics.fetch_bytes.inc)
        return pipeline
