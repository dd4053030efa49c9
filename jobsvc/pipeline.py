"""The default job handler: download the job's image and store it.

Handlers have the signature ``Callable[[Job], Awaitable[None]]``; the worker
calls one per claimed job, inside that job's cancel scope (docs/ARCHITECTURE.md,
"Adding a handler").
"""

from __future__ import annotations

from collections.abc import Callable

from jobsvc.fetch import Fetcher
from jobsvc.model import Job
from jobsvc.storage import Storage

__all__ = ["ImagePipeline"]


class ImagePipeline:
    """Fetch ``job.img_url`` (verified image, size-capped) and store it at ``job.storage_key``.

    Raises `PermanentError` or `TransientError` (from `jobsvc.fetch` and
    `jobsvc.storage`), which `jobsvc.retry` maps to the job's next state. On any
    error or cancellation nothing is left stored: `Storage.put` (or `put_bytes`) cleans up after
    itself, and it is the last step (the download's own cleanup, on leaving
    `Fetcher.download`, is shielded and never raises).
    """

    def __init__(
        self, fetcher: Fetcher, storage: Storage, *, on_downloaded: Callable[[int], None] | None = None
    ) -> None:
        self._fetcher = fetcher
        self._storage = storage
        self._on_downloaded = on_downloaded  # e.g. the worker's fetch-bytes counter

    async def __call__(self, job: Job) -> None:
        async with self._fetcher.download(job.img_url) as download:
            if self._on_downloaded is not None:
                self._on_downloaded(download.size)
            if download.data is not None:
                await self._storage.put_bytes(job.storage_key, download.data, download.mime)
            else:
                assert download.path is not None
                await self._storage.put(job.storage_key, download.path, download.mime)
