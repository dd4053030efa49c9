"""A small program using only jobsvc's public API, checked by ``mypy --strict``
(tests/typing/test_public_api_types.py and ``make lint``): if the public names or
their types change, this stops type-checking."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import trio

import jobsvc


async def thumbnail(job: jobsvc.Job) -> None:
    """A handler: ``jobsvc worker --handler thumbnail=example_program:thumbnail``."""
    if not job.img_url.startswith("https://"):
        raise jobsvc.PermanentError(f"{job.result_file}: only https sources")
    if job.attempts < 2:
        raise jobsvc.TransientError("the thumbnailer is warming up")


def submit_in_transaction(database_url: str, order_id: uuid.UUID, img_url: str) -> jobsvc.Job:
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("INSERT INTO orders (id) VALUES (%s)", [order_id])
        job: jobsvc.Job = jobsvc.enqueue(conn, job_id=order_id, img_url=img_url, type="thumbnail")
    assert job.status is jobsvc.Status.QUEUED
    return job


def follow(api_url: str, img_url: str, out: Path) -> int:
    job_id = uuid.uuid4()
    with jobsvc.Client(api_url, token="secret", timeout=10.0) as client:
        enqueued: jobsvc.Enqueued = client.enqueue(job_id, img_url, priority=10)
        view: jobsvc.JobView = enqueued.view
        for change in client.watch(view.job_id):
            print(change.result_file, change.status.value, change.error)
        failed: Iterator[jobsvc.JobView] = client.list(status=["Failed"], limit=100)
        for result in failed:
            retried: jobsvc.CancelResponse = client.retry(result.job_id)
            print(retried.status)
        items: list[jobsvc.BatchItem] = client.enqueue_many(
            [jobsvc.EnqueueRequest(job_id=str(uuid.uuid4()), type="ingest", img_url=img_url)]
        )
        print([item.status for item in items])
        return client.download(job_id, view.result_file, out)


async def follow_async(api_url: str, job_id: uuid.UUID) -> None:
    async with jobsvc.AsyncClient(api_url) as client:
        try:
            [view] = await client.get(job_id)
        except jobsvc.ClientError as exc:
            print(exc.status, exc.error, exc.unavailable)
            return
        async for change in client.watch(job_id):
            print(change.status)
        canceled = await client.cancel(job_id)
        print(canceled.results[0].status, view.result_file)


if __name__ == "__main__":
    trio.run(follow_async, "http://127.0.0.1:8000", uuid.uuid4())
