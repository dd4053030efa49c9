"""The data lifecycle: deleting old finished rows (the cleaner, `jobsvc purge`) and
compacting the counter deltas, one at a time under `CLEAN_LOCK`."""

from __future__ import annotations

from collections.abc import Sequence

from jobsvc.db import Conn
from jobsvc.model import Status
from jobsvc.queries import CLEAN_SQL, CLEAN_TRY_LOCK_SQL, CLEAN_WAIT_LOCK_SQL, COMPACT_COUNTS_SQL

#: The cleaner's and `jobsvc purge`'s lock: one of them deletes at a time.
CLEAN_LOCK = (0x6A6F6273, 2)

#: Rows per cleaner batch: each batch is one short transaction.
CLEAN_BATCH = 1000

#: The finished statuses, the only ones the cleaner and purge delete.
FINISHED = tuple(s.value for s in Status if s.finished)


def clean_batch(
    conn: Conn,
    older_than: float,
    *,
    statuses: Sequence[str] = FINISHED,
    limit: int = CLEAN_BATCH,
    wait: bool = False,
) -> int | None:
    """Delete up to ``limit`` finished rows whose ``finished_at`` is more than ``older_than``
    seconds ago, oldest first, under `CLEAN_LOCK`; returns how many. With ``wait=False``
    (the cleaner) returns None at once when another cleaner or purge holds the lock."""
    unknown = set(statuses) - set(FINISHED)
    if unknown:
        raise ValueError(f"only finished rows are deleted, not {', '.join(sorted(unknown))}")
    if wait:
        conn.execute(CLEAN_WAIT_LOCK_SQL, CLEAN_LOCK)
    else:
        row = conn.execute(CLEAN_TRY_LOCK_SQL, CLEAN_LOCK).fetchone()
        if row is None or not row["ok"]:
            return None
    params = {"older_than": older_than, "statuses": list(statuses), "limit": limit}
    return conn.execute(CLEAN_SQL, params).rowcount


def compact_counts(conn: Conn) -> bool:
    """Fold the counter deltas into one row per status, under `CLEAN_LOCK` (skipped,
    returning False, when someone else holds it)."""
    row = conn.execute(CLEAN_TRY_LOCK_SQL, CLEAN_LOCK).fetchone()
    if row is None or not row["ok"]:
        return False
    conn.execute(COMPACT_COUNTS_SQL)
    return True
