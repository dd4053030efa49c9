"""`queue.enqueue_many`, the batch's one statement per tenant: what it inserts and what it
answers for each key (new, existing, another tenant's jobId), and that its lookups stay
index probes on a table with fresh statistics (no scan of the whole table per batch)."""

from __future__ import annotations

import json
import uuid

from jobsvc import queue
from jobsvc.queries import ENQUEUE_MANY_SQL
from jobsvc.queue import NewResult
from jobsvc.queue.enqueues import many_params
from tests.helpers import connect


def _new(tenant: str = "t", *, job_id: uuid.UUID | None = None, name: str = "a.png") -> NewResult:
    return NewResult(
        job_id=job_id or uuid.uuid4(),
        result_file=name,
        type="ingest",
        img_url=f"https://example.invalid/{name}",
        tenant=tenant,
    )


def test_enqueue_many_inserts_new_keys_and_answers_existing_and_taken_ones(database_url: str) -> None:
    mine, theirs = _new("t"), _new("other")
    with connect(database_url) as conn, conn.transaction():
        queue.enqueue_many(conn, [mine])
        queue.enqueue_many(conn, [theirs])
    batch = [
        _new("t"),
        _new("t", job_id=mine.job_id),  # the same key again: the existing row
        _new("t", job_id=mine.job_id, name="b.png"),  # another result of my job: new
        _new("t", job_id=theirs.job_id),  # another tenant's jobId, same key: refused
        _new("t", job_id=theirs.job_id, name="c.png"),  # ... another key: refused too
        _new("t"),
    ]
    with connect(database_url) as conn, conn.transaction():
        found = queue.enqueue_many(conn, batch)
    with connect(database_url) as conn:
        rows = {
            (r["job_id"], r["result_file"]): r["tenant"]
            for r in conn.execute("SELECT job_id, result_file, tenant FROM jobsvc_results")
        }
    assert len(found) == len(batch)
    answers = [found[(n.job_id, n.result_file)] for n in batch]
    assert [created for _, created in answers] == [True, False, True, False, False, True]
    assert answers[1][0].tenant == "t" and answers[1][0].result_file == "a.png"
    assert answers[3][0].tenant == answers[4][0].tenant == "other"
    new_ids = [job.id for job, created in answers if created]
    assert new_ids == sorted(new_ids)  # inserted in input order
    assert rows == {
        (mine.job_id, "a.png"): "t",
        (theirs.job_id, "a.png"): "other",
        (batch[0].job_id, "a.png"): "t",
        (mine.job_id, "b.png"): "t",
        (batch[5].job_id, "a.png"): "t",
    }
    # Each answer is the row a read returns.
    with connect(database_url) as conn:
        for job, _ in answers:
            assert queue.get_result(conn, job.job_id, job.result_file) == job


def test_enqueue_many_answers_another_tenants_row_before_its_own(database_url: str) -> None:
    """Should two tenants ever hold rows of one jobId (two first enqueues racing), the
    other tenant's row is the answer, as the single enqueue answers (409 taken)."""
    job_id = uuid.uuid4()
    with connect(database_url) as conn, conn.transaction():
        queue.enqueue_many(conn, [_new("t", job_id=job_id)])
        conn.execute(  # what a raced insert leaves (enqueue_many itself refuses it)
            "INSERT INTO jobsvc_results (job_id, result_file, type, img_url, tenant)"
            " VALUES (%s, 'z.png', 'ingest', 'https://example.invalid/z.png', 'other')",
            (job_id,),
        )
    with connect(database_url) as conn, conn.transaction():
        found = queue.enqueue_many(conn, [_new("t", job_id=job_id), _new("t")])
    job, created = found[(job_id, "a.png")]
    assert not created and job.tenant == "other"


def test_enqueue_many_probes_by_index_on_a_table_with_fresh_statistics(database_url: str) -> None:
    with connect(database_url) as conn:
        for _ in range(8):
            with conn.transaction():
                queue.enqueue_many(conn, [_new("t") for _ in range(1000)])
        conn.execute("ANALYZE jobsvc_results")
        with conn.transaction(force_rollback=True), conn.cursor(binary=True) as cur:
            batch = [_new("t") for _ in range(1000)]
            plan = cur.execute("EXPLAIN (FORMAT JSON) " + ENQUEUE_MANY_SQL, many_params(batch)).fetchone()
    assert plan is not None
    text = json.dumps(plan)
    # A NOT EXISTS here was planned as a hash anti join over a sequential scan of every row.
    assert '"Seq Scan"' not in text, text
