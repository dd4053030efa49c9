"""The cleaner's pass: batches until a short one or the time bound, skips while another
cleaner holds the lock, compacts the counters, survives outages, keeps rows with retention 0."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from jobsvc.errors import DatabaseUnavailable
from jobsvc.maintenance import Cleaner, CleanerConfig
from jobsvc.model import Status
from jobsvc.retry import Outcome, RetryPolicy
from jobsvc.worker import MemoryStore


class ScriptedStore:
    """A `CleanStore` answering each `clean` call from a script (an int, None: locked,
    or an exception), taking ``latency`` seconds per call."""

    def __init__(self, *answers: int | Exception | None, latency: float = 0.0) -> None:
        self.answers = list(answers)
        self.latency = latency
        self.calls: list[tuple[float, int]] = []
        self.compactions = 0

    async def clean(self, older_than: float, limit: int) -> int | None:
        self.calls.append((older_than, limit))
        await trio.sleep(self.latency)
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def compact_counts(self) -> bool:
        self.compactions += 1
        return True


async def test_a_pass_deletes_batches_until_a_short_one_then_compacts() -> None:
    store = ScriptedStore(1000, 1000, 17, 1000)
    deleted: list[int] = []
    cleaner = Cleaner(store, CleanerConfig(retention=3600, batch=1000), on_deleted=deleted.append)
    assert await cleaner.run_once() == 2017
    assert store.calls == [(3600, 1000)] * 3 and deleted == [2017] and store.compactions == 1


async def test_a_pass_stops_at_its_time_bound(autojump_clock: MockClock) -> None:
    store = ScriptedStore(*([1000] * 50), latency=1.0)
    cleaner = Cleaner(store, CleanerConfig(retention=60, batch=1000, pass_time=5.0))
    assert await cleaner.run_once() == 5000  # the rest waits for the next pass
    assert len(store.calls) == 5


async def test_a_pass_is_skipped_while_another_cleaner_holds_the_lock() -> None:
    store = ScriptedStore(None)
    cleaner = Cleaner(store)
    assert await cleaner.run_once() is None
    assert (cleaner.passes, cleaner.skipped, store.compactions) == (1, 1, 0)


async def test_retention_zero_deletes_nothing_but_still_compacts() -> None:
    store = ScriptedStore(1000)
    assert await Cleaner(store, CleanerConfig(retention=0)).run_once() == 0
    assert store.calls == [] and store.compactions == 1


async def test_run_survives_an_outage_and_keeps_its_interval(autojump_clock: MockClock) -> None:
    store = ScriptedStore(DatabaseUnavailable("down"), 3)
    cleaner = Cleaner(store, CleanerConfig(retention=60, interval=10))
    with trio.move_on_after(15):
        await cleaner.run()
    assert len(store.calls) == 2  # the failed pass, then one at t=10
    assert (cleaner.passes, store.compactions) == (1, 1)


async def test_memory_store_deletes_only_old_finished_rows(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    old_done, old_queued = store.enqueue(), store.enqueue(delay=10_000)
    session = await store.connect("w")
    await session.claim(1)
    await session.finish([Outcome(old_done.id, "completed")], RetryPolicy())
    await trio.sleep(100)
    fresh = store.enqueue()
    await session.claim(1)
    await session.finish([Outcome(fresh.id, "completed")], RetryPolicy())
    assert await Cleaner(store, CleanerConfig(retention=50)).run_once() == 1
    assert set(store.rows) == {old_queued.id, fresh.id}
    assert store.job(fresh.id).status is Status.COMPLETED
