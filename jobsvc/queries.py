"""Every SQL statement that reads or moves a job, as named constants.

Parameters are always bound (``%(name)s``), never formatted in; the one statement
with a variable shape, the list, is composed from fixed fragments (`list_sql`). The statements
decide nothing about retries: `jobsvc.retry` decides, and `FINISH_LOCK_SQL` /
`RESCUE_LOCK_SQL` read the rows it decides about (under their row locks) and
`WRITE_DECISIONS_SQL` writes what it decided. docs/ARCHITECTURE.md explains why
each statement is shaped the way it is.

Tenancy: every statement a client's request runs takes a ``tenant`` parameter and
filters by it in its WHERE clause, ``(%(tenant)s::text IS NULL OR tenant = …)``: NULL
means every tenant (an ``admin`` key, or ``JOBSVC_AUTH=off``). Another tenant's rows
are never fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from psycopg import sql

MIGRATE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, %s)"
SCHEMA_EXISTS_SQL = "SELECT to_regclass('jobsvc_meta') IS NOT NULL AS ok"
SCHEMA_VERSION_SQL = "SELECT schema_version FROM jobsvc_meta"

# --- client side --------------------------------------------------------------------

ENQUEUE_SQL = """
WITH ins AS (
    INSERT INTO jobsvc_results (job_id, result_file, type, img_url, priority, run_at, max_attempts, tenant)
    SELECT %(job_id)s, %(result_file)s, %(type)s, %(img_url)s, %(priority)s,
           coalesce(%(run_at)s, now()), %(max_attempts)s, %(tenant)s
    -- jobIds are unique across tenants: another tenant's job keeps its id
    WHERE NOT EXISTS (SELECT FROM jobsvc_results WHERE job_id = %(job_id)s AND tenant <> %(tenant)s)
    ON CONFLICT (job_id, result_file) DO NOTHING
    RETURNING *
)
SELECT *, true AS inserted FROM ins
UNION ALL
(SELECT *, false AS inserted FROM jobsvc_results
 WHERE job_id = %(job_id)s AND (result_file = %(result_file)s OR tenant <> %(tenant)s)
   AND NOT EXISTS (SELECT FROM ins)
 ORDER BY tenant <> %(tenant)s DESC
 LIMIT 1)
