"""The one map from jobsvc errors to HTTP statuses (`jobsvc.api.ERROR_STATUS`)."""

from __future__ import annotations

import pytest

from jobsvc.api import status_for
from jobsvc.errors import (
    BodyTooLarge,
    ConfigError,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    JobsvcError,
    NotFound,
    PermanentError,
    TransientError,
    Unauthorized,
    UnsupportedMedia,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest, 400),
        (BodyTooLarge, 413),
        (UnsupportedMedia, 415),
        (Unauthorized, 401),
        (Forbidden, 403),
        (NotFound, 404),
        (Conflict, 409),
        (DatabaseUnavailable, 503),
        (TransientError, 503),
    ],
)
def test_each_error_has_its_status(error: type[JobsvcError], status: int) -> None:
    assert status_for(error("a sentence")) == status


def test_the_most_specific_class_decides() -> None:
    # BodyTooLarge is an InvalidRequest too: its own 413 wins over the 400.
    assert issubclass(BodyTooLarge, InvalidRequest) and issubclass(UnsupportedMedia, InvalidRequest)

    class Subclass(NotFound):
        pass

    assert status_for(Subclass("x")) == 404


@pytest.mark.parametrize("error", [ConfigError, PermanentError, JobsvcError])
def test_errors_no_client_can_cause_are_500(error: type[JobsvcError]) -> None:
    assert status_for(error("x")) == 500
