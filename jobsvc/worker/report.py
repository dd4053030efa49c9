"""What the worker says about transitions: one log line each, and metrics.

The worker logs a whole batch of transitions at once (`log_transitions`): the claim
of up to `JOBSVC_CONCURRENCY` rows, the outcomes of one cycle. Through `Logger.log`
each line cost about 40 µs of the trio thread, two per no-op job (issue 14,
bench/README.md "Round 2: the worker"): the caller lookup and the `LogRecord`
constructor per line, and a write and flush to stderr per line. A batch builds its
records from one template (same time, process and thread: they are one event) and
writes each stream handler's lines in one ``write``; every line is still its own
record, formatted by the handler's own formatter, at the same level, with the same
fields. With the default text format (every handler a plain stream handler with
`TextFormatter`, no filters) a batch builds no record per line at all: the lines of
one batch share their time, level and logger, so each is the prefix of one formatted
record plus its own escaped message (`_write_text`: 7 → 3 µs per line, round 5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from jobsvc.logs import TextFormatter, escape_controls
from jobsvc.metrics import Metrics
from jobsvc.model import Job, Status

__all__ = ["log_transition", "log_transitions", "report_recorded", "report_rescued"]

log = logging.getLogger("jobsvc.worker")

_FORMAT = "job %s/%s %s attempt=%d/%d%s%s%s"


def _level(job: Job, rescued: bool) -> int:
    return logging.WARNING if job.status is Status.FAILED or rescued else logging.INFO


def _args(job: Job) -> tuple[Any, ...]:
    """The message's arguments."""
    duration, run_ms = job.duration_ms, job.run_ms
    return (
        str(job.job_id),
        job.result_file,
        job.status._value_,  # the plain attribute: `.value` is a property (0.25 µs)
        job.attempts,
        job.max_attempts,
        "" if duration is None else f" duration_ms={duration}",
        "" if run_ms is None else f" run_ms={run_ms}",
        "" if not job.error else f" error={job.error!r}",
    )


def _fields(job: Job, rescued: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The message's arguments and the record's structured fields (JSON keys)."""
    args = _args(job)
    extra = {
        "job_id": args[0],
        "result_file": job.result_file,
        "status": args[2],
        "attempt": job.attempts,
        "duration_ms": job.duration_ms,
        "run_ms": job.run_ms,
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
    levels = (logging.INFO, logging.WARNING)
    enabled = {level: logger.isEnabledFor(level) for level in levels}
    batch = [(level, job) for job in jobs if enabled[level := _level(job, rescued)]]
    if not batch:
        return
    handlers = _text_handlers(logger)
    if handlers and _write_text(logger, handlers, batch):
        return
    records: list[logging.LogRecord] = []
    template: dict[str, Any] | None = None
    names = {level: logging.getLevelName(level) for level in levels}
    for level, job in batch:
        args, extra = _fields(job, rescued)
        if template is None:
            template = _record(logger, level, args).__dict__
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__ = {**template, **extra, "args": args, "levelno": level, "levelname": names[level]}
        records.append(record)
    _handle_batch(logger, records)


def _record(logger: logging.Logger, level: int, args: tuple[Any, ...]) -> logging.LogRecord:
    factory = logging.getLogRecordFactory()
    return factory(logger.name, level, __file__, 0, _FORMAT, args, None, "log_transitions")


def _text_handlers(logger: logging.Logger) -> list[logging.StreamHandler[Any]] | None:
    """The handlers a record of ``logger`` reaches, when every one of them is a plain
    `logging.StreamHandler` with our `TextFormatter` and nothing filters (the worker's
    default, `jobsvc.logs.configure`); None otherwise."""
    if logger.disabled or logger.filters:
        return None
    found: list[logging.StreamHandler[Any]] = []
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if not (
                type(handler) is logging.StreamHandler
                and type(handler.formatter) is TextFormatter
                and not handler.filters
            ):
                return None
            found.append(handler)
        node = node.parent if node.propagate else None
    return found or None


def _write_text(
    logger: logging.Logger, handlers: list[logging.StreamHandler[Any]], batch: list[tuple[int, Job]]
) -> bool:
    """The text lines of ``batch`` without a `LogRecord` each: `TextFormatter` writes
    ``time level logger: message`` with control characters escaped, and the records of
    one batch share their time, logger and (per level) level name. So each handler
    formats one real record per level, and every line of that level is its prefix plus
    the job's escaped message: about half a line's CPU (issue 14, round 5). False (write
    nothing) if a formatted line does not end with its escaped message."""
    prefixes: dict[tuple[int, int], str] = {}
    for i, handler in enumerate(handlers):
        for level in {level for level, _ in batch}:
            if level < handler.level:
                continue
            record = _record(logger, level, _args(next(job for lvl, job in batch if lvl == level)))
            line = handler.format(record)
            message = escape_controls(record.getMessage())
            if not line.endswith(message):
                return False
            prefixes[i, level] = line[: len(line) - len(message)]
    messages = [(level, escape_controls(_FORMAT % _args(job))) for level, job in batch]
    for i, handler in enumerate(handlers):
        end = handler.terminator
        text = "".join(
            prefixes[i, level] + message + end for level, message in messages if level >= handler.level
        )
        if text:
            with handler.lock or _NO_LOCK:
                try:
                    handler.stream.write(text)
                    handler.flush()
                except Exception:
                    handler.handleError(_record(logger, batch[-1][0], _args(batch[-1][1])))
    return True


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
