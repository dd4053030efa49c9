"""Every SQL statement that reads or moves a job, as named constants.

Parameters are always bound (``%(name)s``), never formatted in. The statements
decide nothing about retries: `jobsvc.retry` decides, and `FINISH_LOCK_SQL` /
`RESCUE_LOCK_SQL` read the rows it decides about (under their row locks) and
`WRITE_DECISIONS_SQL` writes what it decided. docs/ARCHITECTURE.md explains why
each statement is shaped the way it is.
"""

from __future__ import annotations

MIGRATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"
SCHEMA_EXISTS_SQL = "SELECT to_regclass('jobsvc_meta') IS NOT NULL AS ok"
SCHEMA_VERSION_SQL = "SELECT schema_version FROM jobsvc_meta"

# --- client side --------------------------------------------------------------------

ENQUEUE_SQL = """
WITH ins AS (
    INSERT INTO jobsvc_results (job_id, result_file, type, img_url, priority, run_at, max_attempts, tenant)
    VALUES (%(job_id)s, %(result_file)s, %(type)s, %(img_url)s, %(priority)s,
            coalesce(%(run_at)s, now()), %(max_attempts)s, %(tenant)s)
    ON CONFLICT (job_id, result_file) DO NOTHING
    RETURNING *
)
SELECT *, true AS inserted FROM ins
UNION ALL
SELECT *, false AS inserted FROM jobsvc_results
WHERE job_id = %(job_id)s AND result_file = %(result_file)s AND NOT EXISTS (SELECT FROM ins)
"""

# The quota (JOBSVC_TENANT_MAX_QUEUED): one enqueue of a tenant at a time, across
# every API process, holds this transaction-level lock on a two-int key (queue.QUOTA_LOCK_SPACE,
# hashtext(tenant)) from its count to its commit; the count is a separate statement
# so that its snapshot is taken after the lock, and sees every enqueue committed
# before. Two tenants whose names hash alike merely wait for each other.
QUOTA_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(space)s, hashtext(%(tenant)s))"
# A tenant's Queued + Processing results, from the counter deltas (jobsvc_counts_tenant_idx),
# which it also folds into one row per status: so the next count of the tenant reads
# only the deltas written since, not every one since the cleaner's last compaction.
# The SELECT sees the deltas as they were before the fold (one snapshot for the whole
# statement). SKIP LOCKED: rows a concurrent compaction is folding are counted (they
# are visible) but left to it; it, in turn, never sees the row inserted here.
QUOTA_USED_SQL = """
WITH folded AS (
    DELETE FROM jobsvc_counts
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM jobsvc_counts
        WHERE tenant = %(tenant)s AND status IN ('Queued', 'Processing')
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING status, delta
), refolded AS (
    INSERT INTO jobsvc_counts (tenant, status, delta)
    SELECT %(tenant)s, status, sum(delta) FROM folded GROUP BY status HAVING sum(delta) <> 0
)
SELECT coalesce(sum(delta), 0)::bigint AS n FROM jobsvc_counts
WHERE tenant = %(tenant)s AND status IN ('Queued', 'Processing')
"""

