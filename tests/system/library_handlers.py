"""Handlers of a library user, loaded by real `jobsvc worker` processes in
test_library_handlers.py (``--handler`` and the ``jobsvc.handlers`` entry point)."""

from __future__ import annotations

import trio.lowlevel

import jobsvc


async def complete(job: jobsvc.Job) -> None:
    """Completes, after checking it was handed the job row of its own type."""
    await trio.lowlevel.checkpoint()
    if job.type != "echo" or job.status is not jobsvc.Status.PROCESSING:
        raise jobsvc.PermanentError(f"complete was handed a {job.type} job in {job.status}")


async def refuse(job: jobsvc.Job) -> None:
    raise jobsvc.PermanentError(f"refused {job.result_file} of {job.job_id}")


def not_async(job: jobsvc.Job) -> None:
    """A plain function: a worker must refuse to start with it."""
