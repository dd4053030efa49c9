"""jobsvc.client.commands: the flags, --run-at, and watch JOBID on an in-memory API."""

from __future__ import annotations

import argparse
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from jobsvc import cli
from jobsvc.client import commands
from jobsvc.client.commands import parse_run_at
from jobsvc.client.display import Display, JobTracker
from jobsvc.client.http import AsyncClient, ClientError
from tests.unit.client.support import JOB, fake_api, raw_view, sse

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


# --- arguments ---------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


CLIENT_ARGVS = (
    ["enqueue", "http://i.test/a.png"],
    ["list"],
    ["get", JOB],
    ["cancel", JOB],
    ["retry", JOB],
    ["download", JOB, "a.png"],
    ["watch"],
)


def test_client_commands_default_to_the_local_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSVC_URL", raising=False)
    for argv in CLIENT_ARGVS:
        assert parse(*argv).url == "http://127.0.0.1:8000"


def test_client_commands_take_the_url_from_jobsvc_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSVC_URL", "https://jobs.example:8443/")
    for argv in CLIENT_ARGVS:
        assert parse(*argv).url == "https://jobs.example:8443"
        assert parse(*argv, "--url", "http://api:9000").url == "http://api:9000"  # the flag wins


def test_a_malformed_jobsvc_url_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBSVC_URL", "api:8000")
    with pytest.raises(SystemExit) as exc:
        parse("list")
    assert exc.value.code == 2
    assert "JOBSVC_URL" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", [JOB.upper(), "{" + JOB + "}", JOB.replace("-", ""), f"urn:uuid:{JOB}"])
def test_job_ids_in_any_uuid_spelling_are_sent_canonical(spelling: str) -> None:
    assert parse("get", spelling).job_id == JOB
    assert parse("list", "--job-id", spelling).job_id == JOB
    assert parse("enqueue", "http://i.test/a.png", "--job-id", spelling).job_id == JOB


