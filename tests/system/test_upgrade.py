"""Schema upgrades (DESIGN §9): a version-1 (or version-2, or version-3) database with rows
in every status is brought to the current version in place by `jobsvc migrate`, rows kept,
and runs jobs afterwards; until then `/readyz` is 503 and `jobsvc worker` refuses to start.

tests/fixtures/schema_v1.sql is the first shipped schema (`git show c959baa:schema.sql`);
tests/fixtures/schema_v2.sql the one before tenants and keys (version 3);
tests/fixtures/schema_v3.sql the one before the dropped indexes (version 4,
`git show 1878517:jobsvc/schema.sql`); tests/fixtures/schema_v4.sql the one before the
quota's function (version 5, `git show 7d391b5:jobsvc/schema.sql`).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc import db, queue
from jobsvc.config import Settings
from jobsvc.errors import SchemaMismatch
from jobsvc.model import Job, Status
from jobsvc.worker import Worker
from tests.fixtures.app import OpenApi
from tests.fixtures.processes import JobsvcProcess, service_env
from tests.helpers import connect, enqueue, wait_status

FIXTURES = Path(__file__).parent.parent / "fixtures"
V1_SCHEMA = (FIXTURES / "schema_v1.sql").read_text()
V2_SCHEMA = (FIXTURES / "schema_v2.sql").read_text()
V3_SCHEMA = (FIXTURES / "schema_v3.sql").read_text()
V4_SCHEMA = (FIXTURES / "schema_v4.sql").read_text()

# The indexes version 4 drops (no query needs them that another index does not serve).
DROPPED_IN_V4 = {
    "jobsvc_results_status_idx",
    "jobsvc_results_created_idx",
    "jobsvc_results_tenant_created_idx",
    "jobsvc_results_claim_idx",
    "jobsvc_results_processing_idx",
}

# One row per status, written as version-1 code wrote them.
V1_ROWS = """
INSERT INTO jobsvc_results (job_id, result_file, type, img_url, status, attempts, error,
                            worker_id, started_at, finished_at, cancel_requested_at, created_at)
VALUES
  (gen_random_uuid(), 'q.png', 'ingest', 'http://images.test/q.png', 'Queued', 0, NULL,
   NULL, NULL, NULL, NULL, now() - interval '3 days'),
  (gen_random_uuid(), 'p.png', 'ingest', 'http://images.test/p.png', 'Processing', 1, NULL,
   'gone-worker', now() - interval '1 hour', NULL, NULL, now() - interval '2 hours'),
  (gen_random_uuid(), 'c.png', 'ingest', 'http://images.test/c.png', 'Completed', 1, NULL,
   NULL, now() - interval '10 days', now() - interval '10 days', NULL, now() - interval '10 days'),
  (gen_random_uuid(), 'f.png', 'ingest', 'http://images.test/f.png', 'Failed', 3, 'HTTP 404',
   NULL, now() - interval '1 day', now() - interval '1 day', NULL, now() - interval '1 day'),
  (gen_random_uuid(), 'x.png', 'ingest', 'http://images.test/x.png', 'Canceled', 0, 'canceled',
   NULL, NULL, now() - interval '5 minutes', now() - interval '5 minutes', now() - interval '6 minutes')
