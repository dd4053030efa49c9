"""The queue in PostgreSQL: enqueue, cancel, claim, finish, rescue, read.

Each public function takes an open connection and runs inside the caller's
transaction (`db.Database.run` / `db.Session.run` open one per call), so a unit
of work is one thread hop. The SQL is in `jobsvc.queries`; the retry decisions
that `finish` and `rescue` write are `jobsvc.retry`'s.

Channels:
- ``jobsvc_wakeup`` (no payload): work may be due; sent on enqueue (coalesced by
  the API), retry and rescue.
- ``jobsvc_cancel`` (comma-separated row ids): cancel requested for Processing rows.
- ``jobsvc_events`` (comma-separated row ids): these rows changed; sent by the
  trigger in schema.sql on UPDATE and by `announce` for inserts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from psycopg.rows import tuple_row

from jobsvc.db import Conn
from jobsvc.errors import Conflict, NotFound, QuotaExceeded, SchemaMismatch
from jobsvc.model import DEFAULT_TENANT, Job, Status
from jobsvc.queries import (
    CANCEL_LOCK_SQL,
    CANCEL_PROCESSING_SQL,
    CANCEL_QUEUED_SQL,
    CANCEL_REQUESTED_SQL,
    CLAIM_SQL,
    CLEAN_SQL,
    CLEAN_TRY_LOCK_SQL,
    CLEAN_WAIT_LOCK_SQL,
    COMPACT_COUNTS_SQL,
    COUNTS_SQL,
    ENQUEUE_MANY_SQL,
    ENQUEUE_SQL,
    EXISTING_KEYS_SQL,
    FINISH_LOCK_SQL,
    GET_BY_IDS_SQL,
    GET_JOB_SQL,
    GET_RESULT_SQL,
    LIST_STATUS_PARAMS,
    MIGRATE_LOCK_SQL,
    NEXT_DUE_SQL,
    NOTIFY_SQL,
    QUEUE_AGE_SQL,
    QUOTA_LOCK_SQL,
    QUOTA_USED_SQL,
    RESCUE_LOCK_SQL,
    RETRY_SQL,
    SCHEMA_EXISTS_SQL,
    SCHEMA_VERSION_SQL,
    STATS_SQL,
    UNLOCK_SQL,
    WRITE_DECISIONS_SQL,
    ListOrder,
    list_sql,
)
from jobsvc.retry import CANCELED_ERROR, Decision, Outcome, RetryPolicy

__all__ = ["SCHEMA_VERSION", "ListCursor", "ListFilter", "NewResult", "Outcome", "TenantRing"]

WAKEUP_CHANNEL = "jobsvc_wakeup"
CANCEL_CHANNEL = "jobsvc_cancel"
EVENTS_CHANNEL = "jobsvc_events"
#: Two-int advisory keys live in a key space apart from the bigint row keys.
MIGRATE_LOCK = (0x6A6F6273, 1)
#: The cleaner's and `jobsvc purge`'s lock: one of them deletes at a time.
CLEAN_LOCK = (0x6A6F6273, 2)
#: The key space of the per-tenant quota locks (the second int is hashtext(tenant)).
QUOTA_LOCK_SPACE = 0x6A6F6274
#: Retry-After (seconds) of an enqueue refused by the quota: results finish meanwhile.
QUOTA_RETRY_AFTER = 5
#: The tenant of a result enqueued without one (before auth, and `jobsvc dev`).
#: The fair-share claim considers this many more candidates than it claims, so that
#: claims running at the same time (which skip each other's rows) still fill up.
CLAIM_SLACK = 16
#: Rows per cleaner batch: each batch is one short transaction.
CLEAN_BATCH = 1000
#: The finished statuses, the only ones the cleaner and purge delete.
FINISHED = tuple(s.value for s in Status if s.finished)
#: Ids per NOTIFY payload (the payload must stay under 8000 bytes); the trigger in
#: schema.sql chunks its payloads by the same number.
IDS_PER_NOTIFY = 400
#: The policy used when a caller passes none (the worker passes its own).
DEFAULT_POLICY = RetryPolicy()


def load_schema() -> str:
    """The text of schema.sql, shipped inside the package."""
    return resources.files("jobsvc").joinpath("schema.sql").read_text(encoding="utf-8")


def _declared_version(schema_sql: str) -> int:
    match = re.search(r"INSERT INTO jobsvc_meta \(schema_version\) VALUES \((\d+)\)", schema_sql)
    if match is None:  # pragma: no cover - schema.sql is shipped with the code
        raise RuntimeError("schema.sql does not declare its schema_version")
    return int(match.group(1))


#: The schema version this code expects: the one schema.sql writes (stated there only).
SCHEMA_VERSION = _declared_version(load_schema())


@dataclass(slots=True)
class TenantRing:
    """A worker's place in the fair-share round-robin: the claim serves the tenants
    after ``after`` (in name order, wrapping around) first, then moves it to the last
    tenant it served. One per claiming session; a fresh ring starts at the first tenant."""

    after: str = ""


@dataclass(frozen=True, slots=True)
class NewResult:
    """A validated enqueue request for one result file."""

    job_id: uuid.UUID
    result_file: str
    type: str
    img_url: str
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int = 3
    tenant: str = DEFAULT_TENANT


def parse_ids(payload: str) -> list[int]:
    """The row ids of a ``jobsvc_cancel`` or ``jobsvc_events`` payload (malformed parts are ignored)."""
    return [int(p) for p in payload.split(",") if p.strip().isdigit()]


def notify_ids(conn: Conn, channel: str, ids: Sequence[int]) -> None:
    """NOTIFY ``ids`` on ``channel``, `IDS_PER_NOTIFY` per payload."""
    for start in range(0, len(ids), IDS_PER_NOTIFY):
        payload = ",".join(str(i) for i in ids[start : start + IDS_PER_NOTIFY])
        conn.execute(NOTIFY_SQL, {"channel": channel, "payload": payload})


def wake_workers(conn: Conn) -> None:
    """The payload-free wake-up: work may be due."""
    conn.execute(NOTIFY_SQL, {"channel": WAKEUP_CHANNEL, "payload": ""})


# --- migration --------------------------------------------------------------------


def migrate(conn: Conn, schema_sql: str) -> None:
    """Apply schema.sql, which upgrades any earlier version in place; concurrent callers
    are serialised by a transaction advisory lock. Raises `SchemaMismatch` (and changes
    nothing) when the database is newer than ``schema_sql``."""
    conn.execute(MIGRATE_LOCK_SQL, MIGRATE_LOCK)
    with conn.cursor(row_factory=tuple_row) as cur:  # any connection's row factory will do
        exists = cur.execute(SCHEMA_EXISTS_SQL).fetchone()
        found = cur.execute(SCHEMA_VERSION_SQL).fetchone() if exists and exists[0] else None
    stored, target = (None if found is None else int(found[0])), _declared_version(schema_sql)
    if stored is not None and stored > target:
        raise SchemaMismatch(
            f"the database's schema is version {stored}, newer than this jobsvc's version {target}: "
            "upgrade jobsvc instead of migrating"
        )
    conn.execute(schema_sql.encode())  # bytes: run as one simple-protocol script


def schema_problem(version: int | None) -> str | None:
    """Why a database at schema ``version`` cannot serve this code (None: it can)."""
    if version == SCHEMA_VERSION:
        return None
    if version is None:
        return "not migrated: the database has no jobsvc schema; run `jobsvc migrate`"
    if version < SCHEMA_VERSION:
        return (
            f"the database's schema is version {version}, older than this jobsvc's version "
            f"{SCHEMA_VERSION}: run `jobsvc migrate`"
        )
    return (
        f"the database's schema is version {version}, newer than this jobsvc's version "
        f"{SCHEMA_VERSION}: upgrade jobsvc"
    )


def schema_version(conn: Conn) -> int | None:
    """The migrated schema's version, or None when jobsvc_meta does not exist yet."""
    exists = conn.execute(SCHEMA_EXISTS_SQL).fetchone()
    if not exists or not exists["ok"]:
        return None
    row = conn.execute(SCHEMA_VERSION_SQL).fetchone()
    return None if row is None else int(row["schema_version"])


