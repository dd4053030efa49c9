"""The rescuer: moves on rows whose worker is gone.

A Processing row is owned through its worker session's advisory lock; when the
session ends (the process died, or its connection broke), PostgreSQL frees the
lock and the row is an orphan. Each sweep hands every orphan to
`RetryPolicy.lost`: Queued again after the retry backoff (the lost attempt
counts), Failed once its attempts are spent, Canceled if a cancel was requested.
Every worker runs one; sweeps of several workers never take the same row (the
statement locks what it moves, and skips what others hold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from jobsvc.errors import DatabaseUnavailable
from jobsvc.model import Job
from jobsvc.retry import RetryPolicy

__all__ = ["RescueStore", "Rescuer", "RescuerConfig"]

log = logging.getLogger("jobsvc.rescuer")


@dataclass(frozen=True, slots=True)
class RescuerConfig:
    """The rescuer's settings: a sweep at start-up, then one every ``interval`` seconds
    (``JOBSVC_RESCUE_INTERVAL``)."""

    interval: float = 15.0


class RescueStore(Protocol):
    """What the rescuer needs from a store (`jobsvc.worker.store.Store` has it)."""

    async def rescue(self, policy: RetryPolicy) -> list[Job]: ...


class Rescuer:
    """Sweeps at start-up and every ``config.interval``; ``on_rescued`` sees each sweep's rows."""

    def __init__(
        self,
        store: RescueStore,
        policy: RetryPolicy,
        config: RescuerConfig = RescuerConfig(),
        *,
        on_rescued: Callable[[list[Job]], None] = lambda jobs: None,
    ) -> None:
        self._store = store
        self._policy = policy
        self.config = config
        self._on_rescued = on_rescued

    async def run(self) -> None:
        """Sweep forever; a sweep that cannot reach the database is logged and skipped."""
        while True:
            try:
                await self.run_once()
            except DatabaseUnavailable as exc:
                log.warning("rescuer: %s", exc)
            await trio.sleep(self.config.interval)

    async def run_once(self) -> list[Job]:
        """One sweep; returns the rows it moved on."""
        rescued = await self._store.rescue(self._policy)
        self._on_rescued(rescued)
        return rescued
