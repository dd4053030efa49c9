"""Retention on PostgreSQL (DESIGN §9): the cleaner deletes only finished rows older
than JOBSVC_RETENTION, in batches of at most 1,000, one cleaner at a time across
workers; the status counters stay exact. `jobsvc purge`: tests/system/test_purge.py."""

from __future__ import annotations

import trio

from jobsvc import queue
from jobsvc.config import Settings
from jobsvc.maintenance import Cleaner, CleanerConfig
from jobsvc.model import Job, Status
from jobsvc.queries import CLEAN_WAIT_LOCK_SQL
from jobsvc.worker import Worker
from jobsvc.worker.pgstore import PostgresStore
from tests.helpers import connect, counts_agree, enqueue, fill, remaining, until, wait_status


def mixed_rows(url: str) -> tuple[set[int], set[int]]:
    """(rows older than 7 days in every finished status, rows that must stay)."""
    old = fill(url, "Completed", "8 days") | fill(url, "Failed", "8 days") | fill(url, "Canceled", "30 days")
    keep = fill(url, "Completed", "6 days") | fill(url, "Failed", "1 hour")
    keep |= fill(url, "Canceled", "1 second")
    keep |= fill(url, "Queued", "9 days") | fill(url, "Processing", "9 days")  # old but unfinished
    return old, keep


def test_clean_batch_deletes_only_old_finished_rows(database_url: str) -> None:
    old, keep = mixed_rows(database_url)
    with connect(database_url) as conn:
        assert queue.clean_batch(conn, 7 * 86400) == len(old)
    assert remaining(database_url) == keep
    assert counts_agree(database_url)


def test_clean_batch_uses_the_finished_index(database_url: str) -> None:
    with connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")  # the table is tiny: ask whether the index can serve
        plan = conn.execute(
            "EXPLAIN " + queue.CLEAN_SQL,
            {"older_than": 60.0, "statuses": list(queue.FINISHED), "limit": 1000},
        ).fetchall()
    assert "jobsvc_results_finished_idx" in "\n".join(r["QUERY PLAN"] for r in plan)


def test_a_held_clean_lock_makes_the_cleaner_skip(database_url: str) -> None:
    old, _ = mixed_rows(database_url)
    with connect(database_url) as holder, holder.transaction():
        holder.execute(CLEAN_WAIT_LOCK_SQL, queue.CLEAN_LOCK)
        with connect(database_url) as conn:
            assert queue.clean_batch(conn, 7 * 86400) is None
            assert queue.compact_counts(conn) is False
        assert old <= remaining(database_url)


async def test_a_pass_deletes_in_batches_of_at_most_1000(database_url: str) -> None:
    old = fill(database_url, "Completed", "2 days", 2500)
    keep = fill(database_url, "Completed", "1 minute", 10)
    store = PostgresStore(database_url)
    batches: list[int | None] = []

    class Recording:
        async def clean(self, older_than: float, limit: int) -> int | None:
            n = await store.clean(older_than, limit)
            batches.append(n)
            return n

        async def compact_counts(self) -> bool:
            return await store.compact_counts()

    await store.open()
    try:
        cleaner = Cleaner(Recording(), CleanerConfig(retention=86400))
        assert await cleaner.run_once() == len(old)
    finally:
        await store.close()
    assert batches == [1000, 1000, 500]
    assert remaining(database_url) == keep
    with connect(database_url) as conn:  # compacted: one delta row per status left
        assert conn.execute("SELECT count(*) AS n FROM jobsvc_counts").fetchone() == {"n": 1}
        assert queue.status_counts(conn)["Completed"] == 10


async def test_two_workers_clean_one_at_a_time_and_only_what_they_should(
    database_url: str, nursery: trio.Nursery
) -> None:
    old, keep = mixed_rows(database_url)
    old |= fill(database_url, "Completed", "8 days", 2500)

    async def noop(job: Job) -> None:
        return None

    def start(name: str) -> Worker:
        settings = Settings(
            database_url=database_url, worker_id=name, retention=7 * 86400, clean_interval=0.05
        )
        return Worker(settings, default_handler=noop)

    workers = [start("clean-a"), start("clean-b")]
    with connect(database_url) as holder, holder.transaction():
        # While someone holds the cleaning lock, neither worker deletes anything...
        holder.execute(CLEAN_WAIT_LOCK_SQL, queue.CLEAN_LOCK)
        for w in workers:
            await nursery.start(w.run)
        await until(lambda: all(w.cleaner.skipped >= 3 for w in workers), thread=True)
        assert old <= remaining(database_url)
        assert all(w.cleaner.skipped == w.cleaner.passes for w in workers)
    # ...and once it is free they share the work: every old finished row is deleted once.
    await until(lambda: not (old & remaining(database_url)), timeout=20, thread=True)
    # Jobs run meanwhile and finish fresh: kept.
    fresh = [enqueue(database_url, f"http://images.test/new{i}.png") for i in range(5)]
    for job in fresh:
        await wait_status(database_url, job.id, Status.COMPLETED)
    passes = [w.cleaner.passes for w in workers]
    await until(lambda: all(w.cleaner.passes > p for w, p in zip(workers, passes, strict=True)), thread=True)
    for w in workers:
        w.shutdown()
    # The old Queued and orphaned Processing rows were run too, and finish fresh: kept.
    assert remaining(database_url) == keep | {j.id for j in fresh}
    deleted = sum(w.metrics.registry.get_sample_value("jobsvc_cleaned_total") or 0 for w in workers)
    assert deleted == len(old)  # each row deleted once, counted by the worker that deleted it
    assert counts_agree(database_url)
