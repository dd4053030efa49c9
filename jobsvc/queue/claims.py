"""The worker's side: the fair-share `claim` (with its `TenantRing`), `finish`, both in
one transaction (`finish_and_claim`) or, in the common case, in one statement (`cycle`),
the cancel catch-up, and `rescue`. The decisions written are `jobsvc.retry`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor
from psycopg.rows import RowMaker, dict_row

from jobsvc.db import Conn
from jobsvc.model import Job, Status
from jobsvc.pgtrio import Plan, Statement, run_sync
from jobsvc.queries import (
    CANCEL_REQUESTED_SQL,
    CLAIM_SQL,
    CYCLE_SQL,
    FINISH_LOCK_SQL,
    NEXT_DUE_SQL,
    RESCUE_LOCK_SQL,
    UNLOCK_SQL,
    WRITE_DECISIONS_SQL,
)
from jobsvc.queue.notify import wake_workers
from jobsvc.retry import Decision, Outcome, RetryPolicy

#: The fair-share claim considers this many more candidates than it claims, so that
#: claims running at the same time (which skip each other's rows) still fill up.
CLAIM_SLACK = 16

#: The policy used when a caller passes none (the worker passes its own).
DEFAULT_POLICY = RetryPolicy()


#: The columns a `Job` is built from, in its constructor's order.
_JOB_FIELDS = tuple(Job.__dataclass_fields__)
_STATUS_AT = _JOB_FIELDS.index("status")


def job_rows(cursor: Cursor[Any]) -> RowMaker[Job]:
    """A psycopg row factory: each row straight into a `Job`, by position. The worker
    decodes every row it claims and finishes three times (claim, finish read, write);
    through a dict and `Job.from_row` that cost ~19 µs of CPU per row, this way ~13 µs
    with binary results (issue 14). A column the row lacks takes the field's default
    (``tenant``, for rows read before schema version 3)."""
    names = [column.name for column in cursor.description or ()]
    at = {name: i for i, name in enumerate(names)}
    picks = [at.get(name) for name in _JOB_FIELDS]
    if None in picks:  # an old row: build through the keywords, defaults for the rest
        return lambda values: Job.from_row(dict(zip(names, values, strict=True)))

    def make(values: Sequence[Any]) -> Job:
        args = [values[i] for i in picks]  # type: ignore[index]
        args[_STATUS_AT] = Status(args[_STATUS_AT])
        return Job(*args)

    return make


def _claimed_rows(cursor: Cursor[Any]) -> RowMaker[tuple[Job, tuple[int, int, int]]]:
    """`job_rows`, with the claim's (ring_rank, ring_lap, ring_pos) of each row."""
    make_job = job_rows(cursor)
    names = [column.name for column in cursor.description or ()]
    rank, lap, pos = (names.index(name) for name in ("ring_rank", "ring_lap", "ring_pos"))
    return lambda values: (make_job(values), (values[rank], values[lap], values[pos]))


def _cycle_rows(cursor: Cursor[Any]) -> RowMaker[tuple[Job, bool, tuple[int, int, int]]]:
    """`job_rows`, with CYCLE_SQL's ``claimed`` flag and ring columns of each row."""
    make_job = job_rows(cursor)
    names = [column.name for column in cursor.description or ()]
    flag, rank, lap, pos = (names.index(name) for name in ("claimed", "ring_rank", "ring_lap", "ring_pos"))
    return lambda values: (make_job(values), values[flag], (values[rank], values[lap], values[pos]))


def _jobs(conn: Conn, statement: str, params: dict[str, Any]) -> list[Job]:
    """``statement``'s rows as `Job`s (`job_rows`, binary results)."""
    with conn.cursor(row_factory=job_rows, binary=True) as cursor:
        return cursor.execute(statement, params).fetchall()


@dataclass(slots=True)
class TenantRing:
    """A worker's place in the fair-share round-robin: the claim serves the tenants
    after ``after`` (in name order, wrapping around) first, then moves it to the last
    tenant it served. One per claiming session; a fresh ring starts at the first tenant."""

    after: str = ""


def claim(
    conn: Conn, worker_id: str, limit: int, ring: TenantRing | None = None
) -> tuple[list[Job], float | None]:
    """Claim up to ``limit`` due rows, round-robin across tenants from ``ring``'s place
    (moved on past the tenants served; None: from the first tenant), and lock each;
    also returns the seconds until the next not-yet-due row (None when there is none)
    when fewer than ``limit`` were due."""
    return run_sync(conn, claim_plan(worker_id, limit, ring))


