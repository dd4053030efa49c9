"""Reads for clients and operators: a job's rows, one result, rows by id, the keyset
list, and the counts per status and the queue's age."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobsvc.db import Conn
from jobsvc.model import Job, Status
from jobsvc.queries import (
    COUNTS_SQL,
    GET_BY_IDS_SQL,
    GET_JOB_SQL,
    GET_RESULT_SQL,
    LIST_STATUS_PARAMS,
    QUEUE_AGE_SQL,
    STATS_SQL,
    ListOrder,
    list_sql,
)


def get_job(conn: Conn, job_id: uuid.UUID, tenant: str | None = None) -> list[Job]:
    """The job's rows of ``tenant`` (None: of every tenant)."""
    params = {"job_id": job_id, "tenant": tenant}
    return [Job.from_row(r) for r in conn.execute(GET_JOB_SQL, params)]


def get_result(conn: Conn, job_id: uuid.UUID, result_file: str, tenant: str | None = None) -> Job | None:
    params = {"job_id": job_id, "result_file": result_file, "tenant": tenant}
    row = conn.execute(GET_RESULT_SQL, params).fetchone()
    return None if row is None else Job.from_row(row)


def get_by_ids(conn: Conn, ids: Sequence[int]) -> list[Job]:
    return [Job.from_row(r) for r in conn.execute(GET_BY_IDS_SQL, {"ids": list(ids)})]


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Which results a list shows, and in which order (by ``(created_at, id)``)."""

    tenant: str | None = None  # None: every tenant's (admin, or auth off)
    statuses: tuple[Status, ...] = ()  # empty: every status
    job_id: uuid.UUID | None = None
    type: str | None = None
    created_from: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    order: ListOrder = "asc"


@dataclass(frozen=True, slots=True)
class ListCursor:
    """The last row of the previous page: the next page starts past it, in either order."""

    created_at: datetime
    id: int

    @classmethod
    def of(cls, job: Job) -> ListCursor:
        return cls(job.created_at, job.id)


def list_jobs(conn: Conn, where: ListFilter, *, after: ListCursor | None, limit: int) -> list[Job]:
    """Up to ``limit`` results matching ``where``, oldest first (``order="desc"``: newest
    first), past the keyset cursor ``after`` (None: from the start)."""
    statuses = list(dict.fromkeys(where.statuses))
    # A jobId has few rows: one scan of its index. Otherwise one branch per status (every
    # status when none is given), each walking its own status's part of a (…, status,
    # created_at, id) index in order, merged: schema version 4 dropped the (created_at, id)
    # indexes, whose upkeep on every claim and finish cost more than this merge.
    branches = 0 if where.job_id is not None else len(statuses or Status)
    params: dict[str, Any] = {"limit": limit}
    if branches:
        params.update(zip(LIST_STATUS_PARAMS, (s.value for s in statuses or Status), strict=False))
    elif statuses:
        params["statuses"] = [s.value for s in statuses]
    optional = {
        "tenant": where.tenant,
        "job_id": where.job_id,
        "type": where.type,
        "created_from": where.created_from,
        "created_before": where.created_before,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if after is not None:
        params.update(after_created=after.created_at, after_id=after.id)
    statement = list_sql(
        order=where.order,
        branches=branches,
        any_status=branches == 0 and bool(statuses),
        tenant=where.tenant is not None,
        job_id=where.job_id is not None,
        type=where.type is not None,
        created_from=where.created_from is not None,
        created_before=where.created_before is not None,
        after=after is not None,
    )
    return [Job.from_row(r) for r in conn.execute(statement, params)]


def status_counts(conn: Conn, tenant: str | None = None) -> dict[str, int]:
    """Rows per status of ``tenant`` (None: of all), from the counter deltas (no scan of
    jobsvc_results)."""
    counts = {s.value: 0 for s in Status}
    for row in conn.execute(COUNTS_SQL, {"tenant": tenant}):
        counts[row["status"]] = int(row["n"])
    return counts


def status_counts_exact(conn: Conn) -> dict[str, int]:
    """Rows per status by counting the table (tests and benchmarks compare the two)."""
    counts = {s.value: 0 for s in Status}
    for row in conn.execute(STATS_SQL):
        counts[row["status"]] = int(row["n"])
    return counts


def queue_age(conn: Conn, tenant: str | None = None) -> tuple[int, float]:
    """(due Queued rows of ``tenant`` (None: of all), seconds the oldest of them has been due)."""
    row = conn.execute(QUEUE_AGE_SQL, {"tenant": tenant}).fetchone()
    assert row is not None
    return int(row["depth"]), float(row["seconds"])