"""

# A request alone (the API's group of one, queue.enqueue_alone; the library's
# jobsvc.enqueue): the quota, the insert and the wake-up in ONE statement, so one round
# trip, and in autocommit one implicit transaction (no BEGIN or COMMIT round trips).
# `used` calls jobsvc_quota_used (schema.sql, version 5), which takes the tenant's quota
# lock and then counts with a snapshot of its own taken after the lock, so the count sees
# every enqueue of the tenant committed before, though this statement's snapshot is older;
# the lock holds until the transaction ends (the statement's, in autocommit). `ins` reads
# `used` before it inserts, so the lock is taken before the row. Without a cap (cap <= 0)
# there is no lock and no count. The row is inserted only under the cap; an existing row is
# returned as ENQUEUE_SQL returns it. With announce, the new row's NOTIFYs (the workers'
# wake-up, its id on the events channel) are sent by the statement itself, only when a row
# was inserted. Always one row: the quota count beside the row, or beside NULLs when
# nothing was inserted or found (over the cap, or a key committed by a concurrent writer
# after this statement's snapshot: run it again).
ENQUEUE_ALONE_SQL = """
WITH used AS MATERIALIZED (
    SELECT jobsvc_quota_used(%(space)s::integer, %(tenant)s, %(cap)s::bigint) AS n
), ins AS (
    INSERT INTO jobsvc_results (job_id, result_file, type, img_url, priority, run_at, max_attempts, tenant)
    SELECT %(job_id)s, %(result_file)s, %(type)s, %(img_url)s, %(priority)s,
           coalesce(%(run_at)s, now()), %(max_attempts)s, %(tenant)s
    WHERE (%(cap)s <= 0 OR (SELECT n FROM used) < %(cap)s)
      -- jobIds are unique across tenants: another tenant's job keeps its id
      AND NOT EXISTS (SELECT FROM jobsvc_results WHERE job_id = %(job_id)s AND tenant <> %(tenant)s)
    ON CONFLICT (job_id, result_file) DO NOTHING
    RETURNING *
), woke AS (
    SELECT pg_notify(%(wakeup_channel)s, ''), pg_notify(%(events_channel)s, id::text)
    FROM ins WHERE %(announce)s
), found AS (
    SELECT *, true AS inserted, (SELECT count(*) FROM woke) AS announced FROM ins
    UNION ALL
    (SELECT *, false AS inserted, 0::bigint AS announced FROM jobsvc_results
     WHERE job_id = %(job_id)s AND (result_file = %(result_file)s OR tenant <> %(tenant)s)
       AND NOT EXISTS (SELECT FROM ins)
     ORDER BY tenant <> %(tenant)s DESC
     LIMIT 1)
)
SELECT found.*, used.n AS quota_used FROM used LEFT JOIN found ON true
"""

# Batch enqueue: ENQUEUE_SQL for many rows in one statement, inserted in input order
# (so their ids are). The arrays go in binary (%(…)b): dumping 8 arrays of 1,000 values
# as text took 10-16 ms of the API's CPU per 1,000-item batch, binary 3-5 ms (issue 14,
# round 3). Keys are unique in the input (the caller judges in-batch duplicates). Every
# row comes back with ``key_file``, the result file of the input it answers. Rows that
# exist come back with inserted = false: the row at that key, or another tenant's row of
# that jobId (jobIds are unique across tenants: nothing is inserted then). A key in
# neither half was committed by a concurrent writer after this statement's snapshot.
#
# Every lookup is a LATERAL ... LIMIT 1, which PostgreSQL cannot flatten into a join: one
# index probe per input, whatever the table's size and statistics. As a NOT EXISTS, the
# cross-tenant check was planned as a hash anti join over a sequential scan of the whole
# table until it held ~10^5 rows (11 of the statement's 25 ms at 42,000 rows), and a
# lookup that sorts its probe's rows was estimated so dear on fresh statistics that the
# plan crossed jit_above_cost (+10-20 ms of JIT compilation per batch): issue 14, round
# 4, bench/README.md "Round 4: the batch endpoint". A new input costs the cross-tenant
# probe and ON CONFLICT's; only when some input was not inserted are the inputs looked
# up again (``existing``: another tenant's row of the jobId first, else the row at the key).
ENQUEUE_MANY_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(job_ids)b::uuid[], %(result_files)b::text[], %(types)b::text[],
                         %(img_urls)b::text[], %(priorities)b::smallint[], %(run_ats)b::timestamptz[],
                         %(max_attempts)b::int[], %(tenants)b::text[]) WITH ORDINALITY
        AS i(job_id, result_file, type, img_url, priority, run_at, max_attempts, tenant, n)
), ins AS (
    INSERT INTO jobsvc_results (job_id, result_file, type, img_url, priority, run_at, max_attempts, tenant)
    SELECT i.job_id, i.result_file, i.type, i.img_url, i.priority, coalesce(i.run_at, now()), i.max_attempts,
           i.tenant
    FROM input i
    LEFT JOIN LATERAL (
        SELECT r.id FROM jobsvc_results r WHERE r.job_id = i.job_id AND r.tenant <> i.tenant LIMIT 1
    ) other ON true
    WHERE other.id IS NULL
    ORDER BY i.n
    ON CONFLICT (job_id, result_file) DO NOTHING
    RETURNING *
), existing AS MATERIALIZED (
    SELECT CASE WHEN other.id IS NULL THEN mine.row ELSE other.row END AS row, i.result_file AS key_file
    FROM input i
    LEFT JOIN LATERAL (
        SELECT r.id, r AS row FROM jobsvc_results r WHERE r.job_id = i.job_id AND r.tenant <> i.tenant LIMIT 1
    ) other ON true
    LEFT JOIN LATERAL (
        SELECT r.id, r AS row FROM jobsvc_results r
        WHERE r.job_id = i.job_id AND r.result_file = i.result_file LIMIT 1
    ) mine ON true
    -- Evaluated once, before any probe: nothing to look up when every input was inserted.
    -- (A row found here was not inserted: the insert saw it in the same snapshot.)
    WHERE (SELECT count(*) FROM ins) < (SELECT count(*) FROM input)
      AND coalesce(other.id, mine.id) IS NOT NULL
)
SELECT *, true AS inserted, result_file AS key_file FROM ins
UNION ALL
SELECT (row).*, false AS inserted, key_file FROM existing
"""
# Which of these (job_id, result_file) keys exist (a batch probes only the new ones).
EXISTING_KEYS_SQL = """
SELECT r.job_id, r.result_file
FROM jobsvc_results r
JOIN unnest(%(job_ids)s::uuid[], %(result_files)s::text[]) AS k(job_id, result_file)
  ON r.job_id = k.job_id AND r.result_file = k.result_file
"""