def claim_plan(
    worker_id: str, limit: int, ring: TenantRing | None = None
) -> Plan[tuple[list[Job], float | None]]:
    """`claim` as a `Plan` (jobsvc.pgtrio): its statements, to run from a thread or from trio."""
    params = {
        "limit": limit,
        "tenants": limit + CLAIM_SLACK,
        "after": "" if ring is None else ring.after,
        "worker_id": worker_id,
    }
    rows = yield Statement(CLAIM_SQL, params, _claimed_rows)
    return (yield from _claimed(rows, limit, ring))


def _claimed(
    rows: list[tuple[Job, tuple[int, int, int]]], limit: int, ring: TenantRing | None
) -> Plan[tuple[list[Job], float | None]]:
    """A claim's rows in the claim's order, the ring moved on, and the next-due seconds."""
    # In the claim's order: each tenant's first row, then each one's second, ...
    rows.sort(key=lambda r: r[1])
    if rows and ring is not None:
        ring.after = max(rows, key=lambda r: r[1][1:])[0].tenant  # the last (lap, pos) served
    jobs = [job for job, _ in rows]
    next_due = None
    if len(jobs) < limit:
        due = yield Statement(NEXT_DUE_SQL, None, dict_row, binary=False)
        if due and due[0]["seconds"] is not None:
            next_due = max(0.0, float(due[0]["seconds"]))
    return jobs, next_due


def finish(
    conn: Conn, worker_id: str, outcomes: Sequence[Outcome], policy: RetryPolicy = DEFAULT_POLICY
) -> list[Job]:
    """Record many attempts' outcomes, as ``policy`` decides, and release their locks.

    Rows no longer Processing for ``worker_id`` (rescued meanwhile) are left alone.
    Unlocking inside the transaction is safe: the row locks taken by the read are
    held until commit, so a rescuer cannot see the row before its new status.
    """
    by_id = {o.id: o for o in outcomes}
    rows = _jobs(conn, FINISH_LOCK_SQL, {"ids": list(by_id), "worker_id": worker_id})
    jobs = write_decisions(conn, [policy.decide(row, by_id[row.id]) for row in rows])
    conn.execute(UNLOCK_SQL, {"ids": list(by_id)})
    return jobs


