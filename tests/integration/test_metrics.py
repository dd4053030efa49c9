"""/metrics moves when jobs run: the API's view of the queue and the worker's counters."""

from __future__ import annotations

from typing import Any

import trio

from jobsvc.config import Settings
from jobsvc.model import Job, Status
from jobsvc.worker import Worker
from tests.fixtures.app import Api
from tests.helpers import Sample, connect, metric_samples, wait_status


async def scrape(api: Api) -> dict[Sample, float]:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return metric_samples(await response.get_data(as_text=True))


async def test_metrics_count_enqueues_and_follow_the_queue(
    api: Api, database_url: str, nursery: trio.Nursery
) -> None:
    before = await scrape(api)
    assert before[("jobsvc_enqueued_total", ())] == 0
    assert before[("jobsvc_queue_depth", ())] == 0

    ids = []
    for name in ("a.png", "b.png"):
        ids.append((await api.enqueue(f"http://images.test/{name}"))["jobId"])
    queued = await scrape(api)
    assert queued[("jobsvc_enqueued_total", ())] == 2
    assert queued[("jobsvc_queue_depth", ())] == 2
    assert queued[("jobsvc_jobs", (("status", "Queued"),))] == 2

    async def noop(job: Job) -> None:
        return None

    worker = Worker(
        Settings(database_url=database_url, rescue_interval=60, worker_id="metrics-worker"),
        default_handler=noop,
    )
    await nursery.start(worker.run)
    with connect(database_url) as conn:
        rows = conn.execute("SELECT id FROM jobsvc_results").fetchall()
    for r in rows:
        await wait_status(database_url, r["id"], Status.COMPLETED)

    after = await scrape(api)
    assert after[("jobsvc_jobs", (("status", "Completed"),))] == 2
    assert after[("jobsvc_queue_depth", ())] == 0
    worker_side = metric_samples(worker.metrics.render().decode())
    assert worker_side[("jobsvc_claims_total", ())] == 2
    assert worker_side[("jobsvc_finished_total", (("status", "Completed"),))] == 2
    assert worker_side[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 2
    worker.shutdown()


async def test_metrics_names_are_prefixed(api: Api) -> None:
    names: set[Any] = {name for name, _ in await scrape(api)}
    assert names and all(n.startswith("jobsvc_") for n in names)
