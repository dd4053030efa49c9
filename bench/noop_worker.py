"""A jobsvc worker process whose every job is a no-op: ``python -m bench.noop_worker``.

The handler is registered through the library API (``Worker(settings,
default_handler=noop)``); settings come from ``JOBSVC_*`` like ``jobsvc worker``
(with its logging). Prints ``bench-worker ready`` once it listens, and shuts down
gracefully on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal

import trio

from jobsvc import logs
from jobsvc.config import Settings
from jobsvc.model import Job
from jobsvc.worker import Worker


async def noop(job: Job) -> None:
    return None


async def main() -> None:
    settings = Settings.from_env()
    logs.configure(settings)
    worker = Worker(settings, default_handler=noop)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            print(f"bench-worker ready concurrency={settings.concurrency}", flush=True)
            async for _ in signals:
                worker.shutdown()
                break


if __name__ == "__main__":
    trio.run(main)
