"""Every SQL statement that reads or moves a job, as named constants.

Each public function takes an open connection and runs inside the caller's
transaction (`db.Database.run` / `db.Session.run` open one per call), so a unit
of work is one thread hop. Parameters are always bound, never formatted in.

Channels:
- ``jobsvc_wakeup`` (no payload): work may be due; sent on enqueue (coalesced by
  the API), retry and rescue.
- ``jobsvc_cancel`` (comma-separated row ids): cancel requested for Processing rows.
- ``jobsvc_events`` (comma-separated row ids): these rows changed; sent by the
  trigger in schema.sql on UPDATE and by `announce` for inserts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Literal

from jobsvc.db import Conn
from jobsvc.errors import Conflict, NotFound
from jobsvc.model import Job, Status

SCHEMA_VERSION = 1
WAKEUP_CHANNEL = "jobsvc_wakeup"
CANCEL_CHANNEL = "jobsvc_cancel"
EVENTS_CHANNEL = "jobsvc_events"
#: Two-int advisory keys live in a key space apart from the bigint row keys.
MIGRATE_LOCK = (0x6A6F6273, 1)
#: Ids per NOTIFY payload (the payload must stay under 8000 bytes).
IDS_PER_NOTIFY = 400

MIGRATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"
SCHEMA_VERSION_SQL = "SELECT schema_version FROM jobsvc_meta"

ENQUEUE_SQL = """
WITH ins AS (
    INSERT INTO jobsvc_results (job_id, result_file, type, img_url, priority, run_at, max_attempts)
    VALUES (%(job_id)s, %(result_file)s, %(type)s, %(img_url)s, %(priority)s,
            coalesce(%(run_at)s, now()), %(max_attempts)s)
    ON CONFLICT (job_id, result_file) DO NOTHING
    RETURNING *
)
SELECT *, true AS inserted FROM ins
UNION ALL
SELECT *, false AS inserted FROM jobsvc_results
WHERE job_id = %(job_id)s AND result_file = %(result_file)s AND NOT EXISTS (SELECT FROM ins)
"""

# The locking SELECT sits in a CTE: `IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`
# can claim more than n rows. The session advisory lock is taken in RETURNING, in
# the claim's own transaction, so no rescuer ever sees a claimed row unlocked.
CLAIM_SQL = """
WITH picked AS MATERIALIZED (
    SELECT id FROM jobsvc_results
    WHERE status = 'Queued' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobsvc_results r
SET status = 'Processing', attempts = r.attempts + 1, started_at = now(), updated_at = now(),
    worker_id = %(worker_id)s, error = NULL
FROM picked
WHERE r.id = picked.id
RETURNING r.*, pg_advisory_lock(r.id)::text AS locked
"""

NEXT_DUE_SQL = """
SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds
FROM jobsvc_results WHERE status = 'Queued' AND run_at > now()
"""

# The CTE locks the rows (FOR UPDATE returns their latest version) so that a
# cancel committed a moment ago is seen: a retry of a canceled row ends Canceled.
FINISH_SQL = """
WITH u AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(kinds)s::text[], %(errors)s::text[], %(delays)s::float8[])
        AS u(id, kind, error, delay)
), d AS (
    SELECT r.id, u.kind, u.error, u.delay,
        CASE
            WHEN u.kind = 'completed' THEN 'Completed'
            WHEN u.kind = 'failed' THEN 'Failed'
            WHEN u.kind = 'canceled' OR r.cancel_requested_at IS NOT NULL THEN 'Canceled'
            WHEN u.kind = 'retry' AND r.attempts >= r.max_attempts THEN 'Failed'
            ELSE 'Queued'
        END AS status
    FROM jobsvc_results r JOIN u USING (id)
    WHERE r.status = 'Processing' AND r.worker_id = %(worker_id)s
    FOR UPDATE OF r
)
UPDATE jobsvc_results r
SET status = d.status,
    error = CASE
        WHEN d.status = 'Failed' AND d.kind = 'retry'
            THEN d.error || ' (gave up after ' || r.attempts || ' attempts)'
        WHEN d.status = 'Failed' OR (d.status = 'Queued' AND d.kind = 'retry') THEN d.error
        WHEN d.status = 'Canceled' THEN 'canceled on request'
    END,
    attempts = CASE WHEN d.kind = 'requeue' THEN r.attempts - 1 ELSE r.attempts END,
    run_at = CASE WHEN d.status = 'Queued' THEN now() + make_interval(secs => d.delay) ELSE r.run_at END,
    finished_at = CASE WHEN d.status <> 'Queued' THEN now() END,
    worker_id = NULL,
    updated_at = now()
