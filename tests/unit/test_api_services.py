"""The API's background-task supervisor, on trio's mock clock (no I/O)."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from jobsvc.api.services import TaskHealth, supervise


async def test_a_crashing_task_is_restarted_with_doubling_delays_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def crash() -> None:
        starts.append(trio.current_time())
        raise RuntimeError("boom")

    health = TaskHealth()
    with trio.move_on_after(60):
        await supervise("t", crash, health, first=1.0, cap=8.0)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert health.restarts == len(starts) and not health.alive
    assert health.last_error == "RuntimeError: boom"


async def test_a_task_that_ran_longer_than_the_cap_restarts_after_the_first_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def run() -> None:
        starts.append(trio.current_time())
        if len(starts) == 4:
            await trio.sleep(100)  # a long healthy run, then a crash
        raise RuntimeError("boom")

    with trio.move_on_after(200):
        await supervise("t", run, TaskHealth(), first=1.0, cap=8.0)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps[:5] == [1.0, 2.0, 4.0, 101.0, 2.0]


async def test_a_returning_task_is_reported_and_restarted(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0
    health = TaskHealth()
    restarted = trio.Event()

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            assert health.alive  # alive again while it runs
            restarted.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise, "t", returns, health)
        await restarted.wait()
        assert health.restarts == 1 and health.last_error == "returned unexpectedly"
        nursery.cancel_scope.cancel()


async def test_cancellation_ends_the_supervisor(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(5) as scope:
        await supervise("t", trio.sleep_forever, TaskHealth())
    assert scope.cancelled_caught


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="jobsvc.api")
