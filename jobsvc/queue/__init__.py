"""The queue in PostgreSQL: enqueue, cancel, claim, finish, rescue, read.

Each public function takes an open connection and runs inside the caller's
transaction (`db.Database.run` / `db.Session.run` open one per call), so a unit
of work is one thread hop. The SQL is in `jobsvc.queries`; the retry decisions
that `finish` and `rescue` write are `jobsvc.retry`'s.

One module per idea, all re-exported here (callers use ``queue.X``):

- `schema` — the schema version this code expects, `migrate`, `schema_problem`;
- `enqueues` — `enqueue`, `enqueue_many`, `enqueue_group`, `enqueue_alone`
  (`enqueue_alone_plan`: its one statement, to send from trio), `check_identical`, the quota
  (`reserve_quota`, `admit`);
- `reads` — `get_job`, `get_result`, `list_jobs`, the counts per status, `queue_age`;
- `control` — a client's `cancel` and `retry`;
- `claims` — the worker's side: `claim` (`TenantRing`), `finish`, `finish_and_claim`, `cycle`
  (and `cycle_plan`, the same as statements to send from trio), `cancel_requested`, `rescue`;
- `lifecycle` — `clean_batch` and `compact_counts` under `CLEAN_LOCK`;
- `notify` — the channels (see its docstring), `notify_ids`, `parse_ids`, `announce`.
"""

from jobsvc.queries import CLAIM_SQL, CLEAN_SQL, UNLOCK_SQL  # read by tests and bench as queue.X
from jobsvc.queue.claims import (
    CLAIM_SLACK,
    DEFAULT_POLICY,
    TenantRing,
    cancel_requested,
    claim,
    cycle,
    cycle_plan,
    finish,
    finish_and_claim,
    rescue,
    write_decisions,
)
from jobsvc.queue.control import cancel, retry
from jobsvc.queue.enqueues import (
    QUOTA_LOCK_SPACE,
    QUOTA_RETRY_AFTER,
    Key,
    NewResult,
    Placed,
    admit,
    check_identical,
    enqueue,
    enqueue_alone,
    enqueue_alone_plan,
    enqueue_group,
    enqueue_many,
    existing_keys,
    failed_alone_may_pass,
    quota_exceeded,
    reserve_quota,
)
from jobsvc.queue.lifecycle import CLEAN_BATCH, CLEAN_LOCK, FINISHED, clean_batch, compact_counts
from jobsvc.queue.notify import (
    CANCEL_CHANNEL,
    EVENTS_CHANNEL,
    IDS_PER_NOTIFY,
    WAKEUP_CHANNEL,
    announce,
    notify_ids,
    parse_ids,
    wake_workers,
)
from jobsvc.queue.reads import (
    ListCursor,
    ListFilter,
    get_by_ids,
    get_job,
    get_result,
    list_jobs,
    queue_age,
    status_counts,
    status_counts_exact,
)
from jobsvc.queue.schema import (
    MIGRATE_LOCK,
    SCHEMA_VERSION,
    load_schema,
    migrate,
    schema_problem,
    schema_version,
)
from jobsvc.retry import Outcome

__all__ = [
    "CANCEL_CHANNEL",
    "CLAIM_SLACK",
    "CLAIM_SQL",
    "CLEAN_BATCH",
    "CLEAN_LOCK",
    "CLEAN_SQL",
    "DEFAULT_POLICY",
    "EVENTS_CHANNEL",
    "FINISHED",
    "IDS_PER_NOTIFY",
    "MIGRATE_LOCK",
    "QUOTA_LOCK_SPACE",
    "QUOTA_RETRY_AFTER",
    "SCHEMA_VERSION",
    "UNLOCK_SQL",
    "WAKEUP_CHANNEL",
    "Key",
    "ListCursor",
    "ListFilter",
    "NewResult",
    "Outcome",
    "Placed",
    "TenantRing",
    "admit",
    "announce",
    "cancel",
    "cancel_requested",
    "check_identical",
    "claim",
    "clean_batch",
    "compact_counts",
    "cycle",
    "cycle_plan",
    "enqueue",
    "enqueue_alone",
    "enqueue_alone_plan",
    "enqueue_group",
    "enqueue_many",
    "existing_keys",
    "failed_alone_may_pass",
    "finish",
    "finish_and_claim",
    "get_by_ids",
    "get_job",
    "get_result",
    "list_jobs",
    "load_schema",
    "migrate",
    "notify_ids",
    "parse_ids",
    "queue_age",
    "quota_exceeded",
    "rescue",
    "reserve_quota",
    "retry",
    "schema_problem",
    "schema_version",
    "status_counts",
    "status_counts_exact",
    "wake_workers",
    "write_decisions",
]
