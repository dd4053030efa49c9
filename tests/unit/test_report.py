"""The worker's batched transition lines: the same lines, records and levels as one call each."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobsvc import logs
from jobsvc.config import Settings
from jobsvc.metrics import Metrics
from jobsvc.model import Job, Status
from jobsvc.worker.report import log_transition, log_transitions, report_recorded

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def job(n: int, status: Status = Status.COMPLETED, error: str | None = None) -> Job:
    return Job(
        id=n, job_id=uuid.UUID(int=n), result_file=f"{n}.png", type="ingest", img_url=f"http://h/{n}.png",
        status=status, priority=0, run_at=CREATED, attempts=1, max_attempts=3, error=error,
        cancel_requested_at=None, worker_id=None, created_at=CREATED, updated_at=CREATED,
        started_at=CREATED, finished_at=CREATED + timedelta(milliseconds=10 * n),
    )  # fmt: skip


JOBS = [job(1), job(2, Status.FAILED, "not an image\n forged"), job(3, Status.QUEUED, "503")]


@pytest.fixture
def stream() -> Iterator[tuple[io.StringIO, logging.StreamHandler[io.StringIO]]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    try:
        yield out, handler
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(out: io.StringIO) -> list[str]:
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text.splitlines()


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()])
def test_a_batch_writes_the_lines_one_call_each_would(
    stream: tuple[io.StringIO, logging.StreamHandler[io.StringIO]], formatter: logging.Formatter
) -> None:
    out, handler = stream
    handler.setFormatter(formatter)
    logging.getLogger().setLevel(logging.INFO)
    for j in JOBS:
        log_transition(j)
    one_by_one = lines(out)
    log_transitions(JOBS)
    batched = lines(out)
    assert len(batched) == len(JOBS)

    def without_time(line: str) -> object:
        if isinstance(formatter, logs.JsonFormatter):
            return {k: v for k, v in json.loads(line).items() if k != "time"}
        return line.split(" ", 2)[2]  # after the date and time

    assert [without_time(x) for x in batched] == [without_time(x) for x in one_by_one]


def test_a_batch_keeps_levels_and_reaches_other_handlers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobsvc.worker"):
        log_transitions(JOBS)
        log_transitions([job(4)], rescued=True)
    assert [(r.levelname, r.getMessage().split()[2]) for r in caplog.records] == [
        ("WARNING", "Failed"),
        ("WARNING", "Completed"),
    ]
    assert caplog.records[0].job_id == str(uuid.UUID(int=2))  # type: ignore[attr-defined]
    assert caplog.records[1].rescued is True  # type: ignore[attr-defined]


def test_report_recorded_counts_each_outcome_once(stream: object) -> None:
    metrics = Metrics()
    report_recorded(metrics, [*JOBS, replace(job(5), status=Status.CANCELED)])
    sample = metrics.registry.get_sample_value
    assert sample("jobsvc_finished_total", {"status": "Completed"}) == 1
    assert sample("jobsvc_finished_total", {"status": "Failed"}) == 1
    assert sample("jobsvc_finished_total", {"status": "Canceled"}) == 1
    assert sample("jobsvc_retries_total") == 1
    assert sample("jobsvc_job_duration_seconds_count", {"status": "Failed"}) == 1
    assert sample("jobsvc_job_duration_seconds_sum", {"status": "Failed"}) == pytest.approx(0.02)


def test_settings_logging_is_used_by_the_batch(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(Settings(log_format="json", log_level="WARNING"))
    try:
        log_transitions(JOBS)
    finally:
        logging.getLogger().handlers.clear()
    (line,) = capsys.readouterr().err.strip().splitlines()  # the INFO lines are below the level
    assert json.loads(line)["status"] == "Failed"


def test_text_lines_reach_each_handler_at_its_level_as_one_call_each_would(
    stream: tuple[io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    out, handler = stream
    handler.setFormatter(logs.TextFormatter())
    warnings = io.StringIO()
    second = logging.StreamHandler(warnings)
    second.setFormatter(logs.TextFormatter())
    second.setLevel(logging.WARNING)
    logging.getLogger().addHandler(second)
    logging.getLogger().setLevel(logging.INFO)
    for j in JOBS:
        log_transition(j)
    one_by_one, warned = lines(out), lines(warnings)
    log_transitions(JOBS)
    assert [x.split(" ", 2)[2] for x in lines(out)] == [x.split(" ", 2)[2] for x in one_by_one]
    assert [x.split(" ", 2)[2] for x in lines(warnings)] == [x.split(" ", 2)[2] for x in warned]
    assert len(warned) == 1 and "forged" in warned[0] and "\\n" in warned[0]  # escaped, one line
