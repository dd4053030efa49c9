"""Enqueue: one result (`enqueue`), a batch of one tenant (`enqueue_many`) or a group
of several tenants' (`enqueue_group`), the 200-or-409 judgement of an existing one
(`check_identical`), and the per-tenant quota (`reserve_quota`, `admit`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import Cursor
from psycopg.rows import RowMaker, dict_row

from jobsvc.db import Conn
from jobsvc.errors import Conflict, QuotaExceeded
from jobsvc.model import DEFAULT_TENANT, Job
from jobsvc.pgtrio import Plan, Statement, run_sync
from jobsvc.queries import (
    ENQUEUE_ALONE_SQL,
    ENQUEUE_MANY_SQL,
    ENQUEUE_SQL,
    EXISTING_KEYS_SQL,
    QUOTA_SQL,
)
from jobsvc.queue.claims import job_rows
from jobsvc.queue.notify import EVENTS_CHANNEL, WAKEUP_CHANNEL
from jobsvc.queue.reads import get_result

#: The key space of the per-tenant quota locks (the second int is hashtext(tenant)).
QUOTA_LOCK_SPACE = 0x6A6F6274

#: Retry-After (seconds) of an enqueue refused by the quota: results finish meanwhile.
QUOTA_RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class NewResult:
    """A validated enqueue request for one result file."""

    job_id: uuid.UUID
    result_file: str
    type: str
    img_url: str
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int = 3
    tenant: str = DEFAULT_TENANT


Key = tuple[uuid.UUID, str]


def reserve_quota(conn: Conn, tenant: str, wanted: int, max_queued: int) -> int:
    """How many of ``wanted`` new results ``tenant`` may still enqueue under the cap
    ``max_queued`` (0: unlimited) on its Queued + Processing results.

    Takes the tenant's quota lock (a transaction-level advisory lock, held until the
    caller's transaction ends) and counts after it, in one statement (QUOTA_SQL), so
    call it in the transaction that then inserts the results: no other enqueue of the
    tenant, in any process, counts until this one has committed or rolled back. Insert
    at most the returned number of new rows.
    """
    if max_queued <= 0:
        return wanted
    row = conn.execute(QUOTA_SQL, {"space": QUOTA_LOCK_SPACE, "tenant": tenant, "cap": max_queued}).fetchone()
    used = 0 if row is None else int(row["n"])
    return max(0, min(wanted, max_queued - used))


def quota_exceeded(tenant: str, max_queued: int) -> QuotaExceeded:
    """The refusal of an enqueue past the quota (the batch endpoint's per-item 429, too)."""
    return QuotaExceeded(
        f"tenant {tenant!r} already has {max_queued} queued or running results "
        "(JOBSVC_TENANT_MAX_QUEUED); try again once some have finished",
        QUOTA_RETRY_AFTER,
    )


def enqueue(conn: Conn, new: NewResult, *, max_queued: int = 0) -> tuple[Job, bool]:
    """Insert a result for ``new.tenant``; returns ``(job, created)``.

    An identical request for an existing (jobId, resultFile) returns the existing row
    with ``created=False``; a different one raises `Conflict`, and so does a jobId
    that another tenant uses (jobIds are unique across tenants; nothing of the other
    tenant's job is told). With ``max_queued`` > 0 a new result past the tenant's quota
    raises `QuotaExceeded` (`reserve_quota`); an identical retry is still answered with
    the existing row.
    """
    full = reserve_quota(conn, new.tenant, 1, max_queued) < 1
    if full and get_result(conn, new.job_id, new.result_file) is None:
        raise quota_exceeded(new.tenant, max_queued)
    job, inserted = insert_one(conn, new)
    if not inserted:
        check_identical(job, new)
    return job, inserted


def many_params(news: Sequence[NewResult]) -> dict[str, object]:
    """ENQUEUE_MANY_SQL's parameters: one array per column, in the input's order."""
    return {
        "job_ids": [n.job_id for n in news],
        "result_files": [n.result_file for n in news],
        "types": [n.type for n in news],
        "img_urls": [n.img_url for n in news],
        "priorities": [n.priority for n in news],
        "run_ats": [n.run_at for n in news],
        "max_attempts": [n.max_attempts for n in news],
        "tenants": [n.tenant for n in news],
    }


def _row_params(new: NewResult) -> dict[str, object]:
    """The columns of ``new`` as the one-row statements' parameters."""
    return {
        "job_id": new.job_id,
        "result_file": new.result_file,
        "type": new.type,
        "img_url": new.img_url,
        "priority": new.priority,
        "run_at": new.run_at,
        "max_attempts": new.max_attempts,
        "tenant": new.tenant,
    }


def insert_one(conn: Conn, new: NewResult) -> tuple[Job, bool]:
    """Insert one result (no quota check); ``(job, created)``. ``created=False`` is an
    existing row, identical or not (`check_identical` judges): `enqueue_many` for one
    result, with a statement that is cheaper to plan and run than its ``unnest``."""
    params = _row_params(new)
    # A conflicting insert committed after our snapshot is invisible to the second
    # half of the statement: run it again with a fresh snapshot (at most twice more).
    for _ in range(3):
        row = conn.execute(ENQUEUE_SQL, params).fetchone()
        if row is not None:
            break
    else:  # pragma: no cover - needs three concurrent conflicting writers in a row
        raise Conflict(f"job {new.job_id} result {new.result_file!r} is being written concurrently")
    inserted = bool(row.pop("inserted"))
    return Job.from_row(row), inserted


def check_identical(job: Job, new: NewResult) -> None:
    """Raise `Conflict` unless ``new`` is the request that created ``job`` (same key,
    type and URL, and tenant): what decides between 200 and 409 for an existing result.
    Another tenant's row of that jobId means the id is taken (jobIds are unique across
    tenants)."""
    if job.tenant != new.tenant:
        raise Conflict(f"jobId {new.job_id} is taken: choose another jobId")
    if job.type != new.type or job.img_url != new.img_url:
        raise Conflict(f"job {new.job_id} already has result {new.result_file!r} from a different request")


def enqueue_many(conn: Conn, news: Sequence[NewResult]) -> dict[Key, tuple[Job, bool]]:
    """Insert many results (keys unique) in one statement; ``(job, created)`` per key.

    ``created=False`` is an existing row, identical or not (`check_identical` judges).
    """
    found: dict[Key, tuple[Job, bool]] = {}
    todo = list(news)
    # As in `enqueue`: a key committed concurrently after the snapshot is in neither
    # half of the statement; run those again with a fresh snapshot (at most twice more).
    for _ in range(3):
        params = many_params(todo)
        with conn.cursor(row_factory=_enqueued_rows, binary=True) as cursor:
            for job, inserted, key_file in cursor.execute(ENQUEUE_MANY_SQL, params):
                found[(job.job_id, key_file)] = (job, inserted)
        todo = [n for n in todo if (n.job_id, n.result_file) not in found]
        if not todo:
            return found
    raise Conflict(  # pragma: no cover - needs three concurrent conflicting writers in a row
        f"job {todo[0].job_id} result {todo[0].result_file!r} is being written concurrently"
    )


def _enqueued_rows(cursor: Cursor[Any]) -> RowMaker[tuple[Job, bool, str]]:
    """ENQUEUE_MANY_SQL's rows as ``(job, inserted, key_file)``, decoded by position
    (`job_rows`, binary results): a batch's 1,000 rows through a dict and `Job.from_row`
    took ~18 ms of CPU while the tenant's quota lock was held, ~10 ms this way."""
    make_job = job_rows(cursor)
    names = [column.name for column in cursor.description or ()]
    inserted, key_file = names.index("inserted"), names.index("key_file")
    return lambda values: (make_job(values), bool(values[inserted]), values[key_file])


def admit(conn: Conn, news: Sequence[NewResult], max_queued: int) -> tuple[list[NewResult], list[NewResult]]:
    """Split a batch of one tenant's results into those its quota admits and those past
    it: results that exist already take no slot (they are answered as enqueue answers
    them); new ones are admitted in order while slots remain. Takes the tenant's quota
    lock (`reserve_quota`): call it in the transaction that inserts the admitted ones."""
    if max_queued <= 0 or not news:
        return list(news), []
    room = reserve_quota(conn, news[0].tenant, len(news), max_queued)
    if room == len(news):  # room for all: which exist already does not matter
        return list(news), []
    existing = existing_keys(conn, [(n.job_id, n.result_file) for n in news])
    new = [n for n in news if (n.job_id, n.result_file) not in existing]
    refused = {id(n) for n in new[room:]}
    return [n for n in news if id(n) not in refused], [n for n in news if id(n) in refused]


def existing_keys(conn: Conn, keys: Sequence[Key]) -> set[Key]:
    """Which of ``keys`` exist as results."""
    params = {"job_ids": [k[0] for k in keys], "result_files": [k[1] for k in keys]}
    return {(r["job_id"], r["result_file"]) for r in conn.execute(EXISTING_KEYS_SQL, params)}


@dataclass(frozen=True, slots=True)
class Placed:
    """What `enqueue_group` did: ``(job, created)`` per admitted key (`enqueue_many`'s
    answer), and the results the quota refused (each tenant's past its cap)."""

    rows: dict[Key, tuple[Job, bool]]
    over: list[NewResult]
    #: Whether the new rows' wake-up and events NOTIFYs were sent in the transaction
    #: (`enqueue_alone` with ``announce``); otherwise the caller announces them.
    announced: bool = False


def enqueue_group(conn: Conn, news: Sequence[NewResult], max_queued: int) -> Placed:
    """Insert the results of several tenants (keys unique across ``news``) in the caller's
    transaction: per tenant, in tenant order, `admit` (the tenant's quota lock and count,
    once) and one `enqueue_many` for what it admits.

    Tenant order is the lock order: two groups that hold several tenants' quota locks
    take them in the same order, so they wait for each other but never deadlock. A
    tenant's statement sees the rows the earlier tenants' statements inserted (same
    transaction): a jobId two tenants send in one group goes to the first, as if sent
    one after the other.
    """
    rows: dict[Key, tuple[Job, bool]] = {}
    over: list[NewResult] = []
    for tenant in sorted({n.tenant for n in news}):
        admitted, refused = admit(conn, [n for n in news if n.tenant == tenant], max_queued)
        if len(admitted) == 1:  # a group of one (a request alone): its cheaper statement
            rows[(admitted[0].job_id, admitted[0].result_file)] = insert_one(conn, admitted[0])
        elif admitted:
            rows.update(enqueue_many(conn, admitted))
        over += refused
    return Placed(rows, over)


def enqueue_alone(conn: Conn, new: NewResult, max_queued: int, *, announce: bool) -> Placed:
    """`enqueue_group` for one result (a request alone) in the caller's transaction, or
    in autocommit as a transaction of its own: `enqueue_alone_plan` from a thread."""
    return run_sync(conn, enqueue_alone_plan(new, max_queued, announce=announce))


def enqueue_alone_plan(new: NewResult, max_queued: int, *, announce: bool) -> Plan[Placed]:
    """A request alone as one statement (`jobsvc.pgtrio.Plan`): ENQUEUE_ALONE_SQL takes
    the tenant's quota lock and counts after it (with a quota), inserts under the cap
    and, with ``announce``, sends the new row's NOTIFYs. On an autocommit connection it
    is a transaction of its own in one round trip (the lock ends with it); in a
    transaction, the lock holds until its commit.

    Its history: the group path sends four or five statements (lock, count, insert, two
    NOTIFYs), each waited for in turn; round 3 put all but the lock in one statement
    (1.00 → 0.77 ms p50 for the transaction); round 5 moved the lock and the count into
    `jobsvc_quota_used` (schema.sql), whose count has its own snapshot taken after the
    lock, so the whole write is one statement (bench/README.md, "Round 5").

    Answers what `enqueue_group` answers for ``[new]``; ``announced`` says whether the
    NOTIFYs were sent (a new row with ``announce``).
    """
    params = {
        **_row_params(new),
        "space": QUOTA_LOCK_SPACE,
        "cap": max_queued,
        "announce": announce,
        "wakeup_channel": WAKEUP_CHANNEL,
        "events_channel": EVENTS_CHANNEL,
    }
    key = (new.job_id, new.result_file)
    # Under the cap, yet neither inserted nor found: a concurrent writer committed the
    # key after the statement's snapshot. Run it again (the lock and count again too):
    # its new snapshot sees that row (at most twice more, as `insert_one`).
    for _ in range(3):
        rows = yield Statement(ENQUEUE_ALONE_SQL, params, dict_row, binary=False)
        row = rows[0]  # the count's one row
        used = int(row.pop("quota_used"))
        inserted, announced = bool(row.pop("inserted")), bool(row.pop("announced"))
        full = max_queued > 0 and used >= max_queued
        if row["id"] is not None and (inserted or not full or row["result_file"] == new.result_file):
            # As `enqueue`: over the cap, an existing row at the key is still the answer.
            return Placed({key: (Job.from_row(row), inserted)}, [], announced=announced)
        if full:
            return Placed({}, [new])
    raise Conflict(  # pragma: no cover - needs three concurrent conflicting writers in a row
        f"job {new.job_id} result {new.result_file!r} is being written concurrently"
    )


#: SQLSTATE classes that say the server or the link is in trouble (connection exception,
#: insufficient resources, operator intervention, system error): every other error the
#: server answered was about this transaction's own statements.
_SERVER_TROUBLE = ("08", "53", "57", "58")


def failed_alone_may_pass(exc: BaseException) -> bool:
    """Whether a group whose transaction failed with ``exc`` is worth writing again one
    result per transaction: yes when PostgreSQL answered with an error about the
    transaction itself (a deadlock with another writer, a serialization failure, a
    statement refused for one result), which the results alone may well not meet; no
    when it did not answer (no connection in time, connection lost) or is in trouble
    (shutting down, out of resources), which each result alone would meet too.
    ``exc`` is the driver's error, or `DatabaseUnavailable` raised from it."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.Error) or cause.sqlstate is None:
        return False
    return not cause.sqlstate.startswith(_SERVER_TROUBLE)
