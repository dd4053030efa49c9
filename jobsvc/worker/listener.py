"""The worker's LISTEN loop: wake-ups poke the claimer, cancel requests reach the executor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from jobsvc.backoff import run_with_backoff
from jobsvc.worker.claimer import Claimer
from jobsvc.worker.executor import Executor
from jobsvc.worker.store import CancelRequested, Store

__all__ = ["SignalListener"]


class SignalListener:
    """Listens forever, reconnecting with `run_with_backoff` when the link breaks.

    Signals sent while nobody listened are lost: each time the LISTEN is in place
    (the first time too) it awaits ``catch_up`` before reading signals.
    """

    def __init__(
        self, store: Store, claimer: Claimer, executor: Executor, catch_up: Callable[[], Awaitable[None]]
    ) -> None:
        self._store = store
        self._claimer = claimer
        self._executor = executor
        self._catch_up = catch_up
        #: Set once the first LISTEN is in place (the worker is ready then).
        self.listening = trio.Event()

    async def run(self) -> None:
        """Cancellation ends it and closes the LISTEN link."""
        await run_with_backoff("worker listener", self._listen_once)

    async def _listen_once(self) -> None:
        async with self._store.listen() as signals:
            self.listening.set()
            await self._catch_up()
            async for signal in signals:
                if isinstance(signal, CancelRequested):
                    for row_id in signal.ids:
                        self._executor.cancel(row_id)
                else:
                    self._claimer.poke()
