"""jobsvc: a PostgreSQL-backed job queue service for image-ingest jobs.

The public API is what this module exports (``__all__``), and nothing else:

- `Client` / `AsyncClient` (trio or asyncio): the HTTP API, typed (`JobView`,
- `enqueue(conn, …)`: enqueue inside your own psycopg transaction.
- `Job`, `Status`, `PermanentError`, `TransientError`: for handlers of your own
  (``jobsvc worker --handler TYPE=module:function``, entry-point group ``jobsvc.handlers``).
- `JobsvcError` (the root), `InvalidRequest`, `Conflict`, `QuotaExceeded`: what `enqueue` raises.

Names are imported on first use, so ``import jobsvc`` (and ``jobsvc --version``)
loads neither httpx, trio nor psycopg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from jobsvc.client.aio import AsyncClient as AsyncClient
    from jobsvc.client.http import BatchItem as BatchItem
    from jobsvc.client.http import Client as Client
    from jobsvc.client.http import ClientError as ClientError
    from jobsvc.client.http import Enqueued as Enqueued
    from jobsvc.errors import Conflict as Conflict
    from jobsvc.errors import InvalidRequest as InvalidRequest
    from jobsvc.errors import JobsvcError as JobsvcError
    from jobsvc.errors import PermanentError as PermanentError
    from jobsvc.errors import QuotaExceeded as QuotaExceeded
    from jobsvc.errors import TransientError as TransientError
    from jobsvc.model import Job as Job
    from jobsvc.model import Status as Status
    from jobsvc.schemas import CancelResponse as CancelResponse
    from jobsvc.schemas import EnqueueRequest as EnqueueRequest
    from jobsvc.schemas import JobView as JobView
    from jobsvc.transactional import enqueue as enqueue

#: Where each public name lives (imported on first access, PEP 562).
_EXPORTS = {
    "AsyncClient": "jobsvc.client.aio",
    "BatchItem": "jobsvc.client.http",
    "CancelResponse": "jobsvc.schemas",
    "Client": "jobsvc.client.http",
    "ClientError": "jobsvc.client.http",
    "Conflict": "jobsvc.errors",
    "EnqueueRequest": "jobsvc.schemas",
    "Enqueued": "jobsvc.client.http",
    "InvalidRequest": "jobsvc.errors",
    "Job": "jobsvc.model",
    "JobView": "jobsvc.schemas",
    "JobsvcError": "jobsvc.errors",
    "PermanentError": "jobsvc.errors",
    "QuotaExceeded": "jobsvc.errors",
    "Status": "jobsvc.model",
    "TransientError": "jobsvc.errors",
    "enqueue": "jobsvc.transactional",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobsvc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
