"""The token bucket behind JOBSVC_RATE_LIMIT, on a fake clock."""

from __future__ import annotations

import pytest

from jobsvc.api.ratelimit import MAX_KEYS, RateLimiter
from jobsvc.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_second_then_the_rate_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock)
    for _ in range(5):
        limiter.check("a")
    with pytest.raises(RateLimited, match="at most 5 per second") as refused:
        limiter.check("a")
    assert refused.value.retry_after == 1
    limiter.check("b")  # another caller has its own bucket
    clock.now += 0.2  # one token back
    limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_a_slow_rate_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(0.1, clock)  # one request per 10 s
    limiter.check("a")
    clock.now += 2.5
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 8  # 7.5 s, rounded up
    clock.now += 7.5
    limiter.check("a")


def test_idle_callers_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock)
    for i in range(MAX_KEYS):
        limiter.check(f"caller-{i}")
    clock.now += 1.0  # every bucket is full again: forgetting it changes nothing
    limiter.check("newcomer")
    assert len(limiter) == 1
