"""Rows per status without a table scan: the trigger-maintained deltas in jobsvc_counts
agree with count(*) through every kind of write, rollbacks and compaction included."""

from __future__ import annotations

import uuid

import psycopg

from jobsvc import queue
from jobsvc.model import Status
from jobsvc.retry import Outcome
from tests.helpers import connect, enqueue


def both(url: str) -> tuple[dict[str, int], dict[str, int]]:
    with connect(url) as conn:
        return queue.status_counts(conn), queue.status_counts_exact(conn)


def test_counts_follow_enqueue_claim_finish_cancel_rescue_and_delete(database_url: str) -> None:
    jobs = [enqueue(database_url, f"http://images.test/{i}.png") for i in range(6)]
    with connect(database_url) as worker:
        with worker.transaction():
            claimed, _ = queue.claim(worker, "w", 4)
        with worker.transaction():
            outcomes = [Outcome(claimed[0].id, "completed"), Outcome(claimed[1].id, "failed", "x")]
            queue.finish(worker, "w", outcomes)
    with connect(database_url) as conn:
        queue.cancel(conn, jobs[5].job_id)  # Queued → Canceled
        queue.rescue(conn)  # the worker's session is closed: its two rows go back to Queued
    counted, exact = both(database_url)
    assert counted == exact
    assert exact == {"Queued": 3, "Processing": 0, "Completed": 1, "Failed": 1, "Canceled": 1}
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE jobsvc_results SET finished_at = now() - interval '1 day' WHERE finished_at IS NOT NULL"
        )
        assert queue.clean_batch(conn, 3600) == 3
        assert queue.compact_counts(conn) is True
        assert conn.execute("SELECT count(*) AS n FROM jobsvc_counts").fetchone() == {"n": 1}  # Queued: 3
    assert both(database_url) == ({**exact, "Completed": 0, "Failed": 0, "Canceled": 0},) * 2


def test_a_rolled_back_write_leaves_no_count(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:  # not autocommit: rolled back at the end
        conn.execute(
            "INSERT INTO jobsvc_results (job_id, result_file, type, img_url) VALUES (%s, 'a.png', 't', 'u')",
            (uuid.uuid4(),),
        )
        conn.rollback()
    assert both(database_url) == ({s.value: 0 for s in Status},) * 2
