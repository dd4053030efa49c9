"""The rescuer on the in-memory store: orphans move on through the retry policy."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from jobsvc.errors import DatabaseUnavailable
from jobsvc.maintenance import Rescuer, RescuerConfig
from jobsvc.model import Job, Status
from jobsvc.retry import CANCELED_ERROR, RetryPolicy
from jobsvc.worker import MemoryStore


async def test_rescue_moves_only_rows_whose_session_is_gone(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    lost, canceled, spent, alive = (store.enqueue(max_attempts=1 if i == 2 else 3) for i in range(4))
    dead = await store.connect("dead-worker")
    await dead.claim(3)
    living = await store.connect("live-worker")
    await living.claim(1)
    store.cancel(canceled.id)
    store.kill_session(dead)
    rescued = await Rescuer(store, RetryPolicy(base=2.0, jitter=0.0)).run_once()

    assert {j.id for j in rescued} == {lost.id, canceled.id, spent.id}
    back = store.job(lost.id)
    assert back.status is Status.QUEUED and back.attempts == 1 and back.worker_id is None
    assert (back.run_at - back.updated_at).total_seconds() == 2.0  # the retry backoff, not "now"
    assert back.error is not None and "attempt 1 was lost (dead-worker" in back.error
    assert (store.job(canceled.id).status, store.job(canceled.id).error) == (Status.CANCELED, CANCELED_ERROR)
    assert store.job(spent.id).status is Status.FAILED
    assert store.job(alive.id).status is Status.PROCESSING  # its owner lives


class FlakyStore:
    """A `RescueStore` that counts sweeps and fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.sweeps: list[float] = []

    async def rescue(self, policy: RetryPolicy) -> list[Job]:
        self.sweeps.append(trio.current_time())
        if self.down:
            raise DatabaseUnavailable("PostgreSQL is not reachable")
        return []


async def test_rescuer_sweeps_at_start_and_every_interval_and_survives_outages(
    autojump_clock: MockClock,
) -> None:
    store = FlakyStore()
    store.down = True
    rescuer = Rescuer(store, RetryPolicy(), RescuerConfig(interval=10.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rescuer.run)
        await trio.sleep(15)
        store.down = False
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert store.sweeps == [0.0, 10.0, 20.0]  # the failed sweeps at 0 and 10 did not stop it