FROM d
WHERE r.id = d.id
RETURNING r.*
"""

UNLOCK_SQL = "SELECT pg_advisory_unlock(id) FROM unnest(%(ids)s::bigint[]) AS id"

# A Processing row whose advisory lock is free has lost its worker: the lock
# belongs to the worker's session, and PostgreSQL frees it when that session ends.
RESCUE_SQL = """
WITH candidates AS MATERIALIZED (
    SELECT id FROM jobsvc_results WHERE status = 'Processing' FOR UPDATE SKIP LOCKED
), orphans AS MATERIALIZED (
    SELECT id FROM candidates WHERE pg_try_advisory_xact_lock(id)
)
UPDATE jobsvc_results r
SET status = CASE
        WHEN r.cancel_requested_at IS NOT NULL THEN 'Canceled'
        WHEN r.attempts >= r.max_attempts THEN 'Failed'
        ELSE 'Queued'
    END,
    error = CASE
        WHEN r.cancel_requested_at IS NOT NULL THEN 'canceled on request'
        ELSE 'the worker running attempt ' || r.attempts || ' was lost (' || coalesce(r.worker_id, '?')
             || ' died or lost its database connection)'
    END,
    finished_at = CASE
        WHEN r.cancel_requested_at IS NOT NULL OR r.attempts >= r.max_attempts THEN now()
    END,
    run_at = now(),
    worker_id = NULL,
    updated_at = now()
FROM orphans
WHERE r.id = orphans.id
RETURNING r.*
"""

CANCEL_LOCK_SQL = "SELECT id FROM jobsvc_results WHERE job_id = %(job_id)s ORDER BY id FOR UPDATE"
CANCEL_QUEUED_SQL = """
UPDATE jobsvc_results
SET status = 'Canceled', cancel_requested_at = now(), finished_at = now(), updated_at = now(),
    error = 'canceled on request'
WHERE job_id = %(job_id)s AND status = 'Queued'
"""
CANCEL_PROCESSING_SQL = """
UPDATE jobsvc_results SET cancel_requested_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status = 'Processing' AND cancel_requested_at IS NULL
RETURNING id
"""
CANCEL_REQUESTED_SQL = """
SELECT id FROM jobsvc_results
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'Processing' AND cancel_requested_at IS NOT NULL
"""

GET_JOB_SQL = "SELECT * FROM jobsvc_results WHERE job_id = %(job_id)s ORDER BY id"
GET_BY_IDS_SQL = "SELECT * FROM jobsvc_results WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id"
GET_RESULT_SQL = "SELECT * FROM jobsvc_results WHERE job_id = %(job_id)s AND result_file = %(result_file)s"
LIST_SQL = """
SELECT * FROM jobsvc_results
WHERE id > %(after)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(job_id)s::uuid IS NULL OR job_id = %(job_id)s::uuid)
ORDER BY id
LIMIT %(limit)s
"""
# Newest first: the keyset runs downwards (``after`` is the last id of the previous page).
LIST_DESC_SQL = """
SELECT * FROM jobsvc_results
WHERE id < %(after)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(job_id)s::uuid IS NULL OR job_id = %(job_id)s::uuid)
ORDER BY id DESC
LIMIT %(limit)s
"""

NOTIFY_SQL = "SELECT pg_notify(%(channel)s, %(payload)s)"

STATS_SQL = """
SELECT status, count(*)::bigint AS n FROM jobsvc_results GROUP BY status
"""
QUEUE_AGE_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS seconds,
       count(*)::bigint AS depth
FROM jobsvc_results WHERE status = 'Queued' AND run_at <= now()
"""


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


