"""The API process's wake-ups out: the enqueues' NOTIFY, coalesced.

The enqueue handler hands `Announcer` the id of each new row; one background task
sends `queue.announce` (a payload-free wake-up for the workers plus the ids on
``jobsvc_events``) for everything that arrived, at most once per ``window`` seconds.
A burst of N enqueues costs about one NOTIFY, not N (NOTIFY takes a global lock at
commit). An id is never dropped: when the database is down the ids are kept and sent
again with backoff. The first enqueue of a quiet window sends its announcement in its
own transaction instead (`take_inline`): no second transaction, and the workers wake
at its commit. The job events in (LISTEN) are `jobsvc.events`.
"""

from __future__ import annotations

import logging
import math

import trio

from jobsvc import queue
from jobsvc.backoff import Backoff
from jobsvc.db import Database
from jobsvc.errors import DatabaseUnavailable

log = logging.getLogger("jobsvc.announcer")


class Announcer:
    """Coalesces the wake-up NOTIFY of many enqueues into one."""

    def __init__(self, database: Database, *, window: float = 0.002, max_backoff: float = 5.0) -> None:
        self._database = database
        self._window = window
        self._max_backoff = max_backoff
        self._pending: list[int] = []
        self._wake = trio.Event()
        #: NOTIFY round trips sent so far (the tests measure the coalescing with it), and
        #: announcements handed to an enqueue's own transaction (`take_inline`).
        self.sent = 0
        self.inline = 0
        self._last = -math.inf  # trio time of the last announcement, sent or handed out

    def take_inline(self) -> bool:
        """Whether the caller is to announce its new row in its own insert transaction.

        Yes when nothing was announced within the last ``window`` and nothing is pending:
        one NOTIFY inside the insert costs no extra round trip and wakes the workers at
        commit (a separate announcement cost a thread hop, a transaction and its commit:
        pickup through the API 3.2 ms against 1.5 ms direct, issue 14). At most one per
        window, because a NOTIFY takes a global lock from commit until the end of the
        transaction (its WAL flush included): under load the rest are coalesced here.
        A caller told yes whose insert fails or finds an existing row announces nothing.
        """
        now = trio.current_time()
        if self._pending or now - self._last < self._window:
            return False
        self._last = now
        self.inline += 1
        return True

    def add(self, row_id: int) -> None:
        """Schedule a wake-up announcing ``row_id``. Never blocks, never fails."""
        self._pending.append(row_id)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Send announcements forever.

        Cancelled, it makes a last shielded attempt (at most 1 s) to send what is
        pending; a wake-up lost then only delays work until a worker's periodic pass.
        """
        backoff = Backoff(0.05, self._max_backoff)
        if self._pending:  # restarted by the supervisor after a crash: those ids are still due
            self._wake.set()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if not self._pending:
                    continue
                try:
                    await self._flush()
                except DatabaseUnavailable as exc:
                    log.warning("wake-up announce failed (%s); retrying in %.2fs", exc, backoff.next)
                    self._wake.set()  # the ids are still pending
                    await backoff.sleep()
                    continue
                backoff.reset()
                # The coalescing window: whatever arrives meanwhile goes in the next NOTIFY.
                await trio.sleep(self._window)
        finally:
            if self._pending:
                with trio.move_on_after(1.0, shield=True):
                    try:
                        await self._flush()
                    except DatabaseUnavailable as exc:
                        log.warning("dropping %d wake-ups at shutdown: %s", len(self._pending), exc)

    async def _flush(self) -> None:
        ids, self._pending = self._pending, []
        try:
            await self._database.run(lambda conn: queue.announce(conn, ids, wakeup=True))
        except BaseException:
            self._pending[:0] = ids  # keep them, in order, ahead of newer ones
            raise
        self.sent += 1
        self._last = trio.current_time()
