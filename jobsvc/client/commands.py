"""The client commands of a running API: ``enqueue``, ``list``, ``get``, ``cancel``,
``retry``, ``download``, ``watch``.

Each command is a short-lived process that talks HTTP to ``--url`` (default
``JOBSVC_URL``, else ``http://127.0.0.1:8000``) through `jobsvc.client.http`. Exit
codes, shared with `jobsvc.cli`:

    0    the request succeeded (``watch JOBID``: every result ended Completed)
    1    the API refused the request (its error sentence goes to stderr), the
         watched job ended Failed or Canceled, or ``watch --timeout`` passed
    2    bad usage: a malformed flag or job id, decided here before any request;
         also the API's 400 to a command that names a job (its id or file was malformed)
    3    the API could not be reached, or answered 502/503/504
    130  interrupted (Ctrl-C) before the end; ``watch`` without JOBID exits 0

A `ClientError` becomes one line on stderr and an exit code in one place, `_command`.

Loading this module imports nothing heavier than the standard library: it builds
the parser of every ``jobsvc`` invocation, ``--version`` included. httpx, pydantic
and trio are imported by the commands themselves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jobsvc.errors import InvalidRequest
from jobsvc.model import Status, check_file_name

if TYPE_CHECKING:
    from jobsvc.client.display import Display, JobTracker
    from jobsvc.client.http import AsyncClient
    from jobsvc.schemas import CancelResponse, JobView

__all__ = ["add_commands", "parse_run_at"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_URL = "http://127.0.0.1:8000"
#: How often ``watch`` redraws its progress line on a terminal, so the elapsed time runs.
TICK = 1.0

_STATUSES = [s.value for s in Status]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Below this, a number given to --run-at is surely epoch *seconds* (it would be before 1973).
_MIN_EPOCH_MS = 10**11

_EXIT_CODES = """\
exit codes:
  0  success
  1  the API refused the request (its reason is printed on stderr)
  2  bad usage (a malformed flag or job id; also the API's 400 to a command that names a job)
  3  the API could not be reached (or answered 502/503/504)
  130  interrupted (Ctrl-C)
"""
_WATCH_EXIT_CODES = """\
exit codes:
  0  every result of JOBID ended Completed; without JOBID: interrupted, or --timeout
  1  a result ended Failed or Canceled, --timeout passed, or the API refused the request
  2  bad usage (a malformed flag or job id, or the API answered 400 to it)
  3  the API could not be reached (or answered 502/503/504), or the event stream was lost
  130  interrupted (Ctrl-C) while following JOBID
"""


# --- the commands --------------------------------------------------------------------


if TYPE_CHECKING:  # subscriptable for type checkers only
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_commands(sub: Subparsers) -> None:
    """Add ``enqueue``, ``list``, ``get``, ``cancel``, ``retry``, ``download`` and ``watch``
    to the ``jobsvc`` parser."""
    _add_enqueue(sub)
    _add_list(sub)
    _add_get(sub)
    _add_cancel(sub)
    _add_retry(sub)
    _add_download(sub)
    _add_watch(sub)


def _add_enqueue(sub: Subparsers) -> None:
    enqueue = _client_parser(
        sub,
        "enqueue",
        "submit one image URL as a job",
        "Submit one result of a job: the API downloads IMG_URL, checks that it is an "
        "image and stores it. Prints the job id and status (the job view with --json).",
    )
    enqueue.add_argument("img_url", metavar="IMG_URL", help="absolute http(s) URL of the image")
    enqueue.add_argument(
        "--job-id",
        type=_job_id_arg,
        metavar="UUID",
        help="the job's id (default: a new random UUID); reuse it to add more results to one job",
    )
    enqueue.add_argument("--type", default="ingest", help="job type, 1..64 characters (default: ingest)")
    enqueue.add_argument("--priority", type=int, metavar="N", help="-100..100, higher runs first (default 0)")
    enqueue.add_argument(
        "--run-at",
        type=_run_at_arg,
        metavar="TIME",
        help="not before this time: ISO-8601 (2026-12-01T09:30:00Z; no zone = local time) "
        "or epoch milliseconds",
    )
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="1..10 (default: the server's)")
    enqueue.set_defaults(func=_command(cmd_enqueue))


def _add_list(sub: Subparsers) -> None:
    listing = _client_parser(
        sub,
        "list",
        "list jobs' results, oldest first",
        "List results as a table (or the job views as a JSON array with --json), oldest first.",
    )
    listing.add_argument(
        "--status", type=_status_arg, metavar="STATUS", help="only this status: " + ", ".join(_STATUSES)
    )
    listing.add_argument("--job-id", type=_job_id_arg, metavar="UUID", help="only the results of this job")
    listing.add_argument(
        "--limit", type=_positive_int, metavar="N", help="rows per request (server default 100, max 1000)"
    )
    listing.add_argument(
        "--all", action="store_true", help="follow the pagination (Link rel=next) to fetch every row"
    )
    listing.set_defaults(func=_command(cmd_list))


def _add_get(sub: Subparsers) -> None:
    get = _client_parser(
        sub,
        "get",
        "show one job's results",
        "Show every result of a job as a table: result file, status, attempts, age, "
        "duration and error (the job views as a JSON array with --json).",
    )
    get.add_argument("job_id", type=_job_id_arg, metavar="JOBID", help="the job's id")
    get.set_defaults(func=_command(cmd_get, bad_request=EXIT_USAGE))


def _add_cancel(sub: Subparsers) -> None:
    cancel = _client_parser(
        sub,
        "cancel",
        "cancel a job's unfinished results",
        "Cancel every unfinished result of a job: queued ones at once, running ones "
        "within moments (their worker is told). Finished results stay as they are. "
        "Prints the job's status and each result's.",
    )
    cancel.add_argument("job_id", type=_job_id_arg, metavar="JOBID", help="the job's id")
    cancel.set_defaults(func=_command(cmd_cancel, bad_request=EXIT_USAGE))


def _add_retry(sub: Subparsers) -> None:
    retry = _client_parser(
        sub,
        "retry",
        "run a job's failed and canceled results again",
        "Put every Failed or Canceled result of a job back to Queued, with its attempts "
        "counted from 0 again; other results stay as they are. Prints the job's status and "
        "each result's.",
    )
    retry.add_argument("job_id", type=_job_id_arg, metavar="JOBID", help="the job's id")
    retry.set_defaults(func=_command(cmd_retry, bad_request=EXIT_USAGE))


def _add_download(sub: Subparsers) -> None:
    download = _client_parser(
        sub,
        "download",
        "save a completed result's image to a file",
        "Stream the stored image of a Completed result to a file: FILE in the current "
        "directory unless -o says otherwise (a directory, a path, or - for stdout). The "
        "file is written as PATH.part and renamed when complete, so a failed download "
        "leaves nothing behind; an existing file is replaced. Prints the path and size "
        "(a JSON object with --json).",
    )
    download.add_argument("job_id", type=_job_id_arg, metavar="JOBID", help="the job's id")
    download.add_argument(
        "result_file", type=_result_file_arg, metavar="FILE", help="the result file (as `get` shows it)"
    )
    download.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write: a file, a directory (FILE inside it), or - for stdout (default: ./FILE)",
    )
    download.set_defaults(func=_command(cmd_download, bad_request=EXIT_USAGE))


def _add_watch(sub: Subparsers) -> None:
    watch = _client_parser(
        sub,
        "watch",
        "follow status changes live (of one job, or of all)",
        "Follow status changes as they happen (Server-Sent Events, no polling), one line "
        "each: time, job id, result file, status, attempt, error. With JOBID: print the "
        "job's current state, follow it (a progress line when stdout is a terminal) and "
        "exit when every result is finished: 0 if all Completed, 1 if any Failed or "
        "Canceled. Without JOBID: follow every job until interrupted (Ctrl-C exits 0).",
        exit_codes=_WATCH_EXIT_CODES,
    )
    watch.add_argument(
        "job_id", nargs="?", type=_job_id_arg, metavar="JOBID", help="the job to follow (default: all jobs)"
    )
    watch.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="give up after S seconds: exit 1 with JOBID; without JOBID, stop following (exit 0)",
    )
    watch.set_defaults(func=_command(cmd_watch, bad_request=EXIT_USAGE))


def _client_parser(
    sub: Subparsers,
    name: str,
    summary: str,
    description: str,
    exit_codes: str = _EXIT_CODES,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description="\n".join(textwrap.wrap(description, 88)),
        epilog=exit_codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        type=_url_arg,  # argparse applies it to a string default too: a bad JOBSVC_URL is usage
        default=os.environ.get("JOBSVC_URL") or DEFAULT_URL,
        metavar="API_URL",
        help=f"base URL of the jobsvc API (default: JOBSVC_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("JOBSVC_TOKEN") or None,
        metavar="TOKEN",
        help="sent as Authorization: Bearer TOKEN (default: JOBSVC_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(command_name=name)
    return parser


def _command(
    run: Callable[[argparse.Namespace], int], *, bad_request: int = EXIT_FAILED
) -> Callable[[argparse.Namespace], int]:
    """Print a `ClientError` as one line on stderr and return its exit code.

    ``bad_request`` is the exit code of the API's 400: `EXIT_USAGE` for the commands
    whose only input is a job id (and file name), as the client's own check of the id
    would have said; `EXIT_FAILED` for ``enqueue``, whose 400 also means an unreachable
    or non-image URL (refused, not misused).
    """

    def command(args: argparse.Namespace) -> int:
        from jobsvc.client.core import ClientError  # httpx and pydantic: only when a command runs

        try:
            return run(args)
        except ClientError as exc:
            print(f"jobsvc {args.command_name}: {exc}", file=sys.stderr)
            if exc.unavailable:
                return EXIT_UNAVAILABLE
            return bad_request if exc.status == 400 else EXIT_FAILED
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`jobsvc list | head`): not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return command


def cmd_enqueue(args: argparse.Namespace) -> int:
    from jobsvc.client.display import view_json
    from jobsvc.client.http import Client

    with Client(args.url, token=args.token) as client:
        answer = client.enqueue(
            args.job_id or str(uuid.uuid4()),
            args.img_url,
            type=args.type,
            priority=args.priority,
            run_at=args.run_at,
            max_attempts=args.max_attempts,
        )
    view = answer.view
    if args.json:
        _print_json(view_json(view))
    else:
        print(f"{view.job_id} {view.status.value}")
    if not answer.created:
        print(
            f"jobsvc enqueue: {view.result_file} of job {view.job_id} was already enqueued "
            "with the same request; this is its current state",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from jobsvc.client.display import format_table, view_json
    from jobsvc.client.http import Client

    views: list[JobView] = []
    next_url = None
    with Client(args.url, token=args.token) as client:
        for page in client.pages(status=args.status, job_id=args.job_id, limit=args.limit):
            views.extend(page.views)
            next_url = page.next_url
            if not args.all:
                break
    if args.json:
        _print_json([view_json(view) for view in views])
    elif views:
        print(format_table(views, now_ms=time.time_ns() // 1_000_000))
    else:
        print("jobsvc list: no results", file=sys.stderr)
    if next_url and not args.all:
        print("jobsvc list: more results exist; --all fetches them all", file=sys.stderr)
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    from jobsvc.client.display import format_table, view_json
    from jobsvc.client.http import Client

    with Client(args.url, token=args.token) as client:
        views = client.get(args.job_id)
    if args.json:
        _print_json([view_json(view) for view in views])
    else:
        print(format_table(views, now_ms=time.time_ns() // 1_000_000))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from jobsvc.client.http import Client

    with Client(args.url, token=args.token) as client:
        answer = client.cancel(args.job_id)
    return _print_summary(args, answer)


def cmd_retry(args: argparse.Namespace) -> int:
    from jobsvc.client.http import Client

    with Client(args.url, token=args.token) as client:
        answer = client.retry(args.job_id)
    return _print_summary(args, answer)


def _print_summary(args: argparse.Namespace, answer: CancelResponse) -> int:
    if args.json:
        _print_json(answer.model_dump(mode="json", by_alias=True))
        return EXIT_OK
    print(f"{answer.job_id} {answer.status.value}")
    for result in answer.results:
        print(f"  {result.result_file}  {result.status.value}")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from jobsvc.client.http import Client

    if args.output == "-":
        with Client(args.url, token=args.token) as client:
            client.download(args.job_id, args.result_file, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    path = Path(args.output or args.result_file)
    if path.is_dir():
        path = path / args.result_file
    with Client(args.url, token=args.token) as client:
        size = client.download(args.job_id, args.result_file, path)
    if args.json:
        _print_json({"jobId": args.job_id, "resultFile": args.result_file, "path": str(path), "bytes": size})
    else:
        print(f"{path}  {size} bytes")
    return EXIT_OK


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

    from jobsvc.client.core import ClientError
    from jobsvc.client.display import JobTracker
    from jobsvc.client.http import AsyncClient

    timeout = math.inf if args.timeout is None else args.timeout
    async with AsyncClient(args.url, token=args.token) as client:
        if args.job_id is None:
            with trio.move_on_after(timeout):
                await _watch_all(client, display)
            return EXIT_OK
        tracker = JobTracker(args.job_id)
        with trio.move_on_after(timeout):
            return await _watch_job(client, tracker, display)
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


async def _watch_job(
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
    as itself, out of the nursery's exception group, for `_command` to turn into an exit
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


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# --- argument types -----------------------------------------------------------------


def _url_arg(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as {DEFAULT_URL} (--url, or JOBSVC_URL), got {text!r}"
        )
    return text.rstrip("/")


def _job_id_arg(text: str) -> str:
    """A job id as the API requires it (`jobsvc.model.parse_job_id`), decided before any request."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a job id (a UUID such as {uuid.UUID(int=1)}), got {text!r:.60}"
        ) from None
    if value.int == 0:
        raise argparse.ArgumentTypeError("the nil UUID is not a job id")
    return str(value)


def _result_file_arg(text: str) -> str:
    """A name that could have been stored: no path, so ``./FILE`` stays in the current directory."""
    try:
        return check_file_name(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status_arg(text: str) -> str:
    for status in _STATUSES:
        if text.lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(_STATUSES)}, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _run_at_arg(text: str) -> int:
    try:
        return parse_run_at(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_run_at(text: str) -> int:
    """``--run-at``: epoch milliseconds, or an ISO-8601 time (no zone means local time)."""
    value = text.strip()
    if re.fullmatch(r"[0-9]+", value):
        ms = int(value)
        if ms < _MIN_EPOCH_MS:
            raise ValueError(
                f"{value} looks like epoch seconds; --run-at takes epoch milliseconds or ISO-8601"
            )
        return ms
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 time (2026-12-01T09:30:00Z) or epoch milliseconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local time zone, as `date` would read it
    return (moment - _EPOCH) // timedelta(milliseconds=1)
