"""`jobsvc dev`'s log: one line per transition (enqueued, claimed, finished) at INFO, and
with ``JOBSVC_ACCESS_LOG=true`` one line per request, its path without the query string."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx

from tests.fixtures.images import ImageServer
from tests.fixtures.processes import Spawn, listening_url, service_env
from tests.helpers import enqueue_body, until_sync


def test_each_transition_is_a_line_and_the_access_log_is_one_switch_away(
    database_url: str, image_server: ImageServer, spawn: Spawn, tmp_path: Path
) -> None:
    env = service_env(database_url, f"file://{tmp_path / 'results'}", JOBSVC_ACCESS_LOG="true")
    dev = spawn("dev", "--port", "0", "--data-dir", str(tmp_path / "dev"), env=env)
    url = listening_url(dev)
    job_id = str(uuid.uuid4())
    body = enqueue_body(image_server.url("/img/logs-dev.png"), job_id)
    assert httpx.post(f"{url}/results/enqueue", json=body, timeout=10).status_code == 202
    secret = "X-Amz-Signature=s3cr3t"
    assert httpx.get(f"{url}/results/list?jobId={job_id}&{secret}", timeout=5).status_code == 200

    def transitions() -> list[str] | None:
        lines = [line for line in dev.output().splitlines() if f"job {job_id}/logs-dev.png" in line]
        return lines if any(" Completed " in line for line in lines) else None

    lines = until_sync(transitions, timeout=20, what="the Completed line")
    statuses = [re.search(r" (Queued|Processing|Completed) attempt=", line) for line in lines]
    assert [m.group(1) for m in statuses if m] == ["Queued", "Processing", "Completed"], lines
    assert all(" INFO " in line for line in lines), lines

    # The server writes a request's line once the response is sent: wait for it.
    until_sync(lambda: '"GET /results/list" 200' in dev.output(), timeout=10, what="the list request's line")
    log = dev.output()
    assert re.search(r'"POST /results/enqueue" 202 \d+\.\d+s', log), log
    assert "s3cr3t" not in log and job_id + "&" not in log  # no query string


def test_the_access_log_is_off_by_default(database_url: str, spawn: Spawn, tmp_path: Path) -> None:
    env = service_env(database_url, f"file://{tmp_path / 'results'}")
    api = spawn("api", "--port", "0", env=env)
    url = listening_url(api)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    assert "/healthz" not in api.output()