# The quota (JOBSVC_TENANT_MAX_QUEUED), `queue.reserve_quota`: jobsvc_quota_used
# (schema.sql, version 5) takes the tenant's quota lock, a transaction-level advisory
# lock on (queue.QUOTA_LOCK_SPACE, hashtext(tenant)) held until the caller's transaction
# ends, then counts the tenant's Queued + Processing results with a snapshot taken after
# the lock (every enqueue of the tenant committed before is counted), in one round trip.
# Two tenants whose names hash alike merely wait for each other.
QUOTA_SQL = "SELECT jobsvc_quota_used(%(space)s::integer, %(tenant)s, %(cap)s::bigint) AS n"

CANCEL_LOCK_SQL = """
SELECT id, tenant, status FROM jobsvc_results
WHERE job_id = %(job_id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
ORDER BY id FOR UPDATE
"""
CANCEL_QUEUED_SQL = """
UPDATE jobsvc_results
SET status = 'Canceled', cancel_requested_at = now(), finished_at = now(), updated_at = now(),
    error = %(error)s
WHERE job_id = %(job_id)s AND status = 'Queued' AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
"""
CANCEL_PROCESSING_SQL = """
UPDATE jobsvc_results SET cancel_requested_at = now(), updated_at = now()
WHERE job_id = %(job_id)s AND status = 'Processing' AND cancel_requested_at IS NULL
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
RETURNING id
"""

# Retry: Failed and Canceled rows start over, as if just enqueued (attempts from 0,
# due now). The caller holds the job's row locks (CANCEL_LOCK_SQL), as cancel does.
RETRY_SQL = """
UPDATE jobsvc_results
SET status = 'Queued', attempts = 0, error = NULL, run_at = now(), updated_at = now(),
    started_at = NULL, finished_at = NULL, cancel_requested_at = NULL, worker_id = NULL
WHERE job_id = %(job_id)s AND status IN ('Failed', 'Canceled')
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
RETURNING id
"""

