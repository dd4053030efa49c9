"""The default job handler: download the job's image and store it (DESIGN §3, §5, §6).

Handlers have the signature ``Callable[[Job], Awaitable[None]]``; the worker
calls one per claimed job, inside that job's cancel scope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from jobsvc.errors import JobError
from jobsvc.fetch import Fetcher
from jobsvc.model import Job
from jobsvc.storage import Storage

__all__ = ["ImagePipeline"]

log = logging.getLogger(__name__)


class ImagePipeline:
    """Fetch ``job.img_url`` (verified image, size-capped) and store it at ``job.storage_key``.

    Raises `PermanentError` or `TransientError` (from `jobsvc.fetch` and
    `jobsvc.storage`). On any error or cancellation nothing is left stored:
    `Storage.put` cleans up after itself, and if the put succeeded but a later
    step fails (removing the temporary download), the stored object is
    deleted again, shielded, before the exception propagates.
    """

    def __init__(
        self, fetcher: Fetcher, storage: Storage, *, on_downloaded: Callable[[int], None] | None = None
    ) -> None:
        self._fetcher = fetcher
        self._storage = storage
        self._on_downloaded = on_downloaded  # e.g. the worker's fetch-bytes counter

    async def __call__(self, job: Job) -> None:
        stored = False
        try:
            async with self._fetcher.download(job.img_url) as download:
                if self._on_downloaded is not None:
                    self._on_downloaded(download.size)
                await self._storage.put(job.storage_key, download.path, download.mime)
                stored = True
        except BaseException:
            if stored:
                with trio.CancelScope(shield=True):
                    await self._undo(job)
            raise

    async def _undo(self, job: Job) -> None:
        try:
            await self._storage.delete(job.storage_key)
        except JobError:
            # Keep the original exception for the caller; an orphan object is
            # harmless (a retry overwrites the same key) and is worth a log line.
            log.warning("could not delete %s after a failure", job.storage_key, exc_info=True)
