"""A client generated from ``/openapi.json`` by a common generator works.

`openapi-python-client` (pinned in the dev extra) generates a package from the
document a real `jobsvc api` process serves, into the test's tmp dir, with no
warning; the generated package is imported and enqueues, lists, gets and cancels
against that process, and every documented status it meets is parsed into the
generated model (not ``None``, not raw bytes).
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.fixtures.database import PgServer, migrated_database
from tests.fixtures.processes import STARTUP_TIMEOUT, JobsvcProcess, listening_url, ready, service_env
from tests.helpers import until_sync

PACKAGE = "jobsvc_generated_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@dataclass
class Generated:
    url: str
    output: str  # what the generator printed
    package: ModuleType

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def generated(
    pg_server: PgServer, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generated]:
    tmp = tmp_path_factory.mktemp("generated-client")
    with migrated_database(pg_server, template_db, prefix="jobsvc_gen") as database_url:
        env = service_env(database_url, f"file://{tmp / 'results'}", JOBSVC_VERIFY_ON_ENQUEUE="false")
        api = JobsvcProcess(["api", "--port", "0"], env, tmp / "api.log")
        try:
            url = listening_url(api)
            until_sync(lambda: ready(url), timeout=STARTUP_TIMEOUT, what="/readyz")
            document = tmp / "openapi.json"
            document.write_text(httpx.get(f"{url}/openapi.json", timeout=10).text)
            config = tmp / "generator.yaml"
            # No post hooks: formatting the generated code is not what is tested.
            config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
            output = tmp / "out" / PACKAGE
            command = ["generate", "--path", str(document), "--meta", "none", "--config", str(config)]
            done = subprocess.run(
                [str(GENERATOR), *command, "--output-path", str(output)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            sys.path.insert(0, str(tmp / "out"))
            try:
                yield Generated(url, done.stdout + done.stderr, importlib.import_module(PACKAGE))
            finally:
                sys.path.remove(str(tmp / "out"))
                for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
                    del sys.modules[name]
            api.signal(signal.SIGTERM)
            assert api.wait(20) == 0, api.output()
        finally:
            api.stop()


def test_the_generator_has_nothing_to_warn_about(generated: Generated) -> None:
    assert "warning" not in generated.output.lower(), generated.output


def test_generated_client_enqueues_lists_gets_and_cancels(generated: Generated) -> None:
    g = generated
    client = g.package.Client(base_url=g.url, raise_on_unexpected_status=True)
    enqueue, list_results = g.module("api.results.enqueue"), g.module("api.results.list_results")
    get_job, cancel_job = g.module("api.results.get_job"), g.module("api.results.cancel_job")
    models = g.module("models")
    job_id = uuid.uuid4()
    later = int(time.time() * 1000) + 86_400_000  # a day from now: it stays Queued (no worker runs here)
    body = models.EnqueueRequest(
        job_id=str(job_id), type_="ingest", img_url="http://127.0.0.1:9/a/cat.png", run_at=later
    )

    created = enqueue.sync_detailed(client=client, body=body)
    assert created.status_code == 202
    assert isinstance(created.parsed, models.JobView)
    assert created.parsed.job_id == job_id and created.parsed.status == models.Status.QUEUED
    assert created.parsed.result_file == "cat.png" and created.parsed.duration_ms is None
    assert created.headers["Location"] == f"/results/{job_id}"

    again = enqueue.sync_detailed(client=client, body=body)  # an identical retry
    assert again.status_code == 200 and isinstance(again.parsed, models.JobView)

    other = models.EnqueueRequest(job_id=str(job_id), type_="other", img_url="http://127.0.0.1:9/a/cat.png")
    conflict = enqueue.sync_detailed(client=client, body=other)
    assert conflict.status_code == 409 and isinstance(conflict.parsed, models.ErrorBody)
    assert "cat.png" in conflict.parsed.error

    bad = models.EnqueueRequest(job_id="not-a-uuid", type_="ingest", img_url="http://127.0.0.1:9/a.png")
    refused = enqueue.sync_detailed(client=client, body=bad)
    assert refused.status_code == 400 and isinstance(refused.parsed, models.ErrorBody)

    listed = list_results.sync_detailed(client=client, job_id=str(job_id))
    assert listed.status_code == 200
    assert [(v.job_id, v.status) for v in listed.parsed] == [(job_id, models.Status.QUEUED)]
    unchanged = list_results.sync_detailed(
        client=client, job_id=str(job_id), if_none_match=listed.headers["ETag"]
    )
    assert unchanged.status_code == 304 and unchanged.parsed is None  # documented: no body

    views = get_job.sync(job_id=job_id, client=client)  # sync(): the parsed answer itself
    assert [type(v) for v in views] == [models.JobView] and views[0].run_at == later
    missing = get_job.sync_detailed(job_id=uuid.uuid4(), client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)

    canceled = cancel_job.sync(job_id=job_id, client=client)
    assert isinstance(canceled, models.CancelResponse)
    assert canceled.status == models.Status.CANCELED
    assert [(r.result_file, r.status) for r in canceled.results] == [("cat.png", models.Status.CANCELED)]
    gone = cancel_job.sync_detailed(job_id=uuid.uuid4(), client=client)
    assert gone.status_code == 404 and isinstance(gone.parsed, models.ErrorBody)
    after = get_job.sync(job_id=job_id, client=client)
    assert after[0].status == models.Status.CANCELED and after[0].finished_at is not None


def test_generated_client_reads_the_operations_probes(generated: Generated) -> None:
    g = generated
    client = g.package.Client(base_url=g.url, raise_on_unexpected_status=True)
    health = g.module("api.operations.healthz").sync(client=client)
    ready_body = g.module("api.operations.readyz").sync(client=client)
    assert health.status == "ok" and ready_body.status == "ok"
    assert ready_body.checks["database"] == "ok"
