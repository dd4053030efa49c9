"""`queue.enqueue_alone`, the single request's write (count, insert and NOTIFYs in one
statement after the quota lock): the same answers as `queue.enqueue`, the wake-up only
for a new row, and the quota exact under concurrent writers on separate connections; and
`queue.enqueue_many`'s binary rows, decoded by position, equal to what a read decodes."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from jobsvc import queue
from jobsvc.errors import Conflict, QuotaExceeded
from jobsvc.queue import NewResult
from tests.helpers import connect, unfinished


def _new(
    tenant: str = "t", *, job_id: uuid.UUID | None = None, name: str = "a.png", url: str = ""
) -> NewResult:
    return NewResult(
        job_id=job_id or uuid.uuid4(),
        result_file=name,
        type="ingest",
        img_url=url or f"https://example.invalid/{name}",
        tenant=tenant,
    )


def _alone(database_url: str, new: NewResult, cap: int, *, announce: bool = True) -> queue.Placed:
    with connect(database_url) as conn, conn.transaction():
        return queue.enqueue_alone(conn, new, cap, announce=announce)


@pytest.mark.parametrize("cap", [0, 3])
def test_enqueue_alone_inserts_and_announces_a_new_row_only(database_url: str, cap: int) -> None:
    with connect(database_url) as listener:
        listener.execute(f"LISTEN {queue.WAKEUP_CHANNEL}")
        listener.execute(f"LISTEN {queue.EVENTS_CHANNEL}")
        new = _new()
        placed = _alone(database_url, new, cap)
        job, created = placed.rows[(new.job_id, new.result_file)]
        assert created and placed.announced and placed.over == []
        assert (job.job_id, job.result_file, job.tenant, job.status.value) == (
            new.job_id,
            "a.png",
            "t",
            "Queued",
        )
        got = {(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=2)}
        assert got == {(queue.WAKEUP_CHANNEL, ""), (queue.EVENTS_CHANNEL, str(job.id))}

        again = _alone(database_url, new, cap)  # an identical retry: the row, no NOTIFY
        assert again.rows[(new.job_id, new.result_file)] == (job, False) and not again.announced
        quiet = _alone(database_url, _new(), cap, announce=False)  # told not to announce
        assert not quiet.announced and all(created for _, created in quiet.rows.values())
        assert list(listener.notifies(timeout=0.2)) == []
    assert unfinished(database_url, "t") == 2


def test_enqueue_alone_answers_as_enqueue_at_the_cap(database_url: str) -> None:
    first, second = _new(name="1.png"), _new(name="2.png")
    assert _alone(database_url, first, 2).rows and _alone(database_url, second, 2).rows
    # Full: a new key is over, an existing key is still answered with its row (200 / 409).
    third = _new(name="3.png")
    assert _alone(database_url, third, 2) == queue.Placed({}, [third])
    placed = _alone(database_url, first, 2)
    assert placed.rows[(first.job_id, "1.png")][1] is False and placed.over == []
    other = _new(job_id=first.job_id, name="1.png", url="https://example.invalid/elsewhere/1.png")
    job, created = _alone(database_url, other, 2).rows[(first.job_id, "1.png")]
    with pytest.raises(Conflict, match="different request"):
        queue.check_identical(job, other)
    # Another tenant's jobId: its row comes back (409, the id is taken), under the cap or not.
    for cap in (0, 2):
        theirs = _new("u", job_id=second.job_id, name="4.png")
        job, created = _alone(database_url, theirs, cap).rows[(second.job_id, "4.png")]
        assert not created and job.tenant == "t"
    # …and a new key of the tenant at its cap with a taken jobId is over the cap, as `enqueue` says.
    taken = _new(job_id=second.job_id, name="5.png")
    assert _alone(database_url, taken, 2).over == [taken]
    with connect(database_url) as conn, conn.transaction(), pytest.raises(QuotaExceeded):
        queue.enqueue(conn, taken, max_queued=2)
    assert unfinished(database_url, "t") == 2


def test_enqueue_alone_keeps_the_quota_exact_under_concurrent_writers(database_url: str) -> None:
    cap, writers, each = 7, 4, 6
    results: list[queue.Placed] = []
    start = threading.Barrier(writers)

    def write() -> None:
        with connect(database_url) as conn:
            start.wait(timeout=10)
            for _ in range(each):
                with conn.transaction():
                    results.append(
                        queue.enqueue_alone(conn, _new(name=f"{uuid.uuid4().hex}.png"), cap, announce=True)
                    )

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(len(p.rows) for p in results) == cap
    assert sum(len(p.over) for p in results) == writers * each - cap
    assert unfinished(database_url, "t") == cap


def test_enqueue_many_decodes_its_binary_rows_as_a_read_does(database_url: str) -> None:
    due = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    news = [
        _new(name="a.png"),
        NewResult(uuid.uuid4(), "b.png", "thumb", "https://example.invalid/b.png", -100, due, 10, "t"),
        NewResult(
            uuid.uuid4(), "ü c.png", "x" * 64, "https://example.invalid/%C3%BC%20c.png", 100, None, 1, "t"
        ),
    ]
    with connect(database_url) as conn, conn.transaction():
        first = queue.enqueue_many(conn, news)
        again = queue.enqueue_many(conn, news)  # existing rows: the second half of the statement
    with connect(database_url) as conn:
        for new in news:
            key = (new.job_id, new.result_file)
            read = queue.get_result(conn, new.job_id, new.result_file)
            assert first[key] == (read, True) and again[key] == (read, False)
    assert first[(news[1].job_id, "b.png")][0].run_at == due
