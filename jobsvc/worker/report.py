"""What the worker says about recorded transitions: one log line each, and metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jobsvc.metrics import Metrics
from jobsvc.model import Job, Status

__all__ = ["log_transition", "report_recorded", "report_rescued"]

log = logging.getLogger("jobsvc.worker")


def log_transition(job: Job, *, rescued: bool = False, logger: logging.Logger = log) -> None:
    """One structured line per transition: enqueued (API), claimed and recorded (worker)."""
    duration = job.duration_ms
    level = logging.WARNING if job.status is Status.FAILED or rescued else logging.INFO
    logger.log(
        level,
        "job %s/%s %s attempt=%d/%d%s%s%s",
        job.job_id,
        job.result_file,
        job.status.value,
        job.attempts,
        job.max_attempts,
        "" if duration is None else f" duration_ms={duration}",
        "" if job.run_ms is None else f" run_ms={job.run_ms}",
        "" if not job.error else f" error={job.error!r}",
        extra={
            "job_id": str(job.job_id),
            "result_file": job.result_file,
            "status": job.status.value,
            "attempt": job.attempts,
            "duration_ms": duration,
            "run_ms": job.run_ms,
            "error": job.error,
            "rescued": rescued,
        },
    )


def report_recorded(metrics: Metrics, jobs: Sequence[Job]) -> None:
    """After a finish batch: a line and the outcome counters per row."""
    for job in jobs:
        log_transition(job)
        metrics.job_recorded(job)


def report_rescued(metrics: Metrics, jobs: Sequence[Job]) -> None:
    """After a rescue sweep: a warning per row moved on, and the rescue counter."""
    for job in jobs:
        log_transition(job, rescued=True)
    metrics.rescues.inc(len(jobs))
