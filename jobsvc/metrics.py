"""Prometheus metrics (names prefixed ``jobsvc_``), one registry per process: `jobsvc dev`
gives its API and its worker the same `Metrics`, so its ``/metrics`` shows both sides.

Counters and the duration histogram are counted where things happen; the gauges
that describe the queue as a whole (jobs by status, depth, oldest age) are read
from the database when scraped (`Metrics.update_from_db`).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from jobsvc import queue
from jobsvc.db import Conn
from jobsvc.model import Job, Status

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Gauge("jobsvc_jobs", "Results by status (read from the database)", ["status"], registry=r)
        self.queue_depth = Gauge("jobsvc_queue_depth", "Due Queued results", registry=r)
        self.queue_age = Gauge(
            "jobsvc_queue_oldest_age_seconds", "How long the oldest due Queued result has waited", registry=r
        )
        self.duration = Histogram(
            "jobsvc_job_duration_seconds",
            "One attempt, from claim to recorded outcome",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.enqueued = Counter("jobsvc_enqueued", "Results accepted by enqueue", registry=r)
        self.claims = Counter("jobsvc_claims", "Results claimed by this worker", registry=r)
        self.finished = Counter("jobsvc_finished", "Outcomes recorded", ["status"], registry=r)
        self.retries = Counter(
            "jobsvc_retries", "Attempts that failed transiently and were requeued", registry=r
        )
        self.rescues = Counter("jobsvc_rescues", "Orphaned results moved on by the rescuer", registry=r)
        self.cleaned = Counter(
            "jobsvc_cleaned", "Finished results deleted by this worker's cleaner (retention)", registry=r
        )
        # A running job the worker canceled is finished_total{status="Canceled"}.
        self.cancel_requests = Counter(
            "jobsvc_cancel_requests", "POST /results/{jobId}/cancel requests answered (API)", registry=r
        )
        self.fetch_bytes = Counter("jobsvc_fetch_bytes", "Image bytes downloaded", registry=r)
        self.subscribers = Gauge("jobsvc_events_subscribers", "Open event streams", registry=r)
        self._children: dict[Status, tuple[Counter, Histogram]] = {}

    def job_recorded(self, job: Job) -> None:
        """Count one recorded outcome (called by the worker after each finish batch)."""
        if job.status is Status.QUEUED:
            self.retries.inc()
            return
        # Label lookups cost more than the increment: resolve each child once (hot path).
        finished, duration = self._children.get(job.status) or self._resolve(job.status)
        finished.inc()
        if job.started_at is not None and job.finished_at is not None:
            duration.observe((job.finished_at - job.started_at).total_seconds())

    def jobs_recorded(self, jobs: Sequence[Job]) -> None:
        """`job_recorded` for a whole finish batch: one increment per status, not per row."""
        counts: dict[Status, int] = {}
        for job in jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
            if job.status is not Status.QUEUED and job.started_at is not None and job.finished_at is not None:
                duration = (self._children.get(job.status) or self._resolve(job.status))[1]
                duration.observe((job.finished_at - job.started_at).total_seconds())
        for status, n in counts.items():
            if status is Status.QUEUED:
                self.retries.inc(n)
            else:
                (self._children.get(status) or self._resolve(status))[0].inc(n)

    def _resolve(self, status: Status) -> tuple[Counter, Histogram]:
        pair = (self.finished.labels(status.value), self.duration.labels(status.value))
        self._children[status] = pair
        return pair

    def update_from_db(self, conn: Conn) -> None:
        """Refresh the queue-wide gauges; one short transaction."""
        for status, n in queue.status_counts(conn).items():
            self.jobs.labels(status).set(n)
        depth, age = queue.queue_age(conn)
        self.queue_depth.set(depth)
        self.queue_age.set(age)

    def render(self) -> bytes:
        return generate_latest(self.registry)
