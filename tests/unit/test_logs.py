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
