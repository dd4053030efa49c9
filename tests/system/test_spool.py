"""Spool directories of real `jobsvc worker` processes (issue 5).

A SIGKILLed worker cannot remove its partial download; the next worker to start
on the same spool base removes the dead worker's directory, and never a live
worker's.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from jobsvc.model import Status
from tests.fixtures.processes import JobsvcProcess, Spawn, service_env
from tests.helpers import enqueue, row, until, wait_status

pytestmark = pytest.mark.slow


def worker(spawn: Spawn, database_url: str, tmp_path: Path, name: str) -> JobsvcProcess:
    return spawn(
        "worker",
        env=service_env(
            database_url,
            f"file://{tmp_path / 'results'}",
            JOBSVC_WORKER_ID=name,
            JOBSVC_RESCUE_INTERVAL="0.5",
            JOBSVC_CONCURRENCY="1",  # one download each: the second job goes to the second worker
            JOBSVC_SPOOL_DIR=str(tmp_path / "spool"),
        ),
    )


def spool_of(base: Path, proc: JobsvcProcess) -> Path | None:
    found = sorted(base.glob(f"jobsvc-spool-{proc.pid}-*"))
    assert len(found) <= 1, found
    return found[0] if found else None


def downloads_in(spool: Path) -> list[Path]:
    return sorted(spool.glob("jobsvc-*.download"))


async def test_a_killed_workers_partial_download_is_swept_and_a_live_workers_is_kept(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    base = tmp_path / "spool"
    # Endless the first time (a PNG the second), past the 256 KiB a download keeps in
    # memory: the partial body is in a spool file, as any large download's is.
    stall = f"/stall-once-spooled/{uuid.uuid4().hex}/a.png"
    slow = f"/slow-spooled/{uuid.uuid4().hex}/c.png"  # endless, spooled
    doomed = worker(spawn, database_url, tmp_path, "worker-a")
    job_a = enqueue(database_url, image_server.url(stall))
    await until(lambda: row(database_url, job_a.id).worker_id == "worker-a", timeout=15, thread=True)
    await until(lambda: image_server.hits(stall) == 1, thread=True)
    alive = worker(spawn, database_url, tmp_path, "worker-c")
    job_c = enqueue(database_url, image_server.url(slow))
    await until(lambda: row(database_url, job_c.id).worker_id == "worker-c", timeout=15, thread=True)
    await until(lambda: image_server.hits(slow) == 1, thread=True)

    # Both downloads are spooled, each in its worker's own directory.
    dead_spool = await until(lambda: spool_of(base, doomed), timeout=10, thread=True)
    live_spool = await until(lambda: spool_of(base, alive), timeout=10, thread=True)
    await until(lambda: downloads_in(dead_spool), timeout=10, thread=True)
    live_files = await until(lambda: downloads_in(live_spool), timeout=10, thread=True)

    doomed.kill()
    assert downloads_in(dead_spool), "SIGKILL gives no cleanup a chance: the partial file is still there"

    newcomer = worker(spawn, database_url, tmp_path, "worker-b")
    # The newcomer's own spool exists only once its start-up sweep is done.
    await until(lambda: spool_of(base, newcomer), timeout=15, thread=True)
    assert not dead_spool.exists(), newcomer.output()
    assert live_spool.is_dir() and downloads_in(live_spool) == live_files, newcomer.output()

    # The dead worker's job is rescued and completed by the newcomer (or the live one).
    done = await wait_status(database_url, job_a.id, Status.COMPLETED, Status.FAILED, timeout=20)
    assert (done.status, done.attempts) == (Status.COMPLETED, 2)
    assert row(database_url, job_c.id).worker_id == "worker-c"  # still downloading, untouched
    assert live_spool.is_dir()