# --- client side ------------------------------------------------------------------


def reserve_quota(conn: Conn, tenant: str, wanted: int, max_queued: int) -> int:
    """How many of ``wanted`` new results ``tenant`` may still enqueue under the cap
    ``max_queued`` (0: unlimited) on its Queued + Processing results.

    Takes the tenant's quota lock (a transaction-level advisory lock, held until the
    caller's transaction ends), so call it in the transaction that then inserts the
    results: no other enqueue of the tenant, in any process, counts until this one
    has committed or rolled back. Insert at most the returned number of new rows.
    """
    if max_queued <= 0:
        return wanted
    conn.execute(QUOTA_LOCK_SQL, {"space": QUOTA_LOCK_SPACE, "tenant": tenant})
    row = conn.execute(QUOTA_USED_SQL, {"tenant": tenant}).fetchone()
    used = 0 if row is None else int(row["n"])
    return max(0, min(wanted, max_queued - used))


def quota_exceeded(tenant: str, max_queued: int) -> QuotaExceeded:
    """The refusal of an enqueue past the quota (the batch endpoint's per-item 429, too)."""
    return QuotaExceeded(
        f"tenant {tenant!r} already has {max_queued} queued or running results "
        "(JOBSVC_TENANT_MAX_QUEUED); try again once some have finished",
        QUOTA_RETRY_AFTER,
    )


