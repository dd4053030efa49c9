"""The worker's seam to the queue: what it needs from a store, and nothing else.

Two implementations: `PostgresStore` (jobsvc.worker.pgstore, the real one) and
`MemoryStore` (jobsvc.worker.memory, an in-memory fake with the same semantics
for unit tests on trio's mock clock, like procrastinate's InMemoryConnector).

The contract both keep:

- `Store.connect` opens a `StoreSession`: the claims made through it are owned by
  it (in PostgreSQL, by the session advisory locks of its connection). When the
  session dies, ownership goes with it at once, `broken` becomes true, and every
  call raises `DatabaseUnavailable`; the rows it owned are then the rescuer's.
- `StoreSession.claim` takes up to ``limit`` due Queued rows in one step (priority,
  then run_at, then id) and reports the seconds until the next delayed row.
- `StoreSession.finish_and_claim` does both in one step (one transaction): the
  outcomes recorded, then the claim; all of it or, when it fails, none of it.
- `StoreSession.finish` and `Store.rescue` write what the `RetryPolicy` decides,
  and wake every worker when a row went back to Queued.
- `Store.listen` yields `Wakeup` and `CancelRequested` signals until the link
  breaks (then it raises `DatabaseUnavailable`); signals sent while nobody
  listened are lost, which the worker makes up for (docs/ARCHITECTURE.md).
- A call that has started is not cancelled halfway (a thread hop cannot be, a
  statement sent from trio is shielded): a
  cancelled caller sees the cancellation at its next checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from jobsvc.model import Job
from jobsvc.retry import Outcome, RetryPolicy

__all__ = ["CancelRequested", "Signal", "Store", "StoreSession", "Wakeup"]


@dataclass(frozen=True, slots=True)
class Wakeup:
    """Work may be due: claim before waiting again."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A cancel was requested for these Processing rows (row ids)."""

    ids: tuple[int, ...]


Signal = Wakeup | CancelRequested


class StoreSession(Protocol):
    """The link that owns the rows claimed through it. Used by one worker at a time."""

    @property
    def broken(self) -> bool:
        """True once the link is known dead (its claims are no longer owned)."""
        ...

    async def claim(self, limit: int) -> tuple[list[Job], float | None]:
        """Up to ``limit`` due rows, now Processing and owned; and, when fewer than
        ``limit`` were due, the seconds until the next delayed row (None: there is none)."""
        ...

    async def finish(self, outcomes: Sequence[Outcome], policy: RetryPolicy) -> list[Job]:
        """Write ``policy``'s decision for each owned row and release it; rows no
        longer owned (rescued meanwhile) are skipped. Returns the rows written."""
        ...

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], policy: RetryPolicy, limit: int
    ) -> tuple[list[Job], list[Job], float | None]:
        """`finish` then `claim` (none when ``limit`` is 0), atomically: the rows written,
        the rows claimed, and the claim's seconds until the next delayed row."""
        ...

    async def ping(self) -> None:
        """A round trip: raises `DatabaseUnavailable` (and sets `broken`) if the link died."""
        ...

    async def close(self) -> None:
        """Close the link (shielded); rows still owned become the rescuer's."""
        ...


class Store(Protocol):
    """The queue as the worker sees it."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def connect(self, worker_id: str) -> StoreSession:
        """A new owning session for ``worker_id``; raises `DatabaseUnavailable`."""
        ...

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[Signal]]:
        """``async with store.listen() as signals: async for signal in signals``."""
        ...

    async def cancel_requested(self, ids: Sequence[int]) -> list[int]:
        """Which of these Processing rows have a cancel request (reconciliation)."""
        ...

    async def rescue(self, policy: RetryPolicy) -> list[Job]:
        """Move every Processing row that no live session owns on, as ``policy.lost`` decides."""
        ...

    async def clean(self, older_than: float, limit: int) -> int | None:
        """Delete up to ``limit`` finished rows finished more than ``older_than`` seconds ago,
        oldest first; None (nothing done) while another cleaner holds the cleaning lock."""
        ...

    async def compact_counts(self) -> bool:
        """Fold the per-status counter deltas; False while another cleaner holds the lock."""
        ...
