"""Capped exponential backoff for reconnect loops (the only one: every loop that
retries after losing PostgreSQL uses it, with its own ``first`` and ``cap``).

Not the job retry policy: that is `jobsvc.retry`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from jobsvc.errors import DatabaseUnavailable

__all__ = ["Backoff", "run_with_backoff"]

log = logging.getLogger("jobsvc.backoff")


class Backoff:
    """Delays ``first``, doubling up to ``cap``; `reset` after a success starts again at ``first``.

    ``delay = Backoff(0.1, 5.0)``, then ``await delay.sleep()`` after each failure.
    """

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    @property
    def next(self) -> float:
        """The delay the next `sleep` waits."""
        return self._next

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> None:
        """Wait the current delay, then double it (up to ``cap``). Cancellable."""
        delay, self._next = self._next, min(self._next * 2, self.cap)
        await trio.sleep(delay)


async def run_with_backoff(
    what: str, fn: Callable[[], Awaitable[None]], *, first: float = 0.1, cap: float = 5.0
) -> None:
    """Call the async ``fn`` until it returns, restarting it with `Backoff` when it raises
    `DatabaseUnavailable` (logged). Cancellation ends it.

    A run that lasted longer than ``cap`` starts the backoff afresh: one blip after
    hours of service is retried in ``first`` seconds, not at the cap reached long ago."""
    backoff = Backoff(first, cap)
    while True:
        began = trio.current_time()
        try:
            await fn()
            return
        except DatabaseUnavailable as exc:
            if trio.current_time() - began > cap:
                backoff.reset()
            log.warning("%s: %s; retrying in %.1fs", what, exc, backoff.next)
        await backoff.sleep()