def enqueue(conn: Conn, new: NewResult, *, max_queued: int = 0) -> tuple[Job, bool]:
    """Insert a result for ``new.tenant``; returns ``(job, created)``.

    An identical request for an existing (jobId, resultFile) returns the existing row
    with ``created=False``; a different one raises `Conflict`, and so does a jobId
    that another tenant uses (jobIds are unique across tenants; nothing of the other
    tenant's job is told). With ``max_queued`` > 0 a new result past the tenant's quota
    raises `QuotaExceeded` (`reserve_quota`); an identical retry is still answered with
    the existing row.
    """
    full = reserve_quota(conn, new.tenant, 1, max_queued) < 1
    if full and get_result(conn, new.job_id, new.result_file) is None:
        raise quota_exceeded(new.tenant, max_queued)
    params = {
        "job_id": new.job_id,
        "result_file": new.result_file,
        "type": new.type,
        "img_url": new.img_url,
        "priority": new.priority,
        "run_at": new.run_at,
        "max_attempts": new.max_attempts,
        "tenant": new.tenant,
    }
    # A conflicting insert committed after our snapshot is invisible to the second
    # half of the statement: run it again with a fresh snapshot (at most twice more).
    for _ in range(3):
        row = conn.execute(ENQUEUE_SQL, params).fetchone()
        if row is not None:
            break
    else:  # pragma: no cover - needs three concurrent conflicting writers in a row
        raise Conflict(f"job {new.job_id} result {new.result_file!r} is being written concurrently")
    inserted = bool(row.pop("inserted"))
    job = Job.from_row(row)
    if not inserted:
        check_identical(job, new)
    return job, inserted


def check_identical(job: Job, new: NewResult) -> None:
    """Raise `Conflict` unless ``new`` is the request that created ``job`` (same key,
    type and URL, and tenant): what decides between 200 and 409 for an existing result.
    Another tenant's row of that jobId means the id is taken (jobIds are unique across
    tenants)."""
    if job.tenant != new.tenant:
        raise Conflict(f"jobId {new.job_id} is taken: choose another jobId")
    if job.type != new.type or job.img_url != new.img_url:
        raise Conflict(f"job {new.job_id} already has result {new.result_file!r} from a different request")


Key = tuple[uuid.UUID, str]


def enqueue_many(conn: Conn, news: Sequence[NewResult]) -> dict[Key, tuple[Job, bool]]:
    """Insert many results (keys unique) in one statement; ``(job, created)`` per key.

    ``created=False`` is an existing row, identical or not (`check_identical` judges).
    """
    found: dict[Key, tuple[Job, bool]] = {}
    todo = list(news)
    # As in `enqueue`: a key committed concurrently after the snapshot is in neither
    # half of the statement; run those again with a fresh snapshot (at most twice more).
    for _ in range(3):
        params = {
            "job_ids": [n.job_id for n in todo],
            "result_files": [n.result_file for n in todo],
            "types": [n.type for n in todo],
            "img_urls": [n.img_url for n in todo],
            "priorities": [n.priority for n in todo],
            "run_ats": [n.run_at for n in todo],
            "max_attempts": [n.max_attempts for n in todo],
            "tenants": [n.tenant for n in todo],
        }
        for row in conn.execute(ENQUEUE_MANY_SQL, params):
            inserted = bool(row.pop("inserted"))
            key_file = row.pop("key_file")
            job = Job.from_row(row)
            found[(job.job_id, key_file)] = (job, inserted)
        todo = [n for n in todo if (n.job_id, n.result_file) not in found]
        if not todo:
            return found
    raise Conflict(  # pragma: no cover - needs three concurrent conflicting writers in a row
        f"job {todo[0].job_id} result {todo[0].result_file!r} is being written concurrently"
    )