CANCEL_LOCK_SQL = "SELECT id FROM jobsvc_results WHERE job_id = %(job_id)s ORDER BY id FOR UPDATE"
CANCEL_QUEUED_SQL = """
UPDATE jobsvc_results
SET status = 'Canceled', cancel_requested_at = now(), finished_at = now(), updated_at = now(),
    error = %(error)s
WHERE job_id = %(job_id)s AND status = 'Queued'
"""
CANCEL_PROCESSING_SQL = """
UPDATE jobsvc_results SET cancel_requested_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status = 'Processing' AND cancel_requested_at IS NULL
RETURNING id
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

# --- worker side --------------------------------------------------------------------

# Fair share (DESIGN §8): due work is taken round-robin across tenants, priority
# ordering each tenant's own rows. docs/ARCHITECTURE.md, "The SQL statements", explains
# the shape; in short:
# - `after_cursor` / `from_start`: the tenants with Queued rows, in name order starting
#   after the worker's ring cursor %(after)s and wrapping around: a recursive "loose
#   index scan" of jobsvc_results_tenant_due_idx, one probe per tenant that yields
#   its earliest run_at. It is evaluated lazily: `due` stops it after %(tenants)s
#   tenants with due work, so a claim costs O(its size), not O(tenants).
# - `candidates`: each due tenant's first rows in priority order (a LATERAL on
#   jobsvc_results_tenant_claim_idx): its first row when there are enough tenants
#   to fill the claim, else up to %(tenants)s rows; ranked within the tenant, then
#   ordered by rank and ring position (one row of each tenant, then a second of
#   each, ...).
# - `picked`: the first %(limit)s candidates not locked by another claim. The
#   locking SELECT sits in a CTE (`IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`
#   can claim more than n rows); it re-checks status and run_at on the locked row
#   version; %(tenants)s exceeds %(limit)s so that concurrent claims, which skip each
#   other's rows, still fill.
# The session advisory lock is taken in RETURNING, in the claim's own transaction,
# so no rescuer ever sees a claimed row unlocked.
CLAIM_SQL = """
WITH RECURSIVE after_cursor AS (
    (SELECT tenant, run_at, 1 AS pos FROM jobsvc_results
     WHERE status = 'Queued' AND tenant > %(after)s
     ORDER BY tenant, run_at LIMIT 1)
    UNION ALL
    SELECT n.tenant, n.run_at, t.pos + 1 FROM after_cursor t CROSS JOIN LATERAL (
        SELECT q.tenant, q.run_at FROM jobsvc_results q
        WHERE q.status = 'Queued' AND q.tenant > t.tenant
        ORDER BY q.tenant, q.run_at LIMIT 1
    ) n
), from_start AS (
    (SELECT tenant, run_at, 1 AS pos FROM jobsvc_results
     WHERE status = 'Queued' AND tenant <= %(after)s
     ORDER BY tenant, run_at LIMIT 1)
    UNION ALL
    SELECT n.tenant, n.run_at, t.pos + 1 FROM from_start t CROSS JOIN LATERAL (
        SELECT q.tenant, q.run_at FROM jobsvc_results q
        WHERE q.status = 'Queued' AND q.tenant > t.tenant AND q.tenant <= %(after)s
        ORDER BY q.tenant, q.run_at LIMIT 1
    ) n
), due AS MATERIALIZED (
    SELECT tenant, 0 AS lap, pos FROM after_cursor WHERE run_at <= now()
    UNION ALL
    SELECT tenant, 1 AS lap, pos FROM from_start WHERE run_at <= now()
    LIMIT %(tenants)s
), depth AS MATERIALIZED (
    SELECT CASE WHEN count(*) >= %(tenants)s THEN 1 ELSE %(tenants)s END AS k FROM due
), candidates AS MATERIALIZED (
    SELECT c.id, c.rank, due.lap, due.pos
    FROM due CROSS JOIN depth CROSS JOIN LATERAL (
        SELECT q.id, row_number() OVER (ORDER BY q.priority DESC, q.run_at, q.id) AS rank
        FROM jobsvc_results q
        WHERE q.tenant = due.tenant AND q.status = 'Queued' AND q.run_at <= now()
        ORDER BY q.priority DESC, q.run_at, q.id
        LIMIT depth.k
    ) c
    ORDER BY c.rank, due.lap, due.pos
    LIMIT %(tenants)s
), picked AS MATERIALIZED (
    SELECT p.id, c.rank, c.lap, c.pos
    FROM jobsvc_results p JOIN candidates c ON c.id = p.id
    WHERE p.status = 'Queued' AND p.run_at <= now()
    ORDER BY c.rank, c.lap, c.pos
    LIMIT %(limit)s
    FOR UPDATE OF p SKIP LOCKED
)
UPDATE jobsvc_results r
SET status = 'Processing', attempts = r.attempts + 1, started_at = now(), updated_at = now(),
    worker_id = %(worker_id)s, error = NULL
FROM picked
WHERE r.id = picked.id
RETURNING r.*, picked.rank AS ring_rank, picked.lap AS ring_lap, picked.pos AS ring_pos,
    pg_advisory_lock(r.id)::text AS locked