GET_JOB_SQL = """
SELECT * FROM jobsvc_results
WHERE job_id = %(job_id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
ORDER BY id
"""
GET_BY_IDS_SQL = "SELECT * FROM jobsvc_results WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id"
GET_RESULT_SQL = """
SELECT * FROM jobsvc_results
WHERE job_id = %(job_id)s AND result_file = %(result_file)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
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
# - `picked`: the first %(limit)s candidates not locked by another claim. Each candidate
#   is locked by a LATERAL `FOR UPDATE SKIP LOCKED` probe of the primary key, which
#   re-checks status and run_at on the locked row version; the nested loop walks the
#   candidates in the order their CTE wrote them (rank, lap, pos) and stops at
#   %(limit)s rows locked (an ORDER BY here would sort after the loop: every candidate
#   locked). %(tenants)s exceeds %(limit)s so that concurrent claims, which skip each
#   other's rows, still fill. In a CTE: `IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`
#   can claim more than n rows.
# - `claimed`: the UPDATE of the picked rows, `WHERE id = ANY(ARRAY(…))`: one primary
#   key probe per row. Neither locking step joins another relation into the locked
#   one: a `FOR UPDATE` over a join or an `UPDATE … FROM` makes PostgreSQL carry a
#   whole-row copy of the other side for its EvalPlanQual recheck (~10 % of the
#   backend's CPU per job), and on a small table the planner hashed the whole table
#   for those joins (issue 14, round 5, bench/README.md "Round 5: the worker").
# The session advisory lock is taken in RETURNING, in the claim's own transaction,
# so no rescuer ever sees a claimed row unlocked. The last SELECT adds each row's
# place in the claim's order (`ring_*`) from `picked`, a join outside the UPDATE.
_CLAIM_CTES = """
after_cursor AS (
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
    SELECT c.id, c.rank, c.lap, c.pos
    FROM candidates c CROSS JOIN LATERAL (
        SELECT FROM jobsvc_results p
        WHERE p.id = c.id AND p.status = 'Queued' AND p.run_at <= now()
        FOR UPDATE SKIP LOCKED
    ) l
    LIMIT %(limit)s
), claimed AS (
    UPDATE jobsvc_results r
    SET status = 'Processing', attempts = r.attempts + 1, started_at = now(), updated_at = now(),
        worker_id = %(worker_id)s, error = NULL
    WHERE r.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING r.*, pg_advisory_lock(r.id)::text AS locked
)"""
#: The claimed rows with their place in the claim's order (`ring_*`, for the TenantRing).
_CLAIMED_ROWS = """
SELECT claimed.*, picked.rank AS ring_rank, picked.lap AS ring_lap, picked.pos AS ring_pos
FROM claimed JOIN picked ON picked.id = claimed.id"""
CLAIM_SQL = "\nWITH RECURSIVE " + _CLAIM_CTES.lstrip("\n") + _CLAIMED_ROWS + "\n"

# The worker's whole cycle in ONE statement (issue 14, round 3), when every outcome's
# decision is final whatever the row holds (`RetryPolicy.final`: completed, failed):
# the claim's CTEs as in CLAIM_SQL, plus
# - `finished`: the decisions written to this worker's Processing rows among %(ids)s
#   (rows no longer this worker's, rescued meanwhile, are skipped; attempts and run_at
#   are kept: the attempt is over), and each written row's session advisory lock
#   released in RETURNING: its row lock holds until commit, so no rescuer sees the row
#   unlocked before its new status. The caller passes %(ids)s sorted, and the plan
#   walks them in that order (a nested loop over the unnest), so the rows are locked
#   in id order, as FINISH_LOCK_SQL and a cancel lock them: the two never deadlock.
#   (A locking CTE of its own cost 25-35 % more backend CPU per row.)
# - `claimed`: CLAIM_SQL's UPDATE (one of its CTEs), whose advisory locks are taken in
#   this statement's own transaction.
# Sent on an autocommit connection: one round trip and one commit per cycle, with no
# BEGIN, no locking read and no unlock statement. The two UPDATEs never touch the same
# row: `finished` takes Processing rows, `claimed` Queued ones (in the statement's
# snapshot). Columns: the rows of both, `ring_*` NULL for the finished, and `claimed`.
CYCLE_SQL = (
    "\nWITH RECURSIVE "
    + _CLAIM_CTES.lstrip("\n")
    + """, finished AS (
    UPDATE jobsvc_results r
    SET status = d.status, error = d.error, finished_at = now(), worker_id = NULL, updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(errors)s::text[]) AS d(id, status, error)
    WHERE r.id = d.id AND r.status = 'Processing' AND r.worker_id = %(worker_id)s
    RETURNING r.*, pg_advisory_unlock(r.id)::text AS locked,
        NULL::bigint AS ring_rank, NULL::int AS ring_lap, NULL::int AS ring_pos, false AS claimed
)
SELECT * FROM finished
UNION ALL"""
    + _CLAIMED_ROWS.replace("ring_pos\n", "ring_pos, true AS claimed\n")
    + "\n"
)

# After a short claim: seconds until the next Queued row is due. 0 when a row is due
# already but the claim did not take it: another worker's claim holds it locked and has
# not committed yet (SKIP LOCKED passed it, and it may yet be given back), so claim again
# soon instead of waiting for a wake-up that nobody sends. CASE: the min only when needed.
NEXT_DUE_SQL = """
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM jobsvc_results WHERE status = 'Queued' AND run_at <= now()) THEN 0.0
    ELSE (SELECT extract(epoch FROM min(run_at) - now())::float8
          FROM jobsvc_results WHERE status = 'Queued' AND run_at > now())
END AS seconds
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
FROM jobsvc_results
WHERE status = 'Queued' AND run_at <= now() AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
"""

# --- data lifecycle -----------------------------------------------------------------

# Rows per status from the insert-only deltas that schema.sql's triggers write (a
# few rows once the cleaner has compacted them), instead of counting the table.
COUNTS_SQL = """
SELECT status, sum(delta)::bigint AS n FROM jobsvc_counts
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
GROUP BY status
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

# --- the list -----------------------------------------------------------------------
# Composed from the fixed fragments below, so that each filter combination is its own
# statement with its own plan (a generic `(%s IS NULL OR …)` plan cannot use an index
# for the filters it might skip). Values are always bound parameters.
#
# The order is (created_at, id), the keyset cursor the last row's pair; the indexes in
# schema.sql serve each shape: one branch per status (every status when none is given),
# each walking (status, created_at, id), (tenant, status, created_at, id) with a tenant,
# or (type, status, created_at, id) with a type, merged by a Merge Append: PostgreSQL 15
# cannot walk one index in order across several values of its leading column (and
# schema version 4 dropped the (created_at, id) indexes that served a list of every
# status in one walk). With a jobId, the unique (job_id, result_file) index finds the
# job's few rows and they are sorted.

ListOrder = Literal["asc", "desc"]