def finish_and_claim(
    conn: Conn,
    worker_id: str,
    outcomes: Sequence[Outcome],
    limit: int,
    ring: TenantRing | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> tuple[list[Job], list[Job], float | None]:
    """One worker cycle in the caller's one transaction: record ``outcomes`` (`finish`),
    then claim up to ``limit`` rows (`claim`; none when ``limit`` is 0). Returns the rows
    written, the rows claimed and the claim's next-due seconds.

    One commit for both halves: the new advisory locks are still taken in the claim's
    transaction (this one), and a crash before the commit loses nothing: the outcomes
    are not recorded and the claimed rows stay Queued, so the rescuer finds the old rows
    Processing with their locks gone (the session died with the process), as after a
    crash before a finish of their own. Finish first, so a row given back at once
    (``requeue``) can be claimed again in the same cycle.
    """
    written = finish(conn, worker_id, outcomes, policy) if outcomes else []
    if limit <= 0:
        return written, [], None
    claimed, next_due = claim(conn, worker_id, limit, ring)
    return written, claimed, next_due


def cycle(
    conn: Conn,
    worker_id: str,
    outcomes: Sequence[Outcome],
    limit: int,
    ring: TenantRing | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> tuple[list[Job], list[Job], float | None]:
    """`finish_and_claim` on an AUTOCOMMIT connection, in as few round trips as it takes.

    When every outcome is final whatever its row holds (`RetryPolicy.final`: completed,
    failed; the common case), the outcomes and the claim are one statement
    (`CYCLE_SQL`), its own transaction: one round trip and one commit, where
    `finish_and_claim` sends BEGIN, the locking read, the write, the unlock, the claim
    and COMMIT (issue 14, round 3). A cycle without outcomes is `CLAIM_SQL` alone. When
    an outcome needs its row read first (a retry, a cancel, a give-back), the cycle is
    `finish_and_claim` in an explicit transaction. Either way all of it or none of it
    is committed, and the claim's advisory locks are taken in its own transaction.
    """
    plan = cycle_plan(worker_id, outcomes, limit, ring, policy)
    if plan is None:
        with conn.transaction():
            return finish_and_claim(conn, worker_id, outcomes, limit, ring, policy)
    return run_sync(conn, plan)


def cycle_plan(
    worker_id: str,
    outcomes: Sequence[Outcome],
    limit: int,
    ring: TenantRing | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Plan[tuple[list[Job], list[Job], float | None]] | None:
    """`cycle` as a `Plan` for an autocommit connection (jobsvc.pgtrio), or None when an
    outcome needs its row read first: then the cycle is `finish_and_claim` in a
    transaction (`cycle` runs it so)."""
    if not outcomes:
        return _claim_only(worker_id, limit, ring)
    decided: list[tuple[int, Status, str | None]] = []
    for outcome in outcomes:
        final = policy.final(outcome)
        if final is None:
            return None
        decided.append((outcome.id, *final))
    decided.sort(key=lambda d: d[0])  # id order: the order CYCLE_SQL locks the rows in
    return _cycle_statement(worker_id, decided, limit, ring)


def _claim_only(
    worker_id: str, limit: int, ring: TenantRing | None
) -> Plan[tuple[list[Job], list[Job], float | None]]:
    claimed, next_due = yield from claim_plan(worker_id, limit, ring)
    return [], claimed, next_due


def _cycle_statement(
    worker_id: str, decided: list[tuple[int, Status, str | None]], limit: int, ring: TenantRing | None
) -> Plan[tuple[list[Job], list[Job], float | None]]:
    """CYCLE_SQL for final outcomes ``decided`` (in id order), then what the claim needs."""
    params = {
        "ids": [row_id for row_id, _, _ in decided],
        "statuses": [status.value for _, status, _ in decided],
        "errors": [error for _, _, error in decided],
        "limit": max(limit, 0),
        "tenants": max(limit, 0) + CLAIM_SLACK,
        "after": "" if ring is None else ring.after,
        "worker_id": worker_id,
    }
    rows: list[tuple[Job, bool, tuple[int, int, int]]] = yield Statement(CYCLE_SQL, params, _cycle_rows)
    written = [job for job, claimed_row, _ in rows if not claimed_row]
    if len(written) < len(decided):
        # Rows no longer this worker's were not written, nor unlocked by the statement:
        # release whatever lock this session may still hold on them, as `finish` does.
        done = {job.id for job in written}
        unlock = {"ids": [row_id for row_id, _, _ in decided if row_id not in done]}
        yield Statement(UNLOCK_SQL, unlock, dict_row, binary=False)
    if limit <= 0:
        return written, [], None
    claimed, next_due = yield from _claimed([(job, ring_at) for job, c, ring_at in rows if c], limit, ring)
    return written, claimed, next_due


def write_decisions(conn: Conn, decisions: Sequence[Decision]) -> list[Job]:
    """Write the policy's decisions in one statement; wake the workers if any row is Queued."""
    if not decisions:
        return []
    params = {
        "ids": [d.id for d in decisions],
        "statuses": [d.status.value for d in decisions],
        "errors": [d.error for d in decisions],
        "attempts": [d.attempts for d in decisions],
        "delays": [d.delay if d.status is Status.QUEUED else None for d in decisions],
        "finals": [d.status.finished for d in decisions],
    }
    jobs = _jobs(conn, WRITE_DECISIONS_SQL, params)
    if any(j.status is Status.QUEUED for j in jobs):
        wake_workers(conn)
    return jobs


def cancel_requested(conn: Conn, ids: Sequence[int]) -> list[int]:
    """Which of these Processing rows have a pending cancel request (reconciliation)."""
    return [r["id"] for r in conn.execute(CANCEL_REQUESTED_SQL, {"ids": list(ids)})]


def rescue(conn: Conn, policy: RetryPolicy = DEFAULT_POLICY) -> list[Job]:
    """Move Processing rows whose owner is gone on, as ``policy.lost`` decides (Queued after
    a backoff, or Failed when attempts are spent, or Canceled when a cancel was requested)."""
    return write_decisions(conn, [policy.lost(row) for row in _jobs(conn, RESCUE_LOCK_SQL, {})])
