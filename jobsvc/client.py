"""Client commands of a running API: ``enqueue``, ``list``, ``cancel``, ``watch``.

Each command is a short-lived process that talks HTTP to ``--url`` (default
``http://127.0.0.1:8000``). Exit codes, shared with `jobsvc.cli`:

    0    the request succeeded (``watch JOBID``: every result ended Completed)
    1    the API refused the request (its error sentence goes to stderr), the
         watched job ended Failed or Canceled, or ``watch --timeout`` passed
    2    bad usage (a malformed flag)
    3    the API could not be reached, or answered 502/503/504
    130  interrupted (Ctrl-C) before the end; ``watch`` without JOBID exits 0

httpx's exceptions are translated into `ClientError` (a message and an exit code)
in one place, `_translate`; HTTP error answers in `_check`. The pure parts (the
Server-Sent Events parser, the table, ``--run-at``) are plain functions.
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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import httpx
import trio

from jobsvc import __version__
from jobsvc.model import Status

__all__ = [
    "ClientError",
    "JobTracker",
    "SSEEvent",
    "SSEParser",
    "add_commands",
    "error_sentence",
    "format_change",
    "format_duration",
    "format_table",
    "parse_run_at",
    "progress_line",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
#: The API sends a heartbeat comment every 15 s: three missed ones mean the stream is dead.
STREAM_READ_TIMEOUT = 45.0
#: Consecutive failed reconnects of an event stream before ``watch`` gives up (exit 3).
MAX_RECONNECTS = 5
MAX_RECONNECT_DELAY = 10.0

_FINISHED = frozenset(s.value for s in Status if s.finished)
_STATUSES = [s.value for s in Status]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Below this, a number given to --run-at is surely epoch *seconds* (it would be before 1973).
_MIN_EPOCH_MS = 10**11

_EXIT_CODES = """\
exit codes:
  0  success
  1  the API refused the request (its reason is printed on stderr)
  2  bad usage
  3  the API could not be reached (or answered 502/503/504)
  130  interrupted (Ctrl-C)
"""
_WATCH_EXIT_CODES = """\
exit codes:
  0  every result of JOBID ended Completed; without JOBID: interrupted, or --timeout
  1  a result ended Failed or Canceled, --timeout passed, or the API refused the request
  2  bad usage
  3  the API could not be reached (or answered 502/503/504), or the event stream was lost
  130  interrupted (Ctrl-C) while following JOBID
