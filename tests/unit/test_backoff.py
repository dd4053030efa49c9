"""Retry backoff: about 1 s, 4 s, 16 s, with jitter."""

from __future__ import annotations

from jobsvc.retry import RetryPolicy


def test_backoff_grows_fourfold_with_bounded_jitter() -> None:
    policy = RetryPolicy(base=1.0)
    for attempt, centre in ((1, 1.0), (2, 4.0), (3, 16.0)):
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(0.8 * centre <= d <= 1.2 * centre for d in delays)
        assert len(delays) > 1  # jittered, so retries of a burst do not stampede
