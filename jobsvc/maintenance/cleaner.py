"""The cleaner: deletes finished rows once they are older than the retention.

Every worker runs one; a transaction-level advisory lock (`queue.CLEAN_LOCK`, tried,
never waited for) makes sure only one of them deletes at a time: a worker that
finds it taken skips its pass. A pass deletes batches of at most
``config.batch`` rows, oldest ``finished_at`` first, each batch its own short
transaction, until a batch comes back short or ``config.pass_time`` has passed;
then it compacts the counter deltas (schema.sql's ``jobsvc_counts``) and sleeps
``config.interval``. With ``retention`` 0 nothing is deleted, but the counters are
still compacted. Stored images are not deleted: the bucket's lifecycle rules own
them (README, "The life of a row").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from jobsvc.errors import DatabaseUnavailable

__all__ = ["CleanStore", "Cleaner", "CleanerConfig"]

log = logging.getLogger("jobsvc.cleaner")


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """``retention``: seconds a finished row is kept (``JOBSVC_RETENTION``; 0 keeps it);
    ``interval``: seconds between passes (``JOBSVC_CLEAN_INTERVAL``)."""

    retention: float = 7 * 86400.0
    interval: float = 60.0
    batch: int = 1000
    #: A pass stops starting new batches after this many seconds (the rest waits a pass).
    pass_time: float = 10.0


class CleanStore(Protocol):
    """What the cleaner needs from a store (`jobsvc.worker.store.Store` has it)."""

    async def clean(self, older_than: float, limit: int) -> int | None:
        """Delete up to ``limit`` finished rows older than ``older_than`` seconds; None
        when another cleaner holds the lock."""
        ...

    async def compact_counts(self) -> bool:
        """Fold the counter deltas; False when another cleaner holds the lock."""
        ...


class Cleaner:
    """A pass every ``config.interval``; ``on_deleted`` sees each pass's count."""

    def __init__(
        self,
        store: CleanStore,
        config: CleanerConfig = CleanerConfig(),
        *,
        on_deleted: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._store = store
        self.config = config
        self._on_deleted = on_deleted
        #: Passes run, and those skipped because another cleaner held the lock.
        self.passes = 0
        self.skipped = 0

    async def run(self) -> None:
        """Clean forever; a pass that cannot reach the database is logged and skipped."""
        while True:
            try:
                await self.run_once()
            except DatabaseUnavailable as exc:
                log.warning("cleaner: %s", exc)
            await trio.sleep(self.config.interval)

    async def run_once(self) -> int | None:
        """One pass; returns the rows deleted, or None when another cleaner was at work."""
        deleted: int | None = 0
        if self.config.retention > 0:
            deleted = await self._delete()
        self.passes += 1
        if deleted is None:
            self.skipped += 1
        else:
            await self._store.compact_counts()
        if deleted:
            log.info("cleaner: deleted %d finished rows older than %gs", deleted, self.config.retention)
            self._on_deleted(deleted)
        return deleted

    async def _delete(self) -> int | None:
        deadline = trio.current_time() + self.config.pass_time
        total = 0
        while True:
            n = await self._store.clean(self.config.retention, self.config.batch)
            if n is None:
                return None if total == 0 else total  # another cleaner took over between batches
            total += n
            if n < self.config.batch or trio.current_time() >= deadline:
                return total