"""


class ClientError(Exception):
    """A request that did not succeed: ``str(err)`` is a sentence, ``code`` the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- the commands --------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``enqueue``, ``list``, ``cancel`` and ``watch`` to the ``jobsvc`` parser."""
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

    listing = _client_parser(
        sub,
        "list",
        "list jobs' results, oldest first",
        "List results as a table (or the job views as a JSON array with --json), oldest first.",
    )
    listing.add_argument(
        "--status", type=_status_arg, metavar="STATUS", help="only this status: " + ", ".join(_STATUSES)
    )
    listing.add_argument("--job-id", metavar="UUID", help="only the results of this job")
    listing.add_argument(
        "--limit", type=_positive_int, metavar="N", help="rows per request (server default 100, max 1000)"
    )
    listing.add_argument(
        "--all", action="store_true", help="follow the pagination (Link rel=next) to fetch every row"
    )
    listing.set_defaults(func=_command(cmd_list))

    cancel = _client_parser(
        sub,
        "cancel",
        "cancel a job's unfinished results",
        "Cancel every unfinished result of a job: queued ones at once, running ones "
        "within moments (their worker is told). Finished results stay as they are. "
        "Prints the job's status and each result's.",
    )
    cancel.add_argument("job_id", metavar="JOBID", help="the job's id")
    cancel.set_defaults(func=_command(cmd_cancel))

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
    watch.add_argument("job_id", nargs="?", metavar="JOBID", help="the job to follow (default: all jobs)")
    watch.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="give up after S seconds: exit 1 with JOBID; without JOBID, stop following (exit 0)",
    )
    watch.set_defaults(func=_command(cmd_watch))


def _client_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
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
        type=_url_arg,
        default=DEFAULT_URL,
        metavar="API_URL",
        help=f"base URL of the jobsvc API (default: {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(command_name=name)
    return parser


def _command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a `ClientError` as one line on stderr and return its exit code."""

    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ClientError as exc:
            print(f"jobsvc {args.command_name}: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`jobsvc list | head`): not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return command


def cmd_enqueue(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "jobId": args.job_id or str(uuid.uuid4()),
        "type": args.type,
        "imgUrl": args.img_url,
    }
    for key, value in (
        ("priority", args.priority),
        ("runAt", args.run_at),
        ("maxAttempts", args.max_attempts),
    ):
        if value is not None:
            body[key] = value
    with _client(args.url) as client:
        response = client.post("/results/enqueue", json=body)
        view = _check(response)
    if args.json:
        _print_json(view)
    else:
        print(f"{view['jobId']} {view['status']}")
    if response.status_code == 200:
        print(
            f"jobsvc enqueue: {view['resultFile']} of job {view['jobId']} was already enqueued "
            "with the same request; this is its current state",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    params = {"status": args.status, "jobId": args.job_id, "limit": args.limit}
    views: list[dict[str, Any]] = []
    with _client(args.url) as client:
        response = client.get("/results/list", params={k: v for k, v in params.items() if v is not None})
        views.extend(_check(response))
        seen: set[str] = set()
        next_url = response.links.get("next", {}).get("url")
        while args.all and next_url and next_url not in seen:
            seen.add(next_url)
            response = client.get(next_url)
            views.extend(_check(response))
            next_url = response.links.get("next", {}).get("url")
    if args.json:
        _print_json(views)
    elif views:
        print(format_table(views, now_ms=_now_ms()))
    else:
        print("jobsvc list: no results", file=sys.stderr)
    if next_url and not args.all:
        print("jobsvc list: more results exist; --all fetches them all", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args.url) as client:
        answer = _check(client.post(f"/results/{quote(args.job_id, safe='')}/cancel"))
    if args.json:
        _print_json(answer)
        return EXIT_OK
    print(f"{answer['jobId']} {answer['status']}")
    for result in answer.get("results", []):
        print(f"  {result['resultFile']}  {result['status']}")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    live = not args.json and args.job_id is not None and sys.stdout.isatty()
    display = Display(sys.stdout, as_json=args.json, live=live)
    try:
        return trio.run(_watch, args, display)
    except KeyboardInterrupt:
        return EXIT_OK if args.job_id is None else EXIT_INTERRUPTED
    finally:
        display.close()


async def _watch(args: argparse.Namespace, display: Display) -> int:
    timeout = math.inf if args.timeout is None else args.timeout
    async with _async_client(args.url) as client:
        if args.job_id is None:
            connections = 0

            def connected() -> None:
                nonlocal connections
                connections += 1
                if connections == 1:
                    message = f"following every job at {args.url}; Ctrl-C stops"
                else:
                    message = "reconnected; changes made while disconnected are not shown"
                print(f"jobsvc watch: {message}", file=sys.stderr, flush=True)

            with trio.move_on_after(timeout):
                async with aclosing(_follow(client, None, on_connect=connected)) as views:
                    async for view in views:
                        display.show(view)
            return EXIT_OK
        tracker = JobTracker(args.job_id)
        with trio.move_on_after(timeout):
            return await _watch_job(client, tracker, display)
    display.close()
    summary = tracker.summary() or "no result seen yet"
    raise ClientError(f"timed out after {args.timeout:g}s waiting for job {args.job_id} ({summary})")


async def _watch_job(client: httpx.AsyncClient, tracker: JobTracker, display: Display) -> int:
    """Print the job's current state, then follow its events until every result is finished."""
    response = await client.get(f"/results/{quote(tracker.job_id, safe='')}")
    views: list[dict[str, Any]] = _check(response)
    if views:  # the API's spelling of the id, which its events carry
        tracker.job_id = str(views[0].get("jobId", tracker.job_id))
    for view in views:
        if tracker.update(view):
            display.show(view)
    display.progress(progress_line(tracker))
    if not tracker.finished:
        async with aclosing(_follow(client, tracker.job_id)) as events:
            async for view in events:
                if tracker.update(view):
                    display.show(view)
                    display.progress(progress_line(tracker))
                if tracker.finished:
                    break
    display.close()
    if tracker.exit_code != EXIT_OK:
        print(f"jobsvc watch: job {tracker.job_id} finished: {tracker.summary()}", file=sys.stderr)
    return tracker.exit_code


async def _follow(
    client: httpx.AsyncClient, job_id: str | None, on_connect: Callable[[], None] | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the job view of every ``job`` event of ``GET /results/events``, forever.

    A stream that ends or breaks is reopened (with ``Last-Event-ID``) after the
    server's ``retry`` delay, doubling on each consecutive failure; after
    `MAX_RECONNECTS` failures in a row it raises `ClientError` (exit 3). A first
    connection that fails, or an answer other than 200, raises at once.
    ``on_connect`` runs when a connection's first line arrives: the API subscribes
    a stream before it sends anything, so from then on no change is missed.
    """
    params = {} if job_id is None else {"jobId": job_id}
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT)
    parser = SSEParser()
    failures = 0
    connected = False
    while True:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if parser.last_event_id:
            headers["Last-Event-ID"] = parser.last_event_id
        try:
            async with client.stream(
                "GET", "/results/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    _check(response)
                failures, connected = 0, True
                parser.reset()
                first = True
                async for line in response.aiter_lines():
                    if first and on_connect is not None:
                        on_connect()
                    first = False
                    event = parser.feed(line)
                    if event is not None and event.event == "job":
                        yield _decode_view(event.data)
            reason = "the event stream ended"
        except httpx.TransportError as exc:
            if not connected:
                raise
            reason = _describe(exc)
        failures += 1
        if failures > MAX_RECONNECTS:
            raise ClientError(
                f"lost the event stream of {client.base_url} ({reason}); gave up after "
                f"{MAX_RECONNECTS} reconnects",
                EXIT_UNAVAILABLE,
            )
        await trio.sleep(min(parser.retry_seconds * 2 ** (failures - 1), MAX_RECONNECT_DELAY))


def _decode_view(data: str) -> dict[str, Any]:
    try:
        view = json.loads(data)
    except ValueError:
        raise ClientError(f"the API sent an event that is not JSON: {data!r:.100}") from None
    if not isinstance(view, dict):
        raise ClientError(f"the API sent an event that is not a job view: {data!r:.100}")
    return view


# --- HTTP ----------------------------------------------------------------------------


def _client_options(url: str) -> dict[str, Any]:
    return {
        "base_url": url,
        "timeout": httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        "headers": {"User-Agent": f"jobsvc/{__version__}"},
    }


@contextmanager
def _client(url: str) -> Iterator[httpx.Client]:
    with _translate(url), httpx.Client(**_client_options(url)) as client:
        yield client


@asynccontextmanager
async def _async_client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    with _translate(url):
        async with httpx.AsyncClient(**_client_options(url)) as client:
            yield client


@contextmanager
def _translate(url: str) -> Iterator[None]:
    """The one place where httpx's exceptions become `ClientError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach the API at {url}: {_describe(exc)}", EXIT_UNAVAILABLE) from exc
    except httpx.HTTPError as exc:
        raise ClientError(f"talking to the API at {url} failed: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _check(response: httpx.Response) -> Any:
    """The decoded JSON body of a successful answer; raises `ClientError` otherwise."""
    if not response.is_success:
        code = EXIT_UNAVAILABLE if response.status_code in (502, 503, 504) else EXIT_FAILED
        raise ClientError(error_sentence(response.status_code, response.content), code)
    try:
        return response.json()
    except ValueError:
        raise ClientError(
            f"the API answered HTTP {response.status_code} with a body that is not JSON"
        ) from None


def error_sentence(status: int, body: bytes) -> str:
    """The API's ``{"error": sentence}``, or a description of an unexpected answer."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return f"{data['error']} (HTTP {status})"
    snippet = " ".join(body.decode("utf-8", "replace").split())
    return f"the API answered HTTP {status}" + (f": {truncate(snippet, 120)}" if snippet else "")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- argument types -----------------------------------------------------------------


def _url_arg(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL such as {DEFAULT_URL}, got {text!r}")
    return text.rstrip("/")


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


# --- Server-Sent Events -------------------------------------------------------------


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its type (``message`` by default), data and last id."""

    event: str
    data: str
    id: str


@dataclass
class SSEParser:
    """The WHATWG event-stream interpretation, fed one line (without its end) at a time.

    Comments (``: heartbeat``) are skipped; ``data`` lines accumulate, joined by
    ``\\n``; a blank line dispatches; ``id`` persists across events (it is what a
    reconnect sends as ``Last-Event-ID``); ``retry`` sets the reconnect delay.
    """

    last_event_id: str = ""
    retry_ms: int = 1000
    _event: str = field(default="", repr=False)
    _data: list[str] = field(default_factory=list, repr=False)
    _first: bool = field(default=True, repr=False)

    @property
    def retry_seconds(self) -> float:
        return self.retry_ms / 1000

    def reset(self) -> None:
        """Forget a half-received event (a new connection starts clean; the id stays)."""
        self._event, self._data, self._first = "", [], True

    def feed(self, line: str) -> SSEEvent | None:
        """Interpret one line; returns the event a blank line completes, else None."""
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if line == "":
            event = None
            if self._data:
                event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            self.retry_ms = int(value)
        return None

    def feed_all(self, lines: Iterable[str]) -> list[SSEEvent]:
        return [event for line in lines if (event := self.feed(line)) is not None]


# --- following a job ----------------------------------------------------------------


@dataclass
class JobTracker:
    """The latest known state of each result of one job."""

    job_id: str
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def update(self, view: Mapping[str, Any]) -> bool:
        """Record ``view``; False when it is not newer than what is known (a repeat)."""
        if not _same_id(str(view.get("jobId", "")), self.job_id):
            return False
        key = str(view.get("resultFile"))
        known = self.results.get(key)
        if known is not None and (
            _int(view.get("updatedAt")) < _int(known.get("updatedAt"))
            or (view.get("updatedAt") == known.get("updatedAt") and view.get("status") == known.get("status"))
        ):
            return False
        self.results[key] = view
        return True

    @property
    def finished(self) -> bool:
        return bool(self.results) and all(v.get("status") in _FINISHED for v in self.results.values())

    @property
    def exit_code(self) -> int:
        ok = all(v.get("status") == Status.COMPLETED.value for v in self.results.values())
        return EXIT_OK if ok else EXIT_FAILED

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for view in self.results.values():
            status = str(view.get("status"))
            counts[status] = counts.get(status, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: _status_order(kv[0])))

    def summary(self) -> str:
        return ", ".join(f"{n} {status}" for status, n in self.counts().items())


def _same_id(a: str, b: str) -> bool:
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


def _int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def _status_order(status: str) -> int:
    return _STATUSES.index(status) if status in _STATUSES else len(_STATUSES)


def progress_line(tracker: JobTracker) -> str:
    """``job 0b6e…: 1/3 finished (1 Completed, 2 Processing)``."""
    done = sum(1 for v in tracker.results.values() if v.get("status") in _FINISHED)
    return f"job {tracker.job_id}: {done}/{len(tracker.results)} finished" + (
        f" ({tracker.summary()})" if tracker.results else ""
    )


class Display:
    """Where ``watch`` writes: one line per change, and on a terminal an in-place
    progress line kept below them (``\\r`` + erase line)."""

    def __init__(self, out: TextIO, *, as_json: bool, live: bool) -> None:
        self._out = out
        self._json = as_json
        self._live = live
        self._progress = ""

    def show(self, view: Mapping[str, Any]) -> None:
        line = json.dumps(view, ensure_ascii=False) if self._json else format_change(view)
        if self._live and self._progress:
            self._out.write("\r\x1b[K")
        self._out.write(line + "\n")
        if self._live and self._progress:
            self._out.write(self._progress)
        self._out.flush()

    def progress(self, text: str) -> None:
        if self._live:
            self._progress = text
            self._out.write("\r\x1b[K" + text)
            self._out.flush()

    def close(self) -> None:
        """Erase the progress line (the change lines above it stay)."""
        if self._live and self._progress:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._progress = ""


# --- text output --------------------------------------------------------------------


def format_change(view: Mapping[str, Any]) -> str:
    """One ``watch`` line: time (UTC), job id, result file, status, attempt, error."""
    parts = [
        _utc(view.get("updatedAt")),
        str(view.get("jobId")),
        str(view.get("resultFile")),
        str(view.get("status")),
        f"attempt {view.get('attempts')}/{view.get('maxAttempts')}",
    ]
    if view.get("cancelRequested") and view.get("status") not in _FINISHED:
        parts.append("cancel requested")
    if view.get("error"):
        parts.append(_one_line(str(view["error"])))
    return "  ".join(parts)


def _utc(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_table(
    views: Sequence[Mapping[str, Any]], *, now_ms: int, file_width: int = 40, error_width: int = 60
) -> str:
    """The ``list`` table: one row per result; long file names and errors truncated."""
    header = ("JOB ID", "RESULT FILE", "STATUS", "ATTEMPTS", "AGE", "DURATION", "ERROR")
    rows = [header]
    for view in views:
        created = view.get("createdAt")
        duration = view.get("durationMs")
        rows.append(
            (
                str(view.get("jobId")),
                truncate(_one_line(str(view.get("resultFile"))), file_width),
                str(view.get("status")),
                f"{view.get('attempts')}/{view.get('maxAttempts')}",
                format_duration(now_ms - created) if isinstance(created, int) else "-",
                format_duration(duration) if isinstance(duration, int) else "-",
                truncate(_one_line(str(view.get("error") or "")), error_width),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_duration(ms: int) -> str:
    """Short and human: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
