"""End to end through the real image pipeline: a worker (default handler) fetching
from the local image server into file storage and moto's S3, against PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from jobsvc import queue
from jobsvc.config import Settings
from jobsvc.model import Status
from jobsvc.worker import Worker
from tests.helpers import advisory_locks, connect, enqueue, until, wait_status


@pytest.fixture
async def file_worker(database_url: str, tmp_path: Path, nursery: trio.Nursery) -> Path:
    """A worker with the default image pipeline storing under the returned directory."""
    results = tmp_path / "results"
    settings = Settings(
        database_url=database_url,
        storage_url=f"file://{results}",
        allow_private_urls=True,
        rescue_interval=60,
        retry_backoff=0.05,
        worker_id="ingest-worker",
    )
    await nursery.start(Worker(settings).run)
    return results


@pytest.mark.parametrize(
    ("name", "mime_magic"),
    [("a.jpg", b"\xff\xd8\xff"), ("b.png", b"\x89PNG"), ("c.gif", b"GIF8"), ("d.webp", b"RIFF")],
)
async def test_images_complete_and_are_stored_under_the_job(
    file_worker: Path, database_url: str, image_server: Any, name: str, mime_magic: bytes
) -> None:
    job = enqueue(database_url, image_server.url(f"/img/{uuid.uuid4().hex}/{name}"))
    done = await wait_status(database_url, job.id, Status.COMPLETED, Status.FAILED)
    assert done.status is Status.COMPLETED and done.attempts == 1 and done.error is None
    assert (file_worker / str(job.job_id) / name).read_bytes().startswith(mime_magic)


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/mp4/x.png", "not an image"),
        ("/html/x.png", "not an image"),
        ("/404/x.png", "404"),
        ("/oversize/{key}/x.png", "larger than"),
        ("/loop/x.png", "redirect"),
        # A bad Location is the server's fault for good, not an "unexpected error" to retry.
        ("/redirect-to/x.png?to=http%3A%2F%2Fxn--zz.invalid%2Fa.png", "redirects to an invalid URL"),
        ("/redirect-to/x.png?to=http%3A%2F%2F%5B%3A%3A1", "redirects to an invalid URL"),
    ],
)
async def test_permanent_failures_fail_at_once_with_a_reason_and_store_nothing(
    file_worker: Path, database_url: str, image_server: Any, path: str, says: str
) -> None:
    job = enqueue(database_url, image_server.url(path.format(key=uuid.uuid4().hex)))
    failed = await wait_status(database_url, job.id, Status.FAILED, Status.COMPLETED)
    assert failed.status is Status.FAILED and failed.attempts == 1
    assert failed.error is not None and says in failed.error
    assert not (file_worker / str(job.job_id)).exists() or not any((file_worker / str(job.job_id)).iterdir())


async def test_503_twice_then_ok_completes_after_three_attempts(
    file_worker: Path, database_url: str, image_server: Any
) -> None:
    path = f"/flaky/{uuid.uuid4().hex}/x.png"
    job = enqueue(database_url, image_server.url(path))
    done = await wait_status(database_url, job.id, Status.COMPLETED, Status.FAILED)
    assert done.status is Status.COMPLETED and done.attempts == 3
    assert image_server.hits(path) == 3


async def test_cancel_mid_download_closes_the_connection_and_stores_nothing(
    file_worker: Path, database_url: str, image_server: Any
) -> None:
    key = uuid.uuid4().hex
    path = f"/slow/{key}/x.png"
    job = enqueue(database_url, image_server.url(path))
    await wait_status(database_url, job.id, Status.PROCESSING)
    await until(lambda: image_server.hits(path) == 1, thread=True)  # the download is under way
    assert job.id in advisory_locks(database_url)
    with connect(database_url) as conn:
        queue.cancel(conn, job.job_id)
    canceled = await wait_status(database_url, job.id, Status.CANCELED, timeout=5)
    # measured on the database's clock: request committed → Canceled recorded
    assert canceled.cancel_requested_at is not None and canceled.finished_at is not None
    assert (canceled.finished_at - canceled.cancel_requested_at).total_seconds() < 1.0
    assert canceled.error == "canceled on request"
    assert await trio.to_thread.run_sync(image_server.wait_closed, key, 1.0)
    assert job.id not in advisory_locks(database_url)
    assert not (file_worker / str(job.job_id)).exists() or not any((file_worker / str(job.job_id)).iterdir())


async def test_s3_storage_end_to_end(
    database_url: str, image_server: Any, moto_server: Any, s3_bucket: str, nursery: trio.Nursery
) -> None:
    settings = Settings(
        database_url=database_url,
        storage_url=f"s3://{s3_bucket}/results",
        s3_endpoint_url=moto_server.endpoint_url,
        allow_private_urls=True,
        rescue_interval=60,
        worker_id="s3-worker",
    )
    await nursery.start(Worker(settings).run)
    job = enqueue(database_url, image_server.url(f"/img/{uuid.uuid4().hex}/cat.png"))
    await wait_status(database_url, job.id, Status.COMPLETED)
    body = moto_server.client().get_object(Bucket=s3_bucket, Key=f"results/{job.job_id}/cat.png")["Body"]
    assert body.read().startswith(b"\x89PNG")


async def test_worker_metrics_count_downloaded_bytes(
    database_url: str, image_server: Any, tmp_path: Path, nursery: trio.Nursery
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    worker = Worker(
        Settings(
            database_url=database_url,
            storage_url=f"file://{tmp_path}",
            allow_private_urls=True,
            rescue_interval=60,
            worker_id="bytes-worker",
        )
    )
    await nursery.start(worker.run)
    job = enqueue(database_url, image_server.url("/big/50000.png"))
    await wait_status(database_url, job.id, Status.COMPLETED)
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(worker.metrics.render().decode())
        for s in family.samples
    }
    assert values["jobsvc_fetch_bytes_total"] >= 50000
    worker.shutdown()
