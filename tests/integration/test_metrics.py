"""/metrics moves when jobs run: the API's view of the queue and the worker's counters."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

import jobsvc
from jobsvc.config import Settings
from jobsvc.model import Job, Status
from jobsvc.worker import Worker
from tests.fixtures.app import Api
from tests.fixtures.images import ImageServer
from tests.fixtures.processes import JobsvcProcess, service_env
from tests.integration.test_client_cli import listening_url, wait_for
from tests.support import connect, wait_status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(await response.get_data(as_text=True))


async def test_metrics_count_enqueues_and_follow_the_queue(
    api: Api, database_url: str, nursery: trio.Nursery
) -> None:
    before = await scrape(api)
    assert before[("jobsvc_enqueued_total", ())] == 0
    assert before[("jobsvc_queue_depth", ())] == 0

    ids = []
    for name in ("a.png", "b.png"):
        response = await api.client.post(
            "/results/enqueue",
            json={"jobId": str(uuid.uuid4()), "type": "ingest", "imgUrl": f"http://images.test/{name}"},
        )
        assert response.status_code == 202
        ids.append((await response.get_json())["jobId"])
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
    worker_side = samples(worker.metrics.render().decode())
    assert worker_side[("jobsvc_claims_total", ())] == 2
    assert worker_side[("jobsvc_finished_total", (("status", "Completed"),))] == 2
    assert worker_side[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 2
    worker.shutdown()


async def test_metrics_names_are_prefixed(api: Api) -> None:
    names: set[Any] = {name for name, _ in await scrape(api)}
    assert names and all(n.startswith("jobsvc_") for n in names)


# --- real processes: what an operator scrapes ----------------------------------------------


def scrape_url(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    return samples(response.text)


def completed(url: str, job_id: str) -> bool:
    views = httpx.get(f"{url}/results/{job_id}", timeout=5).json()
    return bool(views) and all(v["status"] == "Completed" for v in views)


def test_jobsvc_dev_metrics_show_the_worker_counters_too(
    database_url: str, image_server: ImageServer, spawn: Callable[..., JobsvcProcess], tmp_path: Path
) -> None:
    """`jobsvc dev` runs the API and a worker in one process with one registry: its /metrics
    counts the claim, the outcome, the duration and the bytes, not only the enqueue."""
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    dev = spawn("dev", "--port", "0", "--data-dir", str(tmp_path / "dev"), env=env)
    url = listening_url(dev)
    job_id = str(uuid.uuid4())
    body = {"jobId": job_id, "type": "ingest", "imgUrl": image_server.url("/img/metrics-dev.png")}
    assert httpx.post(f"{url}/results/enqueue", json=body, timeout=10).status_code == 202
    wait_for(lambda: completed(url, job_id), 20, "the job to complete")
    assert httpx.post(f"{url}/results/{job_id}/cancel", timeout=5).status_code == 200

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        # The API answers Completed when the row is; the counters follow the finish batch.
        seen = scrape_url(f"{url}/metrics")
        return seen if seen.get(("jobsvc_finished_total", (("status", "Completed"),))) == 1 else None

    seen = wait_for(counted, 10, "finished_total to count the job")
    assert seen[("jobsvc_enqueued_total", ())] == 1
    assert seen[("jobsvc_claims_total", ())] == 1
    assert seen[("jobsvc_retries_total", ())] == 0
    assert seen[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 1
    assert seen[("jobsvc_fetch_bytes_total", ())] > 0
    assert seen[("jobsvc_cancel_requests_total", ())] == 1
    assert seen[("jobsvc_jobs", (("status", "Completed"),))] == 1


def test_jobsvc_worker_serves_its_metrics_on_the_metrics_port(
    database_url: str, image_server: ImageServer, spawn: Callable[..., JobsvcProcess], tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a free port (released for the worker to bind)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    worker = spawn("worker", "--metrics-port", str(port), env=env)
    wait_for(lambda: "metrics on http://" in worker.output(), 20, "the worker's metrics line")
    with connect(database_url) as conn:
        jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url=image_server.url("/img/metrics-worker.png"))

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        seen = scrape_url(f"http://127.0.0.1:{port}/metrics")
        return seen if seen.get(("jobsvc_finished_total", (("status", "Completed"),))) == 1 else None

    seen = wait_for(counted, 20, "the worker's finished_total")
    assert seen[("jobsvc_claims_total", ())] == 1
    assert seen[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 1
