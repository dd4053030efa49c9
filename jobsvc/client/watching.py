"""``jobsvc watch [JOBID]``: status changes as they happen, over the API's event stream.

- Without JOBID (`_watch_all`): one line per change of any job until interrupted or
  ``--timeout``; a line on stderr at each (re)connection.
- With JOBID (`watch_job`): the job's current state, then its changes until every result
  is finished; on a terminal, a progress line below them whose elapsed time is redrawn
  every `TICK` seconds from the local clock (no extra request).

The exit code says how the job ended (`jobsvc.client.exits`). Loading this module
imports only the standard library: trio, httpx and pydantic are imported when the
command runs, so that ``jobsvc --version`` does not wait for them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from jobsvc.client.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from jobsvc.client.aio import AsyncClient
    from jobsvc.client.display import Display, JobTracker

__all__ = ["TICK", "cmd_watch", "watch_job"]

#: How often ``watch`` redraws its progress line on a terminal, so the elapsed time runs.
TICK = 1.0


def cmd_watch(args: argparse.Namespace) -> int:
    import trio

    from jobsvc.client.display import Display

    live = not args.json and args.job_id is not None and sys.stdout.isatty()
    display = Display(sys.stdout, as_json=args.json, live=live)
    try:
        return trio.run(_watch, args, display)
    except KeyboardInterrupt:
        return EXIT_OK if args.job_id is None else EXIT_INTERRUPTED
    finally:
        display.close()


async def _watch(args: argparse.Namespace, display: Display) -> int:
    import trio

    from jobsvc.client.aio import AsyncClient
    from jobsvc.client.core import ClientError
    from jobsvc.client.display import JobTracker

    timeout = math.inf if args.timeout is None else args.timeout
    async with AsyncClient(args.url, token=args.token) as client:
        if args.job_id is None:
            with trio.move_on_after(timeout):
                await _watch_all(client, display)
            return EXIT_OK
        tracker = JobTracker(args.job_id)
        with trio.move_on_after(timeout):
            return await watch_job(client, tracker, display)
    display.close()
    summary = tracker.summary() or "no result seen yet"
    raise ClientError(f"timed out after {args.timeout:g}s waiting for job {args.job_id} ({summary})")


async def _watch_all(client: AsyncClient, display: Display) -> None:
    """Print every job's changes until cancelled; a line on stderr at each (re)connection."""
    connections = 0

    def connected() -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            message = f"following every job at {client.url}; Ctrl-C stops"
        else:
            message = "reconnected; changes made while disconnected are not shown"
        print(f"jobsvc watch: {message}", file=sys.stderr, flush=True)

    async with aclosing(client.events(None, on_connect=connected)) as views:
        async for view in views:
            display.show(view)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def watch_job(
    client: AsyncClient, tracker: JobTracker, display: Display, *, now_ms: Callable[[], int] = _now_ms
) -> int:
    """Print the job's current state, then follow its events until every result is finished.

    On a terminal (``display.live``) the progress line below the changes shows the time
    since the job was created or started, redrawn every `TICK` seconds from the local
    clock (``now_ms``): the server is asked nothing more.
    """
    from jobsvc.client.display import progress_line

    views = await client.get(tracker.job_id)
    if views:  # the API's spelling of the id, which its events carry
        tracker.job_id = str(views[0].job_id)
    for view in views:
        if tracker.update(view):
            display.show(view)
    display.progress(progress_line(tracker, now_ms=now_ms()))
    if not tracker.finished:
        await _follow_job(client, tracker, display, now_ms)
    display.close()
    if not tracker.all_completed:
        print(f"jobsvc watch: job {tracker.job_id} finished: {tracker.summary()}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _follow_job(
    client: AsyncClient, tracker: JobTracker, display: Display, now_ms: Callable[[], int]
) -> None:
    """Show each change of the job until it is finished, with the clock ticking beside.

    The clock task never fails, so an error here is the event stream's own: it is raised
    as itself, out of the nursery's exception group, for `jobsvc.client.exits.command` to turn into an exit
    code (or `cmd_watch` into 130 for Ctrl-C). Cancellation (``--timeout``) closes the
    stream and stops the clock.
    """
    import trio

    from jobsvc.client.display import progress_line

    async def tick() -> None:
        while True:
            await trio.sleep(TICK)
            display.progress(progress_line(tracker, now_ms=now_ms()))

    try:
        async with trio.open_nursery() as nursery:
            if display.live:
                nursery.start_soon(tick)
            async with aclosing(client.events(tracker.job_id)) as events:
                async for view in events:
                    if tracker.update(view):
                        display.show(view)
                        display.progress(progress_line(tracker, now_ms=now_ms()))
                    if tracker.finished:
                        break
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