def admit(conn: Conn, news: Sequence[NewResult], max_queued: int) -> tuple[list[NewResult], list[NewResult]]:
    """Split a batch of one tenant's results into those its quota admits and those past
    it: results that exist already take no slot (they are answered as enqueue answers
    them); new ones are admitted in order while slots remain. Takes the tenant's quota
    lock (`reserve_quota`): call it in the transaction that inserts the admitted ones."""
    if max_queued <= 0 or not news:
        return list(news), []
    existing = existing_keys(conn, [(n.job_id, n.result_file) for n in news])
    new = [n for n in news if (n.job_id, n.result_file) not in existing]
    room = reserve_quota(conn, news[0].tenant, len(new), max_queued)
    refused = {id(n) for n in new[room:]}
    return [n for n in news if id(n) not in refused], [n for n in news if id(n) in refused]


def existing_keys(conn: Conn, keys: Sequence[Key]) -> set[Key]:
    """Which of ``keys`` exist as results."""
    params = {"job_ids": [k[0] for k in keys], "result_files": [k[1] for k in keys]}
    return {(r["job_id"], r["result_file"]) for r in conn.execute(EXISTING_KEYS_SQL, params)}


def announce(conn: Conn, ids: Sequence[int], wakeup: bool) -> None:
    """One NOTIFY per channel for a burst of new rows (wakes workers, feeds events)."""
    if wakeup:
        wake_workers(conn)
    notify_ids(conn, EVENTS_CHANNEL, ids)


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
    # A jobId has few rows: one scan of its index. Otherwise one branch per status, each
    # walking its own index in order (every status when a type is given, for the type's
    # index); no status filter at all walks (created_at, id).
    if where.job_id is not None or (where.type is None and not statuses):
        branches = 0
    else:
        branches = len(statuses or Status)
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


def retry(conn: Conn, job_id: uuid.UUID, tenant: str | None = None) -> list[Job]:
    """Put every Failed or Canceled result of a job of ``tenant`` (None: any tenant's) back
    to Queued (attempts from 0, error cleared, due now) and wake the workers; returns the
    job's rows afterwards. Another tenant's job is `NotFound`, as an unknown one.

    The same row locks as `cancel`, in the same order: a retry and a cancel of one job
    run one after the other, never interleaved.
    """
    params = {"job_id": job_id, "tenant": tenant}
    locked = conn.execute(CANCEL_LOCK_SQL, params).fetchall()
    if not locked:
        raise NotFound(f"job {job_id} does not exist")
    if conn.execute(RETRY_SQL, params).fetchall():
        wake_workers(conn)
    return get_job(conn, job_id, tenant)


# --- worker side ------------------------------------------------------------------


def claim(
    conn: Conn, worker_id: str, limit: int, ring: TenantRing | None = None
) -> tuple[list[Job], float | None]:
    """Claim up to ``limit`` due rows, round-robin across tenants from ``ring``'s place
    (moved on past the tenants served; None: from the first tenant), and lock each;
    also returns the seconds until the next not-yet-due row (None when there is none)
    when fewer than ``limit`` were due."""
    params = {
        "limit": limit,
        "tenants": limit + CLAIM_SLACK,
        "after": "" if ring is None else ring.after,
        "worker_id": worker_id,
    }
    # In the claim's order: each tenant's first row, then each one's second, ...
    turns = lambda r: (r["ring_rank"], r["ring_lap"], r["ring_pos"])  # noqa: E731
    rows = sorted(conn.execute(CLAIM_SQL, params), key=turns)
    if rows and ring is not None:
        ring.after = max(rows, key=lambda r: (r["ring_lap"], r["ring_pos"]))["tenant"]
    jobs = [Job.from_row(row) for row in rows]
    next_due = None
    if len(jobs) < limit:
        due = conn.execute(NEXT_DUE_SQL).fetchone()
        if due is not None and due["seconds"] is not None:
            next_due = max(0.0, float(due["seconds"]))
    return jobs, next_due