_LIST_ORDER = {
    "asc": sql.SQL("ORDER BY created_at, id"),
    "desc": sql.SQL("ORDER BY created_at DESC, id DESC"),
}
_LIST_KEYSET = {
    "asc": sql.SQL("(created_at, id) > (%(after_created)s, %(after_id)s)"),
    "desc": sql.SQL("(created_at, id) < (%(after_created)s, %(after_id)s)"),
}
_LIST_JOB = sql.SQL("job_id = %(job_id)s")
_LIST_TENANT = sql.SQL("tenant = %(tenant)s")
_LIST_STATUSES = sql.SQL("status = ANY(%(statuses)s::text[])")
_LIST_TYPE = sql.SQL("type = %(type)s")
_LIST_CREATED_FROM = sql.SQL("created_at >= %(created_from)s")
_LIST_CREATED_BEFORE = sql.SQL("created_at < %(created_before)s")
_LIST_PAGE = sql.SQL("SELECT * FROM jobsvc_results WHERE {where} {order} LIMIT %(limit)s")
_LIST_MERGE = sql.SQL("SELECT * FROM ({branches}) AS page {order} LIMIT %(limit)s")
#: The bound parameter of the status of branch i (fixed names: at most one per status).
LIST_STATUS_PARAMS = tuple(f"status_{i}" for i in range(5))


def list_sql(
    *,
    order: ListOrder,
    branches: int,
    any_status: bool,
    job_id: bool,
    type: bool,
    created_from: bool,
    created_before: bool,
    after: bool,
    tenant: bool = False,
) -> sql.Composed:
    """The list statement for one combination of filters.

    ``branches`` > 0: one ``status = %(status_i)s`` branch per status, each walking its
    index in order up to the limit, merged (parameters ``status_0`` …). ``any_status``:
    ``status = ANY(%(statuses)s)`` in one scan instead (for a jobId's few rows). The other
    flags add their fragment; parameters: ``tenant``, ``job_id``, ``type``,
    ``created_from`` (inclusive), ``created_before`` (exclusive), ``after_created`` and
    ``after_id`` (the keyset), ``limit``.
    """
    if not 0 <= branches <= len(LIST_STATUS_PARAMS):
        raise ValueError(f"at most {len(LIST_STATUS_PARAMS)} status branches")
    common = [
        fragment
        for wanted, fragment in (
            (tenant, _LIST_TENANT),
            (any_status, _LIST_STATUSES),
            (job_id, _LIST_JOB),
            (type, _LIST_TYPE),
            (created_from, _LIST_CREATED_FROM),
            (created_before, _LIST_CREATED_BEFORE),
            (after, _LIST_KEYSET[order]),
        )
        if wanted
    ]
    if branches == 0:
        return _LIST_PAGE.format(where=_conjunction(common), order=_LIST_ORDER[order])
    parts = [
        sql.SQL("({})").format(
            _LIST_PAGE.format(
                where=_conjunction([sql.SQL("status = {}").format(sql.Placeholder(name)), *common]),
                order=_LIST_ORDER[order],
            )
        )
        for name in LIST_STATUS_PARAMS[:branches]
    ]
    return _LIST_MERGE.format(branches=sql.SQL(" UNION ALL ").join(parts), order=_LIST_ORDER[order])


def _conjunction(fragments: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(fragments) if fragments else sql.SQL("true")


# --- API keys -----------------------------------------------------------------------

CREATE_KEY_SQL = """
INSERT INTO jobsvc_keys (tenant, scopes, label, token_hash)
VALUES (%(tenant)s, %(scopes)s, %(label)s, %(token_hash)s)
RETURNING id, tenant, scopes, label, created_at, last_used_at, revoked_at
"""
#: One indexed lookup (jobsvc_keys_token_hash_key) per token the API has not cached.
KEY_BY_HASH_SQL = """
SELECT id, tenant, scopes, label, created_at, last_used_at, revoked_at
FROM jobsvc_keys WHERE token_hash = %(token_hash)s
"""
LIST_KEYS_SQL = """
SELECT id, tenant, scopes, label, created_at, last_used_at, revoked_at FROM jobsvc_keys ORDER BY id
"""
REVOKE_KEY_SQL = """
UPDATE jobsvc_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %(id)s
RETURNING id, tenant, scopes, label, created_at, last_used_at, revoked_at
"""
#: The API's batched last-used write: one statement for every key used since the last flush.
TOUCH_KEYS_SQL = """
UPDATE jobsvc_keys k SET last_used_at = greatest(k.last_used_at, u.used_at)
FROM unnest(%(ids)s::bigint[], %(used)s::timestamptz[]) AS u(id, used_at)
WHERE k.id = u.id
"""
