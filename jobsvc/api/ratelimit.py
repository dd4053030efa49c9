"""``JOBSVC_RATE_LIMIT``: requests per second per caller, in each API process (DESIGN §8).

A token bucket per caller: it holds up to one second's worth of requests (at
least one) and refills at the rate; a request finding it empty is answered 429
with ``Retry-After`` (`RateLimited`, through app.py's error map). The limit is
per process on purpose: it needs no shared state, and N API processes allow N
times the rate (the per-tenant quota, in the database, is the global cap).

The caller is identified by `caller_key`: the client's address until API keys
exist (then the key's id). Only the API proper (``/results…``) is limited: the
operations endpoints (health, readiness, metrics) are polled by orchestrators and
scrapers, and the dashboard's and docs' static files are not work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from quart import request
from quart_trio import QuartTrio

from jobsvc.api.auth import principal
from jobsvc.errors import RateLimited

__all__ = ["RateLimiter", "TokenBucket", "install"]

#: The paths limited: the API proper.
LIMITED_PREFIX = "/results"
#: Buckets kept before idle ones (refilled, so forgetting them changes nothing) are dropped.
MAX_KEYS = 10_000


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take one token; returns 0 when there was one, else the seconds until there is."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One `TokenBucket` per key, ``rate`` tokens per second, a burst of one second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str) -> None:
        """Count a request of ``key``; raises `RateLimited` when it is over the rate."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        if wait > 0:
            raise RateLimited(
                f"too many requests: at most {self.rate:g} per second (JOBSVC_RATE_LIMIT)", math.ceil(wait)
            )

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        refilled = self.burst / self.rate  # an idle bucket is full again after this long
        for key in [k for k, b in self._buckets.items() if now - b.stamp >= refilled]:
            del self._buckets[key]


def caller_key() -> str:
    """Who a request counts against: its API key (README, "Security"); with auth off,
    the client's address. Runs after authentication, so the principal is known."""
    key_id = principal().key_id
    return f"key:{key_id}" if key_id is not None else f"addr:{request.remote_addr or 'unknown'}"


def install(app: QuartTrio, rate: float) -> None:
    """Limit the requests to ``app``'s API routes; nothing when ``rate`` is 0."""
    if rate <= 0:
        return
    limiter = RateLimiter(rate)

    @app.before_request
    async def limit_rate() -> None:
        if request.path.startswith(LIMITED_PREFIX):
            limiter.check(caller_key())
