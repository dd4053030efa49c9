"""The client commands of a running API: ``enqueue``, ``list``, ``get``, ``cancel``,
``retry``, ``download``, ``watch``: their parsers, and all but ``watch`` itself.

Each command is a short-lived process that talks HTTP to ``--url`` (default
``JOBSVC_URL``, else ``http://127.0.0.1:8000``) through `jobsvc.client.http`.

    arguments.py  what the flags accept, decided before any request (exit 2)
    exits.py      the exit codes, and `command`: a `ClientError` to one line and a code
    watching.py   ``watch``: the live line, the ticking clock, the state changes

Loading this module imports nothing heavier than the standard library: it builds
the parser of every ``jobsvc`` invocation, ``--version`` included. httpx, pydantic
and trio are imported by the commands themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobsvc.client.arguments import (
    DEFAULT_URL,
    STATUSES,
    job_id_arg,
    positive_float,
    positive_int,
    result_file_arg,
    run_at_arg,
    status_arg,
    url_arg,
)
from jobsvc.client.exits import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    WATCH_EXIT_CODES_HELP,
    command,
)
from jobsvc.client.watching import cmd_watch

if TYPE_CHECKING:
    from jobsvc.schemas import CancelResponse, JobView

__all__ = ["add_commands"]


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
        type=job_id_arg,
        metavar="UUID",
        help="the job's id (default: a new random UUID); reuse it to add more results to one job",
    )
    enqueue.add_argument("--type", default="ingest", help="job type, 1..64 characters (default: ingest)")
    enqueue.add_argument("--priority", type=int, metavar="N", help="-100..100, higher runs first (default 0)")
    enqueue.add_argument(
        "--run-at",
        type=run_at_arg,
        metavar="TIME",
        help="not before this time: ISO-8601 (2026-12-01T09:30:00Z; no zone = local time) "
        "or epoch milliseconds",
    )
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="1..10 (default: the server's)")
    enqueue.set_defaults(func=command(cmd_enqueue))


def _add_list(sub: Subparsers) -> None:
    listing = _client_parser(
        sub,
        "list",
        "list jobs' results, oldest first",
        "List results as a table (or the job views as a JSON array with --json), oldest first.",
    )
    listing.add_argument(
        "--status", type=status_arg, metavar="STATUS", help="only this status: " + ", ".join(STATUSES)
    )
    listing.add_argument("--job-id", type=job_id_arg, metavar="UUID", help="only the results of this job")
    listing.add_argument(
        "--limit", type=positive_int, metavar="N", help="rows per request (server default 100, max 1000)"
    )
    listing.add_argument(
        "--all", action="store_true", help="follow the pagination (Link rel=next) to fetch every row"
    )
    listing.set_defaults(func=command(cmd_list))


def _add_get(sub: Subparsers) -> None:
    get = _client_parser(
        sub,
        "get",
        "show one job's results",
        "Show every result of a job as a table: result file, status, attempts, age, "
        "duration and error (the job views as a JSON array with --json).",
    )
    get.add_argument("job_id", type=job_id_arg, metavar="JOBID", help="the job's id")
    get.set_defaults(func=command(cmd_get, bad_request=EXIT_USAGE))


def _add_cancel(sub: Subparsers) -> None:
    cancel = _client_parser(
        sub,
        "cancel",
        "cancel a job's unfinished results",
        "Cancel every unfinished result of a job: queued ones at once, running ones "
        "within moments (their worker is told). Finished results stay as they are. "
        "Prints the job's status and each result's.",
    )
    cancel.add_argument("job_id", type=job_id_arg, metavar="JOBID", help="the job's id")
    cancel.set_defaults(func=command(cmd_cancel, bad_request=EXIT_USAGE))


def _add_retry(sub: Subparsers) -> None:
    retry = _client_parser(
        sub,
        "retry",
        "run a job's failed and canceled results again",
        "Put every Failed or Canceled result of a job back to Queued, with its attempts "
        "counted from 0 again; other results stay as they are. Prints the job's status and "
        "each result's.",
    )
    retry.add_argument("job_id", type=job_id_arg, metavar="JOBID", help="the job's id")
    retry.set_defaults(func=command(cmd_retry, bad_request=EXIT_USAGE))


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
    download.add_argument("job_id", type=job_id_arg, metavar="JOBID", help="the job's id")
    download.add_argument(
        "result_file", type=result_file_arg, metavar="FILE", help="the result file (as `get` shows it)"
    )
    download.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write: a file, a directory (FILE inside it), or - for stdout (default: ./FILE)",
    )
    download.set_defaults(func=command(cmd_download, bad_request=EXIT_USAGE))


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
        exit_codes=WATCH_EXIT_CODES_HELP,
    )
    watch.add_argument(
        "job_id", nargs="?", type=job_id_arg, metavar="JOBID", help="the job to follow (default: all jobs)"
    )
    watch.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="give up after S seconds: exit 1 with JOBID; without JOBID, stop following (exit 0)",
    )
    watch.set_defaults(func=command(cmd_watch, bad_request=EXIT_USAGE))


def _client_parser(
    sub: Subparsers,
    name: str,
    summary: str,
    description: str,
    exit_codes: str = EXIT_CODES_HELP,
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
        type=url_arg,  # argparse applies it to a string default too: a bad JOBSVC_URL is usage
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


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))