"""


def make_v1(url: str, schema: str = V1_SCHEMA) -> list[dict[str, Any]]:
    """Apply an old schema (version 1 unless given) and the rows version-1 code wrote;
    returns the rows as stored."""
    with connect(url) as conn:
        conn.execute(schema.encode())
        conn.execute(V1_ROWS)
        return conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()


def rows_after_upgrade(url: str) -> list[dict[str, Any]]:
    """The rows after the upgrade, as the old code knew them: each belongs to tenant
    ``default`` (version 3), which is checked and taken out."""
    with connect(url) as conn:
        after = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
    assert {r.pop("tenant") for r in after} == {"default"}
    return after


def exact_and_counted(url: str) -> tuple[dict[str, int], dict[str, int]]:
    with connect(url) as conn:
        return queue.status_counts_exact(conn), queue.status_counts(conn)


async def run_process(spawn: Any, *args: str, env: dict[str, str]) -> JobsvcProcess:
    proc: JobsvcProcess = spawn(*args, env=env)
    await trio.to_thread.run_sync(proc.wait, 60)
    return proc


async def test_v1_database_is_refused_then_upgraded_in_place_and_runs_jobs(
    empty_database_url: str, open_api: OpenApi, spawn: Any, tmp_path: Path, nursery: trio.Nursery
) -> None:
    url = empty_database_url
    before = make_v1(url)
    assert {r["status"] for r in before} == {s.value for s in Status}
    env = service_env(url, f"file://{tmp_path}")

    # Behind: the API is not ready and the worker does not start, each saying why.
    async with open_api(database_url=url) as api:
        response = await api.client.get("/readyz")
        assert response.status_code == 503
        doc = await response.get_json()
        expected = f"schema is version 1, older than this jobsvc's version {queue.SCHEMA_VERSION}: run"
        assert expected in doc["error"]
    refused = await run_process(spawn, "worker", env=env)
    assert refused.popen.returncode == 2
    assert "worker not started: the database's schema is version 1, older" in refused.output()

    migrated = await run_process(spawn, "migrate", env=env)
    assert migrated.popen.returncode == 0, migrated.output()
    assert f"version {queue.SCHEMA_VERSION}" in migrated.output()

    with connect(url) as conn:
        assert queue.schema_version(conn) == queue.SCHEMA_VERSION
    assert rows_after_upgrade(url) == before  # every row, every column, as it was
    exact, counted = exact_and_counted(url)
    assert counted == exact == {s.value: 1 for s in Status}  # the counters were backfilled

    again = await run_process(spawn, "migrate", env=env)  # idempotent: nothing counted twice
    assert again.popen.returncode == 0, again.output()
    assert exact_and_counted(url)[1] == exact

    async with open_api(database_url=url) as api:
        assert (await api.client.get("/readyz")).status_code == 200

    # A job enqueued on the upgraded database is completed; the v1 Processing row (its
    # worker long gone) is rescued and run as well. (Retention off: nothing is deleted.)
    ran: list[str] = []

    async def noop(job: Job) -> None:
        ran.append(job.result_file)

    worker = Worker(
        Settings(database_url=url, rescue_interval=0.2, retry_backoff=0, retention=0, worker_id="upgraded"),
        default_handler=noop,
    )
    await nursery.start(worker.run)
    job = enqueue(url, "http://images.test/new.png")
    done = await wait_status(url, job.id, Status.COMPLETED, Status.FAILED)
    assert done.status is Status.COMPLETED and done.finished_at is not None
    processing = next(r["id"] for r in before if r["status"] == "Processing")
    assert (await wait_status(url, processing, Status.COMPLETED, Status.FAILED)).status is Status.COMPLETED
    worker.shutdown()
    exact, counted = exact_and_counted(url)
    assert counted == exact and exact["Completed"] == 4 and exact["Queued"] == 0


async def test_a_database_newer_than_the_code_is_refused_everywhere(
    database_url: str, open_api: OpenApi, spawn: Any, tmp_path: Path
) -> None:
    with connect(database_url) as conn:
        conn.execute("UPDATE jobsvc_meta SET schema_version = %s", (queue.SCHEMA_VERSION + 1,))
    with db.connect(database_url) as conn, pytest.raises(SchemaMismatch, match="newer than this jobsvc"):
        queue.migrate(conn, queue.load_schema())  # would otherwise write this version over a newer one
    with connect(database_url) as conn:
        assert queue.schema_version(conn) == queue.SCHEMA_VERSION + 1

    env = service_env(database_url, f"file://{tmp_path}")
    migrate = await run_process(spawn, "migrate", env=env)
    assert migrate.popen.returncode == 2 and "upgrade jobsvc" in migrate.output()
    refused = await run_process(spawn, "worker", env=env)
    assert refused.popen.returncode == 2
    assert f"newer than this jobsvc's version {queue.SCHEMA_VERSION}" in refused.output()
    async with open_api(database_url=database_url) as api:
        response = await api.client.get("/readyz")
        assert response.status_code == 503
        assert "upgrade jobsvc" in (await response.get_json())["error"]


def test_v2_database_gets_tenants_with_its_counts_kept(empty_database_url: str) -> None:
    url = empty_database_url
    with connect(url) as conn:
        conn.execute(V2_SCHEMA.encode())
        conn.execute(V1_ROWS)  # counted by version 2's triggers
        before = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
    with db.connect(url) as conn:
        queue.migrate(conn, queue.load_schema())
        queue.migrate(conn, queue.load_schema())  # idempotent
    with connect(url) as conn:
        assert queue.schema_version(conn) == queue.SCHEMA_VERSION
        after = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
        assert after == [{**r, "tenant": "default"} for r in before]
        # The deltas written before are `default`'s, as the rows: the quota counts them.
        assert queue.reserve_quota(conn, "default", 5, max_queued=3) == 1  # Queued + Processing = 2
        assert queue.reserve_quota(conn, "other", 5, max_queued=3) == 3
    exact, counted = exact_and_counted(url)
    assert counted == exact == {s.value: 1 for s in Status}


def test_the_declared_version_is_the_one_stated_in_schema_sql() -> None:
    text = queue.load_schema()
    assert text.count("INSERT INTO jobsvc_meta") == 1
    assert f"VALUES ({queue.SCHEMA_VERSION})" in text


async def test_v2_database_is_upgraded_to_tenants_and_keys_rows_kept(
    empty_database_url: str, spawn: Any, tmp_path: Path
) -> None:
    url = empty_database_url
    before = make_v1(url, V2_SCHEMA)  # version-2 code wrote the same rows
    with connect(url) as conn:
        assert queue.schema_version(conn) == 2
        conn.execute(
            "INSERT INTO jobsvc_results (job_id, result_file, type, img_url) "
            "VALUES (gen_random_uuid(), 'late.png', 'ingest', 'http://images.test/late.png')"
        )
        before = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
    env = service_env(url, f"file://{tmp_path}")
    migrated = await run_process(spawn, "migrate", env=env)
    assert migrated.popen.returncode == 0, migrated.output()
    assert rows_after_upgrade(url) == before
    exact, counted = exact_and_counted(url)
    assert counted == exact and exact["Queued"] == 2
    with connect(url) as conn:
        # The version-2 deltas are tenant default's, as every row was; new ones carry their tenant.
        per_tenant = conn.execute("SELECT DISTINCT tenant FROM jobsvc_counts").fetchall()
        assert per_tenant == [{"tenant": "default"}]
        assert queue.status_counts(conn, "default") == exact
        queue.enqueue(
            conn,
            queue.NewResult(
                job_id=uuid.uuid4(),
                result_file="t.png",
                type="ingest",
                img_url="http://images.test/t.png",
                tenant="acme",
            ),
        )
        assert queue.status_counts(conn, "acme")["Queued"] == 1
        assert queue.status_counts(conn, "default") == exact
        assert conn.execute("SELECT count(*) AS n FROM jobsvc_keys").fetchone() == {"n": 0}


def result_indexes(url: str) -> set[str]:
    with connect(url) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobsvc_results'").fetchall()
    return {r["indexname"] for r in rows}


def test_v3_database_loses_the_unneeded_indexes_rows_and_counts_kept(
    empty_database_url: str, database_url: str
) -> None:
    url = empty_database_url
    with connect(url) as conn:
        conn.execute(V3_SCHEMA.encode())
        conn.execute(V1_ROWS)  # version-3 code wrote the same rows (tenant default) ...
        conn.execute(  # ... and a row of another tenant
            "INSERT INTO jobsvc_results (job_id, result_file, type, img_url, tenant) "
            "VALUES (gen_random_uuid(), 'acme.png', 'ingest', 'http://images.test/acme.png', 'acme')"
        )
        assert queue.schema_version(conn) == 3
        before = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
    assert result_indexes(url) >= DROPPED_IN_V4

    with db.connect(url) as conn:
        queue.migrate(conn, queue.load_schema())
        queue.migrate(conn, queue.load_schema())  # idempotent: nothing built, nothing counted twice
    # The upgraded database has exactly the indexes of a database created at version 4.
    assert result_indexes(url) == result_indexes(database_url)
    assert not DROPPED_IN_V4 & result_indexes(url)
    with connect(url) as conn:
        assert queue.schema_version(conn) == queue.SCHEMA_VERSION
        assert conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall() == before
        assert queue.status_counts(conn) == queue.status_counts_exact(conn)
        assert queue.status_counts(conn, "acme")["Queued"] == 1

        # What the dropped indexes served still works on the upgraded rows: the list of
        # every status (in (created_at, id) order, for all tenants and for one) ...
        by_created = sorted(before, key=lambda r: (r["created_at"], r["id"]))
        listed = queue.list_jobs(conn, queue.ListFilter(), after=None, limit=100)
        assert [j.id for j in listed] == [r["id"] for r in by_created]
        mine = queue.list_jobs(conn, queue.ListFilter(tenant="default", order="desc"), after=None, limit=100)
        assert [j.id for j in mine] == [r["id"] for r in by_created if r["tenant"] == "default"][::-1]
        # ... the rescuer (the version-3 Processing row has no live owner) ...
        with conn.transaction():
            rescued = queue.rescue(conn)
        processing = next(r["id"] for r in before if r["status"] == "Processing")
        assert [j.id for j in rescued] == [processing] and rescued[0].status is Status.QUEUED
        # ... and the claim, across both tenants.
        with conn.transaction():
            claimed, _ = queue.claim(conn, "upgraded", 10)
        assert {j.tenant for j in claimed} == {"default", "acme"}
        conn.execute("SELECT pg_advisory_unlock_all()")
        assert queue.status_counts(conn) == queue.status_counts_exact(conn)


def test_v4_database_gets_the_quota_function_and_counts_as_before(empty_database_url: str) -> None:
    url = empty_database_url
    with connect(url) as conn:
        conn.execute(V4_SCHEMA.encode())
        conn.execute(V1_ROWS)  # version-4 code wrote the same rows (tenant default)
        assert queue.schema_version(conn) == 4
        before = conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall()
    with db.connect(url) as conn:
        queue.migrate(conn, queue.load_schema())
        queue.migrate(conn, queue.load_schema())  # idempotent
    with connect(url) as conn:
        assert queue.schema_version(conn) == queue.SCHEMA_VERSION == 5
        assert conn.execute("SELECT * FROM jobsvc_results ORDER BY id").fetchall() == before
        # The quota counts the version-4 rows (one Queued, one Processing) through the new
        # function, and a request alone is written under it in one statement.
        with conn.transaction():
            assert queue.reserve_quota(conn, "default", 5, max_queued=3) == 1
        new = queue.NewResult(
            job_id=uuid.uuid4(), result_file="a.png", type="ingest", img_url="http://x.test/a.png"
        )
        with conn.transaction():
            placed = queue.enqueue_alone(conn, new, 3, announce=False)
        assert placed.rows[(new.job_id, "a.png")][1] is True
        with conn.transaction():
            placed = queue.enqueue_alone(
                conn,
                queue.NewResult(uuid.uuid4(), "b.png", "ingest", "http://x.test/b.png"),
                3,
                announce=False,
            )
        assert placed.rows == {} and len(placed.over) == 1  # 3 of 3 used
        assert queue.status_counts(conn) == queue.status_counts_exact(conn)
