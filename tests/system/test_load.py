"""Load through real processes (issue 3, "Load"): one `jobsvc api`, worker processes,
1,000 jobs enqueued over HTTP by 32 concurrent clients, each job its own image path.

- Undisturbed: every job Completed, each image fetched exactly once, no advisory
  lock left, no row in Processing.
- Workers SIGKILLed and replaced during the run: every job still Completed, and an
  image fetched more than once is always explained by recorded attempts
  (``hits <= attempts``).
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.fixtures.processes import ApiProcess, JobsvcProcess, Spawn, api_env, start_api, start_worker
from tests.helpers import advisory_locks, connect, enqueue_body, statuses, until

pytestmark = pytest.mark.slow


JOBS = 1_000
CLIENTS = 32
DEADLINE = 120.0


async def enqueue_all(api: ApiProcess, image_server: Any) -> list[str]:
    """Enqueue `JOBS` jobs from `CLIENTS` concurrent clients (one connection each); returns the ids."""
    job_ids = [str(uuid.uuid4()) for _ in range(JOBS)]

    async def client_task(share: list[str]) -> None:
        limits = httpx.Limits(max_connections=1)
        async with api.client(limits=limits, timeout=30.0) as client:
            for job_id in share:
                body = enqueue_body(image_server.url(f"/img/{job_id}.png"), job_id)
                response = await client.post("/results/enqueue", json=body)
                assert response.status_code == 202, response.text

    async with trio.open_nursery() as nursery:
        for i in range(CLIENTS):
            nursery.start_soon(client_task, job_ids[i::CLIENTS])
    return job_ids


def rows(url: str) -> list[dict[str, Any]]:
    with connect(url) as conn:
        return conn.execute("SELECT job_id::text AS job_id, status, attempts FROM jobsvc_results").fetchall()


def all_completed(url: str) -> bool:
    return statuses(url)["Completed"] == JOBS


async def test_thousand_jobs_by_32_clients_on_two_workers_each_fetched_once(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    storage = f"file://{tmp_path / 'results'}"
    api = await start_api(spawn, api_env(database_url, storage))
    workers = [
        start_worker(spawn, database_url, storage, f"worker-{i}", JOBSVC_CONCURRENCY="16") for i in range(2)
    ]
    start = trio.current_time()
    job_ids = await enqueue_all(api, image_server)
    enqueued = trio.current_time() - start
    await until(lambda: all_completed(database_url), timeout=DEADLINE, interval=0.2, thread=True)
    elapsed = trio.current_time() - start
    print(f"\nload: {JOBS} jobs enqueued in {enqueued:.1f}s, all Completed in {elapsed:.1f}s")

    found = rows(database_url)
    assert len(found) == JOBS and {r["status"] for r in found} == {"Completed"}
    assert {r["attempts"] for r in found} == {1}, [w.output()[-2000:] for w in workers]
    assert {image_server.hits(f"/img/{j}.png") for j in job_ids} == {1}
    assert advisory_locks(database_url) == set()
    assert statuses(database_url)["Processing"] == 0
    assert all(w.popen.poll() is None for w in workers)


async def test_thousand_jobs_with_workers_killed_at_random_all_complete(
    spawn: Spawn, database_url: str, image_server: Any, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"\nkill schedule seed {seed}")
    storage = f"file://{tmp_path / 'results'}"
    # maxAttempts 10: a job caught by several kills in a row must not run out of attempts
    api = await start_api(spawn, api_env(database_url, storage, JOBSVC_MAX_ATTEMPTS="10"))
    started = 0

    def new_worker() -> JobsvcProcess:
        nonlocal started
        started += 1
        return start_worker(spawn, database_url, storage, f"worker-{started}", JOBSVC_CONCURRENCY="16")

    live = [new_worker(), new_worker()]
    # Kill when this many more jobs are done since the last kill: spread over the run.
    gaps = [rng.randrange(100, 250) for _ in range(3)]
    kills: list[tuple[int, int]] = []  # (completed when killed, processing when killed)

    async def killer() -> None:
        done = 0
        for gap in gaps:
            target = done + gap
            await until(
                lambda t=target: statuses(database_url)["Completed"] >= t, timeout=DEADLINE, thread=True
            )
            victim = live.pop(rng.randrange(len(live)))
            counts = statuses(database_url)
            victim.kill()
            kills.append((counts["Completed"], counts["Processing"]))
            done = counts["Completed"]
            live.append(new_worker())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(killer)
        job_ids = await enqueue_all(api, image_server)
    await until(lambda: all_completed(database_url), timeout=DEADLINE, interval=0.2, thread=True)
    elapsed = trio.current_time() - start
    print(f"load with kills at {kills} (completed, processing): all {JOBS} Completed in {elapsed:.1f}s")

    assert len(kills) == 3
    found = rows(database_url)
    assert len(found) == JOBS and {r["status"] for r in found} == {"Completed"}
    hits = {j: image_server.hits(f"/img/{j}.png") for j in job_ids}
    unexplained = [
        (r["job_id"], hits[r["job_id"]], r["attempts"]) for r in found if hits[r["job_id"]] > r["attempts"]
    ]
    assert unexplained == []
    assert all(h >= 1 for h in hits.values())
    refetched = sum(1 for h in hits.values() if h > 1)
    print(f"{refetched} images fetched more than once, each with as many recorded attempts")
    assert advisory_locks(database_url) == set()
    assert statuses(database_url)["Processing"] == 0
