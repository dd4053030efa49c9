"""The API's resources (`Services`) and the task that owns them.

The database pool, the URL prober, the storage, the wake-up `Announcer`, the
events `Broadcaster`, the enqueue `Collector` and the key `Authenticator` are
created when serving starts, by one task of ``app.nursery`` (`serve`) that owns
them and closes them in its ``finally``; they live on the app as
``app.extensions["jobsvc"]``, never in request globals.
Background tasks are supervised (logged, restarted with backoff) and
``/readyz`` reports a dead one; `StorageCheck` gives ``/readyz`` the storage's
answer within a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

import trio
from quart import current_app

from jobsvc.announcer import Announcer
from jobsvc.api.auth import Authenticator
from jobsvc.api.collector import IN_FLIGHT, Collector
from jobsvc.backoff import Backoff
from jobsvc.config import Settings
from jobsvc.db import Conn, Database, Link
from jobsvc.errors import JobsvcError
from jobsvc.events import DEFAULT_LINGER, Broadcaster
from jobsvc.fetch import Fetcher
from jobsvc.metrics import Metrics
from jobsvc.storage import Storage, storage_from_settings

__all__ = ["Services", "StorageCheck", "TaskHealth", "serve", "services", "supervise"]

log = logging.getLogger("jobsvc.api")

T = TypeVar("T")


@dataclass
class TaskHealth:
    alive: bool = False
    restarts: int = 0
    last_error: str | None = None


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    verdict: str = "no answer yet"


class StorageCheck:
    """`Storage.check` for ``/readyz``: a verdict within ``timeout`` seconds, one check at a time.

    A boto3 call in a thread cannot be cancelled (STACK-NOTES), so a check that
    outlives the deadline goes on in ``nursery``; probes that arrive meanwhile wait
    on that same check instead of starting another thread each (a hung endpoint
    polled every second must not pile up threads). Cancelling ``nursery`` ends it.
    """

    def __init__(self, storage: Storage, nursery: trio.Nursery, timeout: float) -> None:
        self._storage = storage
        self._nursery = nursery
        self.timeout = timeout
        self._flight: _Flight | None = None

    async def verdict(self) -> str:
        """``"ok"``, or a sentence saying what is wrong."""
        flight = self._flight
        if flight is None:
            flight = self._flight = _Flight()
            self._nursery.start_soon(self._check, flight)
        with trio.move_on_after(self.timeout):
            await flight.done.wait()
            return flight.verdict
        return f"no answer within {self.timeout:g}s"

    async def _check(self, flight: _Flight) -> None:
        try:
            await self._storage.check()
            flight.verdict = "ok"
        except JobsvcError as exc:
            flight.verdict = f"unreachable: {exc}"
        except Exception as exc:  # a bug must not take the services' nursery down with it
            log.exception("the storage check failed")
            flight.verdict = f"check failed: {type(exc).__name__}"
        finally:
            self._flight = None
            flight.done.set()


@dataclass
class Services:
    """What the request handlers use; created when serving starts, closed when it stops."""

    settings: Settings
    database: Database
    fetcher: Fetcher
    storage: Storage
    announcer: Announcer
    broadcaster: Broadcaster
    storage_check: StorageCheck
    heartbeat: float
    authenticator: Authenticator
    collector: Collector
    tasks: dict[str, TaskHealth] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)

    async def run(self, fn: Callable[[Conn], T]) -> T:
        return await self.database.run(fn)


def services() -> Services:
    """The running app's `Services` (inside a request)."""
    return cast(Services, current_app.extensions["jobsvc"])


async def supervise(
    name: str,
    fn: Callable[[], Awaitable[None]],
    health: TaskHealth,
    *,
    first: float = 0.2,
    cap: float = 30.0,
) -> None:
    """Run ``fn`` forever: a crash (or a return) is logged and ``fn`` restarted after a
    `Backoff` delay, ``first`` doubling to ``cap``; cancellation ends it.

    The supervised tasks reconnect by themselves (`jobsvc.backoff`), so a crash here is
    a bug rather than an outage: it backs off further than the reconnect loops. As
    there, a run that lasted longer than ``cap`` starts the backoff afresh."""
    backoff = Backoff(first, cap)
    while True:
        health.alive = True
        began = trio.current_time()
        error: Exception | None = None
        try:
            await fn()
            health.last_error = "returned unexpectedly"
        except Exception as exc:
            health.last_error = f"{type(exc).__name__}: {exc}"
            error = exc
        health.alive = False
        health.restarts += 1
        if trio.current_time() - began > cap:
            backoff.reset()
        what = "crashed" if error is not None else "returned"
        log.error("background task %s %s; restarting in %.1fs", name, what, backoff.next, exc_info=error)
        await backoff.sleep()


async def serve(
    settings: Settings,
    options: Mapping[str, float],
    *,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own every resource of the API process; cancelled at shutdown, it closes them all."""
    url = settings.require_database_url()
    database = Database(url, max_size=8, timeout=3.0, application_name="jobsvc-api")
    link = Link(url, application_name="jobsvc-api-enqueue")  # the lone enqueue's connection
    fetcher = Fetcher(settings)
    storage: Storage | None = None
    try:
        await database.open()
        storage = storage_from_settings(settings)
        async with trio.open_nursery() as nursery:
            metrics = metrics or Metrics()
            announcer = Announcer(database, window=options["notify_window"])
            services = Services(
                settings=settings,
                database=database,
                fetcher=fetcher,
                storage=storage,
                announcer=announcer,
                broadcaster=Broadcaster(
                    database,
                    url,
                    buffer=int(options["subscriber_buffer"]),
                    linger=options.get("events_linger", DEFAULT_LINGER),
                ),
                storage_check=StorageCheck(storage, nursery, options["storage_check_timeout"]),
                heartbeat=options["heartbeat"],
                metrics=metrics,
                authenticator=Authenticator(
                    database,
                    cache_seconds=options["key_cache_seconds"],
                    flush_interval=options["key_flush_interval"],
                ),
                collector=Collector(
                    database,
                    announcer,
                    metrics,
                    settings.tenant_max_queued,
                    in_flight=int(options.get("enqueue_groups_in_flight", IN_FLIGHT)),
                    link=link,
                ),
            )
            tasks = [
                ("announcer", services.announcer.run),
                ("events", services.broadcaster.run),
                ("enqueue-groups", services.collector.run),
            ]
            if settings.auth == "keys":
                tasks.append(("key-usage", services.authenticator.run))
            for name, fn in tasks:
                services.tasks[name] = TaskHealth()
                nursery.start_soon(supervise, name, fn, services.tasks[name])
            # Subscribers that connect right after start-up must not miss events:
            # wait (briefly, PostgreSQL may be down) for the events connection's first attempt.
            with trio.move_on_after(settings.connect_timeout):
                await services.broadcaster.first_attempt.wait()
            task_status.started(services)
    finally:
        with trio.CancelScope(shield=True):
            await fetcher.aclose()
            if storage is not None:
                await storage.aclose()
            await link.close()
            await database.close()