OutcomeKind = Literal["completed", "failed", "retry", "canceled", "requeue"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the worker reports it.

    - ``completed``/``failed``/``canceled``: final.
    - ``retry``: a transient error; Queued again after ``delay`` seconds, or Failed
      when attempts are spent (or Canceled if a cancel was requested meanwhile).
    - ``requeue``: the worker gave the job back (shutdown); the attempt is not counted.
    """

    id: int
    kind: OutcomeKind
    error: str | None = None
    delay: float = 0.0


# --- migration --------------------------------------------------------------------


def load_schema() -> str:
    """The text of schema.sql, shipped inside the package."""
    return resources.files("jobsvc").joinpath("schema.sql").read_text(encoding="utf-8")


def migrate(conn: Conn, schema_sql: str) -> None:
    """Apply schema.sql; concurrent callers are serialised by a transaction advisory lock."""
    conn.execute(MIGRATE_LOCK_SQL, MIGRATE_LOCK)
    conn.execute(schema_sql.encode())  # bytes: run as one simple-protocol script


def schema_version(conn: Conn) -> int | None:
    """The migrated schema's version, or None when jobsvc_meta does not exist yet."""
    exists = conn.execute("SELECT to_regclass('jobsvc_meta') IS NOT NULL AS ok").fetchone()
    if not exists or not exists["ok"]:
        return None
    row = conn.execute(SCHEMA_VERSION_SQL).fetchone()
    return None if row is None else int(row["schema_version"])


# --- client side ------------------------------------------------------------------


def enqueue(conn: Conn, new: NewResult) -> tuple[Job, bool]:
    """Insert a result; returns ``(job, created)``.

    An identical request for an existing (jobId, resultFile) returns the existing row
    with ``created=False``; a different one raises `Conflict`.
    """
    params = {
        "job_id": new.job_id,
        "result_file": new.result_file,
        "type": new.type,
        "img_url": new.img_url,
        "priority": new.priority,
        "run_at": new.run_at,
        "max_attempts": new.max_attempts,
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
    if not inserted and (job.type != new.type or job.img_url != new.img_url):
        raise Conflict(f"job {new.job_id} already has result {new.result_file!r} from a different request")
    return job, inserted


def announce(conn: Conn, ids: Sequence[int], wakeup: bool) -> None:
    """One NOTIFY per channel for a burst of new rows (wakes workers, feeds events)."""
    if wakeup:
        conn.execute(NOTIFY_SQL, {"channel": WAKEUP_CHANNEL, "payload": ""})
    for start in range(0, len(ids), IDS_PER_NOTIFY):
        payload = ",".join(str(i) for i in ids[start : start + IDS_PER_NOTIFY])
        conn.execute(NOTIFY_SQL, {"channel": EVENTS_CHANNEL, "payload": payload})


def get_job(conn: Conn, job_id: uuid.UUID) -> list[Job]:
    return [Job.from_row(r) for r in conn.execute(GET_JOB_SQL, {"job_id": job_id})]


def get_result(conn: Conn, job_id: uuid.UUID, result_file: str) -> Job | None:
    row = conn.execute(GET_RESULT_SQL, {"job_id": job_id, "result_file": result_file}).fetchone()
    return None if row is None else Job.from_row(row)


def get_by_ids(conn: Conn, ids: Sequence[int]) -> list[Job]:
    return [Job.from_row(r) for r in conn.execute(GET_BY_IDS_SQL, {"ids": list(ids)})]


def list_jobs(
    conn: Conn,
    *,
    status: Status | None,
    job_id: uuid.UUID | None,
    after: int,
    limit: int,
    order: Literal["asc", "desc"] = "asc",
) -> list[Job]:
    """Results in id order (oldest first; ``order="desc"``: newest first) after the keyset
    cursor ``after`` (0: from the start)."""
    desc = order == "desc"
    params: dict[str, Any] = {
        "after": (after or 2**63 - 1) if desc else after,
        "status": None if status is None else status.value,
        "job_id": job_id,
        "limit": limit,
    }
    return [Job.from_row(r) for r in conn.execute(LIST_DESC_SQL if desc else LIST_SQL, params)]


def cancel(conn: Conn, job_id: uuid.UUID) -> list[Job]:
    """Cancel every unfinished result of a job; returns the job's rows afterwards.

    Queued rows become Canceled at once; Processing rows get a cancel request and
    their owners a NOTIFY. Locking the rows first makes a concurrent claim either
    finish before us (we then see Processing) or wait (we then see Queued).
    """
    locked = conn.execute(CANCEL_LOCK_SQL, {"job_id": job_id}).fetchall()
    if not locked:
        raise NotFound(f"job {job_id} does not exist")
    conn.execute(CANCEL_QUEUED_SQL, {"job_id": job_id})
    requested = [r["id"] for r in conn.execute(CANCEL_PROCESSING_SQL, {"job_id": job_id})]
    for start in range(0, len(requested), IDS_PER_NOTIFY):
        payload = ",".join(str(i) for i in requested[start : start + IDS_PER_NOTIFY])
        conn.execute(NOTIFY_SQL, {"channel": CANCEL_CHANNEL, "payload": payload})
    return get_job(conn, job_id)


# --- worker side ------------------------------------------------------------------


def claim(conn: Conn, worker_id: str, limit: int) -> tuple[list[Job], float | None]:
    """Claim up to ``limit`` due rows and lock each; also returns the seconds until the
    next not-yet-due row (None when there is none) when fewer than ``limit`` were due."""
    rows = conn.execute(CLAIM_SQL, {"limit": limit, "worker_id": worker_id}).fetchall()
    jobs = []
    for row in rows:
        row.pop("locked")
        jobs.append(Job.from_row(row))
    next_due = None
    if len(jobs) < limit:
        due = conn.execute(NEXT_DUE_SQL).fetchone()
        if due is not None and due["seconds"] is not None:
            next_due = max(0.0, float(due["seconds"]))
    return jobs, next_due


def finish(conn: Conn, worker_id: str, outcomes: Sequence[Outcome]) -> list[Job]:
    """Record many attempts' outcomes in one statement and release their locks.

    Unlocking inside the transaction is safe: the row locks taken by the UPDATE are
    held until commit, so a rescuer cannot see the row before its new status.
    """
    params = {
        "worker_id": worker_id,
        "ids": [o.id for o in outcomes],
        "kinds": [o.kind for o in outcomes],
        "errors": [o.error for o in outcomes],
        "delays": [float(o.delay) for o in outcomes],
    }
    jobs = [Job.from_row(r) for r in conn.execute(FINISH_SQL, params)]
    conn.execute(UNLOCK_SQL, {"ids": params["ids"]})
    if any(j.status is Status.QUEUED for j in jobs):
        conn.execute(NOTIFY_SQL, {"channel": WAKEUP_CHANNEL, "payload": ""})
    return jobs


def cancel_requested(conn: Conn, ids: Sequence[int]) -> list[int]:
    """Which of these Processing rows have a pending cancel request (reconciliation)."""
    return [r["id"] for r in conn.execute(CANCEL_REQUESTED_SQL, {"ids": list(ids)})]


def rescue(conn: Conn) -> list[Job]:
    """Move Processing rows whose owner is gone back to Queued (or Canceled / Failed)."""
    jobs = [Job.from_row(r) for r in conn.execute(RESCUE_SQL)]
    if any(j.status is Status.QUEUED for j in jobs):
        conn.execute(NOTIFY_SQL, {"channel": WAKEUP_CHANNEL, "payload": ""})
    return jobs


# --- operations -------------------------------------------------------------------


def status_counts(conn: Conn) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for row in conn.execute(STATS_SQL):
        counts[row["status"]] = int(row["n"])
    return counts


def queue_age(conn: Conn) -> tuple[int, float]:
    """(due Queued rows, seconds the oldest of them has been due)."""
    row = conn.execute(QUEUE_AGE_SQL).fetchone()
    assert row is not None
    return int(row["depth"]), float(row["seconds"])