"""

NEXT_DUE_SQL = """
SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds
FROM jobsvc_results WHERE status = 'Queued' AND run_at > now()
"""

# FOR UPDATE returns each row's latest committed version and holds it until commit:
# a cancel committed a moment ago is seen by the policy, and nothing changes the row
# between this read and WRITE_DECISIONS_SQL. Id order: the same lock order as cancel.
FINISH_LOCK_SQL = """
SELECT * FROM jobsvc_results
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'Processing' AND worker_id = %(worker_id)s
ORDER BY id
FOR UPDATE
"""

# A Processing row whose advisory lock is free has lost its worker: the lock
# belongs to the worker's session, and PostgreSQL frees it when that session ends.
# The transaction-level try-lock is held until commit, so a second rescuer (or a
# reconnecting owner) cannot take the row between this read and the write.
RESCUE_LOCK_SQL = """
WITH candidates AS MATERIALIZED (
    SELECT id FROM jobsvc_results WHERE status = 'Processing' FOR UPDATE SKIP LOCKED
), orphans AS MATERIALIZED (
    SELECT id FROM candidates WHERE pg_try_advisory_xact_lock(id)
)
SELECT r.* FROM jobsvc_results r JOIN orphans USING (id) ORDER BY r.id
"""

# Writes the retry policy's decisions, one statement for a whole batch (so the
# change-events trigger sends one NOTIFY per batch). A NULL delay keeps run_at.
WRITE_DECISIONS_SQL = """
UPDATE jobsvc_results r
SET status = d.status,
    error = d.error,
    attempts = d.attempts,
    run_at = coalesce(now() + make_interval(secs => d.delay), r.run_at),
    finished_at = CASE WHEN d.final THEN now() END,
    worker_id = NULL,
    updated_at = now()
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(errors)s::text[], %(attempts)s::int[],
            %(delays)s::float8[], %(finals)s::bool[]) AS d(id, status, error, attempts, delay, final)
WHERE r.id = d.id
RETURNING r.*
"""

#: The worker's health check of its idle session (a killed session fails it).
PING_SQL = "SELECT 1"

UNLOCK_SQL = "SELECT pg_advisory_unlock(id) FROM unnest(%(ids)s::bigint[]) AS id"

CANCEL_REQUESTED_SQL = """
SELECT id FROM jobsvc_results
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'Processing' AND cancel_requested_at IS NOT NULL
"""

# --- operations ---------------------------------------------------------------------

STATS_SQL = """
SELECT status, count(*)::bigint AS n FROM jobsvc_results GROUP BY status
"""
QUEUE_AGE_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS seconds,
       count(*)::bigint AS depth
FROM jobsvc_results WHERE status = 'Queued' AND run_at <= now()
"""

# --- data lifecycle -----------------------------------------------------------------

# Rows per status from the insert-only deltas that schema.sql's triggers write (a
# few rows once the cleaner has compacted them), instead of counting the table.
COUNTS_SQL = """
SELECT status, sum(delta)::bigint AS n FROM jobsvc_counts GROUP BY status
"""
# Folds the deltas into one row per (tenant, status). Deltas committed while this
# runs are not in its snapshot: they are neither deleted nor counted twice.
COMPACT_COUNTS_SQL = """
WITH folded AS (DELETE FROM jobsvc_counts RETURNING tenant, status, delta)
INSERT INTO jobsvc_counts (tenant, status, delta)
SELECT tenant, status, sum(delta) FROM folded GROUP BY tenant, status HAVING sum(delta) <> 0
"""

#: One cleaner (or purge) at a time: a transaction-level advisory lock on a two-int
#: key (queue.CLEAN_LOCK), a key space apart from the bigint row-id locks.
CLEAN_TRY_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(%s, %s) AS ok"
CLEAN_WAIT_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"

# One batch of finished rows older than ``older_than`` seconds, oldest first, through
# jobsvc_results_finished_idx (the status list must imply the index's predicate).
# SKIP LOCKED: a row someone is changing right now waits for the next pass.
CLEAN_SQL = """
WITH doomed AS MATERIALIZED (
    SELECT id FROM jobsvc_results
    WHERE status IN ('Completed', 'Failed', 'Canceled')
      AND status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobsvc_results r USING doomed WHERE r.id = doomed.id
"""
