"""`jobsvc dev`'s log: one line per transition (enqueued, claimed, finished) at INFO, and
with ``JOBSVC_ACCESS_LOG=true`` one line per request, its path without the query string."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.fixtures.images import ImageServer
from tests.fixtures.processes import JobsvcProcess, service_env
from tests.integration.test_client_cli import listening_url, wait_for


def test_each_transition_is_a_line_and_the_access_log_is_one_switch_away(
    database_url: str, image_server: ImageServer, spawn: Callable[..., JobsvcProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, f"file://{tmp_path / 'results'}", JOBSVC_ACCESS_LOG="true")
    dev = spawn("dev", "--port", "0", "--data-dir", str(tmp_path / "dev"), env=env)
    url = listening_url(dev)
    job_id = str(uuid.uuid4())
    body = {"jobId": job_id, "type": "ingest", "imgUrl": image_server.url("/img/logs-dev.png")}
    assert httpx.post(f"{url}/results/enqueue", json=body, timeout=10).status_code == 202
    secret = "X-Amz-Signature=s3cr3t"
    assert httpx.get(f"{url}/results/list?jobId={job_id}&{secret}", timeout=5).status_code == 200

    def transitions() -> list[str] | None:
        lines = [line for line in dev.output().splitlines() if f"job {job_id}/logs-dev.png" in line]
        return lines if any(" Completed " in line for line in lines) else None

    lines = wait_for(transitions, 20, "the Completed line")
    statuses = [re.search(r" (Queued|Processing|Completed) attempt=", line) for line in lines]
    assert [m.group(1) for m in statuses if m] == ["Queued", "Processing", "Completed"], lines
    assert all(" INFO " in line for line in lines), lines

    # The server writes a request's line once the response is sent: wait for it.
    wait_for(lambda: '"GET /results/list" 200' in dev.output(), 10, "the list request's line")
    log = dev.output()
    assert re.search(r'"POST /results/enqueue" 202 \d+\.\d+s', log), log
    assert "s3cr3t" not in log and job_id + "&" not in log  # no query string


def test_the_access_log_is_off_by_default(
    database_url: str, spawn: Callable[..., JobsvcProcess], tmp_path: Path
) -> None:
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    api = spawn("api", "--port", "0", env=env)
    url = listening_url(api)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    assert "/healthz" not in api.output()
