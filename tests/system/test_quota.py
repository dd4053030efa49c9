"""The per-tenant quota is kept by the database (DESIGN §8): 50 enqueues at once, spread
over two real `jobsvc api` processes, leave exactly the cap (JOBSVC_TENANT_MAX_QUEUED).
(The quota and the rate limit in-process: tests/integration/test_quota.py.)"""

from __future__ import annotations

from pathlib import Path

import trio

from jobsvc import queue
from tests.fixtures.processes import Spawn, api_env, start_api
from tests.helpers import connect, enqueue_body, unfinished, until

CAP = 20
CONCURRENT = 50
IMAGES = "https://example.invalid"
IMAGE = f"{IMAGES}/a.png"


async def test_fifty_concurrent_enqueues_across_two_api_processes_never_exceed_the_quota(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    env = api_env(database_url, f"file://{tmp_path}", JOBSVC_TENANT_MAX_QUEUED=str(CAP))
    apis = [await start_api(spawn, env), await start_api(spawn, env)]
    statuses: list[int] = []
    retry_after: list[str] = []
    go = trio.Event()
    waiting: list[int] = []

    async def one(i: int) -> None:
        # its own HTTP connection, hence its own request in flight on its API process
        async with apis[i % 2].client() as client:
            waiting.append(i)
            await go.wait()
            response = await client.post("/results/enqueue", json=enqueue_body(f"{IMAGES}/{i}.png"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(response.headers["Retry-After"])
            assert "JOBSVC_TENANT_MAX_QUEUED" in response.json()["error"]

    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENT):
            nursery.start_soon(one, i)
        # every client is open and waiting on the event: then they all post at once
        await until(lambda: len(waiting) == CONCURRENT, timeout=10, what="every client to be waiting")
        go.set()

    assert sorted(statuses) == [202] * CAP + [429] * (CONCURRENT - CAP)
    assert unfinished(database_url) == CAP
    assert all(int(value) >= 1 for value in retry_after)

    # At the cap, an identical retry is still answered (200), a new result is not.
    async with apis[0].client() as client:
        with connect(database_url) as conn:
            first = conn.execute("SELECT job_id, img_url FROM jobsvc_results LIMIT 1").fetchone()
        assert first is not None
        again = enqueue_body(first["img_url"], str(first["job_id"]))
        assert (await client.post("/results/enqueue", json=again)).status_code == 200
        assert (await client.post("/results/enqueue", json=enqueue_body(IMAGE))).status_code == 429
        # Finished results free their slots: cancel one job, and one more fits.
        assert (await client.post(f"/results/{first['job_id']}/cancel")).status_code == 200
        assert (await client.post("/results/enqueue", json=enqueue_body(IMAGE))).status_code == 202
    assert unfinished(database_url) == CAP
    with connect(database_url) as conn:  # the quota's folding of the deltas kept them exact
        assert queue.status_counts(conn) == queue.status_counts_exact(conn)
