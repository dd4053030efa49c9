-- jobsvc schema: the single source of truth, applied by `jobsvc migrate`.
--
-- Idempotent: every statement may run again on a migrated database. `jobsvc
-- migrate` runs this whole file in one transaction under a transaction-level
-- advisory lock, so several migrations started at once apply it one at a time.
-- Needs PostgreSQL 15 or newer (CREATE OR REPLACE TRIGGER is 14+).
--
-- Upgrades: this file converges a database of ANY earlier version to the current
-- one, rows kept (tests/fixtures/schema_vN.sql is version N, a starting point of
-- the upgrade tests). Its parts, in order:
--   1. the objects of version 1, as CREATE … IF NOT EXISTS (a fresh database);
--   2. one section per later version N: objects with IF NOT EXISTS / OR REPLACE,
--      and data steps in a DO block guarded by `jobsvc_stored_version() < N`
--      (the version stored before this run: it is written only at the very end);
--   3. the version written, the only place it is stated (queue.SCHEMA_VERSION
--      reads it). `jobsvc migrate` refuses a database newer than the code.
-- To add version N+1: append its section after the last one, bump the number in
-- the final INSERT, and add a test upgrading from the previous fixture.

-- ---------------------------------------------------------------------------
-- Schema version: /readyz is ready only when this matches the code's version.
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS jobsvc_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL
);

-- ---------------------------------------------------------------------------
-- Results: one row per (job, result file). A job is every row with its job_id.
-- ---------------------------------------------------------------------------
-- Statuses:
--   Queued      waiting for a worker; claimable once run_at has passed
--   Processing  claimed by worker_id, which holds the session advisory lock on id
--               for as long as it works on the row (a free lock = a dead owner)
--   Completed   the image was verified and stored at {job_id}/{result_file}
--   Failed      a permanent error, or attempts spent; `error` says why
--   Canceled    canceled by a client, before or during processing
CREATE TABLE IF NOT EXISTS jobsvc_results (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- also the advisory-lock key
    job_id              uuid NOT NULL,
    result_file         text NOT NULL,
    type                text NOT NULL,
    img_url             text NOT NULL,
    status              text NOT NULL DEFAULT 'Queued'
                        CHECK (status IN ('Queued', 'Processing', 'Completed', 'Failed', 'Canceled')),
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    run_at              timestamptz NOT NULL DEFAULT now(),
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
    error               text,
    cancel_requested_at timestamptz,
    worker_id           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    CONSTRAINT jobsvc_results_job_file_key UNIQUE (job_id, result_file)
);

-- (Version 1 also had jobsvc_results_claim_idx, _processing_idx, _status_idx and
-- _created_idx: version 4 drops them, see there. They are not created here, so that
-- a migration run again never builds them only to drop them.)

-- `GET /results/list` runs in (created_at, id) order, either way, keyset-paged; each
-- filter combination walks one of these in order (queries.list_sql says which; the
-- plans on a million rows are in bench/README.md, "List plans"). Since version 4 a
-- list of every status merges one walk per status (as a type's list always did), and
-- the rescuer finds the Processing rows through the first one too.
CREATE INDEX IF NOT EXISTS jobsvc_results_status_created_idx
    ON jobsvc_results (status, created_at, id);
CREATE INDEX IF NOT EXISTS jobsvc_results_type_created_idx
    ON jobsvc_results (type, status, created_at, id);

-- ---------------------------------------------------------------------------
-- Change events: every UPDATE that changes a row's status (or requests its
-- cancellation) announces the row ids on channel jobsvc_events, one NOTIFY per
-- statement (not per row) so batched claims and finishes stay cheap. Inserts are
-- announced by the API's coalescing notifier instead (one NOTIFY per burst).
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION jobsvc_announce_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
BEGIN
    -- A NOTIFY payload holds < 8000 bytes: 400 ids per notification is safe
    -- (queue.IDS_PER_NOTIFY, the same number for the notifications sent from Python).
    FOR chunk IN
        SELECT string_agg(n.id::text, ',')
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE n.status IS DISTINCT FROM o.status
           OR n.cancel_requested_at IS DISTINCT FROM o.cancel_requested_at
        GROUP BY n.id / 400
    LOOP
        PERFORM pg_notify('jobsvc_events', chunk);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobsvc_results_announce
    AFTER UPDATE ON jobsvc_results
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobsvc_announce_changes();

-- The version stored before this migration (0 for a fresh database): data steps
-- of version N run when it is below N. jobsvc_meta is written only at the end.
CREATE OR REPLACE FUNCTION jobsvc_stored_version() RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT coalesce(max(schema_version), 0) FROM jobsvc_meta $$;

