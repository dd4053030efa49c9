"""Faults the queue must survive, with real processes (issue: reliability).

S3 unreachable mid-run; every backend connection terminated; PostgreSQL restarted.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from jobsvc.model import Status
from tests.fixtures.processes import Spawn, service_env
from tests.helpers import advisory_locks, enqueue, row, until, wait_status

pytestmark = pytest.mark.slow


async def test_s3_outage_is_transient_and_jobs_complete_when_it_returns(
    spawn: Spawn,
    database_url: str,
    image_server: Any,
    moto_server: Any,
    s3_bucket: str,
    tcp_proxy: Any,
    tmp_path: Path,
) -> None:
    target = urlsplit(moto_server.endpoint_url)
    proxy = tcp_proxy((target.hostname, target.port))
    proxy.start()
    worker = spawn(
        "worker",
        env=service_env(
            database_url,
            f"s3://{s3_bucket}/results",
            JOBSVC_S3_ENDPOINT_URL=proxy.url,
            JOBSVC_MAX_ATTEMPTS="10",
            JOBSVC_RETRY_BACKOFF="0.2",
            JOBSVC_RESCUE_INTERVAL="1",
        ),
    )
    warm = enqueue(database_url, image_server.url("/img/warm.png"))
    await wait_status(database_url, warm.id, Status.COMPLETED, timeout=20)
    proxy.stop()
    # over 8 MiB: uploaded in parts, so an outage must not leave a multipart upload behind
    jobs = [enqueue(database_url, image_server.url(f"/big/{9_000_000 + i}.png")) for i in range(3)]
    # every job fails its upload at least once while the store is away, and is requeued
    await until(lambda: all(row(database_url, j.id).attempts >= 2 for j in jobs), timeout=30, thread=True)
    assert all(row(database_url, j.id).status is not Status.FAILED for j in jobs)
    proxy.start()
    for job in jobs:
        done = await wait_status(database_url, job.id, Status.COMPLETED, Status.FAILED, timeout=60)
        assert done.status is Status.COMPLETED, worker.output()[-3000:]
    s3 = moto_server.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert keys == {f"results/{j.job_id}/{j.result_file}" for j in [warm, *jobs]}
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert advisory_locks(database_url) == set()


async def test_worker_recovers_after_every_backend_is_terminated(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    from tests.helpers import connect

    worker = spawn(
        "worker",
        env=service_env(database_url, f"file://{tmp_path}", JOBSVC_RESCUE_INTERVAL="0.5"),
    )
    key = uuid.uuid4().hex
    path = f"/stall-once/{key}/a.png"
    stalled = enqueue(database_url, image_server.url(path))
    # the first (stalling) request must have reached the server, or the retry would stall
    await until(lambda: image_server.hits(path) == 1, timeout=15, thread=True)
    with connect(database_url) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed["n"] >= 3
    done = await wait_status(database_url, stalled.id, Status.COMPLETED, timeout=20)
    assert done.attempts == 2, worker.output()[-3000:]
    fresh = enqueue(database_url, image_server.url("/img/after.png"))
    await wait_status(database_url, fresh.id, Status.COMPLETED, timeout=10)
    await until(lambda: advisory_locks(database_url) == set(), timeout=10, thread=True)
