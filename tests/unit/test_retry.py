"""The one retry policy: what an attempt's end (or a lost worker) makes of a row."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from jobsvc.errors import PermanentError, TransientError
from jobsvc.model import Job, Status
from jobsvc.retry import CANCELED_ERROR, Outcome, RetryPolicy, outcome_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(base=2.0, jitter=0.0)


def running(attempts: int = 1, max_attempts: int = 3, **kw: object) -> Job:
    base = Job(
        id=7, job_id=uuid.UUID(int=7), result_file="a.png", type="ingest", img_url="http://h/a.png",
        status=Status.PROCESSING, priority=0, run_at=NOW, attempts=attempts, max_attempts=max_attempts,
        error=None, cancel_requested_at=None, worker_id="w1", created_at=NOW, updated_at=NOW,
        started_at=NOW, finished_at=None,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_outcome_of_maps_error_classes_to_kinds() -> None:
    assert outcome_of(1, None) == Outcome(1, "completed")
    assert outcome_of(1, PermanentError("not an image")) == Outcome(1, "failed", "not an image")
    assert outcome_of(1, TransientError("503")) == Outcome(1, "retry", "503")
    assert outcome_of(1, KeyError("x")) == Outcome(1, "retry", "unexpected error: KeyError: 'x'")


def test_transient_error_is_queued_with_growing_backoff() -> None:
    first = POLICY.decide(running(attempts=1), Outcome(7, "retry", "503"))
    second = POLICY.decide(running(attempts=2), Outcome(7, "retry", "503"))
    assert (first.status, first.error, first.attempts, first.delay) == (Status.QUEUED, "503", 1, 2.0)
    assert second.delay == 8.0


def test_transient_error_on_last_attempt_fails_with_reason() -> None:
    done = POLICY.decide(running(attempts=3), Outcome(7, "retry", "timed out"))
    assert (done.status, done.error) == (Status.FAILED, "timed out (gave up after 3 attempts)")


def test_cancel_requested_meanwhile_wins_over_retry_and_requeue() -> None:
    row = running(cancel_requested_at=NOW)
    assert POLICY.decide(row, Outcome(7, "retry", "503")).status is Status.CANCELED
    back = POLICY.decide(row, Outcome(7, "requeue"))
    assert (back.status, back.error, back.attempts) == (Status.CANCELED, CANCELED_ERROR, 0)
    assert POLICY.decide(row, Outcome(7, "completed")).status is Status.COMPLETED  # done is done


def test_requeue_gives_the_attempt_back_without_delay() -> None:
    back = POLICY.decide(running(attempts=2), Outcome(7, "requeue"))
    assert (back.status, back.error, back.attempts, back.delay) == (Status.QUEUED, None, 1, 0.0)


def test_lost_worker_is_a_transient_failure_with_backoff() -> None:
    lost = POLICY.lost(running(attempts=1))
    assert lost.status is Status.QUEUED and lost.delay == 2.0 and lost.attempts == 1
    assert lost.error == "the worker running attempt 1 was lost (w1 died or lost its database connection)"
    spent = POLICY.lost(running(attempts=3))
    assert spent.status is Status.FAILED and spent.error is not None and "gave up after 3" in spent.error
    assert POLICY.lost(running(cancel_requested_at=NOW)).status is Status.CANCELED


def test_final_outcomes_are_decided_without_the_row_and_agree_with_decide() -> None:
    # queue.cycle writes these without reading the rows: decide must say the same whatever the row
    for outcome, final in [
        (Outcome(7, "completed"), (Status.COMPLETED, None)),
        (Outcome(7, "failed", "not an image"), (Status.FAILED, "not an image")),
    ]:
        assert POLICY.final(outcome) == final
        for row in (running(attempts=3), running(cancel_requested_at=NOW)):
            decided = POLICY.decide(row, outcome)
            assert (decided.status, decided.error, decided.attempts) == (*final, row.attempts)
    for kind in ("retry", "canceled", "requeue"):  # these need the row read under its lock
        assert POLICY.final(Outcome(7, kind, "503")) is None  # type: ignore[arg-type]
