"""/metrics of real processes, as an operator scrapes them: `jobsvc dev` (the API and a
worker sharing one registry) and `jobsvc worker --metrics-port`. (The in-process API's
and worker's metrics: tests/integration/test_metrics.py.)"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import httpx

import jobsvc
from tests.fixtures.images import ImageServer
from tests.fixtures.processes import Spawn, listening_url, service_env
from tests.helpers import Sample, connect, enqueue_body, metric_samples, until_sync


def scrape_url(url: str) -> dict[Sample, float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    return metric_samples(response.text)


def completed(url: str, job_id: str) -> bool:
    views = httpx.get(f"{url}/results/{job_id}", timeout=5).json()
    return bool(views) and all(v["status"] == "Completed" for v in views)


def test_jobsvc_dev_metrics_show_the_worker_counters_too(
    database_url: str, image_server: ImageServer, spawn: Spawn, tmp_path: Path
) -> None:
    """`jobsvc dev` runs the API and a worker in one process with one registry: its /metrics
    counts the claim, the outcome, the duration and the bytes, not only the enqueue."""
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    dev = spawn("dev", "--port", "0", "--data-dir", str(tmp_path / "dev"), env=env)
    url = listening_url(dev)
    job_id = str(uuid.uuid4())
    body = enqueue_body(image_server.url("/img/metrics-dev.png"), job_id)
    assert httpx.post(f"{url}/results/enqueue", json=body, timeout=10).status_code == 202
    until_sync(lambda: completed(url, job_id), timeout=20, what="the job to complete")
    assert httpx.post(f"{url}/results/{job_id}/cancel", timeout=5).status_code == 200

    def counted() -> dict[Sample, float] | None:
        # The API answers Completed when the row is; the counters follow the finish batch.
        seen = scrape_url(f"{url}/metrics")
        return seen if seen.get(("jobsvc_finished_total", (("status", "Completed"),))) == 1 else None

    seen = until_sync(counted, timeout=10, what="finished_total to count the job")
    assert seen[("jobsvc_enqueued_total", ())] == 1
    assert seen[("jobsvc_claims_total", ())] == 1
    assert seen[("jobsvc_retries_total", ())] == 0
    assert seen[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 1
    assert seen[("jobsvc_fetch_bytes_total", ())] > 0
    assert seen[("jobsvc_cancel_requests_total", ())] == 1
    assert seen[("jobsvc_jobs", (("status", "Completed"),))] == 1


def test_jobsvc_worker_serves_its_metrics_on_the_metrics_port(
    database_url: str, image_server: ImageServer, spawn: Spawn, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a free port (released for the worker to bind)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    worker = spawn("worker", "--metrics-port", str(port), env=env)
    until_sync(lambda: "metrics on http://" in worker.output(), timeout=20, what="the worker's metrics line")
    with connect(database_url) as conn:
        jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url=image_server.url("/img/metrics-worker.png"))

    def counted() -> dict[Sample, float] | None:
        seen = scrape_url(f"http://127.0.0.1:{port}/metrics")
        return seen if seen.get(("jobsvc_finished_total", (("status", "Completed"),))) == 1 else None

    seen = until_sync(counted, timeout=20, what="the worker's finished_total")
    assert seen[("jobsvc_claims_total", ())] == 1
    assert seen[("jobsvc_job_duration_seconds_count", (("status", "Completed"),))] == 1
