"""A client's control of a job: `cancel` and `retry`, under the same row locks."""

from __future__ import annotations

import uuid

from jobsvc.db import Conn
from jobsvc.errors import NotFound
from jobsvc.model import Job, Status
from jobsvc.queries import CANCEL_LOCK_SQL, CANCEL_PROCESSING_SQL, CANCEL_QUEUED_SQL, RETRY_SQL
from jobsvc.queue.enqueues import quota_exceeded, reserve_quota
from jobsvc.queue.notify import CANCEL_CHANNEL, notify_ids, wake_workers
from jobsvc.queue.reads import get_job
from jobsvc.retry import CANCELED_ERROR


def cancel(conn: Conn, job_id: uuid.UUID, tenant: str | None = None) -> list[Job]:
    """Cancel every unfinished result of a job of ``tenant`` (None: any tenant's); returns
    the job's rows afterwards. Another tenant's job is `NotFound`, as an unknown one.

    Queued rows become Canceled at once; Processing rows get a cancel request and
    their owners a NOTIFY. Locking the rows first makes a concurrent claim either
    finish before us (we then see Processing) or wait (we then see Queued).
    """
    params = {"job_id": job_id, "tenant": tenant}
    locked = conn.execute(CANCEL_LOCK_SQL, params).fetchall()
    if not locked:
        raise NotFound(f"job {job_id} does not exist")
    conn.execute(CANCEL_QUEUED_SQL, {**params, "error": CANCELED_ERROR})
    requested = [r["id"] for r in conn.execute(CANCEL_PROCESSING_SQL, params)]
    notify_ids(conn, CANCEL_CHANNEL, requested)
    return get_job(conn, job_id, tenant)


def retry(conn: Conn, job_id: uuid.UUID, tenant: str | None = None, *, max_queued: int = 0) -> list[Job]:
    """Put every Failed or Canceled result of a job of ``tenant`` (None: any tenant's) back
    to Queued (attempts from 0, error cleared, due now) and wake the workers; returns the
    job's rows afterwards. Another tenant's job is `NotFound`, as an unknown one.

    The same row locks as `cancel`, in the same order: a retry and a cancel of one job
    run one after the other, never interleaved. With ``max_queued`` > 0 the retried
    results count against the job's tenant's quota as new enqueues do (DESIGN §8 caps
    Queued + Processing, however a result got there): all of them fit, or none is
    retried and `QuotaExceeded` is raised. The quota lock is taken after the row locks;
    no enqueue waits on a row lock while holding it, so the two cannot deadlock.
    """
    params = {"job_id": job_id, "tenant": tenant}
    locked = conn.execute(CANCEL_LOCK_SQL, params).fetchall()
    if not locked:
        raise NotFound(f"job {job_id} does not exist")
    again = [r for r in locked if r["status"] in (Status.FAILED, Status.CANCELED)]
    if again and max_queued > 0:
        owner = str(again[0]["tenant"])  # a job's results share their tenant (jobIds are per tenant)
        if reserve_quota(conn, owner, len(again), max_queued) < len(again):
            raise quota_exceeded(owner, max_queued)
    if conn.execute(RETRY_SQL, params).fetchall():
        wake_workers(conn)
    return get_job(conn, job_id, tenant)
