"""What the worker says about transitions: one log line each, and metrics.

The worker logs a whole batch of transitions at once (`log_transitions`): the claim
of up to `JOBSVC_CONCURRENCY` rows, the outcomes of one cycle. Through `Logger.log`
each line cost about 40 µs of the trio thread, two per no-op job (issue 14,
bench/README.md "Round 2: the worker"): the caller lookup and the `LogRecord`
constructor per line, and a write and flush to stderr per line. A batch builds its
records from one template (same time, process and thread: they are one event) and
writes each stream handler's lines in one ``write``; every line is still its own
record, formatted by the handler's own formatter, at the same level, with the same
fields.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from jobsvc.metrics import Metrics
from jobsvc.model import Job, Status

__all__ = ["log_transition", "log_transitions", "report_recorded", "report_rescued"]

log = logging.getLogger("jobsvc.worker")

_FORMAT = "job %s/%s %s attempt=%d/%d%s%s%s"


def _level(job: Job, rescued: bool) -> int:
    return logging.WARNING if job.status is Status.FAILED or rescued else logging.INFO


def _fields(job: Job, rescued: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The message's arguments and the record's structured fields (JSON keys)."""
    duration, run_ms, job_id = job.duration_ms, job.run_ms, str(job.job_id)
    args = (
        job_id,
        job.result_file,
        job.status.value,
        job.attempts,
        job.max_attempts,
        "" if duration is None else f" duration_ms={duration}",
        "" if run_ms is None else f" run_ms={run_ms}",
        "" if not job.error else f" error={job.error!r}",
    )
    extra = {
        "job_id": job_id,
        "result_file": job.result_file,
        "status": job.status.value,
        "attempt": job.attempts,
        "duration_ms": duration,
        "run_ms": run_ms,
        "error": job.error,
        "rescued": rescued,
    }
    return args, extra


def log_transition(job: Job, *, rescued: bool = False, logger: logging.Logger = log) -> None:
    """One structured line per transition: enqueued (API), claimed and recorded (worker)."""
    level = _level(job, rescued)
    if logger.isEnabledFor(level):
        args, extra = _fields(job, rescued)
        logger.log(level, _FORMAT, *args, extra=extra)


def log_transitions(jobs: Sequence[Job], *, rescued: bool = False, logger: logging.Logger = log) -> None:
    """`log_transition` for each of ``jobs``, as one batch (see the module docstring)."""
    records: list[logging.LogRecord] = []
    template: dict[str, Any] | None = None
    levels = (logging.INFO, logging.WARNING)
    enabled = {level: logger.isEnabledFor(level) for level in levels}
    names = {level: logging.getLevelName(level) for level in levels}
    for job in jobs:
        level = _level(job, rescued)
        if not enabled[level]:
            continue
        args, extra = _fields(job, rescued)
        if template is None:
            factory = logging.getLogRecordFactory()
            template = factory(
                logger.name, level, __file__, 0, _FORMAT, args, None, "log_transitions"
            ).__dict__
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__ = {**template, **extra, "args": args, "levelno": level, "levelname": names[level]}
        records.append(record)
    if records:
        _handle_batch(logger, records)


def _handle_batch(logger: logging.Logger, records: list[logging.LogRecord]) -> None:
    """`Logger.handle` for many records: the same filters, handlers and propagation, but a
    plain `logging.StreamHandler` gets one write (and one flush) for all of its lines."""
    records = [r for r in records if not logger.disabled and logger.filter(r)]
    node: logging.Logger | None = logger
    handled = False
    while node is not None and records:
        for handler in node.handlers:
            handled = True
            mine = [r for r in records if r.levelno >= handler.level]
            if type(handler) is logging.StreamHandler:
                _write_batch(handler, mine)
            else:
                for record in mine:
                    handler.handle(record)
        node = node.parent if node.propagate else None
    if not handled:  # no handler anywhere: logging's last resort, line by line
        for record in records:
            logger.callHandlers(record)


def _write_batch(handler: logging.StreamHandler[Any], records: list[logging.LogRecord]) -> None:
    lines = []
    for record in records:
        if handler.filter(record):
            try:
                lines.append(handler.format(record) + handler.terminator)
            except Exception:
                handler.handleError(record)
    if not lines:
        return
    with handler.lock or _NO_LOCK:
        try:
            handler.stream.write("".join(lines))
            handler.flush()
        except Exception:
            handler.handleError(records[-1])


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def report_recorded(metrics: Metrics, jobs: Sequence[Job]) -> None:
    """After a cycle: a line and the outcome counters per row written."""
    log_transitions(jobs)
    metrics.jobs_recorded(jobs)


def report_rescued(metrics: Metrics, jobs: Sequence[Job]) -> None:
    """After a rescue sweep: a warning per row moved on, and the rescue counter."""
    log_transitions(jobs, rescued=True)
    metrics.rescues.inc(len(jobs))