def test_download_arguments() -> None:
    args = parse("download", JOB, "a b.png")
    assert (args.job_id, args.result_file, args.output) == (JOB, "a b.png", None)
    assert parse("download", JOB, "a.png", "-o", "-").output == "-"


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
        ["list", "--job-id", "42"],
        ["enqueue", "http://i.test/a.png", "--job-id", "nope"],
        ["get", "nope"],
        ["cancel", "nope"],
        ["cancel", str(uuid.UUID(int=0))],
        ["retry", JOB[:-1]],
        ["download", "nope", "a.png"],
        ["download", JOB, "../a.png"],
        ["download", JOB, ".."],
        ["watch", "nope"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_malformed_job_id_exits_2_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    # An address nothing listens on: a request would exit 3, not 2.
    with pytest.raises(SystemExit) as exc:
        cli.main(["cancel", "nope", "--url", "http://127.0.0.1:9"])
    assert exc.value.code == 2
    assert "expected a job id" in capsys.readouterr().err


# --- exit codes of refused requests ------------------------------------------------------


def refusing(status: int) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise ClientError(f"refused (HTTP {status})", status=status, unavailable=status == 503)

    return run


@pytest.mark.parametrize(
    ("status", "bad_request", "code"),
    [
        (400, commands.EXIT_USAGE, 2),  # get, cancel, retry, download, watch: a malformed id or file
        (400, commands.EXIT_FAILED, 1),  # enqueue: also a URL that is not a reachable image
        (404, commands.EXIT_USAGE, 1),
        (409, commands.EXIT_FAILED, 1),
        (503, commands.EXIT_USAGE, 3),
    ],
)
def test_refused_requests_map_to_exit_codes(
    status: int, bad_request: int, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    command = commands._command(refusing(status), bad_request=bad_request)
    assert command(argparse.Namespace(command_name="get")) == code
    assert capsys.readouterr().err == f"jobsvc get: refused (HTTP {status})\n"


# --- watch JOBID on an in-memory API ----------------------------------------------------


def job_api(current: list[dict[str, Any]], stream: bytes) -> AsyncClient:
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
    stream = sse(raw_view("Queued", updated=1), raw_view("Processing", updated=2), raw_view(final, updated=3))
    out = io.StringIO()
    async with job_api([raw_view("Queued", updated=1)], stream) as api:
        assert (
            await commands._watch_job(api, JobTracker(JOB), Display(out, as_json=False, live=False)) == code
        )
    assert [line.split("  ")[3] for line in out.getvalue().splitlines()] == ["Queued", "Processing", final]
    assert (final in capsys.readouterr().err) is (code == 1)


async def test_watch_job_already_finished_does_not_follow() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/results/{JOB}"
        return httpx.Response(200, json=[raw_view("Completed", updated=5)])

    async with fake_api(handler) as api:
        tracker = JobTracker(JOB)
        assert await commands._watch_job(api, tracker, Display(io.StringIO(), as_json=True, live=False)) == 0


async def test_watch_job_unknown_job_is_refused() -> None:
    async with fake_api(lambda r: httpx.Response(404, json={"error": f"job {JOB} does not exist"})) as api:
        with pytest.raises(ClientError, match="does not exist") as exc:
            await commands._watch_job(api, JobTracker(JOB), Display(io.StringIO(), as_json=False, live=False))
    assert exc.value.status == 404 and not exc.value.unavailable


async def test_watch_job_on_a_terminal_ticks_the_elapsed_time_between_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Processing for 3.5 s of (virtual) time, then Completed: the progress line is
    # redrawn every second in between with no request, and each change is a line.
    started = 50_000
    processing = raw_view("Processing", updated=started, startedAt=started, attempts=1)
    completed = raw_view("Completed", updated=started + 3_500, startedAt=started, attempts=1)
    requests: list[str] = []

    async def stream() -> AsyncIterator[bytes]:
        yield sse(processing)
        await trio.sleep(3.5)
        yield sse(completed)[len(sse()) :]  # the same stream: without its opening lines

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        if request.url.path == f"/results/{JOB}":
            return httpx.Response(200, json=[raw_view("Queued", updated=1_000)])
        return httpx.Response(200, content=stream())

    def now_ms() -> int:
        return started + int(trio.current_time() * 1000)

    out = io.StringIO()
    display = Display(out, as_json=False, live=True)
    async with fake_api(handler) as api:
        code = await commands._watch_job(api, JobTracker(JOB), display, now_ms=now_ms)
    assert code == 0
    assert requests == [f"/results/{JOB}", "/results/events"]  # the clock asks the server nothing
    text = out.getvalue()
    changes = [line.rsplit("\r\x1b[K", 1)[-1] for line in text.split("\n")[:-1]]
    assert [line.split("  ")[3] for line in changes] == ["Queued", "Processing", "Completed"]
    drawn = [part for part in text.split("\r\x1b[K") if part.startswith(f"job {JOB}:")]
    assert f"job {JOB}: 0/1 finished (1 Processing), 0s since started" in drawn
    ticks = [part for part in drawn if "Processing" in part]
    assert [t.rsplit(", ", 1)[1] for t in ticks] == [
        "0s since started",
        "1s since started",
        "2s since started",
        "3s since started",
    ]
    assert text.endswith("\r\x1b[K")  # the progress line is erased at the end


async def test_watch_job_off_a_terminal_prints_only_changes(autojump_clock: trio.testing.MockClock) -> None:
    stream = sse(raw_view("Processing", updated=2, startedAt=2), raw_view("Completed", updated=3))
    out = io.StringIO()
    async with job_api([raw_view("Queued", updated=1)], stream) as api:
        assert await commands._watch_job(api, JobTracker(JOB), Display(out, as_json=False, live=False)) == 0
    assert "\r" not in out.getvalue() and len(out.getvalue().splitlines()) == 3
