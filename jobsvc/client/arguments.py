"""What the client commands accept, decided before any request: the argparse types of
``--url``, job ids, result file names, ``--status``, counts and seconds, and ``--run-at``.

Each type raises `argparse.ArgumentTypeError` with a sentence naming what it expected,
which argparse prints as a usage error (exit 2). Only the standard library and
`jobsvc.model` are imported: the parser is built on every ``jobsvc`` invocation.
"""

from __future__ import annotations

import argparse
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from jobsvc.errors import InvalidRequest
from jobsvc.model import Status, check_file_name

__all__ = [
    "DEFAULT_URL",
    "STATUSES",
    "job_id_arg",
    "parse_run_at",
    "positive_float",
    "positive_int",
    "result_file_arg",
    "run_at_arg",
    "status_arg",
    "url_arg",
]

DEFAULT_URL = "http://127.0.0.1:8000"
STATUSES = [s.value for s in Status]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Below this, a number given to --run-at is surely epoch *seconds* (it would be before 1973).
_MIN_EPOCH_MS = 10**11


def url_arg(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as {DEFAULT_URL} (--url, or JOBSVC_URL), got {text!r}"
        )
    return text.rstrip("/")


def job_id_arg(text: str) -> str:
    """A job id as the API requires it (`jobsvc.model.parse_job_id`), decided before any request."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a job id (a UUID such as {uuid.UUID(int=1)}), got {text!r:.60}"
        ) from None
    if value.int == 0:
        raise argparse.ArgumentTypeError("the nil UUID is not a job id")
    return str(value)


def result_file_arg(text: str) -> str:
    """A name that could have been stored: no path, so ``./FILE`` stays in the current directory."""
    try:
        return check_file_name(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def status_arg(text: str) -> str:
    for status in STATUSES:
        if text.lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(STATUSES)}, got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def run_at_arg(text: str) -> int:
    try:
        return parse_run_at(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_run_at(text: str) -> int:
    """``--run-at``: epoch milliseconds, or an ISO-8601 time (no zone means local time)."""
    value = text.strip()
    if re.fullmatch(r"[0-9]+", value):
        ms = int(value)
        if ms < _MIN_EPOCH_MS:
            raise ValueError(
                f"{value} looks like epoch seconds; --run-at takes epoch milliseconds or ISO-8601"
            )
        return ms
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 time (2026-12-01T09:30:00Z) or epoch milliseconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local time zone, as `date` would read it
    return (moment - _EPOCH) // timedelta(milliseconds=1)
