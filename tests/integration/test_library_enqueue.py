"""`jobsvc.enqueue(conn, …)` inside the caller's own transaction (DESIGN §11): the API's
rules, the wake-up and the event sent on commit only, nothing at all on rollback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import trio

import jobsvc
from jobsvc.config import Settings
from jobsvc.worker import Worker
from tests.helpers import connect, wait_status

CHANNELS = ("jobsvc_wakeup", "jobsvc_events")
SENTINEL = "sentinel"


class Listening:
    """A LISTEN session on the wake-up and events channels. `until_sentinel` sends a
    marker NOTIFY from another session and returns what arrived before it: PostgreSQL
    delivers notifications in commit order, so anything committed earlier is in there."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        for channel in CHANNELS:
            self.conn.execute(f"LISTEN {channel}")

    def until_sentinel(self) -> list[tuple[str, str]]:
        with connect(self.url) as other:
            other.execute("SELECT pg_notify('jobsvc_wakeup', %s)", [SENTINEL])
        seen: list[tuple[str, str]] = []
        for note in self.conn.notifies(timeout=10):
            if note.payload == SENTINEL:
                return seen
            seen.append((note.channel, note.payload))
        pytest.fail(f"the sentinel NOTIFY did not arrive within 10 s; got {seen}")


@pytest.fixture
def listening(database_url: str) -> Iterator[Listening]:
    listener = Listening(database_url)
    yield listener
    listener.conn.close()


def count_rows(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM jobsvc_results").fetchone()
    assert row is not None
    return int(row["n"])


def test_commit_sends_wakeup_and_event_only_at_commit(database_url: str, listening: Listening) -> None:
    job_id = uuid.uuid4()
    with psycopg.connect(database_url) as conn:  # the caller's own: tuple rows, a transaction
        conn.execute("CREATE TABLE orders (id uuid PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (%s)", [job_id])
        job = jobsvc.enqueue(conn, job_id=job_id, img_url="https://img.example/a/b%20c.png?sig=1")
        assert (job.job_id, job.result_file, job.status) == (job_id, "b c.png", jobsvc.Status.QUEUED)
        assert job.type == "ingest" and job.max_attempts == 3 and job.priority == 0
        assert listening.until_sentinel() == []  # nothing before the commit
        assert count_rows(database_url) == 0  # nor visible to anyone else
        conn.commit()
    assert listening.until_sentinel() == [("jobsvc_wakeup", ""), ("jobsvc_events", str(job.id))]
    assert count_rows(database_url) == 1


def test_rollback_leaves_no_row_and_sends_nothing(database_url: str, listening: Listening) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(RuntimeError), conn.transaction():
            jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url="https://img.example/x.png")
            raise RuntimeError("the caller's own work failed")
        assert listening.until_sentinel() == []
    assert count_rows(database_url) == 0


async def test_committed_job_is_completed_by_a_worker(database_url: str, nursery: trio.Nursery) -> None:
    handled: list[jobsvc.Job] = []

    async def handler(job: jobsvc.Job) -> None:
        handled.append(job)

    # A long rescue interval: only the NOTIFY sent on commit can wake this worker.
    settings = Settings(database_url=database_url, rescue_interval=60.0, worker_id="lib-worker")
    await nursery.start(Worker(settings, handlers={"thumbnail": handler}).run)
    with psycopg.connect(database_url) as conn, conn.transaction():
        job = jobsvc.enqueue(
            conn, job_id=str(uuid.uuid4()), img_url="https://img.example/t.png", type="thumbnail", priority=5
        )
    done = await wait_status(database_url, job.id, jobsvc.Status.COMPLETED, jobsvc.Status.FAILED, timeout=5)
    assert done.status is jobsvc.Status.COMPLETED and done.error is None
    assert [(j.id, j.type, j.priority) for j in handled] == [(job.id, "thumbnail", 5)]


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"job_id": "nope"}, "jobId must be a UUID, got 'nope'"),
        ({"job_id": uuid.UUID(int=0)}, "jobId must not be the nil UUID"),
        ({"img_url": "ftp://h.example/a.png"}, "imgUrl must be an absolute http or https URL"),
        ({"img_url": "https://h.example/dir/"}, "the result file name must be a file name"),
        ({"type": ""}, "type is invalid"),
        ({"priority": 101}, "priority is invalid"),
        ({"max_attempts": 0}, "maxAttempts is invalid"),
    ],
)
def test_refused_as_the_api_refuses(database_url: str, fields: dict[str, Any], sentence: str) -> None:
    args: dict[str, Any] = {"job_id": uuid.uuid4(), "img_url": "https://h.example/a.png", **fields}
    with psycopg.connect(database_url) as conn:
        with pytest.raises(jobsvc.InvalidRequest) as refused:
            jobsvc.enqueue(conn, **args)
        assert str(refused.value).startswith(sentence)
        conn.execute("SELECT 1")  # the transaction is still usable
    assert count_rows(database_url) == 0


def test_identical_repeat_returns_the_row_and_different_request_conflicts(
    database_url: str, listening: Listening
) -> None:
    job_id = uuid.uuid4()
    run_at = datetime.now(UTC) + timedelta(hours=1)
    with psycopg.connect(database_url) as conn:
        first = jobsvc.enqueue(conn, job_id=job_id, img_url="https://h.example/a.png", run_at=run_at)
        conn.commit()
        assert abs(first.run_at - run_at) < timedelta(milliseconds=1)
        listening.until_sentinel()
        again = jobsvc.enqueue(conn, job_id=job_id, img_url="https://h.example/a.png")
        assert again.id == first.id
        with pytest.raises(jobsvc.Conflict, match="from a different request"):
            jobsvc.enqueue(conn, job_id=job_id, img_url="https://h.example/a.png", type="other")
        conn.commit()
    assert listening.until_sentinel() == []  # a repeat wakes nobody
    assert count_rows(database_url) == 1


def test_naive_run_at_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, pytest.raises(TypeError, match="aware datetime"):
        jobsvc.enqueue(conn, job_id=uuid.uuid4(), img_url="https://h.example/a.png", run_at=datetime.now())