-- ===========================================================================
-- Version 2: retention (the cleaner's index) and counts without a table scan.
-- ===========================================================================

-- The cleaner and `jobsvc purge` walk finished rows oldest first: only finished
-- rows are in this index, so a pass reads exactly the rows it deletes.
CREATE INDEX IF NOT EXISTS jobsvc_results_finished_idx
    ON jobsvc_results (finished_at) WHERE status IN ('Completed', 'Failed', 'Canceled');

-- Rows per status, for /metrics and /results/stats without counting the table.
-- Insert-only deltas: each INSERT, UPDATE or DELETE statement on jobsvc_results
-- adds one row per status it changed (statement-level triggers), so concurrent
-- writers never wait on a shared counter row. The count is sum(delta) per status;
-- the cleaner compacts the deltas into one row per status on every pass.
CREATE TABLE IF NOT EXISTS jobsvc_counts (
    status text NOT NULL,
    delta  bigint NOT NULL
);

CREATE OR REPLACE FUNCTION jobsvc_count_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO jobsvc_counts (status, delta)
        SELECT status, count(*) FROM new_rows GROUP BY status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO jobsvc_counts (status, delta)
        SELECT status, -count(*) FROM old_rows GROUP BY status;
    ELSE
        INSERT INTO jobsvc_counts (status, delta)
        SELECT status, sum(d) FROM (
            SELECT n.status, 1 AS d FROM new_rows n JOIN old_rows o USING (id) WHERE n.status <> o.status
            UNION ALL
            SELECT o.status, -1 FROM new_rows n JOIN old_rows o USING (id) WHERE n.status <> o.status
        ) changes
        GROUP BY status;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobsvc_results_count_insert
    AFTER INSERT ON jobsvc_results REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobsvc_count_changes();
CREATE OR REPLACE TRIGGER jobsvc_results_count_update
    AFTER UPDATE ON jobsvc_results REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobsvc_count_changes();
CREATE OR REPLACE TRIGGER jobsvc_results_count_delete
    AFTER DELETE ON jobsvc_results REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobsvc_count_changes();

-- Backfill: count the rows that were there before the triggers. The triggers above
-- took a SHARE ROW EXCLUSIVE lock on jobsvc_results, so no write can slip in
-- between this count and the commit.
DO $$
BEGIN
    IF jobsvc_stored_version() < 2 THEN
        DELETE FROM jobsvc_counts;
        INSERT INTO jobsvc_counts (status, delta)
        SELECT status, count(*) FROM jobsvc_results GROUP BY status;
    END IF;
END
$$;

-- ===========================================================================
-- Version 3: tenants and API keys (README "Security").
-- ===========================================================================

-- Every result belongs to the tenant of the key that enqueued it; rows written
-- before version 3 belong to tenant 'default' (the column default fills them in).
ALTER TABLE jobsvc_results ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';

-- Every client read is filtered by tenant inside the SQL: a tenant's list pages
-- through (tenant, status, created_at, id), one walk per status, the list's keyset
-- order (version 3 also had (tenant, created_at, id): version 4 drops it); reads by
-- job_id go through jobsvc_results_job_file_key and check the tenant on the few rows found.
CREATE INDEX IF NOT EXISTS jobsvc_results_tenant_status_created_idx
    ON jobsvc_results (tenant, status, created_at, id);

-- The fair-share claim (queries.CLAIM_SQL) finds the tenants with due work by a
-- "loose index scan" of this index: one probe per tenant for its earliest run_at,
-- however many rows each tenant has queued. Queued rows only: a table full of
-- finished rows never slows the claim down (STACK-NOTES planner trap).
CREATE INDEX IF NOT EXISTS jobsvc_results_tenant_due_idx
    ON jobsvc_results (tenant, run_at) WHERE status = 'Queued';

-- ... then takes each due tenant's first rows in priority order through this one.
CREATE INDEX IF NOT EXISTS jobsvc_results_tenant_claim_idx
    ON jobsvc_results (tenant, priority DESC, run_at, id) WHERE status = 'Queued';

-- API keys, managed with `jobsvc keys` on the database directly. A token is 256
-- random bits (secrets.token_urlsafe(32)) and only its SHA-256 is stored: a token
-- that random cannot be guessed from its hash, so no slow password hash is needed,
-- and a request is authenticated by one indexed lookup of the hash.
--   scopes        enqueue, read, cancel; admin = all of them, for every tenant
--   last_used_at  written in batches by the API processes (not once per request)
--   revoked_at    a revoked key is refused (within the API's key cache, 5 s)
CREATE TABLE IF NOT EXISTS jobsvc_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    scopes       text[] NOT NULL
                 CHECK (scopes <@ ARRAY['enqueue', 'read', 'cancel', 'admin'] AND cardinality(scopes) > 0),
    label        text,
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT jobsvc_keys_token_hash_key UNIQUE (token_hash)
);

-- The counts gain a tenant dimension, so that /results/stats per tenant stays a
-- sum over a few delta rows. Deltas written before version 3 are tenant 'default',
-- as every row was then.
ALTER TABLE jobsvc_counts ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
-- The quota (JOBSVC_TENANT_MAX_QUEUED) sums one tenant's Queued + Processing deltas
-- through this index.
CREATE INDEX IF NOT EXISTS jobsvc_counts_tenant_idx ON jobsvc_counts (tenant, status);

CREATE OR REPLACE FUNCTION jobsvc_count_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO jobsvc_counts (tenant, status, delta)
        SELECT tenant, status, count(*) FROM new_rows GROUP BY tenant, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO jobsvc_counts (tenant, status, delta)
        SELECT tenant, status, -count(*) FROM old_rows GROUP BY tenant, status;
    ELSE
        INSERT INTO jobsvc_counts (tenant, status, delta)
        SELECT tenant, status, sum(d) FROM (
            SELECT n.tenant, n.status, 1 AS d FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status <> o.status OR n.tenant <> o.tenant
            UNION ALL
            SELECT o.tenant, o.status, -1 FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status <> o.status OR n.tenant <> o.tenant
        ) changes
        GROUP BY tenant, status;
    END IF;
    RETURN NULL;
END
$$;

-- ===========================================================================
-- Version 4: fewer indexes on jobsvc_results (issue 14, round 4).
-- ===========================================================================

-- `status` is in most indexes and in the partial ones' predicates, so no UPDATE of a
-- row is HOT: each of a job's three row versions (enqueue, claim, finish) adds an
-- entry to every index whose predicate it meets. Five of the thirteen had no query
-- left that another index does not serve as well; dropping them cut the database's
-- CPU per job by about 15 % (bench/README.md, "Round 4: the database's cost per job"):
--   _status_idx (status, id)           no query since the list's (created_at, id) order
--   _created_idx (created_at, id)      a list of every status merges the per-status
--   _tenant_created_idx                walks of _status_created_idx (admin) and
--                                      _tenant_status_created_idx (a tenant) in order
--   _claim_idx (priority DESC, …)      no query since the fair-share claim (version 3)
--                                      walks the _tenant_* ones
--   _processing_idx (id), Processing   the rescuer reads status = 'Processing' from the
--                                      front of _status_created_idx
-- Nothing is built: dropping an index takes a brief exclusive lock on the table.
DROP INDEX IF EXISTS jobsvc_results_status_idx;
DROP INDEX IF EXISTS jobsvc_results_created_idx;
DROP INDEX IF EXISTS jobsvc_results_tenant_created_idx;
DROP INDEX IF EXISTS jobsvc_results_claim_idx;
DROP INDEX IF EXISTS jobsvc_results_processing_idx;

-- ===========================================================================
-- Version 5: the quota's lock and count in one call (issue 14, round 5).
-- ===========================================================================

-- The quota (JOBSVC_TENANT_MAX_QUEUED): a tenant's Queued + Processing results, counted
-- under the tenant's quota lock (a transaction-level advisory lock on (lock_space,
-- hashtext(tenant)), held until the caller's transaction ends), so one enqueue of a
-- tenant at a time, in any process, counts and inserts. The count must see every
-- enqueue of the tenant committed before the lock was granted: a plain statement's
-- snapshot is taken when it starts, before it waits for the lock. A VOLATILE function
-- takes a fresh snapshot for each statement it runs (READ COMMITTED), so the count
-- below, run after the lock is granted, sees them, even when this function is called
-- from inside another statement (queries.ENQUEUE_ALONE_SQL: the quota, the insert and
-- the wake-up in one round trip). 0 without a cap (cap <= 0: no lock either).
-- The count also folds the tenant's deltas into one row per status, so the next count
-- reads only the deltas written since; the SELECT sees them as they were before the
-- fold (one snapshot per statement). SKIP LOCKED: deltas a concurrent compaction is
-- folding are counted (they are visible) but left to it.
CREATE OR REPLACE FUNCTION jobsvc_quota_used(lock_space integer, for_tenant text, cap bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    used bigint;
BEGIN
    IF cap <= 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(lock_space, hashtext(for_tenant));
    WITH folded AS (
        DELETE FROM jobsvc_counts
        WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM jobsvc_counts
            WHERE tenant = for_tenant AND status IN ('Queued', 'Processing')
            FOR UPDATE SKIP LOCKED
        ))
        RETURNING status, delta
    ), refolded AS (
        INSERT INTO jobsvc_counts (tenant, status, delta)
        SELECT for_tenant, status, sum(delta) FROM folded GROUP BY status HAVING sum(delta) <> 0
    )
    SELECT coalesce(sum(delta), 0)::bigint INTO used FROM jobsvc_counts
    WHERE tenant = for_tenant AND status IN ('Queued', 'Processing');
    RETURN used;
END
$$;

-- ===========================================================================
-- The schema version, stated here only: queue.SCHEMA_VERSION reads it from this line.
INSERT INTO jobsvc_meta (schema_version) VALUES (5)
ON CONFLICT (singleton) DO UPDATE SET schema_version = EXCLUDED.schema_version;
