"""jobsvc.client.commands: the flags, --run-at, and watch JOBID on an in-memory API."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import httpx
import pytest

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
