"""Log lines: JSON objects with the transition's fields when JOBSVC_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jobsvc import logs
from jobsvc.config import Settings
from jobsvc.model import Job, Status
from jobsvc.worker import log_transition


def finished_job() -> Job:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return Job(
        id=7, job_id=uuid.UUID(int=7), result_file="a.png", type="ingest", img_url="http://h/a.png",
        status=Status.FAILED, priority=0, run_at=created, attempts=2, max_attempts=3,
        error="the content is not an image", cancel_requested_at=None, worker_id=None,
        created_at=created, updated_at=created, started_at=created,
        finished_at=created + timedelta(milliseconds=250),
    )  # fmt: skip


def test_json_format_gives_one_object_per_transition(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(Settings(log_format="json"))
    try:
        log_transition(finished_job())
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err.strip()
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "jobsvc.worker"
    assert doc["job_id"] == str(uuid.UUID(int=7)) and doc["result_file"] == "a.png"
    assert (doc["status"], doc["attempt"], doc["duration_ms"]) == ("Failed", 2, 250)
    assert doc["error"] == "the content is not an image"


def test_text_format_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(Settings(log_format="text"))
    try:
        log_transition(finished_job())
    finally:
        logging.getLogger().handlers.clear()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "a.png Failed attempt=2/3 duration_ms=250" in line and "not an image" in line


FORGED = "\n2099-01-01 00:00:00,000 CRITICAL jobsvc.api: FORGED LINE"
HOSTILE = ["a\x00b" + FORGED, "x\r" + FORGED, "y\u2028" + FORGED, "z\x85" + FORGED, "\u202egnp.exe"]


def text_record(message: str, *args: object, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("jobsvc.api", logging.ERROR, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return logs.TextFormatter().format(record)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_text_format_escapes_control_characters_so_no_line_is_forged(hostile: str) -> None:
    line = text_record("unhandled error on GET %s", f"/results/x/{hostile}")
    assert line.splitlines() == [line] and len(line.split("\n")) == 1
    assert line.isprintable(), line
    assert logs.escape_controls(hostile) in line  # kept, escaped, on the record's own line


def test_text_format_indents_a_traceback_so_its_message_cannot_start_a_record() -> None:
    try:
        raise ValueError("bad value\x00" + FORGED)
    except ValueError as caught:
        text = text_record("request failed", exc=caught)
    first, *rest = text.split("\n")
    assert first.endswith("jobsvc.api: request failed")
    assert rest[0] == "    Traceback (most recent call last):"
    # A line starting at column 0 is a record; the exception's own lines never do.
    assert rest[-2:] == ["    ValueError: bad value\\x00", "    " + FORGED.strip()]
    assert all(line.startswith("    ") and line.isprintable() for line in rest)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_json_format_is_one_line_whatever_a_client_sent(hostile: str) -> None:
    record = logging.LogRecord("jobsvc.api", logging.ERROR, __file__, 1, "path %s", (hostile,), None)
    record.path = hostile  # an extra= field
    line = logs.JsonFormatter().format(record)
    assert len(line.splitlines()) == 1 and line.isascii()
    doc = json.loads(line)
    assert doc["message"] == "path " + hostile and doc["path"] == hostile


def test_escape_controls_names_what_it_escaped() -> None:
    assert logs.escape_controls("a\nb\tc\x00d\x7f\u2028\u202e é 日本") == (
        "a\\nb\\tc\\x00d\\x7f\\u2028\\u202e é 日本"
    )
