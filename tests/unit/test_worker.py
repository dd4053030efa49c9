"""The worker's scheduling on the in-memory store and trio's mock clock (autojump: virtual
time jumps whenever every task waits), so no I/O and no real waiting.

The same worker runs against PostgreSQL in tests/integration/test_worker.py.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from jobsvc.config import Settings
from jobsvc.errors import TransientError
from jobsvc.model import Job, Status
from jobsvc.retry import CANCELED_ERROR
from jobsvc.worker import Handler, MemoryStore, Worker
from tests.helpers import Gate, run_until_shutdown


def make_worker(store: MemoryStore, handler: Handler, **kw: Any) -> Worker:
    base: dict[str, Any] = {
        "concurrency": 3,
        "rescue_interval": 15.0,
        "shutdown_grace": 10.0,
        "retry_backoff": 1.0,
        "worker_id": "w1",
    }
    return Worker(Settings(**{**base, **kw}), default_handler=handler, store=store)


async def wait_status(store: MemoryStore, row_id: int, status: Status, timeout: float = 30) -> Job:
    with trio.fail_after(timeout):
        await store.wait_until(lambda: store.job(row_id).status is status)
    return store.job(row_id)


async def test_concurrency_bounds_handlers_in_flight(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    in_flight, most = 0, 0

    async def one_second(job: Job) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await trio.sleep(1.0 + job.id / 10)  # jobs end one at a time, freeing one slot each
        finally:
            in_flight -= 1

    store = MemoryStore()
    rows = [store.enqueue() for _ in range(7)]
    await nursery.start(make_worker(store, one_second, concurrency=3).run)
    for row in rows:
        await wait_status(store, row.id, Status.COMPLETED)
    assert most == 3
    assert all(limit <= 3 and claimed <= limit for limit, claimed in store.claims)


async def test_claim_takes_every_free_slot_in_one_call(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    rows = [store.enqueue() for _ in range(10)]
    await nursery.start(make_worker(store, gate, concurrency=4).run)
    await gate.wait_started(4)
    await wait_all_tasks_blocked()
    assert store.claims == [(4, 4)]  # one call filled every slot; none while all were busy
    gate.release.set()
    for row in rows:
        await wait_status(store, row.id, Status.COMPLETED)
    assert sum(n for _, n in store.claims) == 10


async def test_outcomes_and_the_claim_of_their_slots_share_one_store_call(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    async def one_second(job: Job) -> None:
        await trio.sleep(1.0)

    store = MemoryStore()
    rows = [store.enqueue() for _ in range(6)]
    await nursery.start(make_worker(store, one_second, concurrency=2).run)
    for row in rows:
        await wait_status(store, row.id, Status.COMPLETED)
    # the first call only claims; each later one records two outcomes and claims the two
    # slots they free, until the queue is empty; the last one only records
    assert store.cycles[:4] == [(0, 2), (2, 2), (2, 2), (2, 2)]
    assert store.claims == [(2, 2), (2, 2), (2, 2), (2, 0)]
    assert sum(n for n, _ in store.cycles) == 6 and store.owned == set()


async def test_shutdown_during_a_cycle_gives_the_rows_it_claimed_back(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    first, second = store.enqueue(), store.enqueue()
    worker = make_worker(store, gate, concurrency=1)
    finished = run_until_shutdown(worker, nursery)
    await gate.wait_started(1)
    store.latency = 1.0  # from now on each answer takes a second to come back
    gate.release.set()
    await wait_status(store, second.id, Status.PROCESSING)  # first recorded, second claimed: on its way
    worker.shutdown()
    with trio.fail_after(60):
        await finished.wait()
    assert store.job(first.id).status is Status.COMPLETED
    back = store.job(second.id)
    assert (back.status, back.attempts) == (Status.QUEUED, 0)  # given back, the attempt uncounted
    assert [job.id for job in gate.started] == [first.id] and store.owned == set()


async def test_cancel_during_a_cycle_stops_the_job_it_claims_before_it_starts(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    first, second = store.enqueue(), store.enqueue()
    await nursery.start(make_worker(store, gate, concurrency=1).run)
    await gate.wait_started(1)
    store.latency = 1.0
    gate.release.set()
    await wait_status(store, second.id, Status.PROCESSING)  # in the cycle that records first
    store.cancel(second.id)  # its signal arrives before the cycle's answer
    canceled = await wait_status(store, second.id, Status.CANCELED)
    assert store.job(first.id).status is Status.COMPLETED
    assert [job.id for job in gate.started] == [first.id] and canceled.error == CANCELED_ERROR


async def test_session_lost_in_a_cycle_records_nothing_more_and_abandons_its_jobs(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    rows = [store.enqueue() for _ in range(3)]
    await nursery.start(make_worker(store, gate, concurrency=2).run)
    await gate.wait_started(2)
    store.kill_session(store.sessions[0])
    gate.release.set()  # their outcomes go to a cycle that fails: not recorded, not claimed
    await store.wait_until(lambda: len(store.sessions) == 2)  # reconnected
    assert {store.job(r.id).status for r in rows[:2]} == {Status.PROCESSING}  # the rescuer's now
    assert not store.owned & {r.id for r in rows[:2]}


async def test_claim_order_is_priority_then_age(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    store, gate = MemoryStore(), Gate()
    low, high, mid = store.enqueue(priority=-5), store.enqueue(priority=7), store.enqueue()
    await nursery.start(make_worker(store, gate, concurrency=1).run)
    gate.release.set()
    await wait_status(store, low.id, Status.COMPLETED)
    assert [job.id for job in gate.started] == [high.id, mid.id, low.id]


async def test_claim_shares_slots_round_robin_across_tenants(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    a = [store.enqueue(tenant="a", priority=p) for p in (0, 0, 0, 3)]
    b = [store.enqueue(tenant="b") for _ in range(2)]
    c = store.enqueue(tenant="c", priority=-5)
    await nursery.start(make_worker(store, gate, concurrency=1).run)
    gate.release.set()
    await wait_status(store, a[2].id, Status.COMPLETED)
    # one job of each tenant in turn (priority orders a tenant's own), whatever the backlog
    assert [job.id for job in gate.started] == [a[3].id, b[0].id, c.id, a[0].id, b[1].id, a[1].id, a[2].id]


async def test_shutdown_gives_unfinished_jobs_back_after_grace_without_counting(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    row = store.enqueue()
    worker = make_worker(store, gate, shutdown_grace=10.0)
    finished = run_until_shutdown(worker, nursery)
    await gate.wait_started(1)
    began = trio.current_time()
    worker.shutdown()
    with trio.fail_after(60):
        await finished.wait()
    assert trio.current_time() - began == pytest.approx(10.0, abs=0.01)  # the whole grace, no more
    back = store.job(row.id)
    assert (back.status, back.attempts, back.error) == (Status.QUEUED, 0, None)
    assert gate.cancelled == [row.id] and store.owned == set()


async def test_shutdown_lets_running_jobs_finish_and_claims_nothing_new(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    row = store.enqueue()
    worker = make_worker(store, gate)
    finished = run_until_shutdown(worker, nursery)
    await gate.wait_started(1)
    worker.shutdown()
    late = store.enqueue()  # its wake-up reaches a stopping worker
    await wait_all_tasks_blocked()
    gate.release.set()
    with trio.fail_after(60):
        await finished.wait()
    assert store.job(row.id).status is Status.COMPLETED
    assert (store.job(late.id).status, store.job(late.id).attempts) == (Status.QUEUED, 0)
    assert gate.cancelled == []


async def test_cancel_stops_a_running_job_at_once(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    store, gate = MemoryStore(), Gate()
    row, other = store.enqueue(), store.enqueue()
    await nursery.start(make_worker(store, gate).run)
    await gate.wait_started(2)
    began = trio.current_time()
    store.cancel(row.id)
    canceled = await wait_status(store, row.id, Status.CANCELED)
    assert trio.current_time() - began < 0.01  # by the signal, not by the 15 s safety net
    assert canceled.error == CANCELED_ERROR and gate.cancelled == [row.id]
    assert row.id not in store.owned and store.job(other.id).status is Status.PROCESSING


async def test_cancel_that_overtakes_its_claim_stops_the_job_before_it_starts(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    await nursery.start(make_worker(store, gate).run)
    store.latency = 1.0  # from now on each answer takes a second to come back
    row = store.enqueue()
    await wait_status(store, row.id, Status.PROCESSING)  # claimed; the answer is on its way
    store.cancel(row.id)  # its signal arrives before the claim's answer
    canceled = await wait_status(store, row.id, Status.CANCELED)
    assert gate.started == [] and canceled.attempts == 1 and canceled.error == CANCELED_ERROR


async def test_cancel_missed_while_not_listening_is_reconciled(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, gate = MemoryStore(), Gate()
    row = store.enqueue()
    await nursery.start(make_worker(store, gate).run)
    await gate.wait_started(1)
    store.drop_listeners()
    store.cancel(row.id, notify=False)  # the NOTIFY went to nobody
    await wait_status(store, row.id, Status.CANCELED, timeout=1)  # reconnect + reconcile, not 15 s
    assert gate.cancelled == [row.id]


async def test_lost_session_abandons_jobs_unrecorded_then_they_run_again(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    attempts: list[int] = []
    hanging, abandoned = trio.Event(), trio.Event()

    async def first_attempt_hangs(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            hanging.set()
            try:
                await trio.sleep(math.inf)
            finally:
                abandoned.set()

    store = MemoryStore()
    row = store.enqueue()
    worker = make_worker(store, first_attempt_hangs, rescue_interval=5.0)
    await nursery.start(worker.run)
    await hanging.wait()
    session = worker.session
    assert session is not None
    store.kill_session(session)  # idle: only the health check can notice
    with trio.fail_after(5.1):
        await abandoned.wait()
    assert store.job(row.id).attempts == 1  # nothing recorded: not "requeue", which uncounts it
    done = await wait_status(store, row.id, Status.COMPLETED)
    assert attempts == [1, 2] and done.attempts == 2
    assert len(store.sessions) == 2  # reconnected


async def test_transient_errors_retry_after_the_policy_backoff(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    started: list[float] = []

    async def flaky(job: Job) -> None:
        started.append(trio.current_time())
        if len(started) < 3:
            raise TransientError("the server answered 503")

    store = MemoryStore()
    row = store.enqueue()
    await nursery.start(make_worker(store, flaky, retry_backoff=1.0).run)
    done = await wait_status(store, row.id, Status.COMPLETED)
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert 0.8 <= gaps[0] <= 1.2 and 3.2 <= gaps[1] <= 4.8  # 1 s then 4 s, ±20 %
    assert done.attempts == 3 and done.error is None


async def test_worker_started_while_the_database_is_down_runs_once_it_is_back(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    store, ran = MemoryStore(), trio.Event()

    async def handler(job: Job) -> None:
        ran.set()

    store.down = True
    row = store.enqueue()
    nursery.start_soon(make_worker(store, handler).run)
    await trio.sleep(30)
    assert store.job(row.id).status is Status.QUEUED
    store.down = False
    await wait_status(store, row.id, Status.COMPLETED, timeout=6)  # within one backoff cap (5 s)
    assert ran.is_set()
