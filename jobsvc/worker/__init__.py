"""The trio worker (docs/ARCHITECTURE.md, "The worker").

One module per part: `claimer`, `executor`, `finisher`, `listener`, composed by
`worker.Worker`; `store` is the seam to the queue, with `pgstore.PostgresStore`
and the in-memory fake `memory.MemoryStore`.
"""

from jobsvc.worker.executor import Handler
from jobsvc.worker.memory import MemoryStore
from jobsvc.worker.report import log_transition
from jobsvc.worker.store import CancelRequested, Signal, Store, StoreSession, Wakeup
from jobsvc.worker.worker import Worker

__all__ = [
    "CancelRequested",
    "Handler",
    "MemoryStore",
    "Signal",
    "Store",
    "StoreSession",
    "Wakeup",
    "Worker",
    "log_transition",
]
