"""`jobsvc.enqueue`: enqueue inside the caller's own psycopg transaction (DESIGN §11).

The transactional-enqueue pattern: the job row is written by the same
transaction as the caller's own rows, so the job exists if and only if they do.
The request is judged by the API's rules (`jobsvc.intake`) and written by the
API's statement for a request alone (`queue.enqueue_alone`). The wake-up for the
workers and the event for ``GET /results/events`` subscribers are ``NOTIFY`` messages sent
by that statement inside the transaction: PostgreSQL delivers them when it commits,
and never if it rolls back.

What the API does and this does not: the optional probe of the URL
(``JOBSVC_VERIFY_ON_ENQUEUE``) — a database transaction is no place to wait on a
remote host; the worker verifies the content regardless. Also, nothing here reads
the environment: ``max_attempts=None`` means 3, the API's default.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from jobsvc import intake, queue
from jobsvc.model import DEFAULT_TENANT, Job

__all__ = ["DEFAULT_MAX_ATTEMPTS", "enqueue"]

#: ``max_attempts`` when none is given (``JOBSVC_MAX_ATTEMPTS``'s default for the API).
DEFAULT_MAX_ATTEMPTS = 3


def enqueue(
    conn: psycopg.Connection[Any],
    *,
    job_id: uuid.UUID | str,
    img_url: str,
    type: str = "ingest",
    priority: int = 0,
    run_at: datetime | int | None = None,
    max_attempts: int | None = None,
    tenant: str = DEFAULT_TENANT,
    max_queued: int = 0,
) -> Job:
    """Enqueue one result of a job in ``conn``'s current transaction; returns its row.

    ``run_at``: an aware `datetime`, or epoch milliseconds as in the API; None is now.
    ``tenant``: whose result it is (the API shows it only to that tenant's keys).
    An identical request for an existing (job id, result file) returns the existing
    row and sends nothing; a different one raises `jobsvc.Conflict`; a request the
    API would refuse raises `jobsvc.InvalidRequest` with the API's sentence. Neither
    error writes anything or breaks the transaction: the caller decides what to do.

    ``tenant`` owns the result (DESIGN §8). ``max_queued`` > 0 caps the tenant's
    Queued + Processing results as ``JOBSVC_TENANT_MAX_QUEUED`` does for the API (past
    it, `jobsvc.QuotaExceeded`); it takes the tenant's quota lock, held until ``conn``'s
    transaction ends, so other enqueues of that tenant wait for this commit.

    ``conn`` may use any row factory: the statements run on a cursor of its own.
    """
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise TypeError("run_at must be an aware datetime (with a time zone) or epoch milliseconds")
        run_at = int(run_at.timestamp() * 1000)
    fields = {
        "jobId": str(job_id),
        "type": type,
        "imgUrl": img_url,
        "priority": priority,
        "runAt": run_at,
        "maxAttempts": max_attempts,
    }
    new = intake.new_result(intake.parse_request(fields), DEFAULT_MAX_ATTEMPTS, tenant)
    # One statement (ENQUEUE_ALONE_SQL on a cursor of its own, dict rows whatever the
    # caller's connection uses): the quota's lock and count, the insert, and the new
    # row's NOTIFYs, which PostgreSQL delivers at the caller's commit (never on a
    # rollback). One round trip instead of three to five: the job is in sooner, and
    # a worker picks it up sooner after the commit (bench/README.md, "Round 5").
    placed = queue.enqueue_alone(conn, new, max_queued, announce=True)
    if placed.over:
        raise queue.quota_exceeded(tenant, max_queued)
    job, created = placed.rows[(new.job_id, new.result_file)]
    if not created:
        queue.check_identical(job, new)
    return job