def finish(
    conn: Conn, worker_id: str, outcomes: Sequence[Outcome], policy: RetryPolicy = DEFAULT_POLICY
) -> list[Job]:
    """Record many attempts' outcomes, as ``policy`` decides, and release their locks.

    Rows no longer Processing for ``worker_id`` (rescued meanwhile) are left alone.
    Unlocking inside the transaction is safe: the row locks taken by the read are
    held until commit, so a rescuer cannot see the row before its new status.
    """
    by_id = {o.id: o for o in outcomes}
    rows = conn.execute(FINISH_LOCK_SQL, {"ids": list(by_id), "worker_id": worker_id})
    jobs = write_decisions(conn, [policy.decide(Job.from_row(r), by_id[r["id"]]) for r in rows])
    conn.execute(UNLOCK_SQL, {"ids": list(by_id)})
    return jobs


def write_decisions(conn: Conn, decisions: Sequence[Decision]) -> list[Job]:
    """Write the policy's decisions in one statement; wake the workers if any row is Queued."""
    if not decisions:
        return []
    params = {
        "ids": [d.id for d in decisions],
        "statuses": [d.status.value for d in decisions],
        "errors": [d.error for d in decisions],
        "attempts": [d.attempts for d in decisions],
        "delays": [d.delay if d.status is Status.QUEUED else None for d in decisions],
        "finals": [d.status.finished for d in decisions],
    }
    jobs = [Job.from_row(r) for r in conn.execute(WRITE_DECISIONS_SQL, params)]
    if any(j.status is Status.QUEUED for j in jobs):
        wake_workers(conn)
    return jobs


def cancel_requested(conn: Conn, ids: Sequence[int]) -> list[int]:
    """Which of these Processing rows have a pending cancel request (reconciliation)."""
    return [r["id"] for r in conn.execute(CANCEL_REQUESTED_SQL, {"ids": list(ids)})]


def rescue(conn: Conn, policy: RetryPolicy = DEFAULT_POLICY) -> list[Job]:
    """Move Processing rows whose owner is gone on, as ``policy.lost`` decides (Queued after
    a backoff, or Failed when attempts are spent, or Canceled when a cancel was requested)."""
    rows = conn.execute(RESCUE_LOCK_SQL).fetchall()
    return write_decisions(conn, [policy.lost(Job.from_row(r)) for r in rows])


# --- operations -------------------------------------------------------------------


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


# --- data lifecycle ---------------------------------------------------------------


def clean_batch(
    conn: Conn,
    older_than: float,
    *,
    statuses: Sequence[str] = FINISHED,
    limit: int = CLEAN_BATCH,
    wait: bool = False,
) -> int | None:
    """Delete up to ``limit`` finished rows whose ``finished_at`` is more than ``older_than``
    seconds ago, oldest first, under `CLEAN_LOCK`; returns how many. With ``wait=False``
    (the cleaner) returns None at once when another cleaner or purge holds the lock."""
    unknown = set(statuses) - set(FINISHED)
    if unknown:
        raise ValueError(f"only finished rows are deleted, not {', '.join(sorted(unknown))}")
    if wait:
        conn.execute(CLEAN_WAIT_LOCK_SQL, CLEAN_LOCK)
    else:
        row = conn.execute(CLEAN_TRY_LOCK_SQL, CLEAN_LOCK).fetchone()
        if row is None or not row["ok"]:
            return None
    params = {"older_than": older_than, "statuses": list(statuses), "limit": limit}
    return conn.execute(CLEAN_SQL, params).rowcount


def compact_counts(conn: Conn) -> bool:
    """Fold the counter deltas into one row per status, under `CLEAN_LOCK` (skipped,
    returning False, when someone else holds it)."""
    row = conn.execute(CLEAN_TRY_LOCK_SQL, CLEAN_LOCK).fetchone()
    if row is None or not row["ok"]:
        return False
    conn.execute(COMPACT_COUNTS_SQL)
    return True
