"""Which failed enqueue groups are written again one request per transaction
(`queue.failed_alone_may_pass`, used by jobsvc/api/collector.py)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from jobsvc import queue
from jobsvc.errors import DatabaseUnavailable


def _translated(exc: psycopg.Error) -> DatabaseUnavailable:
    """As `db.translate_errors` raises it."""
    try:
        raise DatabaseUnavailable("PostgreSQL is not reachable") from exc
    except DatabaseUnavailable as translated:
        return translated


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.DeadlockDetected(),
        psycopg.errors.SerializationFailure(),
        psycopg.errors.RaiseException(),
    ],
)
def test_errors_about_the_transaction_are_retried_alone(exc: psycopg.Error) -> None:
    assert queue.failed_alone_may_pass(exc)
    assert queue.failed_alone_may_pass(_translated(exc))


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),  # no SQLSTATE: no answer
        psycopg.errors.AdminShutdown(),
        psycopg.errors.TooManyConnections(),
        psycopg.errors.ConnectionFailure(),
    ],
)
def test_errors_of_a_server_in_trouble_are_everyones(exc: psycopg.Error) -> None:
    assert not queue.failed_alone_may_pass(exc)
    assert not queue.failed_alone_may_pass(_translated(exc))


def test_errors_not_from_the_driver_are_everyones() -> None:
    assert not queue.failed_alone_may_pass(DatabaseUnavailable("no connection in time"))
    assert not queue.failed_alone_may_pass(RuntimeError("a bug"))
