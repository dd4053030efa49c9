"""The queue's channels and the NOTIFYs sent on them.

- ``jobsvc_wakeup`` (no payload): work may be due; sent on enqueue (coalesced by
  the API), retry and rescue.
- ``jobsvc_cancel`` (comma-separated row ids): cancel requested for Processing rows.
- ``jobsvc_events`` (comma-separated row ids): these rows changed; sent by the
  trigger in schema.sql on UPDATE and by `announce` for inserts.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobsvc.db import Conn
from jobsvc.queries import NOTIFY_SQL

WAKEUP_CHANNEL = "jobsvc_wakeup"

CANCEL_CHANNEL = "jobsvc_cancel"

EVENTS_CHANNEL = "jobsvc_events"

#: Ids per NOTIFY payload (the payload must stay under 8000 bytes); the trigger in
#: schema.sql chunks its payloads by the same number.
IDS_PER_NOTIFY = 400


def parse_ids(payload: str) -> list[int]:
    """The row ids of a ``jobsvc_cancel`` or ``jobsvc_events`` payload (malformed parts are ignored)."""
    return [int(p) for p in payload.split(",") if p.strip().isdigit()]


def notify_ids(conn: Conn, channel: str, ids: Sequence[int]) -> None:
    """NOTIFY ``ids`` on ``channel``, `IDS_PER_NOTIFY` per payload."""
    for start in range(0, len(ids), IDS_PER_NOTIFY):
        payload = ",".join(str(i) for i in ids[start : start + IDS_PER_NOTIFY])
        conn.execute(NOTIFY_SQL, {"channel": channel, "payload": payload})


def wake_workers(conn: Conn) -> None:
    """The payload-free wake-up: work may be due."""
    conn.execute(NOTIFY_SQL, {"channel": WAKEUP_CHANNEL, "payload": ""})


def announce(conn: Conn, ids: Sequence[int], wakeup: bool) -> None:
    """One NOTIFY per channel for a burst of new rows (wakes workers, feeds events)."""
    if wakeup:
        wake_workers(conn)
    notify_ids(conn, EVENTS_CHANNEL, ids)
