"""Fair share across tenants (DESIGN §8): behind a deep backlog of one tenant, another
tenant's new job starts within a second, in a real `jobsvc worker` process on real
PostgreSQL. (The claim statement's round-robin: tests/integration/test_fairshare.py.)"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jobsvc
from jobsvc.model import Status
from tests.fixtures.processes import Spawn, service_env
from tests.helpers import connect, until, wait_status

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.system.fairshare_handlers"
BACKLOG = 5000


def queue_backlog(url: str, tenant: str, n: int, type: str) -> None:
    """``n`` Queued results of ``tenant``, all due, written in one statement."""
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO jobsvc_results (job_id, result_file, type, img_url, tenant)"
            " SELECT gen_random_uuid(), 'a.png', %s, 'https://example.invalid/a.png', %s"
            " FROM generate_series(1, %s)",
            (type, tenant, n),
        )
        conn.execute("ANALYZE jobsvc_results")


def queued_of(url: str, tenant: str) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM jobsvc_results WHERE tenant = %s AND status = 'Queued'", (tenant,)
        ).fetchone()
        assert row is not None
        return int(row["n"])


async def test_another_tenants_job_starts_within_a_second_behind_a_deep_backlog(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    queue_backlog(database_url, "tenant-a", BACKLOG, "slow")
    env = service_env(
        database_url, f"file://{tmp_path / 'results'}", PYTHONPATH=str(ROOT), JOBSVC_CONCURRENCY="4"
    )
    spawn("worker", "--handler", f"slow={HANDLERS}:slow", "--handler", f"quick={HANDLERS}:quick", env=env)
    # the worker is up and busy with tenant A's backlog
    await until(
        lambda: queued_of(database_url, "tenant-a") <= BACKLOG - 8,
        timeout=30,
        what="the worker to take tenant A's first jobs",
        thread=True,
    )

    with connect(database_url) as conn, conn.transaction():
        url = "https://example.invalid/b.png"
        job_b = jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url=url, type="quick", tenant="tenant-b")
    enqueued = time.monotonic()
    started = await wait_status(database_url, job_b.id, Status.PROCESSING, Status.COMPLETED, timeout=5)
    waited = time.monotonic() - enqueued

    assert started.tenant == "tenant-b"
    assert waited < 1.0, f"tenant B's job waited {waited:.2f} s behind tenant A's backlog"
    # It jumped the line: nearly all of A's backlog is still queued.
    assert queued_of(database_url, "tenant-a") > BACKLOG - 200
    done = await wait_status(database_url, job_b.id, Status.COMPLETED, timeout=5)
    assert done.status is Status.COMPLETED
