"""The client commands' pure parts: SSE parsing, --run-at, the table, the watch
bookkeeping, and the event-stream loop against an in-memory transport."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from jobsvc import cli, client
from jobsvc.client import (
    ClientError,
    Display,
    JobTracker,
    SSEEvent,
    SSEParser,
    error_sentence,
    format_change,
    format_duration,
    format_table,
    parse_run_at,
    progress_line,
)

JOB = "0b6e1f2a-1111-4222-8333-444455556666"
OTHER = "9c1d2e3f-aaaa-4bbb-8ccc-ddddeeeeffff"


def view(
    status: str = "Queued", *, updated: int = 1_000, result_file: str = "a.png", **kw: Any
) -> dict[str, Any]:
    return {
        "jobId": JOB,
        "type": "ingest",
        "imgUrl": f"http://images.test/{result_file}",
        "status": status,
        "resultFile": result_file,
        "createdAt": 1_000,
        "updatedAt": updated,
        "startedAt": None,
        "finishedAt": None,
        "durationMs": None,
        "attempts": 0,
        "maxAttempts": 3,
        "priority": 0,
        "runAt": 1_000,
        "cancelRequested": False,
        "error": None,
        **kw,
    }


# --- Server-Sent Events ---------------------------------------------------------------


def test_sse_parser_dispatches_on_blank_line_with_event_name_and_id() -> None:
    events = SSEParser().feed_all(["event: job", "id: 7-100", 'data: {"a":1}', ""])
    assert events == [SSEEvent("job", '{"a":1}', "7-100")]


def test_sse_parser_joins_multi_line_data_with_newlines() -> None:
    events = SSEParser().feed_all(["data: first", "data:second", "data:  third", ""])
    assert events == [SSEEvent("message", "first\nsecond\n third", "")]


def test_sse_parser_skips_comments_and_heartbeats() -> None:
    lines = [": connected", "", ": heartbeat", "", "event: job", ": between", "data: x", ""]
    assert SSEParser().feed_all(lines) == [SSEEvent("job", "x", "")]


def test_sse_parser_blank_line_without_data_dispatches_nothing_and_resets_event_name() -> None:
    assert SSEParser().feed_all(["event: job", "", "data: x", ""]) == [SSEEvent("message", "x", "")]


def test_sse_parser_id_persists_across_events_and_nul_ids_are_ignored() -> None:
    parser = SSEParser()
    events = parser.feed_all(["id: 1", "data: a", "", "data: b", "", "id: bad\0id", "data: c", ""])
    assert [e.id for e in events] == ["1", "1", "1"]
    assert parser.last_event_id == "1"


def test_sse_parser_retry_accepts_only_digits() -> None:
    parser = SSEParser()
    parser.feed_all(["retry: 2000", "retry: soon", "retry: -5"])
    assert parser.retry_ms == 2000
    assert parser.retry_seconds == 2.0


def test_sse_parser_field_without_colon_and_unknown_fields() -> None:
    events = SSEParser().feed_all(["data", "bogus: 1", "data", ""])
    assert events == [SSEEvent("message", "\n", "")]


def test_sse_parser_strips_a_leading_byte_order_mark_once() -> None:
    assert SSEParser().feed_all(["\ufeffdata: x", ""]) == [SSEEvent("message", "x", "")]


def test_sse_parser_reset_drops_a_half_received_event_but_keeps_the_id() -> None:
    parser = SSEParser()
    parser.feed_all(["id: 5", "data: a", "", "event: job", "data: cut off"])
    parser.reset()
    assert parser.feed_all(["data: b", ""]) == [SSEEvent("message", "b", "5")]


# --- --run-at ----------------------------------------------------------------------------


def test_parse_run_at_epoch_milliseconds() -> None:
    assert parse_run_at("1795988911605") == 1795988911605


def test_parse_run_at_iso_with_zone() -> None:
    assert parse_run_at("2026-01-02T03:04:05Z") == 1767323045000
    assert parse_run_at("2026-01-02T05:04:05.678+02:00") == 1767323045678


def test_parse_run_at_iso_without_zone_is_local_time() -> None:
    expected = int(datetime(2026, 1, 2, 3, 4, 5).astimezone().timestamp() * 1000)
    assert parse_run_at("2026-01-02T03:04:05") == expected
    assert parse_run_at("2026-01-02 03:04:05") == expected


def test_parse_run_at_refuses_epoch_seconds() -> None:
    with pytest.raises(ValueError, match="epoch seconds"):
        parse_run_at("1700000000")


@pytest.mark.parametrize("text", ["tomorrow", "", "-5", "2026-13-01", "12:00"])
def test_parse_run_at_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_run_at(text)


# --- text output -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5, "0ms"),
        (850, "850ms"),
        (12_345, "12.3s"),
        (245_000, "4m05s"),
        (7_380_000, "2h03m"),
        (273_600_000, "3d04h"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_table_aligns_columns_and_shows_age_and_duration() -> None:
    rows = [
        view("Completed", result_file="a.png", attempts=1, durationMs=1_500),
        view("Queued", result_file="longer-name.png"),
    ]
    lines = format_table(rows, now_ms=13_345).splitlines()
    assert lines[0].split() == [
        "JOB",
        "ID",
        "RESULT",
        "FILE",
        "STATUS",
        "ATTEMPTS",
        "AGE",
        "DURATION",
        "ERROR",
    ]
    assert lines[1].split() == [JOB, "a.png", "Completed", "1/3", "12.3s", "1.5s"]
    assert lines[2].split() == [JOB, "longer-name.png", "Queued", "0/3", "12.3s", "-"]
    assert lines[0].index("STATUS") == lines[1].index("Completed") == lines[2].index("Queued")


def test_format_table_truncates_long_file_names_and_errors_to_one_line() -> None:
    error = "the server answered 404 Not Found\nwhile fetching " + "x" * 200
    rows = [view("Failed", result_file="f" * 100 + ".png", error=error)]
    line = format_table(rows, now_ms=2_000, file_width=20, error_width=30).splitlines()[1]
    assert "f" * 19 + "…" in line
    assert line.endswith("the server answered 404 Not F…")
    assert "\n" not in line.strip()


def test_format_change_shows_time_ids_status_attempt_and_error() -> None:
    line = format_change(view("Failed", updated=1_767_323_045_678, attempts=3, error="not an image"))
    assert line.split("  ") == [
        "2026-01-02T03:04:05.678Z",
        JOB,
        "a.png",
        "Failed",
        "attempt 3/3",
        "not an image",
    ]


def test_format_change_marks_a_requested_cancel_until_finished() -> None:
    assert "cancel requested" in format_change(view("Processing", cancelRequested=True))
    assert "cancel requested" not in format_change(view("Canceled", cancelRequested=True))


def test_error_sentence_uses_the_api_error() -> None:
    assert error_sentence(400, b'{"error": "imgUrl must be http"}') == "imgUrl must be http (HTTP 400)"


def test_error_sentence_describes_an_unexpected_body() -> None:
    assert error_sentence(502, b"<html>\n<b>Bad gateway</b></html>") == (
        "the API answered HTTP 502: <html> <b>Bad gateway</b></html>"
    )
    assert error_sentence(500, b"") == "the API answered HTTP 500"
    assert error_sentence(500, b'["error"]') == 'the API answered HTTP 500: ["error"]'


# --- watch bookkeeping -------------------------------------------------------------------


def test_tracker_ignores_repeats_older_states_and_other_jobs() -> None:
    tracker = JobTracker(JOB)
    assert tracker.update(view("Processing", updated=2_000))
    assert not tracker.update(view("Processing", updated=2_000))  # the stream's snapshot
    assert not tracker.update(view("Queued", updated=1_000))
    assert not tracker.update({**view("Completed", updated=3_000), "jobId": OTHER})
    assert tracker.update(view("Processing", updated=2_500, cancelRequested=True))
    assert tracker.results["a.png"]["cancelRequested"] is True


def test_tracker_matches_any_spelling_of_the_job_id() -> None:
    tracker = JobTracker(JOB.upper().replace("-", ""))
    assert tracker.update(view("Queued"))


def test_tracker_finished_and_exit_code() -> None:
    tracker = JobTracker(JOB)
    assert not tracker.finished
    tracker.update(view("Completed", updated=2, result_file="a.png"))
    tracker.update(view("Processing", updated=2, result_file="b.png"))
    assert not tracker.finished
    assert progress_line(tracker) == f"job {JOB}: 1/2 finished (1 Processing, 1 Completed)"
    tracker.update(view("Completed", updated=3, result_file="b.png"))
    assert tracker.finished
    assert tracker.exit_code == 0
    tracker.update(view("Canceled", updated=4, result_file="c.png"))
    assert tracker.exit_code == 1
    assert tracker.summary() == "2 Completed, 1 Canceled"


def test_display_plain_writes_one_line_per_change_and_no_progress() -> None:
    out = io.StringIO()
    display = Display(out, as_json=False, live=False)
    display.show(view("Queued"))
    display.progress("job x: 0/1 finished")
    display.close()
    assert out.getvalue() == format_change(view("Queued")) + "\n"


def test_display_json_writes_one_view_per_line() -> None:
    out = io.StringIO()
    Display(out, as_json=True, live=False).show(view("Queued"))
    assert json.loads(out.getvalue()) == view("Queued")


def test_display_live_keeps_the_progress_line_below_the_changes() -> None:
    out = io.StringIO()
    display = Display(out, as_json=False, live=True)
    display.progress("P1")
    display.show(view("Processing"))
    display.close()
    erase = "\r\x1b[K"
    assert out.getvalue() == f"{erase}P1{erase}{format_change(view('Processing'))}\nP1{erase}"


# --- arguments ---------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


def test_client_commands_default_to_the_local_api() -> None:
    for argv in (["enqueue", "http://i.test/a.png"], ["list"], ["cancel", JOB], ["watch"]):
        assert parse(*argv).url == "http://127.0.0.1:8000"


def test_enqueue_arguments() -> None:
    flags = "--url http://api:9000/ --priority 5 --run-at 2026-01-02T03:04:05Z --max-attempts 2 --type thumb"
    args = parse("enqueue", "http://i.test/a.png", *flags.split())
    assert (args.img_url, args.url, args.priority, args.run_at, args.max_attempts, args.type) == (
        "http://i.test/a.png",
        "http://api:9000",
        5,
        1767323045000,
        2,
        "thumb",
    )
    assert parse("enqueue", "http://i.test/a.png").type == "ingest"


def test_list_status_is_case_insensitive() -> None:
    assert parse("list", "--status", "completed").status == "Completed"


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--status", "done"],
        ["list", "--limit", "0"],
        ["list", "--url", "ftp://api"],
        ["enqueue", "http://i.test/a.png", "--run-at", "soon"],
        ["watch", "--timeout", "-1"],
        ["watch", "--timeout", "nan"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- the event-stream loop on an in-memory transport -------------------------------------


def sse(*views: dict[str, Any], retry: int = 1) -> bytes:
    parts = [f"retry: {retry}\n: connected\n\n"]
    for v in views:
        parts.append(f"event: job\nid: 1-{v['updatedAt']}\ndata: {json.dumps(v)}\n\n: heartbeat\n\n")
    return "".join(parts).encode()


def fake_api(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api.test")


async def test_follow_reconnects_with_last_event_id_when_the_stream_ends(autojump_clock: Any) -> None:
    seen: list[httpx.Request] = []
    streams = [sse(view("Queued", updated=1)), sse(view("Processing", updated=2))]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=streams[len(seen) - 1])

    connections = []
    async with fake_api(handler) as api:
        got: list[str] = []
        async for v in client._follow(api, JOB, on_connect=lambda: connections.append(len(got))):
            got.append(v["status"])
            if len(got) == 2:
                break
    assert got == ["Queued", "Processing"]
    assert connections == [0, 1]  # each connection announced before its events
    assert [r.url.params["jobId"] for r in seen] == [JOB, JOB]
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "1-1"


async def test_follow_fails_at_once_when_the_first_connection_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with fake_api(handler) as api:
        with pytest.raises(httpx.ConnectError):
            async for _ in client._follow(api, None):
                pass


async def test_follow_gives_up_after_repeated_reconnect_failures(autojump_clock: Any) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, content=sse())
        raise httpx.ConnectError("connection refused", request=request)

    async with fake_api(handler) as api:
        with pytest.raises(ClientError, match="gave up after 5 reconnects") as exc:
            async for _ in client._follow(api, None):
                pass
    assert exc.value.code == 3
    assert calls == 1 + client.MAX_RECONNECTS


async def test_follow_raises_the_api_error_of_a_refused_stream() -> None:
    async with fake_api(lambda r: httpx.Response(400, json={"error": "jobId must be a UUID"})) as api:
        with pytest.raises(ClientError, match="jobId must be a UUID") as exc:
            async for _ in client._follow(api, "nope"):
                pass
    assert exc.value.code == 1


def job_api(current: list[dict[str, Any]], stream: bytes) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/results/{JOB}":
            return httpx.Response(200, json=current)
        assert request.url.path == "/results/events"
        return httpx.Response(200, content=stream)

    return fake_api(handler)


@pytest.mark.parametrize(("final", "code"), [("Completed", 0), ("Failed", 1), ("Canceled", 1)])
async def test_watch_job_prints_state_then_changes_and_exits_when_finished(
    final: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = sse(view("Queued", updated=1), view("Processing", updated=2), view(final, updated=3))
    out = io.StringIO()
    async with job_api([view("Queued", updated=1)], stream) as api:
        assert await client._watch_job(api, JobTracker(JOB), Display(out, as_json=False, live=False)) == code
    assert [line.split("  ")[3] for line in out.getvalue().splitlines()] == ["Queued", "Processing", final]
    assert (final in capsys.readouterr().err) is (code == 1)


async def test_watch_job_already_finished_does_not_follow() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/results/{JOB}"
        return httpx.Response(200, json=[view("Completed", updated=5)])

    async with fake_api(handler) as api:
        tracker = JobTracker(JOB)
        assert await client._watch_job(api, tracker, Display(io.StringIO(), as_json=True, live=False)) == 0


async def test_watch_job_unknown_job_is_refused() -> None:
    async with fake_api(lambda r: httpx.Response(404, json={"error": f"job {JOB} does not exist"})) as api:
        with pytest.raises(ClientError, match="does not exist") as exc:
            await client._watch_job(api, JobTracker(JOB), Display(io.StringIO(), as_json=False, live=False))
    assert exc.value.code == 1


def test_format_change_time_is_utc_with_milliseconds() -> None:
    assert format_change(view(updated=0)).startswith("1970-01-01T00:00:00.000Z  ")
